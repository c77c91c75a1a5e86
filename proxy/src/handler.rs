//! One request, top to bottom: address → classify → authenticate → (policy: issue 5) → plan →
//! stream the body through the verifying adapter → re-sign and send upstream → map the response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use crate::auth::{self, AuthSettings, PayloadCheck, RequestView};
use crate::body::{Coalesce, Expectations, FailureSlot, VerifyingBody};
use crate::checksum::{decode_b64, ChecksumAlgorithm};
use crate::chunked::ChunkedDecoder;
use crate::error::S3Error;
use crate::ops::{self, Op};
use crate::sigv4;
use crate::upstream::{BoxError, UpstreamBody};
use crate::State;

pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Response bodies are passed on in frames of about this size (see [`Coalesce`]).
const RESPONSE_FRAME_TARGET: usize = 256 * 1024;

/// Longest accepted object key in bytes (S3's limit).
const MAX_KEY_BYTES: usize = 1024;
/// Longest accepted request target.
const MAX_URI_BYTES: usize = 16 * 1024;

/// Headers never forwarded upstream: hop-by-hop, the client's auth, and framing Chmura redoes.
const DROP_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    "date",
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
];

const DROP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-amz-request-id",
    "x-amz-id-2",
    "server",
];

pub async fn handle(
    state: Arc<State>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let request_id = new_request_id();
    let method = req.method().clone();
    let resource = req.uri().path().to_string();
    let mut ctx = LogCtx::default();
    let result = handle_inner(&state, conn, req, &mut ctx).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            match e.source {
                crate::error::ErrorSource::Client => tracing::info!(
                    request_id = %request_id, code = e.code, detail = e.detail.as_deref().unwrap_or(""), "request refused"
                ),
                _ => tracing::warn!(
                    request_id = %request_id, code = e.code, source = ?e.source, detail = e.detail.as_deref().unwrap_or(""), "request failed"
                ),
            }
            error_response(&e, &resource, &request_id, method == Method::HEAD)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amz-request-id", v.clone());
        resp.headers_mut().insert("x-amz-id-2", v);
    }
    tracing::info!(
        request_id = %request_id,
        peer = %conn.peer,
        tenant = ctx.tenant.as_deref().unwrap_or("-"),
        op = ctx.op.map(Op::name).unwrap_or("-"),
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(resp)
}

#[derive(Default)]
struct LogCtx {
    tenant: Option<String>,
    op: Option<Op>,
}

/// Bucket and key from the request target (path-style or virtual-hosted-style).
struct Address {
    bucket: Option<String>,
    key: String,
    vhost: bool,
}

fn address(
    headers: &HeaderMap,
    raw_path: &str,
    vhost_domain: Option<&str>,
) -> Result<Address, S3Error> {
    let invalid_uri = || S3Error::new("InvalidURI", "Couldn't parse the specified URI.");
    let decoded = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| invalid_uri())?;
    let path = decoded.strip_prefix('/').ok_or_else(invalid_uri)?;
    if let Some(domain) = vhost_domain {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.to_ascii_lowercase();
        if let Some(bucket) = host.strip_suffix(domain).and_then(|b| b.strip_suffix('.')) {
            if !bucket.is_empty() {
                return Ok(Address {
                    bucket: Some(bucket.to_string()),
                    key: path.to_string(),
                    vhost: true,
                });
            }
        }
    }
    if path.is_empty() {
        return Ok(Address {
            bucket: None,
            key: String::new(),
            vhost: false,
        });
    }
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    Ok(Address {
        bucket: Some(bucket.to_string()),
        key: key.to_string(),
        vhost: false,
    })
}

