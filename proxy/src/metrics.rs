//! Prometheus metrics (issue 6) in a registry passed in (tests get a fresh one), and the admin
//! listener: `/metrics`, `/healthz`, `/readyz`. Labels are bounded: tenant, operation, status
//! class, reason; never bucket or key names.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::State;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How recent the last answer of the store and the key provider must be for `/readyz`.
pub const READY_WINDOW_SECS: i64 = 60;

/// Whether Chmura should get traffic: not draining, and the store and the key provider
/// answered within [`READY_WINDOW_SECS`] (probed every 15 s when idle).
pub fn ready(state: &State) -> Result<(), String> {
    if state.metrics.draining.load(Ordering::Relaxed) {
        return Err("draining".into());
    }
    let now = unix_now();
    if now - state.upstream.last_answer.load(Ordering::Relaxed) > READY_WINDOW_SECS {
        return Err("the upstream store has not answered recently".into());
    }
    if let Some(k) = state.kms.as_ref() {
        if now - k.stats().last_ok.load(Ordering::Relaxed) > READY_WINDOW_SECS {
            return Err("the key provider has not answered recently".into());
        }
    }
    if let Some(a) = state.audit.as_ref() {
        if !a.healthy.load(Ordering::Relaxed) {
            return Err("the audit log cannot be written".into());
        }
    }
    Ok(())
}

