//! Test vectors (FORMAT.md §10): `testdata/vectors.txt`, checked by decrypting each vector with
//! the public API; positive vectors are also re-sealed with their recorded nonces and must
//! reproduce the file byte for byte. `CHMURA_WRITE_VECTORS=1 cargo test -p chmura-crypto --test
//! vectors` rewrites the file (only after a deliberate format change, with a version bump).

mod common;

use chmura_crypto::envelope::{EncryptionContext, Keyring};
use chmura_crypto::keys::ObjectKey;
use chmura_crypto::layout::{chunk_count, CHUNK, SEALED_CHUNK};
use chmura_crypto::stream::{Opener, Sealer};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vectors.txt");

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn nonce(i: u64) -> [u8; 12] {
    let mut n = [0xA5u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    n
}

struct Vector {
    name: String,
    data_key: Vec<u8>,
    salt: Vec<u8>,
    part: u32,
    plaintext_len: u64,
    commitment: Vec<u8>,
    ciphertext: Vec<u8>,
    expect: String,
}

fn seal(v: &Vector) -> Vec<u8> {
    let key = ObjectKey::derive(
        &v.data_key.clone().try_into().unwrap(),
        &v.salt.clone().try_into().unwrap(),
    );
    if v.part > 0 {
        // A multipart object (FORMAT.md §13) whose parts have `part` chunks; chunk i of the
        // object uses nonce(i) with its first 4 bytes replaced by the chunk identity.
        let part_len = u64::from(v.part) * CHUNK;
        let data = plaintext(v.plaintext_len as usize);
        let mut out = Vec::new();
        for (n, piece) in data.chunks(part_len as usize).enumerate() {
            let first = n as u64 * u64::from(v.part);
            let count = chunk_count(piece.len() as u64);
            let mut s = Sealer::new(&key, n as u32 + 1, piece.len() as u64)
                .with_fixed_nonces((first..first + count).map(nonce).collect());
            s.push(piece, &mut out).unwrap();
            s.finish(&mut out).unwrap();
        }
        return out.concat();
    }
    let n = chunk_count(v.plaintext_len);
    let mut s =
        Sealer::new(&key, v.part, v.plaintext_len).with_fixed_nonces((0..n).map(nonce).collect());
    let mut out = Vec::new();
    s.push(&plaintext(v.plaintext_len as usize), &mut out)
        .unwrap();
    s.finish(&mut out).unwrap();
    out.concat()
}

fn open(v: &Vector) -> Result<Vec<u8>, String> {
    let key = ObjectKey::derive(
        &v.data_key.clone().try_into().unwrap(),
        &v.salt.clone().try_into().unwrap(),
    );
    key.verify_commitment(&v.commitment)
        .map_err(|_| "commitment".to_string())?;
    let mut o = if v.part == 0 {
        Opener::whole(&key, 0, v.plaintext_len)
    } else {
        let n = chunk_count(v.plaintext_len);
        Opener::multipart(&key, v.plaintext_len, 0, n, 0, v.plaintext_len)
    };
    let mut out = Vec::new();
    o.push(&v.ciphertext, &mut out)
        .map_err(|e| format!("{e:?}"))?;
    o.finish().map_err(|e| format!("{e:?}"))?;
    Ok(out.concat())
}

fn positive() -> Vec<Vector> {
    let mut vs = Vec::new();
    for (name, len, part) in [
        ("empty", 0u64, 0u32),
        ("one-byte", 1, 0),
        ("short", 100, 0),
        ("two-chunks", CHUNK + 1, 0),
        ("multipart-3-parts", 2 * CHUNK + 100, 1),
    ] {
        let mut v = Vector {
            name: name.into(),
            data_key: (0..32).collect(),
            salt: (100..132).collect(),
            part,
            plaintext_len: len,
            commitment: Vec::new(),
            ciphertext: Vec::new(),
            expect: "ok".into(),
        };
        let key = ObjectKey::derive(
            &v.data_key.clone().try_into().unwrap(),
            &v.salt.clone().try_into().unwrap(),
        );
        v.commitment = key.commitment().to_vec();
        v.ciphertext = seal(&v);
        vs.push(v);
    }
    vs
}

fn negative(pos: &[Vector]) -> Vec<Vector> {
    let two = &pos[3];
    let short = &pos[2];
    let copy = |v: &Vector, name: &str, expect: &str| Vector {
        name: name.into(),
        data_key: v.data_key.clone(),
        salt: v.salt.clone(),
        part: v.part,
        plaintext_len: v.plaintext_len,
        commitment: v.commitment.clone(),
        ciphertext: v.ciphertext.clone(),
        expect: expect.into(),
    };
    let mut out = Vec::new();
    let mut v = copy(short, "bit-flip", "ChunkAuth { part: 0, index: 0 }");
    v.ciphertext[40] ^= 0x80;
    out.push(v);
    let mut v = copy(short, "wrong-commitment", "commitment");
    v.commitment[0] ^= 1;
    out.push(v);
    let mut v = copy(short, "wrong-salt", "commitment");
    v.salt[0] ^= 1;
    out.push(v);
    let c = SEALED_CHUNK as usize;
    let mut v = copy(
        two,
        "truncated-to-first-chunk",
        "ChunkAuth { part: 0, index: 0 }",
    );
    v.ciphertext.truncate(c);
    v.plaintext_len = CHUNK;
    out.push(v);
    let mut v = copy(two, "chunks-swapped", "ChunkAuth { part: 0, index: 0 }");
    let (a, b) = v.ciphertext.split_at(c);
    v.ciphertext = [b, a].concat();
    v.plaintext_len = two.plaintext_len;
    out.push(v);
    let mut v = copy(short, "appended-byte", "TooLong");
    v.ciphertext.push(0);
    out.push(v);
    let mut v = copy(
        short,
        "single-part-read-as-multipart",
        "ChunkAuth { part: 10601, index: 53970 }",
    );
    v.part = 1;
    out.push(v);
    let mp = &pos[4];
    let mut v = copy(mp, "parts-swapped", "ChunkAuth { part: 2, index: 0 }");
    let (a, b) = v.ciphertext.split_at(c);
    let (b, rest) = b.split_at(c);
    v.ciphertext = [b, a, rest].concat();
    out.push(v);
    out
}

fn render(vs: &[Vector]) -> String {
    let mut s = String::from(
        "# Chmura format v1 test vectors (FORMAT.md §10). Plaintext of each vector: byte i = i mod 251.\n\
         # Positive vectors were sealed with nonce(i) = a5a5a5a5 || u64 BE i for chunk i (multipart: first 4 bytes = chunk identity, FORMAT.md §13).\n\
         # part: 0 = a single-part object; k > 0 = a multipart object whose parts hold k chunks each (the last fewer).\n\n",
    );
    for v in vs {
        s.push_str(&format!(
            "name: {}\ndata_key: {}\nsalt: {}\npart: {}\nplaintext_len: {}\ncommitment: {}\nexpect: {}\nciphertext: {}\n\n",
            v.name,
            hex::encode(&v.data_key),
            hex::encode(&v.salt),
            v.part,
            v.plaintext_len,
            hex::encode(&v.commitment),
            v.expect,
            hex::encode(&v.ciphertext)
        ));
    }
    let ring = Keyring::parse(&format!("chmura-keyring v1\nmaster {}\n", "42".repeat(32))).unwrap();
    let ctx = EncryptionContext::new([
        ("chmura:bucket", "b"),
        ("chmura:key", "k"),
        ("chmura:tenant", "t"),
    ]);
    let blob = ring.wrap("master", &[7u8; 32], &ctx, [9u8; 12]).unwrap();
    s.push_str(&format!(
        "# Keyring wrap (FORMAT.md §7): master key 42 x 32, data key 07 x 32, nonce 09 x 12, context {{chmura:bucket=b, chmura:key=k, chmura:tenant=t}}\nkeyring_wrap: {}\n",
        hex::encode(blob)
    ));
    s
}

fn parse(text: &str) -> (Vec<Vector>, Vec<u8>) {
    let mut vs = Vec::new();
    let mut wrap = Vec::new();
    for b in common::blocks(text) {
        if let Some(w) = b.get("keyring_wrap") {
            wrap = hex::decode(w).unwrap();
        }
        let Some(name) = b.get("name") else { continue };
        let hex = |f: &str| hex::decode(b.field(f)).unwrap();
        vs.push(Vector {
            name,
            data_key: hex("data_key"),
            salt: hex("salt"),
            part: b.num("part") as u32,
            plaintext_len: b.num("plaintext_len"),
            commitment: hex("commitment"),
            ciphertext: hex("ciphertext"),
            expect: b.field("expect"),
        });
    }
    (vs, wrap)
}

#[test]
fn vectors_file_holds() {
    let pos = positive();
    let all: Vec<Vector> = pos
        .iter()
        .map(|v| Vector {
            name: v.name.clone(),
            data_key: v.data_key.clone(),
            salt: v.salt.clone(),
            part: v.part,
            plaintext_len: v.plaintext_len,
            commitment: v.commitment.clone(),
            ciphertext: v.ciphertext.clone(),
            expect: v.expect.clone(),
        })
        .chain(negative(&pos))
        .collect();
    let expected = render(&all);
    if std::env::var("CHMURA_WRITE_VECTORS").as_deref() == Ok("1") {
        std::fs::write(FILE, &expected).unwrap();
    }
    let text = std::fs::read_to_string(FILE).expect("testdata/vectors.txt");
    assert!(
        text == expected,
        "sealing no longer reproduces testdata/vectors.txt: a format change needs a version bump"
    );
    let (vs, wrap) = parse(&text);
    assert_eq!(vs.len(), 13);
    for v in &vs {
        let got = open(v);
        if v.expect == "ok" {
            assert_eq!(
                got.as_deref().map(<[u8]>::len),
                Ok(v.plaintext_len as usize),
                "{}",
                v.name
            );
            assert!(
                got.unwrap() == plaintext(v.plaintext_len as usize),
                "{}",
                v.name
            );
        } else {
            assert_eq!(got.err().as_deref(), Some(v.expect.as_str()), "{}", v.name);
        }
    }
    let ring = Keyring::parse(&format!("chmura-keyring v1\nmaster {}\n", "42".repeat(32))).unwrap();
    let ctx = EncryptionContext::new([
        ("chmura:bucket", "b"),
        ("chmura:key", "k"),
        ("chmura:tenant", "t"),
    ]);
    assert_eq!(*ring.unwrap(&wrap, &ctx).unwrap(), [7u8; 32]);
}
