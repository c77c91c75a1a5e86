//! Step 3 of the pipeline: what a request asks for in IAM terms (actions on resources, with
//! the condition keys of the request), decided by the tenant's policies
//! (`chmura_config::policy::decide`, pure), and MFA codes (`x-amz-mfa`, RFC 6238 TOTP).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use chmura_config::policy::{self, Decision, Policy};
use chmura_config::MfaDevice;
use http::HeaderMap;

use crate::error::S3Error;
use crate::ops::Op;

/// One permission a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub action: &'static str,
    pub resource: String,
}

pub fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

pub fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// The IAM action of an object-level read or delete, with and without a version id.
fn versioned(v: bool, plain: &'static str, version: &'static str) -> &'static str {
    if v {
        version
    } else {
        plain
    }
}

/// The permissions an operation needs, as AWS documents them (S3-PROTOCOL-NOTES §8).
/// DeleteObjects is checked per key by the caller; copies add the source here.
pub fn checks(
    op: Op,
    bucket: Option<&str>,
    key: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Vec<Check> {
    let b = bucket.unwrap_or_default();
    let version = query.iter().any(|(k, _)| k == "versionId");
    let obj = |a: &'static str| Check {
        action: a,
        resource: object_arn(b, key),
    };
    let bkt = |a: &'static str| Check {
        action: a,
        resource: bucket_arn(b),
    };
    let mut out = match op {
        Op::ListBuckets => vec![Check {
            action: "s3:ListAllMyBuckets",
            resource: "*".into(),
        }],
        Op::CreateBucket => vec![bkt("s3:CreateBucket")],
        Op::DeleteBucket => vec![bkt("s3:DeleteBucket")],
        Op::HeadBucket | Op::ListObjects | Op::ListObjectsV2 => vec![bkt("s3:ListBucket")],
        Op::ListObjectVersions => vec![bkt("s3:ListBucketVersions")],
        Op::ListMultipartUploads => vec![bkt("s3:ListBucketMultipartUploads")],
        Op::GetBucketLocation => vec![bkt("s3:GetBucketLocation")],
        Op::GetBucketVersioning => vec![bkt("s3:GetBucketVersioning")],
        Op::PutBucketVersioning => vec![bkt("s3:PutBucketVersioning")],
        Op::GetBucketTagging => vec![bkt("s3:GetBucketTagging")],
        Op::PutBucketTagging | Op::DeleteBucketTagging => vec![bkt("s3:PutBucketTagging")],
        Op::GetBucketPolicy => vec![bkt("s3:GetBucketPolicy")],
        Op::PutBucketPolicy => vec![bkt("s3:PutBucketPolicy")],
        Op::DeleteBucketPolicy => vec![bkt("s3:DeleteBucketPolicy")],
        Op::GetBucketAcl => vec![bkt("s3:GetBucketAcl")],
        Op::GetBucketCors => vec![bkt("s3:GetBucketCORS")],
        Op::PutBucketCors | Op::DeleteBucketCors => vec![bkt("s3:PutBucketCORS")],
        Op::GetBucketLifecycleConfiguration => vec![bkt("s3:GetLifecycleConfiguration")],
        Op::PutBucketLifecycleConfiguration | Op::DeleteBucketLifecycle => {
            vec![bkt("s3:PutLifecycleConfiguration")]
        }
        Op::GetBucketEncryption => vec![bkt("s3:GetEncryptionConfiguration")],
        Op::GetObjectLockConfiguration => vec![bkt("s3:GetBucketObjectLockConfiguration")],
        Op::PutObjectLockConfiguration => vec![bkt("s3:PutBucketObjectLockConfiguration")],
        Op::PutBucketAcl => vec![bkt("s3:PutBucketAcl")],
        Op::PutBucketEncryption | Op::DeleteBucketEncryption => {
            vec![bkt("s3:PutEncryptionConfiguration")]
        }
        Op::GetBucketOwnershipControls => vec![bkt("s3:GetBucketOwnershipControls")],
        Op::PutBucketOwnershipControls | Op::DeleteBucketOwnershipControls => {
            vec![bkt("s3:PutBucketOwnershipControls")]
        }
        Op::GetPublicAccessBlock => vec![bkt("s3:GetBucketPublicAccessBlock")],
        Op::PutPublicAccessBlock | Op::DeletePublicAccessBlock => {
            vec![bkt("s3:PutBucketPublicAccessBlock")]
        }
        Op::GetBucketPolicyStatus => vec![bkt("s3:GetBucketPolicyStatus")],
        Op::GetBucketLogging => vec![bkt("s3:GetBucketLogging")],
        Op::PutBucketLogging => vec![bkt("s3:PutBucketLogging")],
        Op::GetBucketWebsite => vec![bkt("s3:GetBucketWebsite")],
        Op::PutBucketWebsite => vec![bkt("s3:PutBucketWebsite")],
        Op::DeleteBucketWebsite => vec![bkt("s3:DeleteBucketWebsite")],
        Op::GetBucketRequestPayment => vec![bkt("s3:GetBucketRequestPayment")],
        Op::PutBucketRequestPayment => vec![bkt("s3:PutBucketRequestPayment")],
        Op::GetBucketNotificationConfiguration => vec![bkt("s3:GetBucketNotification")],
        Op::PutBucketNotificationConfiguration => vec![bkt("s3:PutBucketNotification")],
        Op::GetBucketAccelerateConfiguration => vec![bkt("s3:GetAccelerateConfiguration")],
        Op::PutBucketAccelerateConfiguration => vec![bkt("s3:PutAccelerateConfiguration")],
        // Per key, by the caller (the keys are in the body).
        Op::DeleteObjects => vec![],
        Op::GetObject | Op::HeadObject => {
            vec![obj(versioned(
                version,
                "s3:GetObject",
                "s3:GetObjectVersion",
            ))]
        }
        Op::PutObject
        | Op::PostObject
        | Op::CreateMultipartUpload
        | Op::UploadPart
        | Op::CompleteMultipartUpload
        | Op::CopyObject
        | Op::UploadPartCopy => vec![obj("s3:PutObject")],
        Op::DeleteObject => vec![obj(versioned(
            version,
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
        ))],
        Op::AbortMultipartUpload => vec![obj("s3:AbortMultipartUpload")],
        Op::ListParts => vec![obj("s3:ListMultipartUploadParts")],
        Op::GetObjectTagging => vec![obj(versioned(
            version,
            "s3:GetObjectTagging",
            "s3:GetObjectVersionTagging",
        ))],
        Op::PutObjectTagging => vec![obj(versioned(
            version,
            "s3:PutObjectTagging",
            "s3:PutObjectVersionTagging",
        ))],
        Op::DeleteObjectTagging => vec![obj(versioned(
            version,
            "s3:DeleteObjectTagging",
            "s3:DeleteObjectVersionTagging",
        ))],
        Op::GetObjectAcl => vec![obj(versioned(
            version,
            "s3:GetObjectAcl",
            "s3:GetObjectVersionAcl",
        ))],
        Op::PutObjectAcl => vec![obj(versioned(
            version,
            "s3:PutObjectAcl",
            "s3:PutObjectVersionAcl",
        ))],
        Op::GetObjectRetention => vec![obj("s3:GetObjectRetention")],
        Op::PutObjectRetention => vec![obj("s3:PutObjectRetention")],
        Op::GetObjectLegalHold => vec![obj("s3:GetObjectLegalHold")],
        Op::PutObjectLegalHold => vec![obj("s3:PutObjectLegalHold")],
        Op::GetObjectAttributes => vec![
            obj(versioned(
                version,
                "s3:GetObjectAttributes",
                "s3:GetObjectVersionAttributes",
            )),
            obj(versioned(version, "s3:GetObject", "s3:GetObjectVersion")),
        ],
    };
    if matches!(
        op,
        Op::PutObject | Op::CreateMultipartUpload | Op::CopyObject
    ) {
        if headers.contains_key("x-amz-tagging") {
            out.push(obj("s3:PutObjectTagging"));
        }
        if headers.keys().any(|k| {
            let n = k.as_str();
            n == "x-amz-acl" || n.starts_with("x-amz-grant-")
        }) {
            out.push(obj("s3:PutObjectAcl"));
        }
    }
    // Object lock: retention and legal hold set on write, governance bypass on delete.
    if matches!(
        op,
        Op::PutObject | Op::CreateMultipartUpload | Op::CopyObject
    ) {
        if headers.contains_key("x-amz-object-lock-mode")
            || headers.contains_key("x-amz-object-lock-retain-until-date")
        {
            out.push(obj("s3:PutObjectRetention"));
        }
        if headers.contains_key("x-amz-object-lock-legal-hold") {
            out.push(obj("s3:PutObjectLegalHold"));
        }
    }
    if matches!(
        op,
        Op::DeleteObject | Op::DeleteObjects | Op::PutObjectRetention
    ) && headers
        .get("x-amz-bypass-governance-retention")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        out.push(if op != Op::DeleteObjects {
            obj("s3:BypassGovernanceRetention")
        } else {
            bkt("s3:BypassGovernanceRetention")
        });
    }
    // The source check stays last (the handler decides it with the source's tags).
    if matches!(op, Op::CopyObject | Op::UploadPartCopy) {
        if let Some((sb, sk, sv)) = headers
            .get("x-amz-copy-source")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::multipart::parse_copy_source)
        {
            out.push(Check {
                action: versioned(sv.is_some(), "s3:GetObject", "s3:GetObjectVersion"),
                resource: object_arn(&sb, &sk),
            });
        }
    }
    out
}

