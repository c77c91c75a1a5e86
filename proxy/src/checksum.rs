//! Streaming digests for the integrity checks S3 clients send: Content-MD5,
//! `x-amz-content-sha256` and `x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256}`
//! (S3-PROTOCOL-NOTES §5).

use aws_lc_rs::digest;
use base64::Engine;
use md5::Digest as _;

/// The flexible-checksum algorithms S3 accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// The header that carries it: `x-amz-checksum-crc32` etc.
    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub fn from_header_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header_name().eq_ignore_ascii_case(name))
    }

    /// Name as used in `x-amz-sdk-checksum-algorithm` and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }
}

/// One running digest.
pub enum Hasher {
    Crc(Box<crc_fast::Digest>, usize),
    Digest(digest::Context),
    Md5(md5::Md5),
}

impl Hasher {
    pub fn new(alg: ChecksumAlgorithm) -> Self {
        use crc_fast::CrcAlgorithm as C;
        match alg {
            ChecksumAlgorithm::Crc32 => {
                Hasher::Crc(Box::new(crc_fast::Digest::new(C::Crc32IsoHdlc)), 4)
            }
            ChecksumAlgorithm::Crc32c => {
                Hasher::Crc(Box::new(crc_fast::Digest::new(C::Crc32Iscsi)), 4)
            }
            ChecksumAlgorithm::Crc64Nvme => {
                Hasher::Crc(Box::new(crc_fast::Digest::new(C::Crc64Nvme)), 8)
            }
            ChecksumAlgorithm::Sha1 => {
                Hasher::Digest(digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY))
            }
            ChecksumAlgorithm::Sha256 => Hasher::Digest(digest::Context::new(&digest::SHA256)),
        }
    }

    pub fn md5() -> Self {
        Hasher::Md5(md5::Md5::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc(d, _) => d.update(data),
            Hasher::Digest(c) => c.update(data),
            Hasher::Md5(m) => m.update(data),
        }
    }

    /// The raw digest bytes (CRCs big-endian).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Crc(d, 4) => (d.finalize() as u32).to_be_bytes().to_vec(),
            Hasher::Crc(d, _) => d.finalize().to_be_bytes().to_vec(),
            Hasher::Digest(c) => c.finish().as_ref().to_vec(),
            Hasher::Md5(m) => m.finalize().to_vec(),
        }
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes a base64 digest value, checking its length.
pub fn decode_b64(value: &str, len: usize) -> Option<Vec<u8>> {
    let v = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    (v.len() == len).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_b64(alg: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(alg);
        h.update(data);
        b64(&h.finish())
    }

    #[test]
    fn known_values() {
        // Values as S3 / the AWS SDKs compute them for "Hello world".
        let d = b"Hello world";
        assert_eq!(digest_b64(ChecksumAlgorithm::Crc32, d), "i9aeUg==");
        assert_eq!(digest_b64(ChecksumAlgorithm::Crc32c, d), "crUfeA==");
        assert_eq!(
            digest_b64(ChecksumAlgorithm::Sha1, d),
            "e1AsOh9IyGCa4hLN+2Od7jlnP14="
        );
        assert_eq!(
            digest_b64(ChecksumAlgorithm::Sha256, d),
            "ZOyIygCyaOW6GjVnihtTFtIS9PNmskdyMlNKiuyjfzw="
        );
        assert_eq!(digest_b64(ChecksumAlgorithm::Crc64Nvme, d), "OOJZ0D8xKts=");
        let mut m = Hasher::md5();
        m.update(d);
        assert_eq!(b64(&m.finish()), "PiWWCnnbxptnTNTsZ6csYg==");
    }

    #[test]
    fn incremental_equals_whole() {
        for alg in ChecksumAlgorithm::ALL {
            let mut h = Hasher::new(alg);
            h.update(b"Hello");
            h.update(b" world");
            assert_eq!(b64(&h.finish()), digest_b64(alg, b"Hello world"), "{alg:?}");
            assert_eq!(
                decode_b64(&digest_b64(alg, b"x"), alg.digest_len()).map(|v| v.len()),
                Some(alg.digest_len())
            );
        }
    }
}
