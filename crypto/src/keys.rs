//! Per-object keys (FORMAT.md §2): from a 256-bit data key and a 32-byte salt, HKDF-SHA256
//! derives the content key and a key commitment. The commitment is stored with the object and
//! checked, in constant time, before any plaintext is released.

use aws_lc_rs::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use crate::layout::CHUNK;
use crate::CryptoError;

pub const DATA_KEY_LEN: usize = 32;
pub const SALT_LEN: usize = 32;
pub const COMMITMENT_LEN: usize = 32;

const INFO_CONTENT: &[u8] = b"chmura/v1 content key";
const INFO_COMMIT: &[u8] = b"chmura/v1 key commitment";
const INFO_PART_NONCE: &[u8] = b"chmura/v1 part nonce key";
const VALUE_AAD: &[u8] = b"chmura/v1 value ";
const INFO_SSEC_MASK: &[u8] = b"chmura/v1 sse-c mask";
const INFO_SSEC_CHECK: &[u8] = b"chmura/v1 sse-c check";

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The content key of one object, ready to seal or open chunks.
pub struct ObjectKey {
    pub(crate) aead: aead::LessSafeKey,
    commitment: [u8; COMMITMENT_LEN],
    /// `PRK` (§2), kept for `NK` (§13), which only multipart parts need (zeroized on drop).
    prk: hkdf::Prk,
}

impl ObjectKey {
    /// Derives the content key and commitment (§2).
    pub fn derive(data_key: &[u8; DATA_KEY_LEN], salt: &[u8; SALT_LEN]) -> ObjectKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(data_key);
        let chunk = (CHUNK as u32).to_be_bytes();
        let mut ck = Zeroizing::new([0u8; 32]);
        let mut commitment = [0u8; COMMITMENT_LEN];
        // Expanding 32 bytes from HKDF-SHA256 cannot fail (limit is 255 * 32).
        #[allow(clippy::expect_used)]
        {
            prk.expand(&[INFO_CONTENT, &chunk], Len(32))
                .and_then(|okm| okm.fill(&mut ck[..]))
                .expect("HKDF expand of 32 bytes");
            prk.expand(&[INFO_COMMIT, &chunk], Len(COMMITMENT_LEN))
                .and_then(|okm| okm.fill(&mut commitment))
                .expect("HKDF expand of 32 bytes");
        }
        #[allow(clippy::expect_used)]
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, &ck[..]).expect("32-byte AES key");
        ObjectKey {
            aead: aead::LessSafeKey::new(key),
            commitment,
            prk,
        }
    }

    /// The keys of the synthetic nonces of multipart parts (§13).
    pub(crate) fn part_nonce_key(&self) -> PartNonceKey {
        let chunk = (CHUNK as u32).to_be_bytes();
        let mut nk = Zeroizing::new([0u8; 64]);
        // Expanding 64 bytes from HKDF-SHA256 cannot fail (limit is 255 * 32).
        #[allow(clippy::expect_used)]
        self.prk
            .expand(&[INFO_PART_NONCE, &chunk], Len(64))
            .and_then(|okm| okm.fill(&mut nk[..]))
            .expect("HKDF expand of 64 bytes");
        let (g, m) = nk.split_at(32);
        // A 32-byte AES key is always valid.
        #[allow(clippy::expect_used)]
        let gmac = aead::UnboundKey::new(&aead::AES_256_GCM, g).expect("32-byte AES key");
        PartNonceKey {
            gmac: aead::LessSafeKey::new(gmac),
            mac: hmac::Key::new(hmac::HMAC_SHA256, m),
        }
    }

    /// The commitment to store with the object.
    pub fn commitment(&self) -> &[u8; COMMITMENT_LEN] {
        &self.commitment
    }

    /// Seals a small value stored beside the object (FORMAT.md §8, the plaintext checksum):
    /// `nonce(12) || AES-GCM-Seal(CK, nonce, "chmura/v1 value" || label, value) || tag`.
    pub fn seal_value(&self, label: &str, value: &[u8]) -> Vec<u8> {
        let nonce = random::<12>();
        let mut out = nonce.to_vec();
        out.extend_from_slice(value);
        let aad = [VALUE_AAD, label.as_bytes()].concat();
        // Sealing fails only for inputs over 2^36 bytes.
        #[allow(clippy::expect_used)]
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_slice()),
                &mut out[12..],
            )
            .expect("AES-GCM seal of a small value");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a value sealed by [`ObjectKey::seal_value`] with the same `label`.
    pub fn open_value(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 28 {
            return Err(CryptoError::Metadata("sealed value"));
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&sealed[..12]);
        let mut buf = sealed[12..].to_vec();
        let aad = [VALUE_AAD, label.as_bytes()].concat();
        let n = self
            .aead
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_slice()),
                &mut buf,
            )
            .map_err(|_| CryptoError::Metadata("sealed value"))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Checks a stored commitment in constant time.
    pub fn verify_commitment(&self, stored: &[u8]) -> Result<(), CryptoError> {
        if stored.len() == COMMITMENT_LEN
            && aws_lc_rs::constant_time::verify_slices_are_equal(stored, &self.commitment).is_ok()
        {
            Ok(())
        } else {
            Err(CryptoError::CommitmentMismatch)
        }
    }
}

/// Derives the last 8 bytes of a multipart chunk's nonce from its identity and plaintext
/// (§13): `HMAC-SHA256(NK_mac, ident || GMAC(NK_gmac, 0^12, plaintext))[0..8]`. GMAC (GHASH
/// under AES) is a universal hash, ~20 times faster than SHA-256 here; the HMAC over its 16
/// bytes makes the result a PRF, so nothing about `NK_gmac` leaks through the nonces.
pub(crate) struct PartNonceKey {
    gmac: aead::LessSafeKey,
    mac: hmac::Key,
}

