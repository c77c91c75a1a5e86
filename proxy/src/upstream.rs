//! The upstream store: re-signing (SigV4) and sending over a pooled hyper client.
//!
//! The client's own authentication never reaches the store: the handler strips it, and this
//! module signs the request afresh with the upstream credentials. Bodies are sent as
//! `UNSIGNED-PAYLOAD` with an exact Content-Length (the decoded length), so the store never
//! sees the client's aws-chunked framing and the body is never buffered to hash it. The one
//! exception is Chmura's own framing: an upload that must carry a checksum (Object Lock,
//! `upstream.checksum_uploads`) goes as aws-chunked with a CRC32 trailer over the ciphertext
//! (`seal::TrailerBody`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, Transfer-Encoding chunked).
//!
//! Signing uses `sigv4.rs` (the same canonical forms the client side verifies) with the day's
//! signing key kept between requests; a unit test checks every signature against the
//! `aws-sigv4` crate's for the same request. (`aws-sigv4` cost ~13 % of Chmura's CPU on small
//! GETs: a fresh signing key and several allocations per request.)

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use chmura_config::{UpstreamConfig, UpstreamCredentials};
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;

use crate::error::S3Error;
use crate::sigv4::{self, uri_encode_string, SigningKey};

pub type BoxError = Box<dyn StdError + Send + Sync>;
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Upstream credentials: static, or the AWS default chain (environment, profile, web
/// identity, ECS/IMDS) with the current credentials cached until five minutes before expiry.
enum Creds {
    Static(Identity),
    Chain {
        provider: aws_credential_types::provider::SharedCredentialsProvider,
        cached: tokio::sync::RwLock<Option<Identity>>,
    },
}

impl Creds {
    async fn identity(&self) -> Result<Identity, S3Error> {
        match self {
            Creds::Static(i) => Ok(i.clone()),
            Creds::Chain { provider, cached } => {
                let fresh = |i: &Identity| {
                    i.expiration()
                        .is_none_or(|exp| exp > SystemTime::now() + Duration::from_secs(300))
                };
                if let Some(i) = cached.read().await.as_ref().filter(|i| fresh(i)) {
                    return Ok(i.clone());
                }
                let mut slot = cached.write().await;
                if let Some(i) = slot.as_ref().filter(|i| fresh(i)) {
                    return Ok(i.clone());
                }
                use aws_credential_types::provider::ProvideCredentials;
                let c = provider.provide_credentials().await.map_err(|e| {
                    S3Error::upstream(
                        "ServiceUnavailable",
                        "Chmura has no credentials for the upstream store right now.",
                        format!("credential chain: {e}"),
                    )
                })?;
                let i: Identity = c.into();
                *slot = Some(i.clone());
                Ok(i)
            }
        }
    }
}

/// The signing key of one day, for one access key and secret.
struct DayKey {
    access_key_id: String,
    secret: zeroize::Zeroizing<String>,
    date: String,
    key: SigningKey,
}

/// Headers never signed (as the `aws-sigv4` crate: they may change on the way).
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// Signs `req` for S3 with SigV4 at `now`: sets `x-amz-date`, `x-amz-content-sha256` (and
/// `x-amz-security-token` for temporary credentials) and `Authorization`. Every header present
/// but [`UNSIGNED_HEADERS`] is signed. The URI's path and query are already in canonical form
/// (`Upstream::uri`), the query is canonicalised again all the same.
fn sign_v4<B>(
    req: &mut http::Request<B>,
    creds: &Credentials,
    region: &str,
    unsigned_body: bool,
    now: SystemTime,
    cache: &std::sync::Mutex<Option<DayKey>>,
) -> Result<(), S3Error> {
    let amz_date = crate::auth::format_amz_date(now);
    let date = &amz_date[..8];
    let payload = if unsigned_body && req.headers().contains_key("x-amz-trailer") {
        // An aws-chunked body with a checksum trailer (seal::TrailerBody).
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    } else if unsigned_body {
        "UNSIGNED-PAYLOAD"
    } else {
        sigv4::EMPTY_SHA256
    };
    let hv = |v: &str| {
        http::HeaderValue::from_str(v).map_err(|_| S3Error::internal("signing header value"))
    };
    let h = req.headers_mut();
    h.insert("x-amz-date", hv(&amz_date)?);
    h.insert(
        "x-amz-content-sha256",
        http::HeaderValue::from_static(payload),
    );
    if let Some(token) = creds.session_token() {
        h.insert("x-amz-security-token", hv(token)?);
    }
    let mut signed: Vec<String> = h
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !UNSIGNED_HEADERS.contains(k))
        .map(str::to_string)
        .collect();
    signed.sort();
    signed.dedup();
    let signed_list = signed.join(";");
    let query = req.uri().query().unwrap_or("");
    let canonical_query = if query.is_empty() {
        String::new()
    } else {
        sigv4::canonical_query(&sigv4::parse_query(query), None)
    };
    let path = match req.uri().path() {
        "" => "/",
        p => p,
    };
    let cr = sigv4::canonical_request(
        req.method().as_str(),
        path,
        &canonical_query,
        &sigv4::canonical_headers(req.headers(), &signed),
        &signed_list,
        payload,
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let sts = sigv4::string_to_sign(&amz_date, &scope, &cr);
    let akid = creds.access_key_id();
    let secret = creds.secret_access_key();
    let signature = {
        let mut slot = cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = slot
            .as_ref()
            .is_some_and(|k| k.date == date && k.access_key_id == akid && *k.secret == secret);
        if !fresh {
            *slot = Some(DayKey {
                access_key_id: akid.to_string(),
                secret: zeroize::Zeroizing::new(secret.to_string()),
                date: date.to_string(),
                key: SigningKey::derive(secret, date, region, "s3"),
            });
        }
        match slot.as_ref() {
            Some(k) => k.key.sign(&sts),
            None => return Err(S3Error::internal("signing key")),
        }
    };
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed_list}, Signature={signature}"
    );
    req.headers_mut()
        .insert(http::header::AUTHORIZATION, hv(&auth)?);
    Ok(())
}