/// The request's condition keys (names lowercased).
#[derive(Clone)]
pub struct Context {
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant: &str,
        source_ip: std::net::IpAddr,
        tls: bool,
        now: i64,
        mfa_age: Option<i64>,
        op: Op,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> Context {
        let mut keys = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            keys.insert(k.to_string(), vec![v]);
        };
        set("aws:username", tenant.to_string());
        set("aws:userid", tenant.to_string());
        set("aws:sourceip", source_ip.to_string());
        set("aws:securetransport", tls.to_string());
        set("aws:currenttime", iso8601(now));
        set("aws:epochtime", now.to_string());
        if let Some(age) = mfa_age {
            set("aws:multifactorauthpresent", "true".into());
            set("aws:multifactorauthage", age.to_string());
        }
        if matches!(
            op,
            Op::ListObjects | Op::ListObjectsV2 | Op::ListObjectVersions | Op::ListMultipartUploads
        ) {
            for (q, k) in [
                ("prefix", "s3:prefix"),
                ("delimiter", "s3:delimiter"),
                ("max-keys", "s3:max-keys"),
            ] {
                if let Some((_, v)) = query.iter().find(|(n, _)| n == q) {
                    set(k, v.clone());
                }
            }
        }
        if let Some((_, v)) = query.iter().find(|(n, _)| n == "versionId") {
            set("s3:versionid", v.clone());
        }
        if let Some(t) = headers.get("x-amz-tagging").and_then(|v| v.to_str().ok()) {
            let mut tag_keys = Vec::new();
            for (k, v) in crate::sigv4::parse_query(t) {
                set(
                    &format!("s3:requestobjecttag/{}", k.to_ascii_lowercase()),
                    v,
                );
                tag_keys.push(k);
            }
            keys.insert("s3:requestobjecttagkeys".into(), tag_keys);
        }
        Context { keys }
    }

    /// Adds the tags of the object the request acts on (`s3:ExistingObjectTag/<key>`).
    pub fn existing_tags(&mut self, tags: &[(String, String)]) {
        for (k, v) in tags {
            self.keys.insert(
                format!("s3:existingobjecttag/{}", k.to_ascii_lowercase()),
                vec![v.clone()],
            );
        }
    }
}

