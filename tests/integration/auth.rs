//! Every client authentication form, and every way a body can fail its checks: each refused
//! request gets the right S3 error and leaves the store unchanged (a previous object under the
//! key stays intact).

use std::time::{Duration, SystemTime};

use base64::Engine;
use chmura_tests::raw::{self, RawRequest, RawResponse};
use chmura_tests::{pattern, Env, TENANT_AK, TENANT_SK};

const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn md5_b64(d: &[u8]) -> String {
    use md5::Digest;
    b64(&md5::Md5::digest(d))
}

fn crc32_b64(d: &[u8]) -> String {
    b64(&(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, d) as u32).to_be_bytes())
}

struct T {
    env: Env,
    host: String,
}

impl T {
    async fn new() -> T {
        let env = Env::start().await;
        env.make_bucket("bkt");
        // A previous object that every refused write must leave intact.
        std::fs::write(env.store.root.join("bkt").join("k"), b"original").expect("seed");
        let host = format!("localhost:{}", env.proxy.addr.port());
        T { env, host }
    }
    async fn send(&self, r: &RawRequest) -> RawResponse {
        raw::send(self.env.proxy.addr.port(), &self.env.proxy.certs.ca_pem, r).await
    }
    fn put(&self, body: &[u8]) -> RawRequest {
        RawRequest::new("PUT", "/bkt/k").body(body.to_vec())
    }
    fn sign(&self, r: RawRequest, hash: &str) -> RawRequest {
        r.sign_v4(&self.host, TENANT_AK, TENANT_SK, hash, SystemTime::now())
    }
    fn intact(&self) {
        assert_eq!(
            self.env.store.stored("bkt", "k").as_deref(),
            Some(&b"original"[..]),
            "the stored object changed"
        );
    }
    fn stored(&self) -> Option<Vec<u8>> {
        self.env.store.stored("bkt", "k")
    }
}

fn expect(r: &RawResponse, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.code().as_deref()),
        (status, Some(code)),
        "{}",
        r.text()
    );
    assert!(
        r.header("x-amz-request-id").is_some(),
        "every response carries x-amz-request-id"
    );
    assert!(r.text().contains("<RequestId>"), "{}", r.text());
}

#[tokio::test]
async fn signed_payload_put_works_and_mismatch_is_refused() {
    let t = T::new().await;
    let body = pattern(70_000, 9);
    let r = t.send(&t.sign(t.put(&body), &raw::sha256_hex(&body))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stored().as_deref(), Some(&body[..]));

    std::fs::write(t.env.store.root.join("bkt").join("k"), b"original").expect("reset");
    let r = t
        .send(&t.sign(t.put(&body), &raw::sha256_hex(b"something else")))
        .await;
    expect(&r, 400, "XAmzContentSHA256Mismatch");
    t.intact();
}

#[tokio::test]
async fn bad_credentials_and_times_are_refused() {
    let t = T::new().await;
    let r = t
        .send(&t.put(b"x").sign_v4(
            &t.host,
            TENANT_AK,
            "wrong-secret-wrong-secret",
            UNSIGNED,
            SystemTime::now(),
        ))
        .await;
    expect(&r, 403, "SignatureDoesNotMatch");
    let r = t
        .send(&t.put(b"x").sign_v4(
            &t.host,
            "CHMURAUNKNOWN0000001",
            TENANT_SK,
            UNSIGNED,
            SystemTime::now(),
        ))
        .await;
    expect(&r, 403, "InvalidAccessKeyId");
    let r = t
        .send(&t.put(b"x").sign_v4(
            &t.host,
            TENANT_AK,
            TENANT_SK,
            UNSIGNED,
            SystemTime::now() - Duration::from_secs(3600),
        ))
        .await;
    expect(&r, 403, "RequestTimeTooSkewed");
    let r = t.send(&t.put(b"x")).await;
    expect(&r, 403, "AccessDenied");
    // A signed header changed after signing.
    let mut req = t.sign(t.put(b"x").header("x-amz-meta-a", "1"), UNSIGNED);
    for h in &mut req.headers {
        if h.0 == "x-amz-meta-a" {
            h.1 = "2".into();
        }
    }
    expect(&t.send(&req).await, 403, "SignatureDoesNotMatch");
    t.intact();
}

