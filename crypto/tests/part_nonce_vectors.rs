//! Synthetic nonces of multipart parts (FORMAT.md §13): `testdata/part-nonce-vectors.txt` was
//! computed from the text of §13 by `testdata/part-nonce-vectors.py` (Python's hmac, hashlib
//! and cryptography), a second implementation; the crate's sealer must reproduce every nonce
//! and the sealed part byte for byte, whatever pieces the plaintext arrives in.

mod common;

use chmura_crypto::keys::ObjectKey;
use chmura_crypto::layout::{chunk_count, SEALED_CHUNK};
use chmura_crypto::stream::{Opener, Sealer};

fn seal(key: &ObjectKey, part: u32, plain: &[u8], piece: usize) -> Vec<u8> {
    let mut s = Sealer::new(key, part, plain.len() as u64);
    let mut out = Vec::new();
    for p in plain.chunks(piece) {
        s.push(p, &mut out).expect("push");
    }
    s.finish(&mut out).expect("finish");
    out.concat()
}

#[test]
fn part_nonce_vectors() {
    let text = common::testdata("part-nonce-vectors.txt");
    let mut checked = 0;
    for b in common::blocks(&text) {
        let Some(name) = b.get("name") else { continue };
        let key = ObjectKey::derive(&b.hex32("data_key"), &b.hex32("salt"));
        let part = b.num("part") as u32;
        let plain: Vec<u8> = (0..b.num("plaintext_len"))
            .map(|i| (i % 251) as u8)
            .collect();
        let nonces: Vec<Vec<u8>> = b
            .field("nonces")
            .split(' ')
            .map(|n| hex::decode(n).expect("hex"))
            .collect();
        assert_eq!(
            nonces.len() as u64,
            chunk_count(plain.len() as u64),
            "{name}"
        );
        for piece in [1_000_000, 7_000, 65_535] {
            let sealed = seal(&key, part, &plain, piece);
            assert_eq!(sealed.len() as u64, b.num("sealed_len"), "{name}: length");
            let got: Vec<&[u8]> = sealed
                .chunks(SEALED_CHUNK as usize)
                .map(|c| &c[..12])
                .collect();
            assert_eq!(got, nonces, "{name}: nonces, pieces of {piece}");
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &sealed);
            assert_eq!(
                hex::encode(digest.as_ref()),
                b.field("sealed_sha256"),
                "{name}: sealed part, pieces of {piece}"
            );
            let mut o = Opener::part(&key, part, plain.len() as u64);
            let mut out = Vec::new();
            o.push(&sealed, &mut out).expect("open");
            o.finish().expect("finish");
            assert!(out.concat() == plain, "{name}: opens");
        }
        checked += 1;
    }
    assert_eq!(checked, 5, "every vector in the file was checked");
}
