//! `chmura rekey`: re-wraps the data keys of existing objects under another KMS key or keyring
//! key, without rewriting bodies.
//!
//! For each object under the bucket and prefix: HEAD it; objects without Chmura metadata are
//! reported and left alone; objects already under the target key are skipped (so a rerun
//! resumes an interrupted one); otherwise the data key is unwrapped for the object's context
//! (trying each configured tenant, since the tenant is part of the context), wrapped again
//! under the target key for the same context, and written back by a metadata-only CopyObject
//! of the object onto itself, pinned to the ETag just read (a concurrent write wins; the object
//! is reported, not overwritten). Objects over 5 GiB are copied onto themselves as a multipart
//! upload of UploadPartCopy ranges (`multipart_self_copy`). Bodies, salts and commitments are
//! unchanged.

use std::io::Write;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};

use crate::error::S3Error;
use crate::{kms, multipart, sigv4, State};
use chmura_crypto::envelope::ObjectHeader;
use chmura_crypto::keys::ObjectKey;

/// What to rekey.
#[derive(Debug, Clone)]
pub struct RekeyOptions {
    pub bucket: String,
    pub prefix: String,
    pub to_key: String,
    /// Resume after this key (the last key a previous run printed).
    pub start_after: Option<String>,
    /// Stop after this many objects (for batches; a rerun continues).
    pub max_objects: Option<u64>,
    /// Objects whose stored size exceeds this are rewritten as a multipart copy of themselves
    /// (UploadPartCopy of their ciphertext ranges, still without passing through Chmura):
    /// S3's CopyObject stops at 5 GiB.
    pub copy_limit: u64,
}

/// S3's largest CopyObject.
pub const COPY_LIMIT: u64 = 5 << 30;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub listed: u64,
    pub rekeyed: u64,
    pub already: u64,
    /// Objects not written by Chmura (reported, not touched).
    pub not_chmura: Vec<String>,
    /// Objects that could not be rekeyed, with the reason.
    pub failed: Vec<(String, String)>,
    /// The last key handled, when the run stopped early (`--max-objects`).
    pub stopped_after: Option<String>,
}

async fn send_empty(
    state: &State,
    method: Method,
    bucket: &str,
    key: &str,
    query: &[(String, String)],
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<(http::response::Parts, Bytes), S3Error> {
    let (uri, host) = state
        .upstream
        .uri(Some(bucket), key, &sigv4::canonical_query(query, None));
    let mut b = Request::builder()
        .method(method)
        .uri(&uri)
        .header(HOST, host);
    for (n, v) in headers {
        b = b.header(n, v);
    }
    let req = b
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
        .map_err(|e| S3Error::internal(format!("rekey request: {e}")))?;
    let (rp, body) = state.upstream.send(req, false).await?.into_parts();
    let bytes = http_body_util::Limited::new(body, 32 << 20)
        .collect()
        .await
        .map_err(|e| S3Error::internal(format!("rekey response: {e}")))?
        .to_bytes();
    Ok((rp, bytes))
}

/// Runs a rekey, printing progress lines to `out`.
pub async fn run(
    state: &State,
    opts: &RekeyOptions,
    out: &mut dyn Write,
) -> Result<Summary, String> {
    let kms = state
        .kms
        .as_ref()
        .ok_or("rekey needs a [kms] section: nothing is encrypted without one")?;
    let mut sum = Summary::default();
    let mut token: Option<String> = None;
    let mut done = 0u64;
    loop {
        let mut q = vec![
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), "1000".to_string()),
        ];
        if !opts.prefix.is_empty() {
            q.push(("prefix".to_string(), opts.prefix.clone()));
        }
        match (&token, &opts.start_after) {
            (Some(t), _) => q.push(("continuation-token".to_string(), t.clone())),
            (None, Some(s)) => q.push(("start-after".to_string(), s.clone())),
            _ => {}
        }
        let (rp, body) = send_empty(state, Method::GET, &opts.bucket, "", &q, vec![])
            .await
            .map_err(|e| format!("listing {}: {e}", opts.bucket))?;
        let xml = String::from_utf8_lossy(&body).into_owned();
        if !rp.status.is_success() {
            return Err(format!(
                "listing {}: status {}: {xml}",
                opts.bucket, rp.status
            ));
        }
        let keys: Vec<String> = multipart::tag_values(&xml, "Contents")
            .iter()
            .filter_map(|c| {
                multipart::tag_values(c, "Key")
                    .first()
                    .map(|k| multipart::unescape(k))
            })
            .collect();
        for key in keys {
            if opts.max_objects.is_some_and(|m| done >= m) {
                let _ = writeln!(
                    out,
                    "rekey: stopped after {done} objects; resume with --start-after {}",
                    sum.stopped_after.as_deref().unwrap_or("")
                );
                return Ok(sum);
            }
            sum.listed += 1;
            done += 1;
            match rekey_one(state, kms, opts, &key).await {
                Ok(Outcome::Rekeyed) => sum.rekeyed += 1,
                Ok(Outcome::Already) => sum.already += 1,
                Ok(Outcome::NotChmura) => sum.not_chmura.push(key.clone()),
                Err(e) => sum.failed.push((key.clone(), e)),
            }
            sum.stopped_after = Some(key.clone());
            if done.is_multiple_of(100) {
                let _ = writeln!(
                    out,
                    "rekey: {} listed, {} rekeyed, {} already under {}, {} not Chmura's, {} failed; last key {key}",
                    sum.listed,
                    sum.rekeyed,
                    sum.already,
                    opts.to_key,
                    sum.not_chmura.len(),
                    sum.failed.len()
                );
            }
        }
        let truncated = multipart::tag_values(&xml, "IsTruncated")
            .first()
            .is_some_and(|v| v.trim() == "true");
        let next = multipart::tag_values(&xml, "NextContinuationToken")
            .first()
            .map(|v| multipart::unescape(v));
        match next {
            Some(n) if truncated && !n.is_empty() => token = Some(n),
            _ => break,
        }
    }
    sum.stopped_after = None;
    Ok(sum)
}