#[tokio::test]
async fn content_md5_and_checksum_headers_are_verified() {
    let t = T::new().await;
    let body = b"checked body".to_vec();
    let r = t
        .send(&t.sign(
            t.put(&body).header("content-md5", &md5_b64(b"other")),
            UNSIGNED,
        ))
        .await;
    expect(&r, 400, "BadDigest");
    let r = t
        .send(&t.sign(t.put(&body).header("content-md5", "not-base64!"), UNSIGNED))
        .await;
    expect(&r, 400, "InvalidDigest");
    let r = t
        .send(
            &t.sign(
                t.put(&body)
                    .header("x-amz-checksum-crc32", &crc32_b64(b"other")),
                UNSIGNED,
            ),
        )
        .await;
    expect(&r, 400, "BadDigest");
    // The SDK's algorithm header naming another algorithm than the checksum sent.
    let r = t
        .send(
            &t.sign(
                t.put(&body)
                    .header("x-amz-sdk-checksum-algorithm", "crc32c")
                    .header("x-amz-checksum-crc32", &crc32_b64(&body)),
                UNSIGNED,
            ),
        )
        .await;
    expect(&r, 400, "InvalidRequest");
    assert!(
        r.text()
            .contains("Value for x-amz-sdk-checksum-algorithm header is invalid."),
        "{}",
        r.text()
    );
    t.intact();
    let r = t
        .send(
            &t.sign(
                t.put(&body)
                    .header("content-md5", &md5_b64(&body))
                    .header("x-amz-checksum-crc32", &crc32_b64(&body)),
                UNSIGNED,
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stored(), Some(body));
}

fn chunked_put(data_len: usize, mode: &str, trailer: Option<&str>) -> RawRequest {
    let mut r = RawRequest::new("PUT", "/bkt/k")
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", &data_len.to_string());
    if let Some(t) = trailer {
        r = r.header("x-amz-trailer", t);
    }
    let _ = mode;
    r
}

#[tokio::test]
async fn signed_chunked_chain_is_verified() {
    let t = T::new().await;
    let data = pattern(200_000, 4);
    let mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    for (tamper, ok) in [(None, true), (Some(1), false), (Some(3), false)] {
        std::fs::write(t.env.store.root.join("bkt").join("k"), b"original").expect("reset");
        let req = t.sign(chunked_put(data.len(), mode, None), mode);
        let date = req.get("x-amz-date").expect("date").to_string();
        let body = raw::signed_chunked_body(
            &data,
            65536,
            TENANT_SK,
            &date,
            &req.seed_signature(),
            None,
            tamper,
        );
        let r = t.send(&req.body(body)).await;
        if ok {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                t.stored().as_deref(),
                Some(&data[..]),
                "store holds the decoded body"
            );
        } else {
            expect(&r, 403, "SignatureDoesNotMatch");
            t.intact();
        }
    }
    // Declared length differs from the chunks.
    let req = t.sign(chunked_put(data.len() + 1, mode, None), mode);
    let date = req.get("x-amz-date").expect("date").to_string();
    let body = raw::signed_chunked_body(
        &data,
        65536,
        TENANT_SK,
        &date,
        &req.seed_signature(),
        None,
        None,
    );
    std::fs::write(t.env.store.root.join("bkt").join("k"), b"original").expect("reset");
    let r = t.send(&req.body(body)).await;
    expect(&r, 400, "IncompleteBody");
    t.intact();
}

#[tokio::test]
async fn signed_chunked_with_trailer_is_verified() {
    let t = T::new().await;
    let data = pattern(150_000, 5);
    let mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
    let good = crc32_b64(&data);
    let bad = crc32_b64(b"nope");
    for (value, tamper_sig, want) in [
        (good.as_str(), false, 200),
        (bad.as_str(), false, 400),
        (good.as_str(), true, 403),
    ] {
        std::fs::write(t.env.store.root.join("bkt").join("k"), b"original").expect("reset");
        let req = t.sign(
            chunked_put(data.len(), mode, Some("x-amz-checksum-crc32")),
            mode,
        );
        let date = req.get("x-amz-date").expect("date").to_string();
        let mut body = raw::signed_chunked_body(
            &data,
            65536,
            TENANT_SK,
            &date,
            &req.seed_signature(),
            Some(("x-amz-checksum-crc32", value)),
            None,
        );
        if tamper_sig {
            // Flip one hex digit of the trailer signature.
            let pos = body
                .windows(24)
                .rposition(|w| w == b"x-amz-trailer-signature:")
                .expect("sig")
                + 24;
            body[pos] = if body[pos] == b'0' { b'1' } else { b'0' };
        }
        let r = t.send(&req.body(body)).await;
        match want {
            200 => {
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(t.stored().as_deref(), Some(&data[..]));
            }
            400 => {
                expect(&r, 400, "BadDigest");
                t.intact();
            }
            _ => {
                expect(&r, 403, "SignatureDoesNotMatch");
                t.intact();
            }
        }
    }
}

