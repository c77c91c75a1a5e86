//! Chmura's encrypted object format (FORMAT.md is the contract; section numbers below refer to
//! it). No I/O, no runtime: the proxy feeds bytes in and takes bytes out.
//!
//! - [`layout`]: ciphertext length as a pure function of plaintext length, its inverse, and
//!   range math (§4, §5).
//! - [`keys`]: per-object content key and key commitment derived from a data key and salt (§2).
//! - [`stream`]: [`stream::Sealer`] and [`stream::Opener`], chunked AES-256-GCM with nonces and
//!   AAD binding part number, chunk index and the final flag (§3).

pub mod envelope;
pub mod keys;
pub mod layout;
pub mod pool;
pub mod stream;

/// Format version written by this implementation (FORMAT.md §1).
pub const FORMAT_VERSION: u8 = 1;

/// Why decryption or a format check failed. Carries no key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("unsupported format version {0}")]
    UnsupportedVersion(String),
    #[error("key commitment does not match: wrong data key or edited metadata")]
    CommitmentMismatch,
    #[error("chunk {index} of part {part} failed authentication")]
    ChunkAuth { part: u32, index: u64 },
    #[error("ciphertext length {0} is not a valid encrypted length")]
    BadLength(u64),
    #[error("body ended after {got} of {want} bytes")]
    Truncated { got: u64, want: u64 },
    #[error("body is longer than its declared length")]
    TooLong,
    #[error("invalid metadata: {0}")]
    Metadata(&'static str),
}