fn valid_bucket_name(b: &str) -> bool {
    (1..=255).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        && b != "."
        && b != ".."
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn handle_inner(
    state: &State,
    conn: ConnInfo,
    req: Request<Incoming>,
    ctx: &mut LogCtx,
) -> Result<Response<ResponseBody>, S3Error> {
    let server = &state.config.server;
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    if raw_path.len() + raw_query.len() > MAX_URI_BYTES {
        return Err(S3Error::new("InvalidURI", "The request URI is too long."));
    }
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > server.max_header_bytes {
        return Err(S3Error::new(
            "RequestHeaderSectionTooLarge",
            "Your request header section exceeds the maximum allowed size.",
        ));
    }

    // 1. Address and classify.
    let addr = address(
        &parts.headers,
        raw_path,
        server.virtual_host_domain.as_deref(),
    )?;
    if let Some(b) = &addr.bucket {
        if !valid_bucket_name(b) {
            return Err(S3Error::new(
                "InvalidBucketName",
                "The specified bucket is not valid.",
            ));
        }
    }
    if addr.key.len() > MAX_KEY_BYTES {
        return Err(S3Error::new("KeyTooLongError", "Your key is too long."));
    }
    let query = sigv4::parse_query(raw_query);
    let op = ops::classify(
        &parts.method,
        addr.bucket.as_deref(),
        &addr.key,
        &query,
        &parts.headers,
    )
    .ok_or_else(S3Error::not_implemented)?;
    ctx.op = Some(op);

    // 2. Authenticate.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let view = RequestView {
        method: parts.method.as_str(),
        raw_path,
        raw_query,
        query: &query,
        headers: &parts.headers,
        vhost_bucket: if addr.vhost {
            addr.bucket.as_deref()
        } else {
            None
        },
    };
    let settings = AuthSettings {
        region: &server.region,
        max_skew_secs: server.max_clock_skew_secs as i64,
        now,
    };
    let authed = auth::authenticate(&view, &state.tenants, &settings)?;
    ctx.tenant = Some(authed.tenant.name.clone());
    let _ = conn.tls; // Used by policy conditions (aws:SecureTransport) in issue 5.

    // 3. Policy: every authenticated tenant may do every classified operation until per-tenant
    //    policies land (issue 5).

    // 4. Plan the body.
    let (decoder, trailers_mode) = match &authed.payload {
        PayloadCheck::Chunked { signer, trailers } => (
            Some(ChunkedDecoder::new(signer.clone(), *trailers)),
            *trailers,
        ),
        _ => (None, false),
    };
    let mut exp = Expectations::default();
    if let PayloadCheck::Sha256(d) = authed.payload {
        exp.sha256 = Some(d);
    }
    if let Some(v) = parts.headers.get("content-md5") {
        let v = v.to_str().map_err(|_| invalid_digest())?;
        exp.md5 = Some(decode_b64(v, 16).ok_or_else(invalid_digest)?);
    }
    for alg in ChecksumAlgorithm::ALL {
        if let Some(v) = parts.headers.get(alg.header_name()) {
            if exp.checksum.is_some() {
                return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."));
            }
            let value = v
                .to_str()
                .ok()
                .and_then(|s| decode_b64(s, alg.digest_len()))
                .ok_or_else(|| {
                    S3Error::invalid_request(format!(
                        "Value for {} header is invalid.",
                        alg.header_name()
                    ))
                })?;
            exp.checksum = Some((alg, value));
        }
    }
    if let Some(t) = header_str(&parts.headers, "x-amz-trailer") {
        let alg = ChecksumAlgorithm::from_header_name(t.trim()).ok_or_else(|| {
            S3Error::invalid_request(format!(
                "The value specified in the x-amz-trailer header is not supported: {t}"
            ))
        })?;
        if !trailers_mode {
            return Err(S3Error::invalid_request(
                "x-amz-trailer requires a STREAMING-*-TRAILER x-amz-content-sha256.",
            ));
        }
        if exp.checksum.is_some() {
            return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."));
        }
        exp.trailer_checksum = Some(alg);
    }
    if let Some(a) = header_str(&parts.headers, "x-amz-sdk-checksum-algorithm") {
        let alg = ChecksumAlgorithm::from_name(a.trim()).ok_or_else(|| {
            S3Error::invalid_request(format!("Checksum algorithm {a} is not supported."))
        })?;
        let declared = exp.checksum.as_ref().map(|c| c.0).or(exp.trailer_checksum);
        if declared != Some(alg) {
            return Err(S3Error::invalid_request(format!(
                "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found for {}.",
                alg.name()
            )));
        }
    }
    let content_length = match header_str(&parts.headers, "content-length") {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| S3Error::invalid_request("Invalid Content-Length."))?,
        ),
        None => None,
    };
    let chunked_transfer = parts.headers.contains_key(http::header::TRANSFER_ENCODING);
    let upstream_len: u64 = if decoder.is_some() {
        header_str(&parts.headers, "x-amz-decoded-content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                S3Error::new(
                    "MissingContentLength",
                    "You must provide the Content-Length HTTP header.",
                )
            })?
    } else {
        match (content_length, chunked_transfer) {
            (Some(n), _) => n,
            (None, true) => {
                return Err(S3Error::new(
                    "MissingContentLength",
                    "You must provide the Content-Length HTTP header.",
                ))
            }
            (None, false) => 0,
        }
    };
    // Declared checks run even on an empty body: S3 refuses an empty PUT whose Content-MD5 is wrong.
    let has_body = decoder.is_some()
        || content_length.unwrap_or(0) > 0
        || chunked_transfer
        || exp.sha256.is_some()
        || exp.md5.is_some()
        || exp.checksum.is_some();
    exp.decoded_len = Some(upstream_len);

    // 5. Build the upstream request.
    let mut fwd_query: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !auth::is_auth_param(k))
        .cloned()
        .collect();
    fwd_query.retain(|(k, _)| k != "x-id");
    let (uri, host) = state.upstream.uri(
        addr.bucket.as_deref(),
        &addr.key,
        &sigv4::canonical_query(&fwd_query, None),
    );
    let mut up = Request::builder().method(parts.method.clone()).uri(&uri);
    {
        let h = up
            .headers_mut()
            .ok_or_else(|| S3Error::internal("request builder"))?;
        for (name, value) in parts.headers.iter() {
            let n = name.as_str();
            if DROP_REQUEST_HEADERS.contains(&n) {
                continue;
            }
            if n == "x-amz-sdk-checksum-algorithm" && exp.trailer_checksum.is_some() {
                continue; // The trailer value is verified here, not forwarded.
            }
            if n == "content-encoding" {
                let rest: Vec<&str> = value
                    .to_str()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
                    .collect();
                if !rest.is_empty() {
                    if let Ok(v) = HeaderValue::from_str(&rest.join(",")) {
                        h.append(name.clone(), v);
                    }
                }
                continue;
            }
            h.append(name.clone(), value.clone());
        }
        h.insert(
            HOST,
            HeaderValue::from_str(&host).map_err(|_| S3Error::internal("upstream host"))?,
        );
        if upstream_len > 0 || matches!(parts.method, Method::PUT | Method::POST) {
            h.insert(CONTENT_LENGTH, HeaderValue::from(upstream_len));
        }
    }

    let slot = FailureSlot::default();
    let idle = Duration::from_secs(server.body_idle_timeout_secs);
    let (up_body, unsigned): (UpstreamBody, bool) = if has_body {
        let vb = VerifyingBody::new(body, decoder, exp, slot.clone(), idle);
        if upstream_len == 0 {
            // Nothing could be withheld from an empty upstream body: verify before sending.
            vb.drain_verified(64 * 1024).await?;
            (Empty::new().map_err(|e| match e {}).boxed_unsync(), false)
        } else {
            (vb.map_err(|e| Box::new(e) as BoxError).boxed_unsync(), true)
        }
    } else {
        drop(body);
        (Empty::new().map_err(|e| match e {}).boxed_unsync(), false)
    };
    let up_req = up
        .body(up_body)
        .map_err(|e| S3Error::internal(format!("upstream request: {e}")))?;

    // 6. Send, then map the response back.
    let resp = match state.upstream.send(up_req, unsigned).await {
        Ok(r) => r,
        Err(e) => return Err(slot.take().unwrap_or(e)),
    };
    if let Some(e) = slot.take() {
        return Err(e);
    }
    let (mut rp, rbody) = resp.into_parts();
    for n in DROP_RESPONSE_HEADERS {
        rp.headers.remove(*n);
    }
    let body: ResponseBody = if rbody.is_end_stream() {
        Empty::new().map_err(|e| match e {}).boxed_unsync()
    } else {
        Coalesce::new(rbody, RESPONSE_FRAME_TARGET)
            .map_err(|e| Box::new(e) as BoxError)
            .boxed_unsync()
    };
    Ok(Response::from_parts(rp, body))
}

