//! The envelope around an object (FORMAT.md §6, §7): the encryption context a data key is
//! bound to, the local keyring's key wrapping, and the metadata stored with each object.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::keys::{random, COMMITMENT_LEN, DATA_KEY_LEN, SALT_LEN};
use crate::CryptoError;

/// Key/value pairs a data key is bound to (tenant, upstream bucket, object key, …). Unwrapping
/// with any pair different fails, with the local keyring and with AWS KMS alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(pub BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        EncryptionContext(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Canonical bytes (§6): for each pair in key order, `u32 BE len || key || u32 BE len || value`.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }
}

/// A plaintext data key; zeroized on drop.
pub type DataKey = Zeroizing<[u8; DATA_KEY_LEN]>;

const KEYRING_HEADER: &str = "chmura-keyring v1";
const WRAP_VERSION: u8 = 1;
const WRAP_AAD_PREFIX: &[u8] = b"chmura/v1 keyring wrap";

/// The local keyring: named 256-bit master keys, the first being the default (§7).
pub struct Keyring {
    keys: Vec<(String, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Keyring {
    /// Parses a keyring file: a `chmura-keyring v1` line, then `<id> <hex of 32 bytes>` lines.
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(KEYRING_HEADER) {
            return Err(format!("the first line must be {KEYRING_HEADER:?}"));
        }
        let mut keys: Vec<(String, Zeroizing<[u8; 32]>)> = Vec::new();
        for (n, line) in lines.enumerate() {
            let (id, hexkey) = line
                .split_once(' ')
                .ok_or_else(|| format!("key {n}: expected '<id> <hex key>'"))?;
            if !valid_key_id(id) {
                return Err(format!(
                    "key {n}: id must be 1-64 letters, digits, '-', '_' or '.'"
                ));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("key {n}: duplicate id {id:?}"));
            }
            let mut key = Zeroizing::new([0u8; 32]);
            decode_hex(hexkey.trim(), &mut key[..])
                .ok_or_else(|| format!("key {id:?}: expected 64 hex digits"))?;
            keys.push((id.to_string(), key));
        }
        if keys.is_empty() {
            return Err("the keyring holds no key".into());
        }
        Ok(Keyring { keys })
    }

    /// A new keyring text with one fresh key named `id`.
    pub fn generate(id: &str) -> Result<Zeroizing<String>, String> {
        if !valid_key_id(id) {
            return Err("key id must be 1-64 letters, digits, '-', '_' or '.'".into());
        }
        let key = Zeroizing::new(random::<32>());
        let mut hexkey = Zeroizing::new(String::with_capacity(64));
        for b in key.iter() {
            hexkey.push_str(&format!("{b:02x}"));
        }
        Ok(Zeroizing::new(format!(
            "{KEYRING_HEADER}\n{id} {}\n",
            hexkey.as_str()
        )))
    }

    pub fn default_key_id(&self) -> &str {
        &self.keys[0].0
    }

    pub fn has_key(&self, id: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == id)
    }

    fn key(&self, id: &str) -> Result<LessSafeKey, CryptoError> {
        let (_, k) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or(CryptoError::Metadata("unknown keyring key id"))?;
        #[allow(clippy::expect_used)]
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &k[..]).expect("32-byte key"),
        ))
    }

    /// Generates a data key and wraps it under master key `id`, bound to `ctx`.
    pub fn generate_data_key(
        &self,
        id: &str,
        ctx: &EncryptionContext,
    ) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let dk: DataKey = Zeroizing::new(random::<DATA_KEY_LEN>());
        let wrapped = self.wrap(id, &dk, ctx, random::<12>())?;
        Ok((dk, wrapped))
    }

    /// Wraps `dk` (§7): `0x01 || u8 id len || id || nonce(12) || AES-256-GCM(dk) || tag(16)`,
    /// AAD = `"chmura/v1 keyring wrap" || u8 id len || id || canonical context`.
    pub fn wrap(
        &self,
        id: &str,
        dk: &[u8; 32],
        ctx: &EncryptionContext,
        nonce: [u8; 12],
    ) -> Result<Vec<u8>, CryptoError> {
        let key = self.key(id)?;
        let mut out = vec![WRAP_VERSION, id.len() as u8];
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        let mut body = dk.to_vec();
        #[allow(clippy::expect_used)]
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(wrap_aad(id, ctx)),
            &mut body,
        )
        .expect("seal 32 bytes");
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The key id a wrapped blob names.
    pub fn wrapped_key_id(blob: &[u8]) -> Option<&str> {
        let n = *blob.get(1)? as usize;
        std::str::from_utf8(blob.get(2..2 + n)?).ok()
    }

    /// Unwraps a blob made by [`Keyring::wrap`]; fails if the context differs.
    pub fn unwrap(&self, blob: &[u8], ctx: &EncryptionContext) -> Result<DataKey, CryptoError> {
        let bad =
            CryptoError::Metadata("wrapped data key does not open under this keyring and context");
        if blob.first() != Some(&WRAP_VERSION) {
            return Err(CryptoError::Metadata("unknown wrapped-key version"));
        }
        let id = Keyring::wrapped_key_id(blob).ok_or(bad.clone())?;
        let rest = &blob[2 + id.len()..];
        if rest.len() != 12 + 32 + 16 {
            return Err(bad);
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&rest[..12]);
        let mut body = Zeroizing::new(rest[12..].to_vec());
        let key = self.key(id)?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(id, ctx)),
                &mut body[..],
            )
            .map_err(|_| bad)?;
        let mut dk: DataKey = Zeroizing::new([0u8; 32]);
        dk.copy_from_slice(plain);
        Ok(dk)
    }
}

