//! Client authentication: every SigV4 and SigV2 form S3 clients send, checked against the
//! tenant's secret in constant time. Pure: the caller passes the time.
//!
//! Forms: SigV4 `Authorization` header (payload: hex SHA-256, `UNSIGNED-PAYLOAD`, or one of the
//! three aws-chunked streaming modes), SigV4 presigned query, SigV2 header and SigV2 presigned
//! query. The result says how the body must be checked ([`PayloadCheck`]); the body adapter
//! ([`crate::body`]) does that while streaming.

use std::collections::HashMap;
use std::sync::Arc;

use chmura_config::Tenant;

use crate::chunked::ChunkSigner;
use crate::error::S3Error;
use crate::sigv4::{self, SigningKey};

/// Longest validity of a presigned URL (7 days).
pub const MAX_PRESIGN_EXPIRES: i64 = 604_800;

/// Tenants by access key id, with each tenant's signing key of the day.
pub struct TenantIndex {
    by_key: HashMap<String, Arc<Tenant>>,
    /// Access key id → (date, region, key): four HMACs saved on every request after the
    /// first of the day. Bounded by the number of tenants.
    day_keys: std::sync::Mutex<HashMap<String, (String, String, SigningKey)>>,
}

impl TenantIndex {
    pub fn new(tenants: &[Tenant]) -> Self {
        TenantIndex {
            by_key: tenants
                .iter()
                .map(|t| (t.access_key_id.clone(), Arc::new(t.clone())))
                .collect(),
            day_keys: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's SigV4 signing key for `date` and `region` (derived once per day).
    pub(crate) fn signing_key(&self, tenant: &Tenant, date: &str, region: &str) -> SigningKey {
        let mut keys = self.day_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, r, k)) = keys.get(&tenant.access_key_id) {
            if d == date && r == region {
                return k.clone();
            }
        }
        let k = SigningKey::derive(tenant.secret_access_key.expose(), date, region, "s3");
        // Only a tenant of this index is kept (the map stays bounded).
        if self.by_key.contains_key(&tenant.access_key_id) {
            keys.insert(
                tenant.access_key_id.clone(),
                (date.to_string(), region.to_string(), k.clone()),
            );
        }
        k
    }

    pub(crate) fn get(&self, access_key_id: &str) -> Result<&Arc<Tenant>, S3Error> {
        self.by_key.get(access_key_id).ok_or_else(|| {
            S3Error::new(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        })
    }
}

/// How the request body must be verified.
#[derive(Clone)]
pub enum PayloadCheck {
    /// Nothing signed about the body (UNSIGNED-PAYLOAD, presigned, SigV2).
    Unsigned,
    /// The body's SHA-256 must equal this.
    Sha256([u8; 32]),
    /// aws-chunked framing; `signer` verifies the chunk chain in the signed modes.
    Chunked {
        signer: Option<ChunkSigner>,
        trailers: bool,
    },
}

/// Which authentication form was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    V4Header,
    V4Query,
    V2Header,
    V2Query,
    /// POST Object: the form's policy signed with SigV4 or SigV2 (post.rs).
    PostV4,
    PostV2,
}

pub struct Authenticated {
    pub tenant: Arc<Tenant>,
    pub kind: AuthKind,
    pub payload: PayloadCheck,
}

/// What authentication looks at.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a http::HeaderMap,
    /// The bucket when addressed virtual-host style (SigV2 puts it in the resource).
    pub vhost_bucket: Option<&'a str>,
}

pub struct AuthSettings<'a> {
    pub region: &'a str,
    pub max_skew_secs: i64,
    /// Unix seconds.
    pub now: i64,
}

