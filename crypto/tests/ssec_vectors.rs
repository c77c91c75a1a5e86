//! SSE-C vectors (FORMAT.md §14): `testdata/ssec-vectors.txt` was computed from the text of
//! §14 with Python's hmac and hashlib, a second implementation; this checks the crate against it.

use chmura_crypto::keys::CustomerKey;

fn hex32(s: &str) -> [u8; 32] {
    let v = hex::decode(s.trim()).expect("hex");
    v.try_into().expect("32 bytes")
}

#[test]
fn customer_key_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/ssec-vectors.txt"
    ))
    .expect("vectors file");
    let mut checked = 0;
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_string)
        };
        let Some(name) = field("name") else { continue };
        let ck = CustomerKey::new(hex32(&field("customer_key").expect("customer_key")));
        let salt = hex32(&field("salt").expect("salt"));
        let provider = hex32(&field("provider_key").expect("provider_key"));
        let data_key = hex32(&field("data_key").expect("data_key"));
        let check = hex32(&field("check").expect("check"));
        assert_eq!(*ck.mask(&salt, &provider), data_key, "{name}: data key");
        assert_eq!(*ck.mask(&salt, &data_key), provider, "{name}: unmask");
        assert_eq!(ck.check_value(&salt), check, "{name}: check value");
        assert!(ck.matches(&salt, &check), "{name}: matches");
        let mut wrong = check;
        wrong[0] ^= 1;
        assert!(!ck.matches(&salt, &wrong), "{name}: a flipped check bit");
        checked += 1;
    }
    assert_eq!(checked, 3, "every vector in the file was checked");
}