impl PartNonceKey {
    pub(crate) fn synthetic(&self, ident: [u8; 4], plain: &[u8]) -> [u8; 8] {
        // Sealing an empty message with `plain` as AAD fails only above 2^61 bytes.
        #[allow(clippy::expect_used)]
        let tag = self
            .gmac
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key([0; 12]),
                aead::Aad::from(plain),
                &mut [],
            )
            .expect("GMAC of one chunk");
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(&ident);
        ctx.update(tag.as_ref());
        let mut out = [0u8; 8];
        out.copy_from_slice(&ctx.sign().as_ref()[..8]);
        out
    }
}

/// A key the client supplies with each request (SSE-C, FORMAT.md §14). It never leaves
/// Chmura: with the object's salt it derives a mask, which turns the key the provider wraps
/// into the object's data key (`DK = W xor mask`), and a check value stored with the object,
/// which tells a wrong customer key from a damaged object. Without the customer key, the
/// provider's key opens nothing.
pub struct CustomerKey(Zeroizing<[u8; 32]>);

impl CustomerKey {
    pub fn new(key: [u8; 32]) -> CustomerKey {
        CustomerKey(Zeroizing::new(key))
    }

    /// From the key's bytes, copied straight into zeroized storage; `None` unless 32 bytes.
    pub fn from_slice(key: &[u8]) -> Option<CustomerKey> {
        let mut k = Zeroizing::new([0u8; 32]);
        if key.len() != k.len() {
            return None;
        }
        k.copy_from_slice(key);
        Some(CustomerKey(k))
    }

    fn expand(&self, salt: &[u8; SALT_LEN], info: &[u8]) -> Zeroizing<[u8; 32]> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.0[..]);
        let mut out = Zeroizing::new([0u8; 32]);
        // Expanding 32 bytes from HKDF-SHA256 cannot fail (limit is 255 * 32).
        #[allow(clippy::expect_used)]
        prk.expand(&[info], Len(32))
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF expand of 32 bytes");
        out
    }

    /// `key xor mask(salt)`: the data key from the provider's key, and back.
    pub fn mask(&self, salt: &[u8; SALT_LEN], key: &[u8; DATA_KEY_LEN]) -> Zeroizing<[u8; 32]> {
        let mut out = self.expand(salt, INFO_SSEC_MASK);
        for (o, k) in out.iter_mut().zip(key) {
            *o ^= k;
        }
        out
    }

    /// The check value stored with the object (`chmura-ssec`).
    pub fn check_value(&self, salt: &[u8; SALT_LEN]) -> [u8; 32] {
        *self.expand(salt, INFO_SSEC_CHECK)
    }

    /// Whether this is the key an object's stored check value was made with (constant time).
    pub fn matches(&self, salt: &[u8; SALT_LEN], stored: &[u8]) -> bool {
        let mine = self.check_value(salt);
        aws_lc_rs::constant_time::verify_slices_are_equal(stored, &mine).is_ok()
    }
}

/// Fresh random bytes (data keys, salts).
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG failing is unrecoverable; aws-lc aborts rather than return weak bytes.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_key_masks_reversibly_and_checks_only_itself() {
        let salt = [7u8; 32];
        let a = CustomerKey::new([1; 32]);
        let b = CustomerKey::new([2; 32]);
        let w = [9u8; 32];
        let dk = a.mask(&salt, &w);
        assert_ne!(*dk, w);
        assert_eq!(*a.mask(&salt, &dk), w);
        assert_ne!(*b.mask(&salt, &w), *dk);
        assert_ne!(*a.mask(&[8; 32], &w), *dk, "the mask depends on the salt");
        assert!(a.matches(&salt, &a.check_value(&salt)));
        assert!(!b.matches(&salt, &a.check_value(&salt)));
        assert!(!a.matches(&[8; 32], &a.check_value(&salt)));
        assert!(!a.matches(&salt, &a.check_value(&salt)[..31]));
        assert_ne!(
            a.check_value(&salt),
            *a.mask(&salt, &[0; 32]),
            "check is not the mask"
        );
    }

    #[test]
    fn commitment_depends_on_key_and_salt() {
        let a = ObjectKey::derive(&[1; 32], &[2; 32]);
        let b = ObjectKey::derive(&[1; 32], &[3; 32]);
        let c = ObjectKey::derive(&[4; 32], &[2; 32]);
        assert_ne!(a.commitment(), b.commitment());
        assert_ne!(a.commitment(), c.commitment());
        assert!(a.verify_commitment(a.commitment()).is_ok());
        assert_eq!(
            a.verify_commitment(b.commitment()),
            Err(CryptoError::CommitmentMismatch)
        );
        assert_eq!(
            a.verify_commitment(&[0; 5]),
            Err(CryptoError::CommitmentMismatch)
        );
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_label() {
        let a = ObjectKey::derive(&[1; 32], &[2; 32]);
        let b = ObjectKey::derive(&[1; 32], &[3; 32]);
        let sealed = a.seal_value("SHA256", b"digest bytes");
        assert_eq!(sealed.len(), 12 + 12 + 16);
        assert_eq!(a.open_value("SHA256", &sealed).unwrap(), b"digest bytes");
        assert!(a.open_value("CRC32", &sealed).is_err(), "label");
        assert!(b.open_value("SHA256", &sealed).is_err(), "key");
        let mut flipped = sealed.clone();
        flipped[13] ^= 1;
        assert!(a.open_value("SHA256", &flipped).is_err(), "bit flip");
        assert!(a.open_value("SHA256", &sealed[..20]).is_err(), "short");
        assert_ne!(
            sealed,
            a.seal_value("SHA256", b"digest bytes"),
            "fresh nonce"
        );
    }
}