/// Whether any of the policies looks at existing object tags (then Chmura fetches them).
pub fn needs_existing_tags(policies: &[Policy]) -> bool {
    policies.iter().any(|p| {
        p.statements.iter().any(|s| {
            s.conditions.iter().any(|c| {
                c.key
                    .to_ascii_lowercase()
                    .starts_with("s3:existingobjecttag/")
            })
        })
    })
}

fn iso8601(secs: i64) -> String {
    crate::auth::format_iso8601(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64),
    )
}

/// Decides every check; the first that is not allowed refuses the request. On success, the
/// statements that allowed them (for the audit log).
pub fn authorize(policies: &[Policy], checks: &[Check], ctx: &Context) -> Result<String, S3Error> {
    let mut allowed = Vec::new();
    for c in checks {
        let d = policy::decide(
            policies,
            &policy::Request {
                action: c.action,
                resource: &c.resource,
                context: &ctx.keys,
            },
        );
        if !d.allowed() {
            let why = match &d {
                Decision::Deny { source, statement } => {
                    format!("explicit deny: {source} Statement[{statement}]")
                }
                _ => "no statement allows it".to_string(),
            };
            return Err(access_denied()
                .with_detail(format!("policy: {} on {}: {why}", c.action, c.resource)));
        }
        if let Decision::Allow { source, statement } = d {
            allowed.push(format!("{}: {source} Statement[{statement}]", c.action));
        }
    }
    Ok(allowed.join("; "))
}

pub fn access_denied() -> S3Error {
    S3Error::new("AccessDenied", "Access Denied")
}

/// TOTP (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps.
pub fn totp(secret: &[u8], step: u64) -> u32 {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = aws_lc_rs::hmac::sign(&key, &step.to_be_bytes());
    let h = tag.as_ref();
    let off = (h[19] & 0x0f) as usize;
    let bin = (u32::from(h[off] & 0x7f) << 24)
        | (u32::from(h[off + 1]) << 16)
        | (u32::from(h[off + 2]) << 8)
        | u32::from(h[off + 3]);
    bin % 1_000_000
}