fn invalid_digest() -> S3Error {
    S3Error::new(
        "InvalidDigest",
        "The Content-MD5 you specified was invalid.",
    )
}

/// The S3 error response: XML body (none for HEAD), request id headers added by the caller.
pub fn error_response(
    e: &S3Error,
    resource: &str,
    request_id: &str,
    head: bool,
) -> Response<ResponseBody> {
    let mut resp = if head {
        Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync())
    } else {
        let xml = e.to_xml(resource, request_id);
        let mut r = Response::new(
            Full::new(Bytes::from(xml))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        r
    };
    *resp.status_mut() = e.status;
    if e.status.is_server_error() || e.code == "RequestTimeout" || e.code == "IncompleteBody" {
        resp.headers_mut().insert(
            HeaderName::from_static("connection"),
            HeaderValue::from_static("close"),
        );
    }
    resp
}

/// 16 uppercase hex characters, like S3's request ids.
pub fn new_request_id() -> String {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        b = N
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
    }
    hex::encode_upper(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "mybucket.s3.example.com:8443".parse().unwrap());
        let a = address(&h, "/dir/a%20b", Some("s3.example.com")).unwrap();
        assert_eq!(
            (a.bucket.as_deref(), a.key.as_str(), a.vhost),
            (Some("mybucket"), "dir/a b", true)
        );
        h.insert(HOST, "s3.example.com".parse().unwrap());
        let a = address(&h, "/b/k/", Some("s3.example.com")).unwrap();
        assert_eq!(
            (a.bucket.as_deref(), a.key.as_str(), a.vhost),
            (Some("b"), "k/", false)
        );
        let a = address(&h, "/", None).unwrap();
        assert_eq!(a.bucket, None);
        let a = address(&h, "/b", None).unwrap();
        assert_eq!((a.bucket.as_deref(), a.key.as_str()), (Some("b"), ""));
        assert!(address(&h, "/b/%FF", None).is_err());
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, new_request_id());
    }
}