fn wrap_aad(id: &str, ctx: &EncryptionContext) -> Vec<u8> {
    let mut a = WRAP_AAD_PREFIX.to_vec();
    a.push(id.len() as u8);
    a.extend_from_slice(id.as_bytes());
    a.extend_from_slice(&ctx.canonical());
    a
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

/// User-metadata names Chmura stores with each encrypted object (§8). S3 returns them as
/// `x-amz-meta-<name>`.
pub mod meta {
    pub const VERSION: &str = "chmura-v";
    pub const KEY_ID: &str = "chmura-kid";
    pub const WRAPPED_KEY: &str = "chmura-key";
    pub const SALT: &str = "chmura-salt";
    pub const COMMITMENT: &str = "chmura-commit";
    pub const PLAIN_LENGTH: &str = "chmura-len";
    /// Present (value `1`) on multipart objects instead of `chmura-len` (§13).
    pub const MULTIPART: &str = "chmura-mp";
    /// The client's plaintext checksum, sealed (§8): `<ALGORITHM> <base64>`.
    pub const CHECKSUM: &str = "chmura-ck";
    /// SSE-C (§14): base64 of the customer key's check value; present only on such objects.
    pub const CUSTOMER_KEY_CHECK: &str = "chmura-ssec";
    /// Present (value `1`) when Chmura keeps the object's plaintext checksum in an object tag
    /// (§8a): a PutObject whose trailer checksum arrived after the metadata left, or a
    /// multipart upload created with a checksum algorithm.
    pub const CHECKSUM_TAG: &str = "chmura-ckt";
}

/// The per-object envelope as stored in metadata (§8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeader {
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    pub salt: [u8; SALT_LEN],
    pub commitment: [u8; COMMITMENT_LEN],
    /// Plaintext length (also derivable from the stored length; kept to cross-check). For a
    /// multipart object it is not stored: 0 here, then derived from the stored length.
    pub plain_len: u64,
    /// Written by a multipart upload (§13): no stored length, chunk identities in the nonces.
    pub multipart: bool,
    /// The client's plaintext checksum sealed under the content key (§8), as stored:
    /// `<ALGORITHM> <base64 of ObjectKey::seal_value(ALGORITHM, digest)>`.
    pub checksum: Option<String>,
    /// SSE-C (§14): the check value of the customer key the data key is masked with.
    pub customer_check: Option<[u8; 32]>,
    /// The plaintext checksum may be kept in the object tag `chmura-ck` (§8a): tag counts
    /// shown to clients leave that tag out.
    pub checksum_tag: bool,
}

