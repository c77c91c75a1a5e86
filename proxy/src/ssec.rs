//! SSE-C: objects under a key the client sends with every request (FORMAT.md §14).
//!
//! With a `[kms]` section, Chmura keeps the customer's key to itself: it masks the object's
//! data key with it and stores a check value, and the store never sees the key (the headers
//! are dropped before re-signing). Reads, copies and parts of such objects need the same key,
//! as S3 requires; S3's answers for missing, malformed or wrong keys are kept. Without `[kms]`
//! the headers pass through to the store unchanged.

use chmura_crypto::envelope::{b64, DataKey, ObjectHeader};
use chmura_crypto::keys::CustomerKey;
use http::header::{HeaderMap, HeaderValue};

use crate::error::S3Error;

const ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";
const KEY: &str = "x-amz-server-side-encryption-customer-key";
const KEY_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";
const COPY_PREFIX: &str = "x-amz-copy-source-";

/// A verified customer key from one request's headers.
pub struct SseC {
    pub key: CustomerKey,
    /// The key's MD5, base64, as S3 echoes it.
    pub key_md5: String,
}

/// Which set of headers: the object written or read, or a copy's source.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Target,
    CopySource,
}

fn name(role: Role, base: &str) -> String {
    match role {
        Role::Target => base.to_string(),
        Role::CopySource => format!("{COPY_PREFIX}{}", base.trim_start_matches("x-amz-")),
    }
}

/// Whether a header is one of the SSE-C headers (either role); such headers never reach the
/// store when Chmura encrypts.
pub fn is_ssec_header(n: &str) -> bool {
    let n = n.strip_prefix(COPY_PREFIX).unwrap_or(n);
    let n = n.strip_prefix("x-amz-").unwrap_or(n);
    n.starts_with("server-side-encryption-customer-")
}

fn header<'a>(h: &'a HeaderMap, n: &str) -> Option<&'a str> {
    h.get(n).map(|v| v.to_str().unwrap_or("").trim())
}

/// The customer key of `role` in `h`, checked as S3 checks it; `None` when no SSE-C header
/// of that role is present.
pub fn parse(h: &HeaderMap, role: Role, tls: bool) -> Result<Option<SseC>, S3Error> {
    let alg = header(h, &name(role, ALGORITHM));
    let key = header(h, &name(role, KEY));
    let md5 = header(h, &name(role, KEY_MD5));
    if alg.is_none() && key.is_none() && md5.is_none() {
        return Ok(None);
    }
    if !tls {
        return Err(S3Error::invalid_request(
            "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
        ));
    }
    let Some(alg) = alg else {
        return Err(S3Error::invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
        ));
    };
    if alg != "AES256" {
        return Err(S3Error::new(
            "InvalidEncryptionAlgorithmError",
            "The encryption request you specified is not valid. The valid value is AES256.",
        ));
    }
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(S3Error::invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
        ));
    };
    // The decoded key is zeroized on every path out of here.
    let raw = zeroize::Zeroizing::new(b64::decode(key).unwrap_or_default());
    let Some(customer_key) = CustomerKey::from_slice(&raw) else {
        return Err(S3Error::invalid_argument(
            "The secret key was invalid for the specified algorithm.",
        ));
    };
    let Some(md5) = md5.filter(|m| !m.is_empty()) else {
        return Err(S3Error::invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
        ));
    };
    let mut hasher = crate::checksum::Hasher::md5();
    hasher.update(&raw[..]);
    let digest = hasher.finish();
    let matches = b64::decode(md5).is_some_and(|given| {
        aws_lc_rs::constant_time::verify_slices_are_equal(&given, &digest).is_ok()
    });
    if !matches {
        return Err(S3Error::invalid_argument(
            "The calculated MD5 hash of the key did not match the hash that was provided.",
        ));
    }
    let computed = crate::checksum::b64(&digest);
    Ok(Some(SseC {
        key: customer_key,
        key_md5: computed,
    }))
}

/// Whether `given` is what an object (or upload) needs: none for one under no customer key,
/// the same key for one stored with `(check value, salt)`.
pub fn check(stored: Option<(&[u8; 32], &[u8; 32])>, given: Option<&SseC>) -> Result<(), S3Error> {
    match (stored, given) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(S3Error::invalid_request(
            "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
        )),
        (None, Some(_)) => Err(S3Error::invalid_request(
            "The encryption parameters are not applicable to this object.",
        )),
        (Some((s, salt)), Some(c)) if c.key.matches(salt, s) => Ok(()),
        (Some(_), Some(_)) => Err(S3Error::new("AccessDenied", "Access Denied")
            .with_detail("the customer-provided key is not the object's")),
    }
}

/// The object's data key from the provider's key, and back (FORMAT.md §14): masked with the
/// customer's key when the request brings one, unchanged otherwise.
pub fn mask(given: Option<&SseC>, salt: &[u8; 32], key: DataKey) -> DataKey {
    match given {
        Some(c) => c.key.mask(salt, &key),
        None => key,
    }
}

