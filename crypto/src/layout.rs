//! Lengths and ranges (FORMAT.md §4, §5). Pure arithmetic, no allocation.

use crate::CryptoError;

/// Plaintext bytes per chunk (FORMAT.md §3).
pub const CHUNK: u64 = 64 * 1024;
/// Bytes a sealed chunk adds: its 12-byte random nonce and 16-byte AES-GCM tag.
pub const OVERHEAD: u64 = NONCE + TAG;
/// Nonce bytes at the start of each sealed chunk.
pub const NONCE: u64 = 12;
/// AES-GCM tag bytes at the end of each sealed chunk.
pub const TAG: u64 = 16;
/// Ciphertext bytes of a full chunk.
pub const SEALED_CHUNK: u64 = CHUNK + OVERHEAD;

/// Number of chunks for `plain` bytes: an empty body still has one (empty, final) chunk.
pub fn chunk_count(plain: u64) -> u64 {
    if plain == 0 {
        1
    } else {
        plain.div_ceil(CHUNK)
    }
}

/// Largest plaintext length the format is used for (S3's 5 TiB object limit); callers refuse
/// larger declared lengths before any arithmetic.
pub const MAX_PLAINTEXT: u64 = 5 << 40;

/// Ciphertext length of `plain` plaintext bytes (saturating: never wraps, even for lengths
/// beyond [`MAX_PLAINTEXT`]).
pub fn ciphertext_len(plain: u64) -> u64 {
    plain.saturating_add(OVERHEAD.saturating_mul(chunk_count(plain)))
}

/// Plaintext length of a ciphertext of `cipher` bytes, or `BadLength` when no plaintext
/// length maps to it.
pub fn plaintext_len(cipher: u64) -> Result<u64, CryptoError> {
    if cipher == OVERHEAD {
        return Ok(0);
    }
    let full = cipher / SEALED_CHUNK;
    let rest = cipher % SEALED_CHUNK;
    match rest {
        0 if full > 0 => Ok(full * CHUNK),
        r if r > OVERHEAD => Ok(full * CHUNK + (r - OVERHEAD)),
        _ => Err(CryptoError::BadLength(cipher)),
    }
}

/// What to fetch and keep for a plaintext range of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangePlan {
    /// First chunk to decrypt.
    pub first_chunk: u64,
    /// Number of chunks to decrypt.
    pub chunks: u64,
    /// Ciphertext byte range to fetch, inclusive.
    pub cipher_start: u64,
    pub cipher_end: u64,
    /// Plaintext bytes to drop from the first decrypted chunk.
    pub skip: u64,
    /// Plaintext bytes to deliver.
    pub take: u64,
}

/// The plan for plaintext bytes `start..=end` of an object of `plain` bytes. `start <= end < plain`.
pub fn range_plan(plain: u64, start: u64, end: u64) -> RangePlan {
    debug_assert!(start <= end && end < plain);
    let first_chunk = start / CHUNK;
    let last_chunk = end / CHUNK;
    let cipher_start = first_chunk * SEALED_CHUNK;
    let last_len = (plain - last_chunk * CHUNK).min(CHUNK);
    let cipher_end = last_chunk * SEALED_CHUNK + last_len + OVERHEAD - 1;
    RangePlan {
        first_chunk,
        chunks: last_chunk - first_chunk + 1,
        cipher_start,
        cipher_end,
        skip: start - first_chunk * CHUNK,
        take: end - start + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boundary_lengths() {
        for (p, c) in [
            (0, 28),
            (1, 29),
            (CHUNK - 1, CHUNK + 27),
            (CHUNK, CHUNK + 28),
            (CHUNK + 1, CHUNK + 1 + 56),
            (3 * CHUNK, 3 * CHUNK + 84),
        ] {
            assert_eq!(ciphertext_len(p), c, "plain {p}");
            assert_eq!(plaintext_len(c), Ok(p), "cipher {c}");
        }
        for bad in [0, 1, 27, SEALED_CHUNK + 1, SEALED_CHUNK + 28] {
            assert!(plaintext_len(bad).is_err(), "{bad} must be invalid");
        }
    }

    proptest! {
        #[test]
        fn length_round_trip(p in 0u64..(1 << 40)) {
            prop_assert_eq!(plaintext_len(ciphertext_len(p)), Ok(p));
        }

        #[test]
        fn range_plan_covers_exactly(plain in 1u64..(10 * CHUNK), a in any::<u64>(), b in any::<u64>()) {
            let (mut s, mut e) = (a % plain, b % plain);
            if s > e { std::mem::swap(&mut s, &mut e); }
            let r = range_plan(plain, s, e);
            prop_assert!(r.cipher_end < ciphertext_len(plain));
            prop_assert_eq!(r.cipher_start, r.first_chunk * SEALED_CHUNK);
            prop_assert_eq!(r.skip + r.take <= r.chunks * CHUNK, true);
            prop_assert_eq!((r.first_chunk + r.chunks - 1) * CHUNK <= e, true);
        }
    }
}