impl ObjectHeader {
    /// The metadata pairs (name without `x-amz-meta-`, value).
    pub fn to_metadata(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            (meta::VERSION, crate::FORMAT_VERSION.to_string()),
            (meta::KEY_ID, self.key_id.clone()),
            (meta::WRAPPED_KEY, b64::encode(&self.wrapped_key)),
            (meta::SALT, b64::encode(&self.salt)),
            (meta::COMMITMENT, b64::encode(&self.commitment)),
            if self.multipart {
                (meta::MULTIPART, "1".to_string())
            } else {
                (meta::PLAIN_LENGTH, self.plain_len.to_string())
            },
        ];
        if let Some(c) = &self.checksum {
            v.push((meta::CHECKSUM, c.clone()));
        }
        if let Some(c) = &self.customer_check {
            v.push((meta::CUSTOMER_KEY_CHECK, b64::encode(c)));
        }
        if self.checksum_tag {
            v.push((meta::CHECKSUM_TAG, "1".to_string()));
        }
        v
    }

    /// Reads the header through `get(name)`. `Ok(None)`: the object carries no Chmura
    /// metadata at all (not encrypted by Chmura).
    pub fn from_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<ObjectHeader>, CryptoError> {
        let Some(v) = get(meta::VERSION) else {
            return Ok(None);
        };
        if v.trim() != crate::FORMAT_VERSION.to_string() {
            return Err(CryptoError::UnsupportedVersion(
                v.chars().take(16).collect(),
            ));
        }
        let field = |n: &'static str| get(n).map(str::trim).ok_or(CryptoError::Metadata(n));
        let fixed = |n: &'static str| -> Result<[u8; 32], CryptoError> {
            let v = b64::decode(field(n)?).ok_or(CryptoError::Metadata(n))?;
            v.try_into().map_err(|_| CryptoError::Metadata(n))
        };
        Ok(Some(ObjectHeader {
            key_id: field(meta::KEY_ID)?.to_string(),
            wrapped_key: b64::decode(field(meta::WRAPPED_KEY)?)
                .ok_or(CryptoError::Metadata(meta::WRAPPED_KEY))?,
            salt: fixed(meta::SALT)?,
            commitment: fixed(meta::COMMITMENT)?,
            plain_len: match get(meta::MULTIPART) {
                Some(v) if v.trim() == "1" => 0,
                Some(_) => return Err(CryptoError::Metadata(meta::MULTIPART)),
                None => field(meta::PLAIN_LENGTH)?
                    .parse()
                    .map_err(|_| CryptoError::Metadata(meta::PLAIN_LENGTH))?,
            },
            multipart: get(meta::MULTIPART).is_some(),
            checksum: get(meta::CHECKSUM).map(|v| v.trim().to_string()),
            customer_check: match get(meta::CUSTOMER_KEY_CHECK) {
                Some(_) => Some(fixed(meta::CUSTOMER_KEY_CHECK)?),
                None => None,
            },
            checksum_tag: match get(meta::CHECKSUM_TAG).map(str::trim) {
                None => false,
                Some("1") => true,
                Some(_) => return Err(CryptoError::Metadata(meta::CHECKSUM_TAG)),
            },
        }))
    }
}