/// [`check`] for a stored object.
pub fn check_object(env: &ObjectHeader, given: Option<&SseC>) -> Result<(), S3Error> {
    check(env.customer_check.as_ref().map(|c| (c, &env.salt)), given)
}

/// The answer's SSE-C headers, as S3 echoes them for an object under a customer key.
pub fn answer(h: &mut HeaderMap, key_md5: &str) {
    h.remove("x-amz-server-side-encryption");
    h.remove("x-amz-server-side-encryption-aws-kms-key-id");
    h.insert(ALGORITHM, HeaderValue::from_static("AES256"));
    if let Ok(v) = HeaderValue::from_str(key_md5) {
        h.insert(KEY_MD5, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "pO3upElrwuEXSoFwCfnZPdSsmt/xWeFa0N9KgDijwVs=";
    const MD5_B64: &str = "DWygnHRtgiJ77HCm+1rvHw==";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn code(r: Result<Option<SseC>, S3Error>) -> String {
        match r {
            Err(e) => e.code.to_string(),
            Ok(Some(_)) => "ok".into(),
            Ok(None) => "none".into(),
        }
    }

    #[test]
    fn headers_are_checked_as_s3_checks_them() {
        let good = [(ALGORITHM, "AES256"), (KEY, KEY_B64), (KEY_MD5, MD5_B64)];
        let parsed = parse(&headers(&good), Role::Target, true).unwrap().unwrap();
        assert_eq!(parsed.key_md5, MD5_B64);
        assert_eq!(code(parse(&headers(&good), Role::CopySource, true)), "none");
        assert_eq!(code(parse(&headers(&[]), Role::Target, true)), "none");
        assert_eq!(
            code(parse(&headers(&good), Role::Target, false)),
            "InvalidRequest",
            "never over plain HTTP"
        );
        for (case, want) in [
            (vec![(KEY, KEY_B64), (KEY_MD5, MD5_B64)], "InvalidArgument"),
            (
                vec![(ALGORITHM, "AES128"), (KEY, KEY_B64), (KEY_MD5, MD5_B64)],
                "InvalidEncryptionAlgorithmError",
            ),
            (vec![(ALGORITHM, "AES256")], "InvalidArgument"),
            (
                vec![(ALGORITHM, "AES256"), (KEY, KEY_B64)],
                "InvalidArgument",
            ),
            (
                vec![(ALGORITHM, "AES256"), (KEY, "c2hvcnQ="), (KEY_MD5, MD5_B64)],
                "InvalidArgument",
            ),
            (
                vec![
                    (ALGORITHM, "AES256"),
                    (KEY, KEY_B64),
                    (KEY_MD5, "AAAAAAAAAAAAAAAAAAAAAA=="),
                ],
                "InvalidArgument",
            ),
        ] {
            assert_eq!(
                code(parse(&headers(&case), Role::Target, true)),
                want,
                "{case:?}"
            );
        }
        let copy = [
            (
                "x-amz-copy-source-server-side-encryption-customer-algorithm",
                "AES256",
            ),
            (
                "x-amz-copy-source-server-side-encryption-customer-key",
                KEY_B64,
            ),
            (
                "x-amz-copy-source-server-side-encryption-customer-key-md5",
                MD5_B64,
            ),
        ];
        assert_eq!(code(parse(&headers(&copy), Role::CopySource, true)), "ok");
        assert_eq!(code(parse(&headers(&copy), Role::Target, true)), "none");
        assert!(copy
            .iter()
            .chain(good.iter())
            .all(|(k, _)| is_ssec_header(k)));
        assert!(!is_ssec_header("x-amz-server-side-encryption"));
        assert!(!is_ssec_header(
            "x-amz-server-side-encryption-aws-kms-key-id"
        ));
    }

    #[test]
    fn objects_need_exactly_their_key() {
        let good = [(ALGORITHM, "AES256"), (KEY, KEY_B64), (KEY_MD5, MD5_B64)];
        let c = parse(&headers(&good), Role::Target, true).unwrap().unwrap();
        let salt = [3u8; 32];
        let stored = c.key.check_value(&salt);
        assert!(check(Some((&stored, &salt)), Some(&c)).is_ok());
        assert!(check(None, None).is_ok());
        let e = |r: Result<(), S3Error>| r.unwrap_err().code.to_string();
        assert_eq!(e(check(Some((&stored, &salt)), None)), "InvalidRequest");
        assert_eq!(e(check(None, Some(&c))), "InvalidRequest");
        assert_eq!(
            e(check(Some((&stored, &[4; 32])), Some(&c))),
            "AccessDenied"
        );
        let other = SseC {
            key: CustomerKey::new([1; 32]),
            key_md5: String::new(),
        };
        assert_eq!(
            e(check(Some((&stored, &salt)), Some(&other))),
            "AccessDenied"
        );
    }
}