#[tokio::test]
async fn unsigned_trailer_in_http_chunked_is_verified() {
    // What boto3 and aws cli send over HTTPS: STREAMING-UNSIGNED-PAYLOAD-TRAILER inside
    // Transfer-Encoding: chunked, with a CRC trailer.
    let t = T::new().await;
    let data = pattern(3 * 1024 * 1024 + 17, 6);
    let mode = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
    for (crc, want) in [(crc32_b64(b"wrong"), 400), (crc32_b64(&data), 200)] {
        let framed = raw::unsigned_chunked_body(&data, 1024 * 1024, ("x-amz-checksum-crc32", &crc));
        let req = t
            .sign(
                chunked_put(data.len(), mode, Some("x-amz-checksum-crc32"))
                    .header("transfer-encoding", "chunked"),
                mode,
            )
            .body(raw::http_chunked(&framed, 300_000));
        let r = t.send(&req).await;
        if want == 400 {
            expect(&r, 400, "BadDigest");
            t.intact();
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(t.stored().as_deref(), Some(&data[..]));
        }
    }
}

#[tokio::test]
async fn truncated_body_commits_nothing() {
    let t = T::new().await;
    let body = pattern(500_000, 7);
    let req = t.sign(t.put(&body), &raw::sha256_hex(&body));
    let full = req.to_bytes(&t.host).len();
    let _ = raw::send_truncated(
        t.env.proxy.addr.port(),
        &t.env.proxy.certs.ca_pem,
        &req,
        full - 1000,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.intact();
    // Also with UNSIGNED-PAYLOAD, where only the length can tell.
    let req = t.sign(t.put(&body), UNSIGNED);
    let full = req.to_bytes(&t.host).len();
    let _ = raw::send_truncated(
        t.env.proxy.addr.port(),
        &t.env.proxy.certs.ca_pem,
        &req,
        full - 1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.intact();
}

#[tokio::test]
async fn empty_body_with_wrong_md5_commits_nothing() {
    let t = T::new().await;
    let r = t
        .send(&t.sign(t.put(b"").header("content-md5", &md5_b64(b"x")), UNSIGNED))
        .await;
    expect(&r, 400, "BadDigest");
    t.intact();
    let r = t
        .send(&t.sign(t.put(b"").header("content-md5", &md5_b64(b"")), UNSIGNED))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stored(), Some(Vec::new()));
}

fn sigv2_query(method: &str, resource: &str, expires: i64) -> String {
    use aws_lc_rs::hmac;
    let sts = format!("{method}\n\n\n{expires}\n{resource}");
    let sig = b64(hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TENANT_SK.as_bytes()),
        sts.as_bytes(),
    )
    .as_ref());
    let sig: String =
        percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC).collect();
    format!("{resource}?AWSAccessKeyId={TENANT_AK}&Expires={expires}&Signature={sig}")
}

/// A SigV2 `Authorization` header for a PUT of /bkt/k with this `Date`.
fn sigv2_put(date: &str) -> RawRequest {
    sigv2_header("PUT", "/bkt/k", "/bkt/k", date).body(b"v2".to_vec())
}

/// A request for `target` with a SigV2 `Authorization` header over `resource` (the
/// canonicalized resource the client signed).
fn sigv2_header(method: &str, target: &str, resource: &str, date: &str) -> RawRequest {
    use aws_lc_rs::hmac;
    let sts = format!("{method}\n\n\n{date}\n{resource}");
    let sig = b64(hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TENANT_SK.as_bytes()),
        sts.as_bytes(),
    )
    .as_ref());
    RawRequest::new(method, target)
        .header("date", date)
        .header("authorization", &format!("AWS {TENANT_AK}:{sig}"))
}