/// Standard base64 with padding (RFC 4648), small enough to keep `crypto` dependency-free.
pub mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// The 6-bit value of an alphabet character (a table, not a search: every GET decodes
    /// the envelope).
    fn value(ch: u8) -> Option<u32> {
        const TABLE: [u8; 256] = {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 64 {
                t[ALPHABET[i] as usize] = i as u8;
                i += 1;
            }
            t
        };
        match TABLE[ch as usize] {
            0xff => None,
            v => Some(u32::from(v)),
        }
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let b = s.as_bytes();
        if !b.len().is_multiple_of(4) {
            return None;
        }
        let mut out = Vec::with_capacity(b.len() / 4 * 3);
        for (ci, c) in b.chunks(4).enumerate() {
            let last = ci == b.len() / 4 - 1;
            let mut n = 0u32;
            let mut pad = 0;
            for (i, &ch) in c.iter().enumerate() {
                let v = match ch {
                    b'=' if last && i >= 2 => {
                        pad += 1;
                        0
                    }
                    _ if pad > 0 => return None,
                    _ => value(ch)?,
                };
                n = (n << 6) | v;
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&format!(
            "{KEYRING_HEADER}\nk1 {}\nk2 {}\n",
            "11".repeat(32),
            "22".repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn wrap_unwrap_and_context_binding() {
        let r = ring();
        let ctx = EncryptionContext::new([("tenant", "acme"), ("bucket", "b"), ("key", "k")]);
        let (dk, blob) = r.generate_data_key("k1", &ctx).unwrap();
        assert_eq!(*r.unwrap(&blob, &ctx).unwrap(), *dk);
        assert_eq!(Keyring::wrapped_key_id(&blob), Some("k1"));
        for other in [
            EncryptionContext::new([("tenant", "acme"), ("bucket", "b"), ("key", "k2")]),
            EncryptionContext::new([("tenant", "evil"), ("bucket", "b"), ("key", "k")]),
            EncryptionContext::new([("tenant", "acme"), ("bucket", "b")]),
        ] {
            assert!(r.unwrap(&blob, &other).is_err(), "{other:?}");
        }
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(r.unwrap(&tampered, &ctx).is_err());
    }

    #[test]
    fn canonical_context_is_unambiguous() {
        let a = EncryptionContext::new([("ab", "c")]);
        let b = EncryptionContext::new([("a", "bc")]);
        assert_ne!(a.canonical(), b.canonical());
    }

    #[test]
    fn keyring_parse_errors_and_generate() {
        assert!(Keyring::parse("nope").is_err());
        assert!(Keyring::parse(&format!("{KEYRING_HEADER}\n")).is_err());
        assert!(Keyring::parse(&format!("{KEYRING_HEADER}\nk1 abcd\n")).is_err());
        assert!(Keyring::parse(&format!(
            "{KEYRING_HEADER}\nk1 {0}\nk1 {0}\n",
            "11".repeat(32)
        ))
        .is_err());
        let text = Keyring::generate("main").unwrap();
        let r = Keyring::parse(&text).unwrap();
        assert_eq!(r.default_key_id(), "main");
        assert!(
            !format!("{r:?}").contains(&text[text.len() - 20..]),
            "keys never print"
        );
    }

    #[test]
    fn header_round_trip_and_errors() {
        let h = ObjectHeader {
            key_id: "k1".into(),
            wrapped_key: vec![1, 2, 3, 250],
            salt: [5; 32],
            commitment: [6; 32],
            plain_len: 77,
            multipart: false,
            checksum: Some("SHA256 AAAA".into()),
            customer_check: None,
            checksum_tag: false,
        };
        let mp = ObjectHeader {
            plain_len: 0,
            multipart: true,
            checksum: None,
            customer_check: Some([8; 32]),
            checksum_tag: true,
            ..h.clone()
        };
        let md = mp.to_metadata();
        assert!(md.iter().all(|(k, _)| *k != meta::PLAIN_LENGTH));
        let get = |n: &str| md.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(ObjectHeader::from_metadata(get).unwrap(), Some(mp.clone()));
        let md = h.to_metadata();
        let get = |n: &str| md.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(ObjectHeader::from_metadata(get).unwrap(), Some(h.clone()));
        assert_eq!(ObjectHeader::from_metadata(|_| None).unwrap(), None);
        let v2 = |n: &str| {
            if n == meta::VERSION {
                Some("2")
            } else {
                get(n)
            }
        };
        assert_eq!(
            ObjectHeader::from_metadata(v2),
            Err(CryptoError::UnsupportedVersion("2".into()))
        );
        let no_salt = |n: &str| if n == meta::SALT { None } else { get(n) };
        assert_eq!(
            ObjectHeader::from_metadata(no_salt),
            Err(CryptoError::Metadata(meta::SALT))
        );
        let short_check = |n: &str| {
            if n == meta::CUSTOMER_KEY_CHECK {
                Some("AAAA")
            } else {
                get(n)
            }
        };
        assert_eq!(
            ObjectHeader::from_metadata(short_check),
            Err(CryptoError::Metadata(meta::CUSTOMER_KEY_CHECK))
        );
        let odd_flag = |n: &str| {
            if n == meta::CHECKSUM_TAG {
                Some("yes")
            } else {
                get(n)
            }
        };
        assert_eq!(
            ObjectHeader::from_metadata(odd_flag),
            Err(CryptoError::Metadata(meta::CHECKSUM_TAG))
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64::encode(raw), enc);
            assert_eq!(b64::decode(enc).as_deref(), Some(raw));
        }
        assert_eq!(b64::decode("Zm9=v"), None);
        assert_eq!(b64::decode("Zm9"), None);
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Keyring files, wrapped keys, metadata and base64 from outside never panic.
        #[test]
        fn untrusted_inputs_never_panic(text in "\\PC{0,300}", blob in proptest::collection::vec(any::<u8>(), 0..120), value in "\\PC{0,80}") {
            let _ = Keyring::parse(&text);
            let _ = Keyring::wrapped_key_id(&blob);
            let ring = Keyring::parse(&format!("{KEYRING_HEADER}\nk1 {}\n", "11".repeat(32))).unwrap();
            let _ = ring.unwrap(&blob, &EncryptionContext::default());
            let _ = b64::decode(&value);
            let _ = ObjectHeader::from_metadata(|_| Some(value.as_str()));
        }
    }
}