enum Outcome {
    Rekeyed,
    Already,
    NotChmura,
}

async fn rekey_one(
    state: &State,
    kms: &kms::Kms,
    opts: &RekeyOptions,
    key: &str,
) -> Result<Outcome, String> {
    let (hp, _) = send_empty(state, Method::HEAD, &opts.bucket, key, &[], vec![])
        .await
        .map_err(|e| e.to_string())?;
    if !hp.status.is_success() {
        return Err(format!("HEAD status {}", hp.status));
    }
    let get = |n: &str| {
        hp.headers
            .get(format!("x-amz-meta-{n}"))
            .and_then(|v| v.to_str().ok())
    };
    let env = match ObjectHeader::from_metadata(get) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(Outcome::NotChmura),
        Err(e) => return Err(format!("invalid Chmura metadata: {e}")),
    };
    if env.key_id == opts.to_key {
        return Ok(Outcome::Already);
    }
    // The tenant is part of the encryption context; the one whose context opens the key wrote
    // the object.
    let mut opened = None;
    for t in &state.config.tenants {
        let ctx = kms::context(&t.name, &opts.bucket, key);
        if let Ok(dk) = kms.decrypt(&env.key_id, &env.wrapped_key, &ctx).await {
            opened = Some((dk, ctx));
            break;
        }
    }
    let Some((dk, ctx)) = opened else {
        return Err("the data key does not open for any configured tenant".into());
    };
    // Under a customer key (SSE-C, FORMAT.md §14) the provider's key is masked: the commitment
    // needs the customer's key, which Chmura never keeps. The masked key moves as it is.
    if env.customer_check.is_none() {
        ObjectKey::derive(&dk, &env.salt)
            .verify_commitment(&env.commitment)
            .map_err(|e| format!("key commitment: {e}"))?;
    }
    let wrapped = kms
        .wrap(&opts.to_key, &dk, &ctx)
        .await
        .map_err(|e| e.to_string())?;
    let new_env = ObjectHeader {
        key_id: opts.to_key.clone(),
        wrapped_key: wrapped,
        ..env
    };
    let mut headers = multipart::copied_headers(&hp.headers);
    for (name, value) in new_env.to_metadata() {
        let n = HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes())
            .map_err(|e| e.to_string())?;
        headers.push((n, HeaderValue::from_str(&value).map_err(|e| e.to_string())?));
    }
    let source = multipart::copy_source_value(&opts.bucket, key, None);
    headers.push((
        HeaderName::from_static("x-amz-copy-source"),
        HeaderValue::from_str(&source).map_err(|e| e.to_string())?,
    ));
    headers.push((
        HeaderName::from_static("x-amz-metadata-directive"),
        HeaderValue::from_static("REPLACE"),
    ));
    if let Some(etag) = hp.headers.get(http::header::ETAG) {
        headers.push((
            HeaderName::from_static("x-amz-copy-source-if-match"),
            etag.clone(),
        ));
    }
    let stored = hp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if stored > opts.copy_limit {
        return multipart_self_copy(state, opts, key, &hp.headers, headers, stored).await;
    }
    headers.push((http::header::CONTENT_LENGTH, HeaderValue::from(0)));
    let (rp, body) = send_empty(state, Method::PUT, &opts.bucket, key, &[], headers)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    // S3 can answer a copy with 200 and an error document.
    if !rp.status.is_success() || text.contains("<Error>") {
        return Err(format!(
            "self-copy: status {} {}",
            rp.status,
            first_tag(&text, "Code").unwrap_or_default()
        ));
    }
    Ok(Outcome::Rekeyed)
}