#[tokio::test]
async fn sigv2_sub_resources_with_an_empty_value_signed_either_way() {
    let t = T::new().await;
    let now = httpdate::fmt_http_date(SystemTime::now());
    // minio-go sends `?location=` (Go's url.Values) and signs `?location`, as MinIO and S3
    // verify it; botocore signs what it sends.
    for signed in ["/bkt?location", "/bkt?location="] {
        let r = t
            .send(&sigv2_header("GET", "/bkt?location=", signed, &now))
            .await;
        assert_eq!(r.status, 200, "signed {signed}: {}", r.text());
        assert!(r.text().contains("LocationConstraint"), "{}", r.text());
    }
    // Leaving the sub-resource out of the signature is still a mismatch.
    let r = t
        .send(&sigv2_header("GET", "/bkt?location=", "/bkt", &now))
        .await;
    expect(&r, 403, "SignatureDoesNotMatch");
}

/// botocore signs a path-style request for the bucket itself (`PUT /bkt` for CreateBucket,
/// `GET /bkt` for ListObjects) over the resource `/bkt/`, as S3 verifies it; `/bkt` signed as
/// sent works too, and another bucket's resource does not.
#[tokio::test]
async fn sigv2_bucket_requests_signed_with_a_trailing_slash() {
    let t = T::new().await;
    let now = httpdate::fmt_http_date(SystemTime::now());
    for signed in ["/bkt/", "/bkt"] {
        let r = t.send(&sigv2_header("GET", "/bkt", signed, &now)).await;
        assert_eq!(r.status, 200, "signed {signed}: {}", r.text());
        assert!(r.text().contains("ListBucketResult"), "{}", r.text());
    }
    let r = t.send(&sigv2_header("GET", "/bkt", "/bk/", &now)).await;
    expect(&r, 403, "SignatureDoesNotMatch");
    // An object's resource stays exact.
    let r = t
        .send(&sigv2_header("GET", "/bkt/k", "/bkt/k/", &now))
        .await;
    expect(&r, 403, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn dates_as_clients_write_them_and_the_clock_before_the_signature() {
    let t = T::new().await;
    // An empty Authorization header is no authorization.
    let r = t.send(&t.put(b"x").header("authorization", "")).await;
    expect(&r, 403, "AccessDenied");
    // SigV2 with a skewed clock is told so, whatever the signature (S3 checks the time
    // first); the weekday of these dates is wrong, as in ceph's s3-tests, and not checked.
    for date in [
        "Tue, 07 Jul 2010 21:53:04 GMT",
        "Tue, 07 Jul 2030 21:53:04 GMT",
    ] {
        expect(&t.send(&sigv2_put(date)).await, 403, "RequestTimeTooSkewed");
    }
    // A date before 1970 is no valid date (S3: AccessDenied).
    expect(
        &t.send(&sigv2_put("Tue, 07 Jul 1950 21:53:04 GMT")).await,
        403,
        "AccessDenied",
    );
    t.intact();
    // A PUT that states no length at all (no Content-Length, no Transfer-Encoding): S3 wants
    // it said (411), and nothing is stored.
    let mut r = t.sign(RawRequest::new("PUT", "/bkt/k"), UNSIGNED);
    r.omit_length = true;
    expect(&t.send(&r).await, 411, "MissingContentLength");
    t.intact();
    // Python's formatdate (botocore's Date header) writes the zone as -0000.
    let now = httpdate::fmt_http_date(SystemTime::now()).replace(" GMT", " -0000");
    let r = t.send(&sigv2_put(&now)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stored().as_deref(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn sigv2_presigned_urls() {
    let t = T::new().await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let r = t
        .send(&RawRequest::new(
            "GET",
            &sigv2_query("GET", "/bkt/k", now + 300),
        ))
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "original"));
    let r = t
        .send(&RawRequest::new(
            "GET",
            &sigv2_query("GET", "/bkt/k", now - 10),
        ))
        .await;
    expect(&r, 403, "AccessDenied");
    let tampered = sigv2_query("GET", "/bkt/k", now + 300).replace(
        &format!("Expires={}", now + 300),
        &format!("Expires={}", now + 301),
    );
    let r = t.send(&RawRequest::new("GET", &tampered)).await;
    expect(&r, 403, "SignatureDoesNotMatch");
    // A presigned PUT over SigV2 writes.
    let r = t
        .send(
            &RawRequest::new("PUT", &sigv2_query("PUT", "/bkt/k", now + 300))
                .body(b"v2 put".to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stored().as_deref(), Some(&b"v2 put"[..]));
}

#[tokio::test]
async fn unknown_operations_are_not_forwarded() {
    let t = T::new().await;
    for target in [
        "/bkt?website",
        "/bkt/k?torrent",
        "/bkt/k?select&select-type=2",
        "/bkt?notification",
    ] {
        let r = t
            .send(&t.sign(RawRequest::new("GET", target), UNSIGNED))
            .await;
        expect(&r, 501, "NotImplemented");
    }
    let r = t
        .send(&t.sign(RawRequest::new("POST", "/bkt/k"), UNSIGNED))
        .await;
    expect(&r, 501, "NotImplemented");
    t.intact();
}

#[tokio::test]
async fn virtual_hosted_style_addressing() {
    let env = Env::start_with(chmura_tests::ProxyOptions {
        virtual_host_domain: Some("s3.localhost".into()),
        ..Default::default()
    })
    .await;
    env.make_bucket("vhb");
    let port = env.proxy.addr.port();
    let host = format!("vhb.s3.localhost:{port}");
    let req = RawRequest::new("PUT", "/a/key.txt")
        .header("host", &host)
        .body(b"vhost".to_vec())
        .sign_v4(&host, TENANT_AK, TENANT_SK, UNSIGNED, SystemTime::now());
    let r = raw::send(port, &env.proxy.certs.ca_pem, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        env.store.stored("vhb", "a/key.txt").as_deref(),
        Some(&b"vhost"[..])
    );
}

#[tokio::test]
async fn encoded_subresources_and_unsigned_amz_headers_are_refused() {
    let t = T::new().await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    // SigV2: a sub-resource smuggled in percent-encoded form is not covered by the signature.
    let url = format!(
        "{}&%76ersionId=old",
        sigv2_query("GET", "/bkt/k", now + 300)
    );
    expect(
        &t.send(&RawRequest::new("GET", &url)).await,
        403,
        "SignatureDoesNotMatch",
    );
    // SigV4 header auth: an x-amz-* header added after signing.
    let req = t
        .sign(t.put(b"x"), UNSIGNED)
        .header("x-amz-acl", "public-read");
    expect(&t.send(&req).await, 403, "AccessDenied");
    // A presigned PUT (SignedHeaders=host) turned into a copy by an extra header.
    let s3 = t.env.proxy.sdk_client();
    let pre = s3
        .put_object()
        .bucket("bkt")
        .key("k")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300))
                .expect("cfg"),
        )
        .await
        .expect("presign");
    let target = pre
        .uri()
        .split_once(&format!(":{}", t.env.proxy.addr.port()))
        .expect("uri")
        .1
        .to_string();
    let req = RawRequest::new("PUT", &target).header("x-amz-copy-source", "bkt/other");
    expect(&t.send(&req).await, 403, "AccessDenied");
    t.intact();
}

#[tokio::test]
async fn absurd_content_length_is_refused_before_anything_is_sent() {
    let env = Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("bkt");
    let host = format!("localhost:{}", env.proxy.addr.port());
    // A declared length whose ciphertext length would overflow; the body is never sent.
    let req = RawRequest::new("PUT", "/bkt/huge")
        .header("content-length", "18438866140178046952")
        .sign_v4(&host, TENANT_AK, TENANT_SK, UNSIGNED, SystemTime::now());
    let r = raw::send(env.proxy.addr.port(), &env.proxy.certs.ca_pem, &req).await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("EntityTooLarge")),
        "{}",
        r.text()
    );
    assert!(env.store.stored("bkt", "huge").is_none());
}