/// Query parameters that carry authentication and are stripped before forwarding.
pub fn is_auth_param(name: &str) -> bool {
    matches!(
        name,
        "X-Amz-Algorithm"
            | "X-Amz-Credential"
            | "X-Amz-Date"
            | "X-Amz-Expires"
            | "X-Amz-SignedHeaders"
            | "X-Amz-Signature"
            | "X-Amz-Security-Token"
            | "X-Amz-Content-Sha256"
            | "AWSAccessKeyId"
            | "Signature"
            | "Expires"
    )
}

pub fn authenticate(
    req: &RequestView<'_>,
    tenants: &TenantIndex,
    s: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let has_q = |n: &str| req.query.iter().any(|(k, _)| k == n);
    // An empty Authorization header is no authorization (S3: AccessDenied).
    let authorization = req
        .headers
        .get(http::header::AUTHORIZATION)
        .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
    match authorization {
        Some(v) => {
            if has_q("X-Amz-Signature") || has_q("Signature") {
                return Err(S3Error::invalid_request(
                    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
                ));
            }
            let v = v.to_str().map_err(|_| {
                S3Error::new(
                    "AuthorizationHeaderMalformed",
                    "The authorization header is malformed.",
                )
            })?;
            if let Some(rest) = v.strip_prefix("AWS4-HMAC-SHA256 ") {
                v4_header(req, rest, tenants, s)
            } else if let Some(rest) = v.strip_prefix("AWS ") {
                v2_header(req, rest, tenants, s)
            } else {
                Err(S3Error::new(
                    "InvalidArgument",
                    "Unsupported Authorization Type",
                ))
            }
        }
        None if has_q("X-Amz-Algorithm") || has_q("X-Amz-Signature") => v4_query(req, tenants, s),
        None if has_q("AWSAccessKeyId") || has_q("Signature") => v2_query(req, tenants, s),
        None => Err(S3Error::access_denied().with_detail("anonymous request")),
    }
}

pub(crate) struct Credential<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
}

pub(crate) fn parse_credential<'a>(
    c: &'a str,
    s: &AuthSettings<'_>,
    query: bool,
) -> Result<Credential<'a>, S3Error> {
    let code = if query {
        "AuthorizationQueryParametersError"
    } else {
        "AuthorizationHeaderMalformed"
    };
    let parts: Vec<&str> = c.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[1].len() != 8 {
        return Err(S3Error::new(code, "The credential is malformed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."));
    }
    if parts[3] != "s3" {
        return Err(S3Error::new(
            code,
            format!(
                "The credential service '{}' is wrong; expecting 's3'",
                parts[3]
            ),
        ));
    }
    if parts[2] != s.region {
        return Err(S3Error::new(
            code,
            format!(
                "The authorization header is malformed; the region '{}' is wrong; expecting '{}'",
                parts[2], s.region
            ),
        )
        .with_element("Region", s.region));
    }
    Ok(Credential {
        access_key_id: parts[0],
        date: parts[1],
        region: parts[2],
    })
}

fn check_skew(t: i64, s: &AuthSettings<'_>) -> Result<(), S3Error> {
    if (t - s.now).abs() > s.max_skew_secs {
        return Err(S3Error::new(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        ));
    }
    Ok(())
}

fn parse_signed_headers(list: &str, code: &'static str) -> Result<Vec<String>, S3Error> {
    let names: Vec<String> = list
        .split(';')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    if names.iter().any(String::is_empty) || !names.iter().any(|n| n == "host") {
        return Err(S3Error::new(code, "SignedHeaders must include host."));
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    if sorted != names {
        return Err(S3Error::new(
            code,
            "SignedHeaders must be sorted and unique.",
        ));
    }
    Ok(names)
}

/// What a SigV4 signature covers besides the request itself.
struct V4Claim<'a> {
    cred: &'a Credential<'a>,
    amz_date: &'a str,
    signed: &'a [String],
    canonical_query: &'a str,
    payload_hash: &'a str,
    provided: &'a str,
}

/// `x-amz-*` headers that may be present without being signed (informational only).
const UNSIGNED_AMZ_ALLOWED: &[&str] = &["x-amz-user-agent"];

