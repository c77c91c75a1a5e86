//! S3's own checks of request arguments that Chmura makes itself, whatever the store checks:
//! names of new buckets, list parameters, and server-side-encryption headers. Pure functions
//! of the classified request (no I/O), run before anything reaches the store.

use http::HeaderMap;

use crate::error::S3Error;
use crate::ops::Op;

/// The checks for one request.
pub fn request(
    op: Op,
    bucket: Option<&str>,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Result<(), S3Error> {
    if op == Op::CreateBucket {
        if let Some(b) = bucket {
            if !creatable_bucket_name(b) {
                return Err(S3Error::new(
                    "InvalidBucketName",
                    "The specified bucket is not valid.",
                ));
            }
        }
    }
    if matches!(
        op,
        Op::ListBuckets
            | Op::ListObjects
            | Op::ListObjectsV2
            | Op::ListObjectVersions
            | Op::ListMultipartUploads
            | Op::ListParts
    ) {
        list_numbers(query)?;
    }
    canned_acl(headers)?;
    sse_headers(op, headers)
}

/// S3's canned ACLs (`x-amz-acl`).
const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
];

/// An `x-amz-acl` that names no canned ACL is S3's `InvalidArgument`, whatever the operation.
fn canned_acl(headers: &HeaderMap) -> Result<(), S3Error> {
    let Some(v) = headers.get("x-amz-acl") else {
        return Ok(());
    };
    let value = String::from_utf8_lossy(v.as_bytes());
    if CANNED_ACLS.contains(&value.as_ref()) {
        return Ok(());
    }
    Err(
        S3Error::invalid_argument("The x-amz-acl header names no canned ACL.")
            .with_element("ArgumentName", "x-amz-acl")
            .with_element("ArgumentValue", value.chars().take(64).collect::<String>()),
    )
}

/// The rules of S3 for a new general-purpose bucket's name: 3 to 63 lowercase letters,
/// digits, dots and hyphens; a letter or digit at each end; no `..`, `.-` or `-.`; not an IP
/// address; none of S3's reserved prefixes and suffixes. (Older buckets can have other names:
/// only creation is held to these.)
pub fn creatable_bucket_name(b: &str) -> bool {
    const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
    const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    chmura_config::valid_bucket_name(b)
        && !b.contains(".-")
        && !b.contains("-.")
        && !looks_like_ipv4(b)
        && !RESERVED_PREFIXES.iter().any(|p| b.starts_with(p))
        && !RESERVED_SUFFIXES.iter().any(|s| b.ends_with(s))
}

