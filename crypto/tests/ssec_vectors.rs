//! SSE-C vectors (FORMAT.md §14): `testdata/ssec-vectors.txt` was computed from the text of
//! §14 with Python's hmac and hashlib, a second implementation; this checks the crate against it.

mod common;

use chmura_crypto::keys::CustomerKey;

#[test]
fn customer_key_vectors() {
    let text = common::testdata("ssec-vectors.txt");
    let mut checked = 0;
    for b in common::blocks(&text) {
        let Some(name) = b.get("name") else { continue };
        let ck = CustomerKey::new(b.hex32("customer_key"));
        let salt = b.hex32("salt");
        let provider = b.hex32("provider_key");
        let data_key = b.hex32("data_key");
        let check = b.hex32("check");
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