thread_local! {
    /// Index of the worker thread running on this thread (`usize::MAX` elsewhere).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Marks the calling thread as worker `i`: its requests use the `i`-th store client.
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

pub struct Upstream {
    cfg: UpstreamConfig,
    creds: Creds,
    /// Today's signing key (derived once a day, or when the credentials change).
    day_key: std::sync::Mutex<Option<DayKey>>,
    /// One client (and so one connection pool) per worker thread, and a last one for every
    /// other thread (the readiness probe, `rekey`): a request goes to the store on
    /// connections owned by the thread serving it, never waking another thread.
    clients: Vec<Client<hyper_rustls::HttpsConnector<BlockConnector>, UpstreamBody>>,
    /// Time to the store's response head, by outcome (registered by `metrics::Metrics`).
    pub duration: prometheus::HistogramVec,
    /// Unix seconds of the last answer from the store (any status): readiness.
    pub last_answer: std::sync::atomic::AtomicI64,
    /// Bytes to and from the store as declared by Content-Length (ciphertext when encrypting).
    pub bytes: prometheus::IntCounterVec,
}

impl Upstream {
    /// `workers`: the number of worker threads that will send (see [`set_worker`]).
    pub async fn new(cfg: &UpstreamConfig, workers: usize) -> Result<Upstream, String> {
        let creds = match &cfg.credentials {
            UpstreamCredentials::Static {
                access_key_id,
                secret_access_key,
            } => Creds::Static(
                Credentials::new(
                    access_key_id,
                    secret_access_key.expose(),
                    None,
                    None,
                    "chmura-config",
                )
                .into(),
            ),
            UpstreamCredentials::DefaultChain => {
                let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(cfg.region.clone()))
                    .load()
                    .await;
                let provider = conf.credentials_provider().ok_or_else(|| {
                    "upstream credentials: the AWS default chain is unavailable".to_string()
                })?;
                let creds = Creds::Chain {
                    provider,
                    cached: tokio::sync::RwLock::new(None),
                };
                // Fail at startup, not on the first request, when no credentials can be found.
                creds.identity().await.map_err(|e| {
                    format!("upstream credentials: {}", e.detail.unwrap_or_default())
                })?;
                creds
            }
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &cfg.ca_file {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("upstream.ca_file: {e}"))?;
            for c in certs {
                roots
                    .add(c.map_err(|e| format!("upstream.ca_file: {e}"))?)
                    .map_err(|e| format!("upstream.ca_file: {e}"))?;
            }
        } else {
            let native = rustls_native_roots();
            for c in native {
                let _ = roots.add(c);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(BlockConnector(http));
        let clients = (0..=workers)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(256)
                    // Each download from the store holds one read buffer; hyper's default
                    // lets it grow to ~400 KiB. The client side's (server.rs) is 256 KiB.
                    .http1_max_buf_size(UPSTREAM_READ_BUFFER)
                    .build(https.clone())
            })
            .collect();
        Ok(Upstream {
            cfg: cfg.clone(),
            creds,
            day_key: std::sync::Mutex::new(None),
            clients,
            duration: prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "chmura_upstream_request_duration_seconds",
                    "Time to the upstream store's response head, by outcome (ok, 4xx, 5xx, unreachable, timeout).",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["outcome"],
            )
            .map_err(|e| format!("metrics: {e}"))?,
            last_answer: std::sync::atomic::AtomicI64::new(0),
            bytes: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "chmura_upstream_bytes_total",
                    "Body bytes sent to and received from the store (Content-Length; ciphertext when encrypting), by direction.",
                ),
                &["direction"],
            )
            .map_err(|e| format!("metrics: {e}"))?,
        })
    }

    /// The client of the calling worker thread (the last one on other threads).
    fn client(&self) -> &Client<hyper_rustls::HttpsConnector<BlockConnector>, UpstreamBody> {
        let i = WORKER.with(std::cell::Cell::get);
        let last = self.clients.len() - 1;
        &self.clients[i.min(last)]
    }

    /// The upstream URI for a bucket/key and an already-canonical query string.
    pub fn uri(&self, bucket: Option<&str>, key: &str, query: &str) -> (String, String) {
        let c = &self.cfg;
        let mut path = c.base_path.clone();
        let host = match bucket {
            Some(b) if !c.path_style => format!("{b}.{}", c.authority),
            Some(b) => {
                path.push('/');
                path.push_str(&uri_encode_string(b.as_bytes(), false));
                c.authority.clone()
            }
            None => c.authority.clone(),
        };
        path.push('/');
        path.push_str(&uri_encode_string(key.as_bytes(), true));
        let mut uri = format!("{}://{host}{path}", c.scheme);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(query);
        }
        (uri, host)
    }

    /// Signs and sends. `unsigned_body`: the payload hash is UNSIGNED-PAYLOAD, else the
    /// request's body is empty and its hash is that of the empty string.
    pub async fn send(
        &self,
        mut req: http::Request<UpstreamBody>,
        unsigned_body: bool,
    ) -> Result<http::Response<hyper::body::Incoming>, S3Error> {
        let identity = self.creds.identity().await?;
        let creds = identity
            .data::<Credentials>()
            .ok_or_else(|| S3Error::internal("upstream identity without credentials"))?;
        sign_v4(
            &mut req,
            creds,
            &self.cfg.region,
            unsigned_body,
            SystemTime::now(),
            &self.day_key,
        )?;
        // Without a body the response must come within the timeout. With a body, the upload
        // itself may take long; client stalls are bounded by the body idle timeout instead.
        let timeout = if unsigned_body {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_secs(self.cfg.timeout_secs)
        };
        let started = std::time::Instant::now();
        let sent = req
            .headers()
            .get("x-amz-decoded-content-length")
            .or_else(|| req.headers().get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.bytes.with_label_values(&["out"]).inc_by(sent);
        let result = tokio::time::timeout(timeout, self.client().request(req)).await;
        if let Ok(Ok(r)) = &result {
            let got = r
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            self.bytes.with_label_values(&["in"]).inc_by(got);
        }
        let outcome = match &result {
            Ok(Ok(r)) if r.status().is_server_error() => "5xx",
            Ok(Ok(r)) if r.status().is_client_error() => "4xx",
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "unreachable",
            Err(_) => "timeout",
        };
        self.duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        if matches!(result, Ok(Ok(_))) {
            self.last_answer.store(
                crate::metrics::unix_now(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                let mut detail = e.to_string();
                let mut src = e.source();
                while let Some(s) = src {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                    src = s.source();
                }
                Err(S3Error::upstream(
                    "ServiceUnavailable",
                    "The upstream store could not be reached. Please try again.",
                    detail,
                ))
            }
            Err(_) => Err(S3Error::upstream(
                "ServiceUnavailable",
                "The upstream store did not answer in time. Please try again.",
                "upstream timeout",
            )),
        }
    }
}

/// The system's CA bundle (SSL_CERT_FILE or the Debian path), for https upstreams without
/// `ca_file`.
fn rustls_native_roots() -> Vec<rustls_pki_types::CertificateDer<'static>> {
    let path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_string());
    match rustls_pki_types::CertificateDer::pem_file_iter(&path) {
        Ok(it) => it.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };

    /// The signature `aws-sigv4` computes for the same request (what Chmura used before).
    fn reference(
        req: &http::Request<()>,
        creds: &Credentials,
        unsigned: bool,
        now: SystemTime,
    ) -> String {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity: Identity = creds.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-central-1")
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        let body = if unsigned {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(&[])
        };
        let signable =
            SignableRequest::new(req.method().as_str(), &uri, headers.into_iter(), body).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut r = req.clone();
        instructions.apply_to_request_http1x(&mut r);
        r.headers()["authorization"].to_str().unwrap().to_string()
    }

    #[test]
    fn signatures_match_aws_sigv4() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_123);
        let cases = [
            (
                "GET",
                "http://127.0.0.1:9000/bucket/a%20b/%C3%A9t%C3%A9.txt",
                vec![],
                false,
            ),
            (
                "PUT",
                "http://127.0.0.1:9000/bucket/k",
                vec![
                    ("content-length", "12"),
                    ("content-type", "text/plain"),
                    ("x-amz-meta-a", "  two   spaces "),
                    ("user-agent", "x"),
                ],
                true,
            ),
            (
                "GET",
                "http://b.s3.example:9000/?list-type=2&prefix=a%2Fb&max-keys=5&delimiter=%2F",
                vec![],
                false,
            ),
            (
                "POST",
                "http://127.0.0.1:9000/bucket/k?uploads=",
                vec![("x-amz-tagging", "a=1&b=2")],
                false,
            ),
            (
                "PUT",
                "http://127.0.0.1:9000/bucket/k?partNumber=3&uploadId=x%2By",
                vec![("content-length", "5"), ("x-amz-copy-source", "/src/k%20x")],
                true,
            ),
        ];
        for with_token in [false, true] {
            let creds = Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                with_token.then(|| "session-token".to_string()),
                None,
                "test",
            );
            for (method, uri, headers, unsigned) in &cases {
                let mut b = http::Request::builder().method(*method).uri(*uri);
                let host = uri.split('/').nth(2).unwrap();
                b = b.header("host", host);
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                let req = b.body(()).unwrap();
                let want = reference(&req, &creds, *unsigned, now);
                let mut mine = req.clone();
                let cache = std::sync::Mutex::new(None);
                // Twice: the second one from the cached day key.
                for _ in 0..2 {
                    sign_v4(&mut mine, &creds, "eu-central-1", *unsigned, now, &cache).unwrap();
                    assert_eq!(
                        mine.headers()["authorization"],
                        want.as_str(),
                        "{method} {uri}"
                    );
                }
            }
        }
    }
}

/// The most one store connection's read buffer grows to (a download's frames come from it).
const UPSTREAM_READ_BUFFER: usize = 256 * 1024;

/// The store's connections: TCP from `HttpConnector`, read through
/// [`crate::server::BlockReader`] when rustls runs on top (https endpoints), so a download
/// from the store is not read 4 KiB per system call.
#[derive(Clone)]
pub struct BlockConnector(HttpConnector);

/// A connection made by [`BlockConnector`].
pub struct BlockConn(hyper_util::rt::TokioIo<crate::server::BlockReader<tokio::net::TcpStream>>);

impl tower_service::Service<http::Uri> for BlockConnector {
    type Response = BlockConn;
    type Error = <HttpConnector as tower_service::Service<http::Uri>>::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<BlockConn, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(BlockConn(hyper_util::rt::TokioIo::new(
                crate::server::BlockReader::with(tcp, tls),
            )))
        })
    }
}

impl hyper_util::client::legacy::connect::Connection for BlockConn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.0.inner().get_ref().connected()
    }
}

impl hyper::rt::Read for BlockConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for BlockConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