/// A store that answers every request with `answer` and hands over each request's head.
async fn recording_store(
    answer: &'static str,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Bounded: a test sends a handful of requests.
        for _ in 0..16 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65_536 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (endpoint, rx)
}

/// aws-sdk-go v1's `X-Amz-Te: append-md5` asks S3 to append the MD5 of the body it sends,
/// and S3 did (`X-Amz-Transfer-Encoding: append-md5`): of the ciphertext, which Chmura would
/// then take for appended bytes, and which the client would look for after the plaintext.
/// Neither the ask nor the answer crosses Chmura.
#[tokio::test]
async fn a_transfer_encoding_of_the_stores_body_is_neither_asked_nor_passed_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, mut seen) = recording_store(
        "HTTP/1.1 200 OK\r\nx-amz-transfer-encoding: append-md5\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    )
    .await;
    let proxy = chmura_tests::Proxy::start(dir.path(), &endpoint, Default::default()).await;
    let host = format!("localhost:{}", proxy.addr.port());
    let req = RawRequest::new("GET", "/bkt/k")
        .header("x-amz-te", "append-md5")
        .sign_v4(
            &host,
            TENANT_AK,
            TENANT_SK,
            &raw::sha256_hex(b""),
            SystemTime::now(),
        );
    let r = raw::send(proxy.addr.port(), &proxy.certs.ca_pem, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-amz-transfer-encoding"), None);
    // (Chmura's start-up check of the store comes first.)
    let mut heads = Vec::new();
    while let Ok(h) = seen.try_recv() {
        heads.push(h);
    }
    let head = heads
        .iter()
        .find(|h| h.starts_with("GET /bkt/k"))
        .unwrap_or_else(|| panic!("the store saw no GET of the object: {heads:?}"));
    assert!(!head.to_ascii_lowercase().contains("x-amz-te"), "{head}");
}

/// The target of a SigV4 presigned PUT of /bkt/k whose signed headers include
/// `x-amz-content-sha256: hash`: aws-sdk-go v1 presigns a header set beforehand this way, with
/// its value as the payload hash.
fn presigned_put_with_hash(host: &str, hash: &str) -> String {
    use aws_lc_rs::hmac;
    let amz_date = raw::amz_date(SystemTime::now());
    let date = &amz_date[..8];
    let region = chmura_tests::REGION;
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={TENANT_AK}%2F{date}%2F{region}%2Fs3%2Faws4_request&X-Amz-Date={amz_date}&X-Amz-Expires=300&X-Amz-SignedHeaders=host%3Bx-amz-content-sha256"
    );
    let canonical = format!(
        "PUT\n/bkt/k\n{query}\nhost:{host}\nx-amz-content-sha256:{hash}\n\nhost;x-amz-content-sha256\n{hash}"
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/s3/aws4_request\n{}",
        raw::sha256_hex(canonical.as_bytes())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &raw::signing_key(TENANT_SK, date));
    let sig = hex::encode(hmac::sign(&key, sts.as_bytes()).as_ref());
    format!("/bkt/k?{query}&X-Amz-Signature={sig}")
}