fn verify_v4(
    req: &RequestView<'_>,
    key: SigningKey,
    c: &V4Claim<'_>,
) -> Result<SigningKey, S3Error> {
    let (cred, amz_date, signed) = (c.cred, c.amz_date, c.signed);
    // Every x-amz-* header changes what S3 does, so each must be covered by the signature
    // (S3 refuses unsigned ones the same way).
    for name in req.headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-amz-")
            && !UNSIGNED_AMZ_ALLOWED.contains(&n)
            && !signed.iter().any(|s| s == n)
        {
            return Err(S3Error::new(
                "AccessDenied",
                "There were headers present in the request which were not signed",
            )
            .with_detail(format!("unsigned header {n}")));
        }
    }
    let cr = sigv4::canonical_request(
        req.method,
        &sigv4::canonical_uri(req.raw_path),
        c.canonical_query,
        &sigv4::canonical_headers(req.headers, signed),
        &signed.join(";"),
        c.payload_hash,
    );
    let scope = format!("{}/{}/s3/aws4_request", cred.date, cred.region);
    let sts = sigv4::string_to_sign(amz_date, &scope, &cr);
    let expected = key.sign(&sts);
    if !sigv4::ct_eq(expected.as_bytes(), c.provided.as_bytes()) {
        return Err(S3Error::signature_mismatch().with_detail("v4 signature mismatch"));
    }
    Ok(key)
}

fn v4_header(
    req: &RequestView<'_>,
    rest: &str,
    tenants: &TenantIndex,
    s: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    const MAL: &str = "AuthorizationHeaderMalformed";
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(S3Error::new(MAL, "The authorization header is malformed; missing Credential, SignedHeaders or Signature."));
    };
    let cred = parse_credential(credential, s, false)?;
    let tenant = tenants.get(cred.access_key_id)?;
    let signed = parse_signed_headers(signed_headers, MAL)?;

    let amz_date = match req.headers.get("x-amz-date").and_then(|v| v.to_str().ok()) {
        Some(d) => d.to_string(),
        None => {
            let date = req
                .headers
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| S3Error::access_denied().with_detail("no x-amz-date or Date"))?;
            let t = sigv4::parse_http_date(date)
                .ok_or_else(|| S3Error::access_denied().with_detail("unparseable Date"))?;
            format_amz_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
        }
    };
    let t = sigv4::parse_amz_date(&amz_date)
        .ok_or_else(|| S3Error::access_denied().with_detail("unparseable x-amz-date"))?;
    if !amz_date.starts_with(cred.date) {
        return Err(S3Error::new(
            MAL,
            "The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    check_skew(t, s)?;

    let payload_hash = req
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            S3Error::invalid_request(
                "Missing required header for this request: x-amz-content-sha256",
            )
        })?
        .to_string();
    let payload = match payload_hash.as_str() {
        "UNSIGNED-PAYLOAD" => PayloadCheck::Unsigned,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => PayloadCheck::Chunked {
            signer: None,
            trailers: true,
        },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
            PayloadCheck::Chunked {
                signer: None,
                trailers: payload_hash.ends_with("TRAILER"),
            }
        }
        h => PayloadCheck::Sha256(sha256_value(h).ok_or_else(bad_sha_header)?),
    };
    let canonical_query = sigv4::canonical_query(req.query, None);
    let key = verify_v4(
        req,
        tenants.signing_key(tenant, cred.date, cred.region),
        &V4Claim {
            cred: &cred,
            amz_date: &amz_date,
            signed: &signed,
            canonical_query: &canonical_query,
            payload_hash: &payload_hash,
            provided: &signature.to_ascii_lowercase(),
        },
    )?;
    let payload = match payload {
        PayloadCheck::Chunked { trailers, .. }
            if payload_hash.starts_with("STREAMING-AWS4-HMAC") =>
        {
            PayloadCheck::Chunked {
                signer: Some(ChunkSigner {
                    key,
                    amz_date: amz_date.clone(),
                    scope: format!("{}/{}/s3/aws4_request", cred.date, cred.region),
                    prev_signature: signature.to_ascii_lowercase(),
                }),
                trailers,
            }
        }
        p => p,
    };
    Ok(Authenticated {
        tenant: tenant.clone(),
        kind: AuthKind::V4Header,
        payload,
    })
}

