//! `chmura-crypto-bench`: single-core throughput of the object format's seal and open
//! (FORMAT.md §3, and §13's parts), and of the GMAC / MD5 / CRC32C / SHA-256 digests Chmura
//! may compute on a body.
//!
//!   cargo build --release --bin chmura-crypto-bench && target/release/chmura-crypto-bench [--mib 1024]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chmura_crypto::keys::ObjectKey;
use chmura_crypto::stream::{Opener, Sealer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args
        .iter()
        .position(|a| a == "--mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let len = mib * 1024 * 1024;
    let key = Arc::new(ObjectKey::derive(&[7; 32], &[9; 32]));
    let block = chmura_tests::pattern(1024 * 1024, 1);

    // Warm-up (page faults of the buffer pool, CPU frequency), not measured.
    let mut warm = Sealer::new(key.clone(), 0, 64 * 1024 * 1024);
    let mut out = Vec::new();
    for _ in 0..64 {
        warm.push(&block, &mut out).expect("seal");
        black_box(out.drain(..).count());
    }

    // Sealing a single-part object (random nonces) and a multipart part (synthetic nonces,
    // FORMAT.md §13), fed in 1 MiB pieces and in 16,000-byte pieces (chunks split across
    // pieces, as network frames cut them).
    for (part, piece, what) in [
        (0, 1024 * 1024, "object, 1 MiB pieces"),
        (1, 1024 * 1024, "part, 1 MiB pieces"),
        (0, 16_000, "object, 16,000-byte pieces"),
        (1, 16_000, "part, 16,000-byte pieces"),
    ] {
        let mut sealer = Sealer::new(key.clone(), part, len);
        let mut out = Vec::new();
        let t = Instant::now();
        for _ in 0..mib {
            for p in block.chunks(piece) {
                sealer.push(p, &mut out).expect("seal");
                black_box(out.drain(..).count());
            }
        }
        sealer.finish(&mut out).expect("finish");
        println!(
            "seal       {:>7.2} GB/s  ({what})",
            len as f64 / 1e9 / t.elapsed().as_secs_f64()
        );
    }

    // Seal: feed 1 MiB pieces, as the proxy does with network frames.
    let mut sealer = Sealer::new(key.clone(), 0, len);
    let mut out = Vec::new();
    let mut sealed_bytes = 0u64;
    let mut sample = Vec::new();
    let t = Instant::now();
    for i in 0..mib {
        sealer.push(&block, &mut out).expect("seal");
        for c in out.drain(..) {
            sealed_bytes += c.len() as u64;
            if i == 0 {
                sample.push(c);
            } else {
                black_box(&c);
            }
        }
    }
    sealer.finish(&mut out).expect("finish");
    let seal_s = t.elapsed().as_secs_f64();

    // Open: the first MiB's chunks repeatedly (each open is independent work of the same size).
    let t = Instant::now();
    let mut opened = 0u64;
    let first = sample.concat();
    let chunks_per_mib = 16u64;
    for _ in 0..mib {
        let mut o = Opener::new(key.clone(), 0, len, 0, chunks_per_mib, 0, 1024 * 1024);
        let mut plain = Vec::new();
        o.push(&first, &mut plain).expect("open");
        opened += plain.iter().map(|p| p.len() as u64).sum::<u64>();
        black_box(&plain);
    }
    let open_s = t.elapsed().as_secs_f64();

    let digest = |name: &str, f: &dyn Fn(&[u8])| {
        let t = Instant::now();
        for _ in 0..mib.min(256) {
            f(&block);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{name:<10} {:>7.2} GB/s",
            (mib.min(256) * 1024 * 1024) as f64 / 1e9 / s
        );
    };
    println!(
        "seal       {:>7.2} GB/s  ({mib} MiB plaintext -> {sealed_bytes} bytes, 64 KiB chunks)",
        len as f64 / 1e9 / seal_s
    );
    println!(
        "open       {:>7.2} GB/s  ({opened} bytes)",
        opened as f64 / 1e9 / open_s
    );
    digest("sha256", &|d| {
        black_box(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, d));
    });
    let gmac = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &[3; 32]).expect("key"),
    );
    digest("gmac", &|d| {
        for c in d.chunks(64 * 1024) {
            let tag = gmac
                .seal_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key([0; 12]),
                    aws_lc_rs::aead::Aad::from(c),
                    &mut [],
                )
                .expect("gmac");
            black_box(tag.as_ref()[0]);
        }
    });
    digest("md5", &|d| {
        use md5::Digest;
        black_box(md5::Md5::digest(d));
    });
    digest("crc32c", &|d| {
        black_box(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, d));
    });
}