/// The self-copy of an object larger than one CopyObject: a multipart upload with the new
/// envelope whose parts are UploadPartCopy ranges of the object's own ciphertext (pinned to the
/// ETag read), tags carried over. The bytes are unchanged, so the object reads as before; the
/// upload is aborted if any step fails.
async fn multipart_self_copy(
    state: &State,
    opts: &RekeyOptions,
    key: &str,
    source: &http::HeaderMap,
    headers: Vec<(HeaderName, HeaderValue)>,
    stored: u64,
) -> Result<Outcome, String> {
    let bucket = opts.bucket.as_str();
    // Up to 10,000 parts of at least 5 MiB; no larger than the copy limit (at most 1 GiB).
    let part = (multipart::MIN_PART)
        .max(stored.div_ceil(u64::from(multipart::MAX_PARTS)))
        .max(opts.copy_limit.min(1 << 30));
    let mut create: Vec<(HeaderName, HeaderValue)> = headers
        .into_iter()
        .filter(|(n, _)| {
            !n.as_str().starts_with("x-amz-copy-source") && n != "x-amz-metadata-directive"
        })
        .collect();
    let tagged = source
        .get("x-amz-tagging-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n > 0);
    if tagged {
        let tags = crate::handler::object_tags(state, bucket, key, None)
            .await
            .map_err(|e| format!("reading tags: {e}"))?;
        let v =
            HeaderValue::from_str(&multipart::tagging_header(&tags)).map_err(|e| e.to_string())?;
        create.push((HeaderName::from_static("x-amz-tagging"), v));
    }
    create.push((http::header::CONTENT_LENGTH, HeaderValue::from(0)));
    let (rp, body) = send_empty(
        state,
        Method::POST,
        bucket,
        key,
        &[("uploads".to_string(), String::new())],
        create,
    )
    .await
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    let upload = first_tag(&text, "UploadId")
        .filter(|_| rp.status.is_success())
        .ok_or_else(|| format!("multipart self-copy: create: status {}", rp.status))?;
    let result = copy_parts(state, bucket, key, source, &upload, stored, part).await;
    if result.is_err() {
        let _ = send_empty(
            state,
            Method::DELETE,
            bucket,
            key,
            &[("uploadId".to_string(), upload.clone())],
            vec![],
        )
        .await;
    }
    result.map(|()| Outcome::Rekeyed)
}

async fn copy_parts(
    state: &State,
    bucket: &str,
    key: &str,
    source: &http::HeaderMap,
    upload: &str,
    stored: u64,
    part: u64,
) -> Result<(), String> {
    let copy_source = multipart::copy_source_value(bucket, key, None);
    let mut parts = Vec::new();
    let mut start = 0;
    let mut number = 1u32;
    while start < stored {
        let end = (start + part).min(stored) - 1;
        let mut h = vec![
            (
                HeaderName::from_static("x-amz-copy-source"),
                HeaderValue::from_str(&copy_source).map_err(|e| e.to_string())?,
            ),
            (
                HeaderName::from_static("x-amz-copy-source-range"),
                HeaderValue::from_str(&format!("bytes={start}-{end}"))
                    .map_err(|e| e.to_string())?,
            ),
            (http::header::CONTENT_LENGTH, HeaderValue::from(0)),
        ];
        if let Some(etag) = source.get(http::header::ETAG) {
            h.push((
                HeaderName::from_static("x-amz-copy-source-if-match"),
                etag.clone(),
            ));
        }
        let q = [
            ("partNumber".to_string(), number.to_string()),
            ("uploadId".to_string(), upload.to_string()),
        ];
        let (rp, body) = send_empty(state, Method::PUT, bucket, key, &q, h)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&body);
        let etag = first_tag(&text, "ETag")
            .filter(|_| rp.status.is_success() && !text.contains("<Error>"))
            .ok_or_else(|| format!("multipart self-copy: part {number}: status {}", rp.status))?;
        parts.push((number, etag));
        start = end + 1;
        number += 1;
    }
    let xml = multipart::complete_body(&parts);
    let (uri, host) = state.upstream.uri(
        Some(bucket),
        key,
        &sigv4::canonical_query(&[("uploadId".to_string(), upload.to_string())], None),
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri(&uri)
        .header(HOST, host)
        .header(http::header::CONTENT_LENGTH, xml.len())
        .header(http::header::CONTENT_TYPE, "application/xml")
        .body(
            http_body_util::Full::new(Bytes::from(xml))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .map_err(|e| e.to_string())?;
    // The body is not part of the signature (UNSIGNED-PAYLOAD), as on Chmura's own Complete.
    let (rp, body) = state
        .upstream
        .send(req, true)
        .await
        .map_err(|e| e.to_string())?
        .into_parts();
    let bytes = http_body_util::Limited::new(body, 1 << 20)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    if !rp.status.is_success() || text.contains("<Error>") {
        return Err(format!(
            "multipart self-copy: complete: status {} {} {}",
            rp.status,
            first_tag(&text, "Code").unwrap_or_default(),
            first_tag(&text, "Message").unwrap_or_default()
        ));
    }
    Ok(())
}

/// The first `tag` of a store answer, unescaped.
fn first_tag(xml: &str, tag: &str) -> Option<String> {
    multipart::tag_values(xml, tag)
        .first()
        .map(|v| multipart::unescape(v.trim()))
}