/// A stated payload hash: 64 hex digits, in either case.
fn sha256_value(h: &str) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    (h.len() == 64 && hex::decode_to_slice(h.to_ascii_lowercase(), &mut d).is_ok()).then_some(d)
}

fn bad_sha_header() -> S3Error {
    S3Error::new(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value, or a valid sha256 value.",
    )
}

fn query_value<'a>(req: &'a RequestView<'_>, name: &str) -> Option<&'a str> {
    req.query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn v4_query(
    req: &RequestView<'_>,
    tenants: &TenantIndex,
    s: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    const QE: &str = "AuthorizationQueryParametersError";
    let get = |n: &str| {
        query_value(req, n).ok_or_else(|| {
            S3Error::new(
                QE,
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
            )
        })
    };
    if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err(S3Error::new(
            QE,
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let cred = parse_credential(get("X-Amz-Credential")?, s, true)?;
    let amz_date = get("X-Amz-Date")?;
    let t = sigv4::parse_amz_date(amz_date).ok_or_else(|| {
        S3Error::new(
            QE,
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        )
    })?;
    if !amz_date.starts_with(cred.date) {
        return Err(S3Error::new(
            QE,
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    let expires: i64 = get("X-Amz-Expires")?
        .parse()
        .map_err(|_| S3Error::new(QE, "X-Amz-Expires should be a number"))?;
    if expires < 0 {
        return Err(S3Error::new(QE, "X-Amz-Expires must be non-negative"));
    }
    if expires > MAX_PRESIGN_EXPIRES {
        return Err(S3Error::new(
            QE,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    let tenant = tenants.get(cred.access_key_id)?;
    let signed = parse_signed_headers(get("X-Amz-SignedHeaders")?, QE)?;
    let signature = get("X-Amz-Signature")?.to_ascii_lowercase();
    // The payload hash: UNSIGNED-PAYLOAD, unless the URL or the request states one (aws-sdk-go
    // v1 signs an `X-Amz-Content-Sha256` header set before presigning with its value, as
    // MinIO and S3 verify it); a stated SHA-256 is then checked against the body.
    let payload_hash = query_value(req, "X-Amz-Content-Sha256")
        .or_else(|| {
            req.headers
                .get("x-amz-content-sha256")
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("UNSIGNED-PAYLOAD");
    if payload_hash.starts_with("STREAMING-") {
        return Err(S3Error::new(
            QE,
            "Presigned requests must use UNSIGNED-PAYLOAD or the payload's SHA-256.",
        ));
    }
    let canonical_query = sigv4::canonical_query(req.query, Some("X-Amz-Signature"));
    verify_v4(
        req,
        tenants.signing_key(tenant, cred.date, cred.region),
        &V4Claim {
            cred: &cred,
            amz_date,
            signed: &signed,
            canonical_query: &canonical_query,
            payload_hash,
            provided: &signature,
        },
    )?;
    // Signature first, then time: a forged URL learns nothing about expiry.
    // Valid for `expires` seconds from X-Amz-Date: X-Amz-Expires=0 is expired at once.
    if s.now >= t + expires {
        return Err(S3Error::new("AccessDenied", "Request has expired"));
    }
    if t - s.now > s.max_skew_secs {
        return Err(S3Error::new("AccessDenied", "Request is not valid yet"));
    }
    let payload = match payload_hash {
        "UNSIGNED-PAYLOAD" => PayloadCheck::Unsigned,
        // Signed as it is, but no body has a hash that is no SHA-256.
        h => PayloadCheck::Sha256(sha256_value(h).ok_or_else(|| {
            S3Error::new(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        })?),
    };
    Ok(Authenticated {
        tenant: tenant.clone(),
        kind: AuthKind::V4Query,
        payload,
    })
}

/// The SigV2 string to sign: one form, or two when a sub-resource has an empty value
/// (`uploads=`), which signers canonicalize either as sent or as a bare name.
///
/// A path-style request for a bucket itself (`/bucket`) is signed by botocore (and so by S3's
/// verifier) with the resource `/bucket/`; both forms are candidates.
fn v2_strings_to_sign(req: &RequestView<'_>, date_slot: &str) -> Vec<String> {
    let mut paths = vec![req.raw_path.to_string()];
    if req.vhost_bucket.is_none() && req.raw_path.len() > 1 && !req.raw_path[1..].contains('/') {
        paths.push(format!("{}/", req.raw_path));
    }
    let mut out: Vec<String> = Vec::new();
    for path in &paths {
        for bare in [false, true] {
            let sts = v2_string_to_sign(req, path, date_slot, bare);
            if !out.contains(&sts) {
                out.push(sts);
            }
        }
    }
    out
}

fn v2_string_to_sign(
    req: &RequestView<'_>,
    raw_path: &str,
    date_slot: &str,
    empty_as_bare: bool,
) -> String {
    let h = |n: &str| {
        req.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{}\n{}\n{}\n{}\n{}{}",
        req.method,
        h("content-md5"),
        h("content-type"),
        date_slot,
        sigv4::sigv2_amz_headers(req.headers),
        sigv4::sigv2_resource(req.vhost_bucket, raw_path, req.raw_query, empty_as_bare)
    )
}

fn v2_check(secret: &str, candidates: &[String], provided: &str) -> Result<(), S3Error> {
    // Every candidate is compared (in constant time each), whichever matches.
    let mut ok = false;
    for sts in candidates {
        let expected = sigv4::sigv2_sign(secret, sts);
        ok |= sigv4::ct_eq(expected.as_bytes(), provided.trim().as_bytes());
    }
    if !ok {
        return Err(S3Error::signature_mismatch().with_detail("v2 signature mismatch"));
    }
    Ok(())
}

fn v2_header(
    req: &RequestView<'_>,
    rest: &str,
    tenants: &TenantIndex,
    s: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let (akid, sig) = rest.rsplit_once(':').ok_or_else(|| {
        S3Error::new(
            "InvalidArgument",
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
        )
    })?;
    let tenant = tenants.get(akid.trim())?;
    let (date_slot, t) = if let Some(d) =
        req.headers.get("x-amz-date").and_then(|v| v.to_str().ok())
    {
        (String::new(), parse_any_date(d))
    } else {
        let d = req
            .headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                S3Error::access_denied()
                    .with_detail("AWS authentication requires a valid Date or x-amz-date header")
            })?;
        (d.trim().to_string(), parse_any_date(d))
    };
    // A date before 1970 is no valid date to S3 (AccessDenied, not RequestTimeTooSkewed).
    let t = t.filter(|t| *t >= 0).ok_or_else(|| {
        S3Error::access_denied()
            .with_detail("AWS authentication requires a valid Date or x-amz-date header")
    })?;
    // The clock first, as for SigV4: a request from a skewed clock is told so.
    check_skew(t, s)?;
    v2_check(
        tenant.secret_access_key.expose(),
        &v2_strings_to_sign(req, &date_slot),
        sig,
    )?;
    Ok(Authenticated {
        tenant: tenant.clone(),
        kind: AuthKind::V2Header,
        payload: PayloadCheck::Unsigned,
    })
}

fn v2_query(
    req: &RequestView<'_>,
    tenants: &TenantIndex,
    s: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let (Some(akid), Some(sig), Some(expires)) = (
        query_value(req, "AWSAccessKeyId"),
        query_value(req, "Signature"),
        query_value(req, "Expires"),
    ) else {
        return Err(S3Error::access_denied().with_detail("incomplete SigV2 query authentication"));
    };
    let tenant = tenants.get(akid)?;
    let exp: i64 = expires
        .parse()
        .map_err(|_| S3Error::access_denied().with_detail("Expires is not a number"))?;
    v2_check(
        tenant.secret_access_key.expose(),
        &v2_strings_to_sign(req, expires),
        sig,
    )?;
    if s.now > exp {
        return Err(S3Error::new("AccessDenied", "Request has expired"));
    }
    Ok(Authenticated {
        tenant: tenant.clone(),
        kind: AuthKind::V2Query,
        payload: PayloadCheck::Unsigned,
    })
}

fn parse_any_date(d: &str) -> Option<i64> {
    sigv4::parse_amz_date(d.trim()).or_else(|| sigv4::parse_http_date(d))
}

/// Formats Unix time as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` (S3's XML timestamps, audit lines, aws:CurrentTime).
pub fn format_iso8601(t: std::time::SystemTime) -> String {
    let s = format_amz_date(t);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chmura_config::Secret;

    fn tenants() -> TenantIndex {
        TenantIndex::new(&[Tenant {
            name: "t".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            kms_key_id: None,
            policies: vec![],
            mfa_devices: vec![],
            buckets: None,
        }])
    }

    fn settings(now: i64) -> AuthSettings<'static> {
        AuthSettings {
            region: "us-east-1",
            max_skew_secs: 900,
            now,
        }
    }

    #[test]
    fn http_dates_as_clients_write_them() {
        let t = 1369353600 + 3661; // Fri, 24 May 2013 01:01:01 GMT
        for d in [
            "Fri, 24 May 2013 01:01:01 GMT",
            "Fri, 24 May 2013 01:01:01 -0000", // Python's email.utils.formatdate (botocore)
            "Fri, 24 May 2013 01:01:01 +0000",
            "Fri, 24 May 2013 03:01:01 +0200",
            "Thu, 23 May 2013 23:01:01 -0200",
            "Tue, 24 May 2013 01:01:01 GMT", // wrong weekday: S3 does not check it
            "24 May 2013 01:01:01 UTC",
            "Friday, 24-May-13 01:01:01 GMT", // RFC 850, through httpdate
            "Fri May 24 01:01:01 2013",       // asctime
        ] {
            assert_eq!(sigv4::parse_http_date(d), Some(t), "{d}");
        }
        for bad in [
            "",
            "Fri, 24 May 2013 01:01:01 EST",
            "Fri, 24 Foo 2013 01:01:01 GMT",
            "Fri, 32 May 2013 01:01:01 GMT",
            "Fri, 24 May 2013 25:01:01 GMT",
            "Fri, 24 May 2013 01:01 GMT",
            "Fri, 24 May 2013 01:01:01 +02",
            "20130524T010101Z",
        ] {
            assert_eq!(sigv4::parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn amz_date_round_trip() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1369353600 + 3661);
        let s = format_amz_date(t);
        assert_eq!(s, "20130524T010101Z");
        assert_eq!(sigv4::parse_amz_date(&s), Some(1369353600 + 3661));
    }

    // AWS's documented presigned URL example (sigv4-query-string-auth.html).
    fn presigned_view<'a>(
        query: &'a [(String, String)],
        raw_query: &'a str,
        h: &'a http::HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method: "GET",
            raw_path: "/test.txt",
            raw_query,
            query,
            headers: h,
            vhost_bucket: Some("examplebucket"),
        }
    }

    #[test]
    fn aws_documented_presigned_example_and_expiry() {
        let raw = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let q = sigv4::parse_query(raw);
        let mut h = http::HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        let v = presigned_view(&q, raw, &h);
        let t0 = 1369353600;
        let a = authenticate(&v, &tenants(), &settings(t0 + 100)).unwrap();
        assert_eq!(a.kind, AuthKind::V4Query);
        // Valid for X-Amz-Expires seconds: expired from t0 + 86400 on (so X-Amz-Expires=0 is
        // expired at once, as S3 answers it).
        assert!(authenticate(&v, &tenants(), &settings(t0 + 86399)).is_ok());
        for now in [t0 + 86400, t0 + 86401] {
            let e = authenticate(&v, &tenants(), &settings(now)).err().unwrap();
            assert_eq!(
                (e.code, e.message.as_str()),
                ("AccessDenied", "Request has expired"),
                "at t0 + {}",
                now - t0
            );
        }
        // Tampered signature.
        let raw2 = raw.replace("aeeed9", "aeeed8");
        let q2 = sigv4::parse_query(&raw2);
        let v2 = presigned_view(&q2, &raw2, &h);
        assert_eq!(
            authenticate(&v2, &tenants(), &settings(t0))
                .err()
                .unwrap()
                .code,
            "SignatureDoesNotMatch"
        );
        // Unknown key.
        let raw3 = raw.replace("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLF");
        let q3 = sigv4::parse_query(&raw3);
        let v3 = presigned_view(&q3, &raw3, &h);
        assert_eq!(
            authenticate(&v3, &tenants(), &settings(t0))
                .err()
                .unwrap()
                .code,
            "InvalidAccessKeyId"
        );
    }

    #[test]
    fn aws_documented_header_example_and_skew() {
        let mut h = http::HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        h.insert("range", "bytes=0-9".parse().unwrap());
        h.insert("x-amz-content-sha256", sigv4::EMPTY_SHA256.parse().unwrap());
        h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41".parse().unwrap());
        let v = RequestView {
            method: "GET",
            raw_path: "/test.txt",
            raw_query: "",
            query: &[],
            headers: &h,
            vhost_bucket: Some("examplebucket"),
        };
        let a = authenticate(&v, &tenants(), &settings(1369353600 + 60)).unwrap();
        assert!(matches!(a.payload, PayloadCheck::Sha256(_)));
        let e = authenticate(&v, &tenants(), &settings(1369353600 + 901))
            .err()
            .unwrap();
        assert_eq!(e.code, "RequestTimeTooSkewed");
        let v = RequestView {
            method: "HEAD",
            ..v
        };
        assert_eq!(
            authenticate(&v, &tenants(), &settings(1369353600))
                .err()
                .unwrap()
                .code,
            "SignatureDoesNotMatch"
        );
        let h2 = http::HeaderMap::new();
        let v = RequestView { headers: &h2, ..v };
        assert_eq!(
            authenticate(&v, &tenants(), &settings(1369353600))
                .err()
                .unwrap()
                .code,
            "AccessDenied"
        );
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use chmura_config::Secret;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary Authorization headers, query strings and paths never panic authentication.
        #[test]
        fn arbitrary_requests_never_panic(auth in "\\PC{0,200}", query in "[ -~]{0,200}", path in "/[ -~]{0,100}", date in "[0-9TZ]{0,20}") {
            let tenants = TenantIndex::new(&[Tenant {
                name: "t".into(),
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                kms_key_id: None,
                policies: vec![],
                mfa_devices: vec![],
                buckets: None,
            }]);
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&auth) {
                h.insert("authorization", v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&date) {
                h.insert("x-amz-date", v);
            }
            h.insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
            let q = sigv4::parse_query(&query);
            let v = RequestView { method: "GET", raw_path: &path, raw_query: &query, query: &q, headers: &h, vhost_bucket: None };
            let _ = authenticate(&v, &tenants, &AuthSettings { region: "us-east-1", max_skew_secs: 900, now: 1_369_353_600 });
            let _ = sigv4::canonical_uri(&path);
        }
    }
}