/// A presigned URL signed over an `x-amz-content-sha256` header: the stated hash is the
/// signature's payload hash, and the body must have it; a value that is no SHA-256
/// (Mint's aws-sdk-go test sends `invalid-sha256`) matches no body.
#[tokio::test]
async fn presigned_urls_with_a_signed_payload_hash() {
    let t = T::new().await;
    let body = b"presigned with a payload hash".to_vec();
    let good = raw::sha256_hex(&body);
    let put = |hash: &str, body: &[u8]| {
        RawRequest::new("PUT", &presigned_put_with_hash(&t.host, hash))
            .header("x-amz-content-sha256", hash)
            .body(body.to_vec())
    };
    for (hash, why) in [
        (raw::sha256_hex(b"another body"), "the hash of another body"),
        ("invalid-sha256".to_string(), "not a SHA-256"),
    ] {
        let r = t.send(&put(&hash, &body)).await;
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some("XAmzContentSHA256Mismatch")),
            "{why}: {}",
            r.text()
        );
        t.intact();
    }
    // The header changed after signing: the signature no longer matches.
    let r = t
        .send(
            &RawRequest::new("PUT", &presigned_put_with_hash(&t.host, &good))
                .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
                .body(body.clone()),
        )
        .await;
    expect(&r, 403, "SignatureDoesNotMatch");
    t.intact();
    let r = t.send(&put(&good, &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stored(), Some(body));
}