/// Four dot-separated groups of digits (`192.168.5.4`, also with leading zeros).
fn looks_like_ipv4(b: &str) -> bool {
    let parts: Vec<&str> = b.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `max-keys` and its kin are non-negative 32-bit integers.
fn list_numbers(query: &[(String, String)]) -> Result<(), S3Error> {
    for (k, v) in query {
        if !matches!(
            k.as_str(),
            "max-keys" | "max-uploads" | "max-parts" | "part-number-marker" | "max-buckets"
        ) {
            continue;
        }
        match v.parse::<i32>() {
            Err(_) => {
                return Err(S3Error::invalid_argument(format!(
                    "Provided {k} not an integer or within integer range"
                )))
            }
            Ok(n) if n < 0 => {
                return Err(S3Error::invalid_argument(format!(
                    "Argument {k} must be an integer between 0 and 2147483647"
                )))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

const SSE: &str = "x-amz-server-side-encryption";
const SSE_KMS_KEY: &str = "x-amz-server-side-encryption-aws-kms-key-id";
const SSE_CONTEXT: &str = "x-amz-server-side-encryption-context";

/// Server-side encryption (not SSE-C, which ssec.rs checks): a known method; a KMS key or
/// context only with a KMS method; none of it on reads (S3 answers 400: the stored object
/// says how it is encrypted).
fn sse_headers(op: Op, headers: &HeaderMap) -> Result<(), S3Error> {
    let present = |n: &str| headers.contains_key(n);
    match op {
        Op::GetObject | Op::HeadObject
            if present(SSE) || present(SSE_KMS_KEY) || present(SSE_CONTEXT) =>
        {
            return Err(S3Error::invalid_argument(
                "x-amz-server-side-encryption header is not supported for this operation.",
            ));
        }
        Op::PutObject | Op::CopyObject | Op::CreateMultipartUpload => {
            let method = headers.get(SSE).map(|v| v.to_str().unwrap_or(""));
            if let Some(m) = method {
                if !matches!(m, "AES256" | "aws:kms" | "aws:kms:dsse") {
                    return Err(S3Error::invalid_argument(
                        "The encryption method specified is not supported",
                    ));
                }
            }
            let kms = matches!(method, Some("aws:kms" | "aws:kms:dsse"));
            if (present(SSE_KMS_KEY) || present(SSE_CONTEXT)) && !kms {
                return Err(S3Error::invalid_argument(
                    "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn canned_acls_are_s3s_eight() {
        for ok in CANNED_ACLS {
            let m = h(&[("x-amz-acl", ok)]);
            assert!(request(Op::PutObject, Some("b"), &[], &m).is_ok(), "{ok}");
            assert!(
                request(Op::PutBucketAcl, Some("b"), &[], &m).is_ok(),
                "{ok}"
            );
        }
        assert!(request(Op::PutObject, Some("b"), &[], &HeaderMap::new()).is_ok());
        for bad in ["public-ready", "Private", "", "private "] {
            let m = h(&[("x-amz-acl", bad)]);
            for op in [
                Op::PutBucketAcl,
                Op::CreateBucket,
                Op::PutObject,
                Op::CopyObject,
            ] {
                let e = request(op, Some("bucket"), &[], &m).expect_err(bad);
                assert_eq!(
                    (e.code, e.status.as_u16()),
                    ("InvalidArgument", 400),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn new_bucket_names_follow_s3s_rules() {
        for ok in [
            "abc",
            "my-bucket.2",
            "a".repeat(63).as_str(),
            "1.2.3",
            "xn-a",
        ] {
            assert!(creatable_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "a".repeat(64).as_str(),
            "Abc",
            "foo_bar",
            "-abc",
            "abc-",
            "_abc",
            "a..b",
            "a-.b",
            "a.-b",
            "192.168.5.123",
            "192.168.05.1",
            "xn--abc",
            "sthree-abc",
            "abc-s3alias",
            "abc--ol-s3",
            "abc.mrap",
        ] {
            assert!(!creatable_bucket_name(bad), "{bad}");
        }
        let e = request(Op::CreateBucket, Some("foo_bar"), &[], &h(&[])).unwrap_err();
        assert_eq!(e.code, "InvalidBucketName");
        // Only creation: an existing bucket with an old-style name is still reachable.
        assert!(request(Op::ListObjects, Some("Old_Bucket"), &[], &h(&[])).is_ok());
    }

    #[test]
    fn list_numbers_are_non_negative_integers() {
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        for (k, v) in [
            ("max-keys", "blah"),
            ("max-keys", "-1"),
            ("max-keys", "99999999999"),
            ("max-uploads", "1.5"),
            ("max-parts", ""),
            ("part-number-marker", "x"),
        ] {
            let e = request(Op::ListObjectsV2, Some("b"), &q(k, v), &h(&[])).unwrap_err();
            assert_eq!(e.code, "InvalidArgument", "{k}={v}");
        }
        for (k, v) in [("max-keys", "0"), ("max-keys", "5000"), ("max-parts", "10")] {
            assert!(request(Op::ListParts, Some("b"), &q(k, v), &h(&[])).is_ok());
        }
    }

    #[test]
    fn server_side_encryption_headers_are_checked() {
        let put = |pairs: &[(&'static str, &'static str)]| {
            request(Op::PutObject, Some("b"), &[], &h(pairs))
        };
        assert!(put(&[(SSE, "AES256")]).is_ok());
        assert!(put(&[(SSE, "aws:kms"), (SSE_KMS_KEY, "k")]).is_ok());
        assert!(put(&[(SSE, "aws:kms:dsse"), (SSE_CONTEXT, "e30=")]).is_ok());
        for bad in [
            &[(SSE, "aes:kms")][..],
            &[(SSE, "AES256"), (SSE_KMS_KEY, "k")][..],
            &[(SSE_KMS_KEY, "k")][..],
            &[(SSE_CONTEXT, "e30=")][..],
        ] {
            assert_eq!(put(bad).unwrap_err().code, "InvalidArgument", "{bad:?}");
        }
        for op in [Op::GetObject, Op::HeadObject] {
            let e = request(op, Some("b"), &[], &h(&[(SSE, "AES256")])).unwrap_err();
            assert_eq!(e.code, "InvalidArgument");
            assert!(request(op, Some("b"), &[], &h(&[])).is_ok());
            // SSE-C on reads is ssec.rs's business, not refused here.
            assert!(request(
                op,
                Some("b"),
                &[],
                &h(&[("x-amz-server-side-encryption-customer-algorithm", "AES256")])
            )
            .is_ok());
        }
    }
}