/// Probes the store (ListBuckets: any answer counts) and the key provider (a data key for
/// the context `{chmura:purpose=probe}`) when they have been idle.
pub async fn probe(state: &State) {
    let now = unix_now();
    if now - state.upstream.last_answer.load(Ordering::Relaxed) > 20 {
        let (uri, host) = state.upstream.uri(None, "", "");
        if let Ok(req) = http::Request::builder()
            .method(http::Method::GET)
            .uri(&uri)
            .header(http::header::HOST, host)
            .body(http_body_util::BodyExt::boxed_unsync(
                http_body_util::BodyExt::map_err(
                    http_body_util::Empty::<Bytes>::new(),
                    |e| match e {},
                ),
            ))
        {
            let _ = state.upstream.send(req, false).await;
        }
    }
    if let Some(k) = state.kms.as_ref() {
        if now - k.stats().last_ok.load(Ordering::Relaxed) > 20 {
            k.probe().await;
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub in_flight: IntGauge,
    pub duration: HistogramVec,
    pub bytes: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub policy_denials: IntCounterVec,
    pub integrity_failures: IntCounter,
    pub kms_calls: IntCounterVec,
    pub kms_cache: IntCounterVec,
    pub kms_errors: IntCounter,
    pub audit_records: IntCounter,
    pub audit_refused: IntCounter,
    pub audit_waited: IntCounter,
    pub mfa: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub open_connections: IntGauge,
    /// Time until the response body ended (or was dropped).
    pub full_duration: HistogramVec,
    pub tls_handshake_failures: IntCounter,
    pub build_info: IntGaugeVec,
    /// Not ready while draining.
    pub draining: AtomicBool,
    /// One scrape brings counters up to date at a time (two at once would both add the gap).
    sync_lock: std::sync::Mutex<()>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are fixed and unique: registration cannot fail.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    /// Registers collectors owned by other parts (upstream, key provider) too.
    pub fn new_with(
        registry: Registry,
        upstream: &crate::upstream::Upstream,
        kms: Option<&crate::kms::Kms>,
    ) -> Metrics {
        let m = Metrics::new(registry);
        let _ = m.registry.register(Box::new(upstream.duration.clone()));
        let _ = m.registry.register(Box::new(upstream.bytes.clone()));
        for d in ["in", "out"] {
            upstream.bytes.with_label_values(&[d]);
        }
        if let Some(k) = kms {
            if let Ok(h) = HistogramVec::new(
                HistogramOpts::new(
                    "chmura_kms_call_duration_seconds",
                    "Key provider call latency, by operation.",
                )
                .buckets(vec![
                    0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
                &["operation"],
            ) {
                let _ = m.registry.register(Box::new(h.clone()));
                for op in ["GenerateDataKey", "Decrypt", "Encrypt"] {
                    h.with_label_values(&[op]);
                }
                let _ = k.stats().latency.set(h);
            }
            if let Ok(e) = IntCounterVec::new(
                Opts::new(
                    "chmura_kms_call_errors_total",
                    "Failed key provider calls, by operation.",
                ),
                &["operation"],
            ) {
                let _ = m.registry.register(Box::new(e.clone()));
                for op in ["GenerateDataKey", "Decrypt", "Encrypt"] {
                    e.with_label_values(&[op]);
                }
                let _ = k.stats().errors.set(e);
            }
        }
        m
    }

    pub fn new(registry: Registry) -> Metrics {
        let r = &registry;
        let cv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels)
                    .unwrap_or_else(|_| unreachable!("static metric definition")),
            )
        };
        let c = |name: &str, help: &str| {
            reg(
                r,
                IntCounter::new(name, help).unwrap_or_else(|_| unreachable!("static metric")),
            )
        };
        let m = Metrics {
            requests: cv(
                "chmura_requests_total",
                "Requests answered, by tenant, S3 operation and status class.",
                &["tenant", "operation", "status"],
            ),
            in_flight: reg(
                r,
                IntGauge::new("chmura_requests_in_flight", "Requests being handled.")
                    .unwrap_or_else(|_| unreachable!("static metric")),
            ),
            duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "chmura_request_duration_seconds",
                        "Time to the first byte: until the response head, by operation.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ]),
                    &["operation"],
                )
                .unwrap_or_else(|_| unreachable!("static metric")),
            ),
            bytes: cv(
                "chmura_bytes_total",
                "Declared body bytes, by tenant and direction (in: request, out: response).",
                &["tenant", "direction"],
            ),
            auth_failures: cv(
                "chmura_auth_failures_total",
                "Requests refused before a tenant was known, by reason (S3 error code).",
                &["reason"],
            ),
            policy_denials: cv(
                "chmura_policy_denials_total",
                "Requests refused by a tenant's policies, by tenant and operation.",
                &["tenant", "operation"],
            ),
            integrity_failures: c(
                "chmura_integrity_failures_total",
                "Stored objects that failed authentication when read (any is an alert).",
            ),
            kms_calls: cv(
                "chmura_kms_calls_total",
                "Calls to the key provider, by operation.",
                &["operation"],
            ),
            kms_cache: cv(
                "chmura_data_key_cache_total",
                "Data-key cache events: lookups that hit or missed, and entries evicted (result=eviction, not a lookup).",
                &["result"],
            ),
            kms_errors: c("chmura_kms_errors_total", "Key provider calls that failed."),
            audit_records: c("chmura_audit_records_total", "Audit records written."),
            audit_refused: c(
                "chmura_audit_refused_total",
                "Requests refused because the audit queue was full (on_full = fail_closed).",
            ),
            audit_waited: c(
                "chmura_audit_backpressure_total",
                "Requests that waited for room in a full audit queue (on_full = backpressure).",
            ),
            mfa: cv(
                "chmura_mfa_total",
                "Requests carrying x-amz-mfa, by result.",
                &["result"],
            ),
            tls_handshakes: cv(
                "chmura_tls_handshakes_total",
                "Completed TLS handshakes, by protocol version.",
                &["version"],
            ),
            open_connections: reg(
                r,
                IntGauge::new("chmura_open_connections", "Client connections open.")
                    .unwrap_or_else(|_| unreachable!("static metric")),
            ),
            full_duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "chmura_request_body_duration_seconds",
                        "Time until the response body was sent completely (or abandoned), by operation.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                    ]),
                    &["operation"],
                )
                .unwrap_or_else(|_| unreachable!("static metric")),
            ),
            tls_handshake_failures: c(
                "chmura_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out (old protocol versions, scanners).",
            ),
            build_info: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("chmura_build_info", "Chmura's version."),
                    &["version"],
                )
                .unwrap_or_else(|_| unreachable!("static metric")),
            ),
            draining: AtomicBool::new(false),
            sync_lock: std::sync::Mutex::new(()),
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Known label values exist from the start (a scrape shows them at 0).
        for r in ["valid", "refused"] {
            m.mfa.with_label_values(&[r]);
        }
        for op in ["GenerateDataKey", "Decrypt", "Encrypt"] {
            m.kms_calls.with_label_values(&[op]);
        }
        for r in ["hit", "miss", "eviction"] {
            m.kms_cache.with_label_values(&[r]);
        }
        for v in ["1.2", "1.3"] {
            m.tls_handshakes.with_label_values(&[v]);
        }
        m
    }

    /// One answered request.
    pub fn observe(
        &self,
        tenant: Option<&str>,
        op: Option<&str>,
        status: u16,
        secs: f64,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let tenant = tenant.unwrap_or("-");
        let op = op.unwrap_or("-");
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[tenant, op, class]).inc();
        self.duration.with_label_values(&[op]).observe(secs);
        self.bytes
            .with_label_values(&[tenant, "in"])
            .inc_by(bytes_in);
        self.bytes
            .with_label_values(&[tenant, "out"])
            .inc_by(bytes_out);
    }

    /// Brings counters kept elsewhere (KMS stats, audit, integrity) up to date.
    fn sync(&self, state: &State) {
        let up = |c: &IntCounter, v: u64| {
            let cur = c.get();
            if v > cur {
                c.inc_by(v - cur);
            }
        };
        let upv = |c: &IntCounterVec, label: &str, v: u64| {
            let m = c.with_label_values(&[label]);
            let cur = m.get();
            if v > cur {
                m.inc_by(v - cur);
            }
        };
        if let Some(k) = state.kms.as_ref() {
            let s = k.stats();
            upv(
                &self.kms_calls,
                "GenerateDataKey",
                s.generate_calls.load(Ordering::Relaxed),
            );
            upv(
                &self.kms_calls,
                "Decrypt",
                s.decrypt_calls.load(Ordering::Relaxed),
            );
            upv(
                &self.kms_calls,
                "Encrypt",
                s.wrap_calls.load(Ordering::Relaxed),
            );
            upv(&self.kms_cache, "hit", s.cache_hits.load(Ordering::Relaxed));
            upv(
                &self.kms_cache,
                "miss",
                s.decrypt_calls.load(Ordering::Relaxed),
            );
            upv(
                &self.kms_cache,
                "eviction",
                s.cache_evictions.load(Ordering::Relaxed),
            );
            up(&self.kms_errors, s.failures.load(Ordering::Relaxed));
        }
        if let Some(a) = state.audit.as_ref() {
            up(&self.audit_records, a.written.load(Ordering::Relaxed));
            up(&self.audit_refused, a.refused.load(Ordering::Relaxed));
            up(&self.audit_waited, a.waited.load(Ordering::Relaxed));
        }
    }

    pub fn render(&self, state: &State) -> String {
        {
            let _one = self.sync_lock.lock();
            self.sync(state);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A response body that reports, once, how long the whole response took and how it ended;
/// it also carries the request's audit record, sent then with the bytes actually sent.
pub struct TimedBody<B> {
    inner: std::pin::Pin<Box<B>>,
    hist: prometheus::Histogram,
    started: std::time::Instant,
    done: bool,
    sent: u64,
    /// The body's exact length when known (hyper stops polling once it is sent).
    expected: Option<u64>,
    audit: Option<(crate::audit::Slot, crate::audit::Record)>,
}

impl<B: http_body::Body> TimedBody<B> {
    pub fn new(
        inner: B,
        hist: prometheus::Histogram,
        started: std::time::Instant,
        audit: Option<(crate::audit::Slot, crate::audit::Record)>,
    ) -> Self {
        let expected = inner.size_hint().exact();
        TimedBody {
            inner: Box::pin(inner),
            hist,
            started,
            done: false,
            sent: 0,
            expected,
            audit,
        }
    }
    fn finish(&mut self, outcome: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let secs = self.started.elapsed().as_secs_f64();
        self.hist.observe(secs);
        if let Some((slot, mut r)) = self.audit.take() {
            r.insert("bytes_out".into(), self.sent.into());
            r.insert("body".into(), outcome.into());
            r.insert("duration_ms".into(), (secs * 1000.0).into());
            slot.send(r);
        }
    }
}

impl<B: http_body::Body> http_body::Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.sent += bytes::Buf::remaining(d) as u64;
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.finish("error"),
            std::task::Poll::Ready(None) => self.finish("complete"),
            std::task::Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for TimedBody<B> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let secs = self.started.elapsed().as_secs_f64();
            self.hist.observe(secs);
            if let Some((slot, mut r)) = self.audit.take() {
                // Sent in full (hyper stops at the length) or not read to the end.
                let outcome = if self.expected == Some(self.sent) {
                    "complete"
                } else {
                    "abandoned"
                };
                r.insert("bytes_out".into(), self.sent.into());
                r.insert("body".into(), outcome.into());
                r.insert("duration_ms".into(), (secs * 1000.0).into());
                slot.send(r);
            }
        }
    }
}

/// Counts an open connection for as long as it lives.
pub struct ConnGuard(IntGauge);

impl ConnGuard {
    pub fn new(g: &IntGauge) -> ConnGuard {
        g.inc();
        ConnGuard(g.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn admin(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready(&state) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let ok = match state.metrics_token.as_ref() {
                None => true,
                Some(t) => req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|v| {
                        crate::sigv4::ct_eq(v.trim().as_bytes(), t.expose().as_bytes())
                    }),
            };
            if ok {
                let mut r = text(StatusCode::OK, state.metrics.render(&state));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            } else {
                text(StatusCode::UNAUTHORIZED, "bearer token required\n".into())
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    })
}

/// Admin connections served at once (scrapers and probes are few).
const ADMIN_CONNECTIONS: usize = 64;

/// Serves the admin endpoints (plain HTTP, meant for a private address) until the process ends.
pub async fn serve_admin(listener: tokio::net::TcpListener, state: Arc<State>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let st = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| admin(st.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            // A connection lives at most a minute.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}