/// Codes already used, per tenant and device, for the steps they could still be accepted in:
/// a code is good once. The memory is per Chmura process (see README: replicas do not share
/// it, so a code can be replayed at most once per other replica within its 90-second window).
#[derive(Default)]
pub struct MfaReplay {
    used: Mutex<HashMap<DeviceId, VecDeque<(u64, u32)>>>,
    /// Times of recent wrong codes per device: guessing is cut off after a few.
    failures: Mutex<HashMap<DeviceId, VecDeque<i64>>>,
}

/// Wrong codes tolerated per device in [`MFA_LOCKOUT_SECS`] before every code is refused.
pub const MFA_MAX_FAILURES: usize = 5;
pub const MFA_LOCKOUT_SECS: i64 = 300;

/// (tenant, device serial).
type DeviceId = (String, String);

impl MfaReplay {
    /// Checks `x-amz-mfa: SERIAL CODE` for `tenant` at `now`; returns the code's age in seconds.
    pub fn verify(
        &self,
        tenant: &str,
        devices: &[MfaDevice],
        header: &str,
        now: i64,
    ) -> Result<i64, S3Error> {
        let invalid = || {
            S3Error::new(
                "AccessDenied",
                "The MFA serial number or token code in x-amz-mfa is not valid.",
            )
        };
        let mut parts = header.split(' ').filter(|s| !s.is_empty());
        let (Some(serial), Some(code), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(S3Error::invalid_request(
                "x-amz-mfa must be the device serial number, a space, and the code.",
            ));
        };
        let device = devices
            .iter()
            .find(|d| d.serial.as_bytes() == serial.as_bytes())
            .ok_or_else(invalid)?;
        let id = (tenant.to_string(), device.serial.clone());
        {
            let mut f = self
                .failures
                .lock()
                .map_err(|_| S3Error::internal("mfa lock"))?;
            let list = f.entry(id.clone()).or_default();
            list.retain(|t| *t + MFA_LOCKOUT_SECS > now);
            if list.len() >= MFA_MAX_FAILURES {
                return Err(S3Error::new(
                    "AccessDenied",
                    "Too many wrong MFA codes for this device; try again later.",
                ));
            }
        }
        let fail = |e: S3Error| {
            if let Ok(mut f) = self.failures.lock() {
                f.entry(id.clone()).or_default().push_back(now);
            }
            e
        };
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(invalid()));
        }
        let code: u32 = code.parse().map_err(|_| fail(invalid()))?;
        let now_step = (now.max(0) as u64) / 30;
        let mut hit = None;
        for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
            let expect = totp(device.secret.expose(), step);
            // Constant time: the compare does not stop at the first differing digit.
            if crate::sigv4::ct_eq(
                format!("{expect:06}").as_bytes(),
                format!("{code:06}").as_bytes(),
            ) {
                hit = Some(step);
            }
        }
        let step = hit.ok_or_else(|| fail(invalid()))?;
        let mut used = self
            .used
            .lock()
            .map_err(|_| S3Error::internal("mfa lock"))?;
        let list = used
            .entry((tenant.to_string(), device.serial.clone()))
            .or_default();
        list.retain(|(s, _)| *s + 2 >= now_step);
        if list.iter().any(|(s, c)| *s == step && *c == code) {
            return Err(S3Error::new(
                "AccessDenied",
                "This MFA code was already used; wait for the next one.",
            ));
        }
        list.push_back((step, code));
        Ok((now - (step as i64) * 30).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1 seed "12345678901234567890"; 8-digit codes mod 10^6.
        let seed = b"12345678901234567890";
        for (t, code8) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(totp(seed, t / 30), code8 % 1_000_000, "T={t}");
        }
    }

    #[test]
    fn codes_are_accepted_once_within_their_window() {
        let dev = MfaDevice {
            serial: "dev-1".into(),
            secret: chmura_config::SecretBytes::from_bytes(b"12345678901234567890".to_vec()),
        };
        let r = MfaReplay::default();
        let now = 1_111_111_111i64;
        let code = totp(b"12345678901234567890", now as u64 / 30);
        let h = format!("dev-1 {code:06}");
        assert!(r.verify("t", std::slice::from_ref(&dev), &h, now).is_ok());
        assert!(
            r.verify("t", std::slice::from_ref(&dev), &h, now + 5)
                .is_err(),
            "replay"
        );
        // The previous step's code is still good (once), two steps back is not.
        let prev = totp(b"12345678901234567890", now as u64 / 30 - 1);
        assert!(r
            .verify(
                "t",
                std::slice::from_ref(&dev),
                &format!("dev-1 {prev:06}"),
                now
            )
            .is_ok());
        let old = totp(b"12345678901234567890", now as u64 / 30 - 2);
        assert!(r
            .verify(
                "t",
                std::slice::from_ref(&dev),
                &format!("dev-1 {old:06}"),
                now
            )
            .is_err());
        assert!(r
            .verify("t", std::slice::from_ref(&dev), "other 123456", now)
            .is_err());
        assert!(r
            .verify("t", std::slice::from_ref(&dev), "dev-1", now)
            .is_err());
        assert!(r
            .verify("t", std::slice::from_ref(&dev), "dev-1 12345a", now)
            .is_err());
    }

    #[test]
    fn actions_follow_the_aws_map() {
        let h = HeaderMap::new();
        let q = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let a = |op, query: &[(&str, &str)]| -> Vec<&'static str> {
            checks(op, Some("b"), "k", &q(query), &h)
                .into_iter()
                .map(|c| c.action)
                .collect()
        };
        assert_eq!(a(Op::UploadPart, &[]), vec!["s3:PutObject"]);
        assert_eq!(a(Op::ListObjectsV2, &[]), vec!["s3:ListBucket"]);
        assert_eq!(
            a(Op::GetObject, &[("versionId", "1")]),
            vec!["s3:GetObjectVersion"]
        );
        assert_eq!(
            a(Op::DeleteObject, &[("versionId", "1")]),
            vec!["s3:DeleteObjectVersion"]
        );
        assert_eq!(a(Op::ListParts, &[]), vec!["s3:ListMultipartUploadParts"]);
        assert_eq!(
            a(Op::PutObjectAcl, &[("versionId", "1")]),
            vec!["s3:PutObjectVersionAcl"]
        );
        assert_eq!(
            a(Op::GetObjectLegalHold, &[]),
            vec!["s3:GetObjectLegalHold"]
        );
        assert_eq!(
            a(Op::PutObjectLockConfiguration, &[]),
            vec!["s3:PutBucketObjectLockConfiguration"]
        );
        assert_eq!(
            a(Op::DeletePublicAccessBlock, &[]),
            vec!["s3:PutBucketPublicAccessBlock"]
        );
        assert_eq!(a(Op::DeleteBucketCors, &[]), vec!["s3:PutBucketCORS"]);
        assert_eq!(
            a(Op::PutBucketNotificationConfiguration, &[]),
            vec!["s3:PutBucketNotification"]
        );
        assert_eq!(
            a(Op::GetBucketAccelerateConfiguration, &[]),
            vec!["s3:GetAccelerateConfiguration"]
        );
        assert_eq!(
            a(Op::DeleteBucketWebsite, &[]),
            vec!["s3:DeleteBucketWebsite"]
        );
        let mut ch = HeaderMap::new();
        ch.insert("x-amz-copy-source", "/src/a%20b".parse().unwrap());
        let c = checks(Op::CopyObject, Some("b"), "k", &[], &ch);
        assert_eq!(
            c,
            vec![
                Check {
                    action: "s3:PutObject",
                    resource: "arn:aws:s3:::b/k".into()
                },
                Check {
                    action: "s3:GetObject",
                    resource: "arn:aws:s3:::src/a b".into()
                },
            ]
        );
        let mut lock = HeaderMap::new();
        lock.insert("x-amz-object-lock-mode", "COMPLIANCE".parse().unwrap());
        lock.insert("x-amz-object-lock-legal-hold", "ON".parse().unwrap());
        let a: Vec<&str> = checks(Op::PutObject, Some("b"), "k", &[], &lock)
            .into_iter()
            .map(|c| c.action)
            .collect();
        assert_eq!(
            a,
            vec![
                "s3:PutObject",
                "s3:PutObjectRetention",
                "s3:PutObjectLegalHold"
            ]
        );
        let mut bypass = HeaderMap::new();
        bypass.insert("x-amz-bypass-governance-retention", "true".parse().unwrap());
        let a: Vec<&str> = checks(
            Op::DeleteObject,
            Some("b"),
            "k",
            &q(&[("versionId", "v")]),
            &bypass,
        )
        .into_iter()
        .map(|c| c.action)
        .collect();
        assert_eq!(
            a,
            vec!["s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"]
        );
        assert_eq!(
            checks(Op::ListBuckets, None, "", &[], &h),
            vec![Check {
                action: "s3:ListAllMyBuckets",
                resource: "*".into()
            }]
        );
    }
}
