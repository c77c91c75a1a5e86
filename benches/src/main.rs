//! `chmura-load`: the end-to-end load driver.
//!
//! Starts the release `chmura-dev-store` (s3s-fs) and `chmura serve` as separate processes,
//! then PUTs and GETs one large object and many small objects with N concurrent connections,
//! directly to the store (HTTP, or HTTPS with --store-tls) and through Chmura (TLS), in the same run. Prints MB/s, ops/s,
//! p50/p99 latency and Chmura's CPU-seconds per GB read from /proc/<pid>/stat.
//!
//! Build and run (see benches/README.md):
//!   cargo build --release --bin chmura --bin chmura-dev-store --bin chmura-load
//!   target/release/chmura-load [--big-mib 1024] [--streams 1] [--small-count 10000] [--small-kib 4] [--conc 32]
//!     [--mp-mib 1024 --part-mib 8 --mp-conc 10 [--mp-only]]   (multipart PUT, parallel ranged GETs)
//!     [--pass-through] [--proxy-first]   (Chmura without encryption; Chmura's phases first)
//!     [--store-tls]   (the store speaks HTTPS: direct and Chmura's upstream pay TLS too)
//!     [--floor]   (chmura-tls-pipe, a bare TLS-in -> copy -> TLS-out relay, in Chmura's place)
//!   CHMURA_STORE_MBPS=N limits each store connection to N MB/s each way (a network-bound
//!   store, as S3's connections are), for the direct and Chmura paths alike.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type Body = UnsyncBoxBody<Bytes, Infallible>;
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

struct Opts {
    big_mib: u64,
    streams: usize,
    small_count: usize,
    small_kib: usize,
    conc: usize,
    /// Multipart phase: object size (0 = off), part size, parts / ranges in flight.
    mp_mib: u64,
    part_mib: u64,
    mp_conc: usize,
    /// Only the multipart phase.
    mp_only: bool,
    /// Chmura without `[kms]` (`server.insecure_no_encryption`): the pass-through stage.
    pass_through: bool,
    /// Run the phases through Chmura before the direct ones (the order's own effect).
    proxy_first: bool,
    /// The store speaks HTTPS (as S3 does): the direct client and Chmura's upstream use TLS.
    store_tls: bool,
    /// Each small object is read this many times in the small GET phase (for profiling).
    get_rounds: usize,
    /// Large-object rounds; the order of the paths alternates from round to round, and
    /// the medians are printed.
    big_rounds: usize,
    /// `chmura-tls-pipe` (TLS-in → copy → out, no HTTP) runs in Chmura's place: the floor.
    floor: bool,
}

/// The dev config without its `[kms]` table, with `insecure_no_encryption` set.
fn pass_through_config(text: &str) -> String {
    let mut out = String::new();
    let mut in_kms = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_kms = t == "[kms]";
        }
        if in_kms {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t == "[server]" {
            out.push_str("insecure_no_encryption = true\n");
        }
    }
    out
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |n: &str, d: u64| {
        args.iter()
            .position(|a| a == n)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    Opts {
        big_mib: get("--big-mib", 1024),
        streams: get("--streams", 1) as usize,
        small_count: get("--small-count", 10_000) as usize,
        small_kib: get("--small-kib", 4) as usize,
        conc: get("--conc", 32) as usize,
        mp_mib: get("--mp-mib", 0),
        part_mib: get("--part-mib", 8),
        mp_conc: get("--mp-conc", 10) as usize,
        mp_only: args.iter().any(|a| a == "--mp-only"),
        pass_through: args.iter().any(|a| a == "--pass-through"),
        proxy_first: args.iter().any(|a| a == "--proxy-first"),
        store_tls: args.iter().any(|a| a == "--store-tls"),
        get_rounds: get("--get-rounds", 1).max(1) as usize,
        big_rounds: get("--big-rounds", 1).max(1) as usize,
        floor: args.iter().any(|a| a == "--floor"),
    }
}

/// Where requests go and how they are signed.
struct Target {
    name: &'static str,
    base: String,
    host: String,
    ak: &'static str,
    sk: &'static str,
    client: HttpClient,
}

impl Target {
    fn request(
        &self,
        method: &str,
        path: &str,
        len: Option<u64>,
        body: Body,
    ) -> http::Request<Body> {
        let uri = format!("{}{}", self.base, path);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("host", &self.host);
        if let Some(n) = len {
            req = req.header("content-length", n);
        }
        let mut req = req.body(body).expect("request");
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity =
            aws_credential_types::Credentials::new(self.ak, self.sk, None, None, "load").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .expect("params")
            .into();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let signable = SignableRequest::new(
            method,
            &uri,
            headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .expect("signable");
        let (instr, _) = sign(signable, &params).expect("sign").into_parts();
        instr.apply_to_request_http1x(&mut req);
        req
    }

    async fn send(&self, req: http::Request<Body>) -> (u16, u64) {
        let resp = self.client.request(req).await.expect("request failed");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut n = 0u64;
        let mut head = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.expect("body").into_data() {
                n += d.len() as u64;
                if status >= 300 && head.len() < 1024 {
                    head.extend_from_slice(&d);
                }
            }
        }
        assert!(
            status < 300,
            "{} answered {status}: {}",
            self.name,
            String::from_utf8_lossy(&head)
        );
        (status, n)
    }
}

impl Target {
    /// Sends and returns status, headers and the body as text (small control responses).
    async fn send_text(&self, req: http::Request<Body>) -> (u16, http::HeaderMap, String) {
        let resp = self.client.request(req).await.expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(status < 300, "{} answered {status}: {text}", self.name);
        (status, headers, text)
    }
}

/// A multipart upload of `mib` MiB in `part_mib` parts with `conc` parts in flight, then a
/// download of the object as parallel ranged GETs of one part each, `conc` in flight (what
/// aws cli and boto3 do by default with 8 MiB parts and 10 threads).
async fn multipart(
    t: Arc<Target>,
    bucket: &str,
    mib: u64,
    part_mib: u64,
    conc: usize,
    chmura: Option<u32>,
) -> Vec<Row> {
    let len = mib * 1024 * 1024;
    let part = part_mib * 1024 * 1024;
    let parts = len.div_ceil(part);
    let block = Bytes::from(chmura_tests::pattern(1024 * 1024, 43));
    let path = format!("/{bucket}/multipart");
    let mut rows = Vec::new();
    let cpu0 = chmura.map(start_phase);
    let start = Instant::now();
    let (_, _, xml) = t
        .send_text(t.request("POST", &format!("{path}?uploads"), Some(0), empty()))
        .await;
    let id = xml
        .split("<UploadId>")
        .nth(1)
        .and_then(|r| r.split("</UploadId>").next())
        .expect("UploadId")
        .to_string();
    let sem = Arc::new(tokio::sync::Semaphore::new(conc));
    let mut tasks = Vec::new();
    for n in 1..=parts {
        let (t, block, sem) = (t.clone(), block.clone(), sem.clone());
        let uri = format!("{path}?partNumber={n}&uploadId={id}");
        let plen = (len - (n - 1) * part).min(part);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("permit");
            let s = Instant::now();
            let req = t.request("PUT", &uri, Some(plen), streamed(plen, block));
            let (_, h, _) = t.send_text(req).await;
            let etag = h
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .expect("part ETag")
                .to_string();
            (n, etag, s.elapsed())
        }));
    }
    let mut lat = Vec::new();
    let mut done = Vec::new();
    for task in tasks {
        let (n, etag, d) = task.await.expect("task");
        lat.push(d);
        done.push((n, etag));
    }
    let mut body = String::from("<CompleteMultipartUpload>");
    for (n, e) in &done {
        body.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            e.replace('"', "&quot;")
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    let blen = body.len() as u64;
    let req = t.request(
        "POST",
        &format!("{path}?uploadId={id}"),
        Some(blen),
        http_body_util::Full::new(Bytes::from(body)).boxed_unsync(),
    );
    t.send_text(req).await;
    rows.push(Row {
        target: t.name,
        phase: format!("MP PUT {mib} MiB /{part_mib}"),
        bytes: len,
        ops: parts as usize,
        secs: start.elapsed().as_secs_f64(),
        lat,
        chmura_cpu: chmura.map(|p| cpu_secs(p) - cpu0.unwrap_or(0.0)),
        peak_kib: chmura.map(phase_peak_kib),
    });

    let cpu0 = chmura.map(start_phase);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..parts {
        let (t, sem, path) = (t.clone(), sem.clone(), path.clone());
        let (a, b) = (n * part, ((n + 1) * part).min(len) - 1);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("permit");
            let s = Instant::now();
            let mut req = t.request("GET", &path, None, empty());
            // Range is not signed (added after signing), as clients may do.
            req.headers_mut().insert(
                "range",
                http::HeaderValue::from_str(&format!("bytes={a}-{b}")).expect("range"),
            );
            let (_, got) = t.send(req).await;
            assert_eq!(got, b - a + 1, "ranged GET length");
            s.elapsed()
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.push(task.await.expect("task"));
    }
    rows.push(Row {
        target: t.name,
        phase: format!("RANGED GET x{conc}"),
        bytes: len,
        ops: parts as usize,
        secs: start.elapsed().as_secs_f64(),
        lat,
        chmura_cpu: chmura.map(|p| cpu_secs(p) - cpu0.unwrap_or(0.0)),
        peak_kib: chmura.map(phase_peak_kib),
    });
    // As in `big`: the next phase starts without this object in the page cache.
    t.send(t.request("DELETE", &path, None, empty())).await;
    settle().await;
    rows
}

fn empty() -> Body {
    Empty::new().boxed_unsync()
}

/// A streamed body of `len` bytes made of one repeated 1 MiB block (never materialized whole).
fn streamed(len: u64, block: Bytes) -> Body {
    let blk = block.len() as u64;
    let n = len.div_ceil(blk);
    let stream = futures_util::stream::iter((0..n).map(move |i| {
        let take = (len - i * blk).min(blk) as usize;
        Ok::<_, Infallible>(Frame::data(block.slice(..take)))
    }));
    StreamBody::new(stream).boxed_unsync()
}

fn client(ca_pem: &str) -> HttpClient {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(https)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest `VmHWM` read so far per process (Chmura, and the floor's pipe with `--floor`):
/// [`reset_peak`] lowers a process's own mark to start a phase's measurement, so the run's
/// peak is kept here.
static PEAK_KIB: std::sync::Mutex<Vec<(u32, u64)>> = std::sync::Mutex::new(Vec::new());

/// The peak RSS of `pid` since the last [`reset_peak`] (KiB); also folded into [`PEAK_KIB`].
fn phase_peak_kib(pid: u32) -> u64 {
    let kib = rss_kib(pid);
    let mut peaks = PEAK_KIB.lock().expect("peaks");
    match peaks.iter_mut().find(|(p, _)| *p == pid) {
        Some((_, k)) => *k = (*k).max(kib),
        None => peaks.push((pid, kib)),
    }
    kib
}

/// Starts a new peak-RSS measurement (`/proc/PID/clear_refs` with 5 resets `VmHWM` to the
/// current RSS), after keeping the mark so far in [`PEAK_KIB`].
fn reset_peak(pid: u32) {
    phase_peak_kib(pid);
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// At the start of a measured phase: resets the peak RSS, returns the CPU seconds so far.
fn start_phase(pid: u32) -> f64 {
    reset_peak(pid);
    cpu_secs(pid)
}

/// The peak RSS of `pid` over the whole run (KiB).
fn run_peak_kib(pid: u32) -> u64 {
    phase_peak_kib(pid);
    let peaks = PEAK_KIB.lock().expect("peaks");
    peaks.iter().find(|(p, _)| *p == pid).map_or(0, |(_, k)| *k)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Row {
    target: &'static str,
    phase: String,
    bytes: u64,
    ops: usize,
    secs: f64,
    lat: Vec<Duration>,
    chmura_cpu: Option<f64>,
    /// Chmura's peak RSS during this phase (KiB), where measured.
    peak_kib: Option<u64>,
}

impl Row {
    fn print(&self) {
        let mut lat = self.lat.clone();
        lat.sort();
        let cpu = match self.chmura_cpu {
            Some(c) if self.bytes > 0 => {
                format!("{:.2} CPU-s/GB ({c:.2} s)", c / (self.bytes as f64 / 1e9))
            }
            Some(c) => format!("{c:.2} CPU-s"),
            None => "-".into(),
        };
        let peak = self
            .peak_kib
            .map(|k| format!(", peak RSS {} MiB", k / 1024))
            .unwrap_or_default();
        println!(
            "{:<8} {:<22} {:>9.1} MB/s {:>9.0} ops/s  p50 {:>8.2} ms  p99 {:>8.2} ms  chmura {}{peak}",
            self.target,
            self.phase,
            self.bytes as f64 / 1e6 / self.secs,
            self.ops as f64 / self.secs,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            cpu
        );
    }
}

/// PUT then GET of `streams` objects of `mib` MiB each, all streams at once.
async fn big(
    t: Arc<Target>,
    bucket: &str,
    mib: u64,
    streams: usize,
    chmura: Option<u32>,
) -> Vec<Row> {
    let len = mib * 1024 * 1024;
    let block = Bytes::from(chmura_tests::pattern(1024 * 1024, 42));
    let mut rows = Vec::new();
    for method in ["PUT", "GET"] {
        let cpu0 = chmura.map(start_phase);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..streams {
            let (t, block, path) = (t.clone(), block.clone(), format!("/{bucket}/big-{i}"));
            tasks.push(tokio::spawn(async move {
                let s = Instant::now();
                if method == "PUT" {
                    t.send(t.request("PUT", &path, Some(len), streamed(len, block)))
                        .await;
                } else {
                    let (_, n) = t.send(t.request("GET", &path, None, empty())).await;
                    assert_eq!(n, len, "GET returned the whole object");
                }
                s.elapsed()
            }));
        }
        let mut lat = Vec::new();
        for task in tasks {
            lat.push(task.await.expect("task"));
        }
        rows.push(Row {
            target: t.name,
            phase: format!("{method} {mib} MiB x{streams}"),
            bytes: len * streams as u64,
            ops: streams,
            secs: start.elapsed().as_secs_f64(),
            lat,
            chmura_cpu: chmura.map(|p| cpu_secs(p) - cpu0.unwrap_or(0.0)),
            peak_kib: chmura.map(phase_peak_kib),
        });
    }
    // The next phase starts from the same store state (and the same free memory: a second
    // large object written while the first one stays in the page cache is written markedly
    // slower on this VM, whichever path writes it).
    for i in 0..streams {
        t.send(t.request("DELETE", &format!("/{bucket}/big-{i}"), None, empty()))
            .await;
    }
    settle().await;
    rows
}

/// Lets the file system finish with a deleted large object before the next phase (the first
/// phase after one ran markedly slower, whichever path it measured).
async fn settle() {
    let _ = tokio::task::spawn_blocking(|| {
        let _ = Command::new("sync").status();
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn small(t: Arc<Target>, bucket: &str, o: &Opts, chmura: Option<u32>) -> Vec<Row> {
    let body = Bytes::from(chmura_tests::pattern(o.small_kib * 1024, 7));
    let mut rows = Vec::new();
    for method in ["PUT", "GET"] {
        let cpu0 = chmura.map(start_phase);
        let start = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..o.conc {
            let (t, next, body, bucket) =
                (t.clone(), next.clone(), body.clone(), bucket.to_string());
            let count = o.small_count;
            let total = if method == "GET" {
                count * o.get_rounds
            } else {
                count
            };
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        break lat;
                    }
                    let path = format!("/{bucket}/small/{:06}", i % count);
                    let s = Instant::now();
                    let req = if method == "PUT" {
                        t.request(
                            "PUT",
                            &path,
                            Some(body.len() as u64),
                            http_body_util::Full::new(body.clone()).boxed_unsync(),
                        )
                    } else {
                        t.request("GET", &path, None, empty())
                    };
                    t.send(req).await;
                    lat.push(s.elapsed());
                }
            }));
        }
        let mut lat = Vec::new();
        for task in tasks {
            lat.extend(task.await.expect("task"));
        }
        let secs = start.elapsed().as_secs_f64();
        let ops = if method == "GET" {
            o.small_count * o.get_rounds
        } else {
            o.small_count
        };
        rows.push(Row {
            target: t.name,
            phase: format!("{method} {} KiB x{ops} c{}", o.small_kib, o.conc),
            bytes: (ops * body.len()) as u64,
            ops,
            secs,
            lat,
            chmura_cpu: chmura.map(|p| cpu_secs(p) - cpu0.unwrap_or(0.0)),
            peak_kib: chmura.map(phase_peak_kib),
        });
    }
    rows
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listening on {port}");
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let p = exe.parent().expect("dir").join(name);
    assert!(
        p.exists(),
        "{} not built: cargo build --release --bin {name}",
        p.display()
    );
    p
}

async fn make_bucket(t: &Target, bucket: &str) {
    let resp = t
        .client
        .request(t.request("PUT", &format!("/{bucket}"), Some(0), empty()))
        .await
        .expect("mb");
    assert!(
        resp.status().is_success() || resp.status().as_u16() == 409,
        "create bucket: {}",
        resp.status()
    );
}

#[tokio::main]
async fn main() {
    let o = opts();
    let dir =
        tempfile::tempdir_in(std::env::var("CHMURA_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("tmp");
    let store_port = free_port();
    let proxy_port = free_port();
    if let Some(m) = chmura_tests::throttle::store_limit() {
        println!("store connections limited to {m} MB/s each way (CHMURA_STORE_MBPS)");
    }
    let _store = Proc(
        Command::new(bin("chmura-dev-store"))
            .args([
                "--dir",
                &dir.path().display().to_string(),
                "--port",
                &store_port.to_string(),
            ])
            .args(["--listen", &format!("127.0.0.1:{proxy_port}")])
            .args(o.store_tls.then_some("--tls"))
            .spawn()
            .expect("store"),
    );
    wait_port(store_port).await;
    let mut config = dir.path().join("chmura.toml");
    if o.pass_through {
        let text = std::fs::read_to_string(&config).expect("config");
        config = dir.path().join("chmura-pass-through.toml");
        std::fs::write(&config, pass_through_config(&text)).expect("write config");
    }
    // Chmura's worker threads (`server.worker_threads`), for comparing settings.
    if let Ok(n) = std::env::var("CHMURA_BENCH_WORKERS") {
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen(
            "[server]\n",
            &format!("[server]\nworker_threads = {n}\n"),
            1,
        );
        config = dir.path().join("chmura-workers.toml");
        std::fs::write(&config, text).expect("write config");
    }
    let mut cmd = Command::new(bin("chmura"));
    cmd.args(["serve", "--config", &config.display().to_string()])
        .env("CHMURA_LOG", "warn");
    let chmura = Proc(cmd.spawn().expect("chmura"));
    wait_port(proxy_port).await;
    let pid = chmura.0.id();
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
    // --floor: chmura-tls-pipe, a bare TLS-in -> copy -> out relay, as a third path.
    let floor_port = free_port();
    let floor = o.floor.then(|| {
        let file = |name: &str| dir.path().join(name).display().to_string();
        let mut cmd = Command::new(bin("chmura-tls-pipe"));
        cmd.args(["--listen", &format!("127.0.0.1:{floor_port}")])
            .args(["--cert", &file("cert.pem"), "--key", &file("key.pem")])
            .args(["--upstream", &format!("127.0.0.1:{store_port}")]);
        if o.store_tls {
            cmd.args(["--upstream-tls", "--ca", &file("ca.pem")]);
        }
        Proc(cmd.spawn().expect("chmura-tls-pipe"))
    });
    if floor.is_some() {
        wait_port(floor_port).await;
    }
    let (store_base, store_host) = if o.store_tls {
        (
            format!("https://localhost:{store_port}"),
            format!("localhost:{store_port}"),
        )
    } else {
        (
            format!("http://127.0.0.1:{store_port}"),
            format!("127.0.0.1:{store_port}"),
        )
    };
    let direct = Arc::new(Target {
        name: "direct",
        base: store_base,
        host: store_host,
        ak: chmura_tests::UPSTREAM_AK,
        sk: chmura_tests::UPSTREAM_SK,
        client: client(&ca),
    });
    let proxied = Arc::new(Target {
        name: "chmura",
        base: format!("https://localhost:{proxy_port}"),
        host: format!("localhost:{proxy_port}"),
        ak: chmura_tests::TENANT_AK,
        sk: chmura_tests::TENANT_SK,
        client: client(&ca),
    });
    // The pipe hands the client's request to the store as it is: signed with the store's keys.
    let piped = Arc::new(Target {
        name: "floor",
        base: format!("https://localhost:{floor_port}"),
        host: format!("localhost:{floor_port}"),
        ak: chmura_tests::UPSTREAM_AK,
        sk: chmura_tests::UPSTREAM_SK,
        client: client(&ca),
    });
    make_bucket(&direct, "bench-direct").await;
    make_bucket(&direct, "bench-proxy").await;
    make_bucket(&direct, "bench-floor").await;
    let mut paths = vec![
        (direct.clone(), "bench-direct", None),
        (proxied.clone(), "bench-proxy", Some(pid)),
    ];
    if let Some(f) = &floor {
        paths.push((piped.clone(), "bench-floor", Some(f.0.id())));
    }
    let store_scheme = if o.store_tls { "HTTPS" } else { "HTTP" };
    println!(
        "chmura-load: {} x {} MiB big objects, {} x {} KiB small objects at {} connections; direct = {store_scheme} to s3s-fs, chmura = TLS through {} ({store_scheme} to s3s-fs)",
        o.streams, o.big_mib, o.small_count, o.small_kib, o.conc,
        if o.floor { "Chmura and through chmura-tls-pipe (floor)" } else { "Chmura" }
    );
    // Warm-up, not measured: connections, the store's and Chmura's first allocations and
    // files (the first phase of a run was the slowest, whichever path it measured).
    for (t, bucket, _) in &paths {
        let len = 64 * 1024 * 1024;
        let block = Bytes::from(chmura_tests::pattern(1024 * 1024, 41));
        let path = format!("/{bucket}/warm-up");
        t.send(t.request("PUT", &path, Some(len), streamed(len, block)))
            .await;
        t.send(t.request("GET", &path, None, empty())).await;
        t.send(t.request("DELETE", &path, None, empty())).await;
    }
    settle().await;
    let mut rows = Vec::new();
    let mut order = paths;
    if o.proxy_first {
        order.reverse();
    }
    if o.mp_mib > 0 {
        for (t, bucket, pid) in order.iter().cloned() {
            rows.extend(multipart(t, bucket, o.mp_mib, o.part_mib, o.mp_conc, pid).await);
        }
        if o.mp_only {
            for r in &rows {
                r.print();
            }
            println!("chmura peak RSS: {} MiB", run_peak_kib(pid) / 1024);
            return;
        }
    }
    let mut big_rows = Vec::new();
    for round in 0..o.big_rounds {
        // Each round starts with the next path (with two paths: the order alternates).
        let mut this = order.clone();
        this.rotate_left(round % order.len());
        for (t, bucket, p) in this {
            big_rows.extend(big(t, bucket, o.big_mib, o.streams, p).await);
        }
    }
    let medians = (o.big_rounds > 1).then(|| medians(&big_rows));
    rows.extend(big_rows);
    for (t, bucket, p) in order {
        rows.extend(small(t, bucket, &o, p).await);
    }
    for r in &rows {
        r.print();
    }
    if let Some(m) = medians {
        println!("{m}");
    }
    println!("chmura peak RSS: {} MiB", run_peak_kib(pid) / 1024);
}

/// Per large-object phase: the median throughput of each path over the rounds, their ratio,
/// and the median of Chmura's CPU per GB.
fn medians(rows: &[Row]) -> String {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let mut out = String::new();
    let mut phases: Vec<&str> = rows.iter().map(|r| r.phase.as_str()).collect();
    phases.sort();
    phases.dedup();
    for phase in phases {
        let of = |target: &str| -> Vec<&Row> {
            rows.iter()
                .filter(|r| r.phase == phase && r.target == target)
                .collect()
        };
        let d = of("direct");
        let rate = |rs: &[&Row]| median(rs.iter().map(|r| r.bytes as f64 / 1e6 / r.secs).collect());
        let dr = rate(&d);
        for target in ["chmura", "floor"] {
            let c = of(target);
            if c.is_empty() {
                continue;
            }
            let cpus: Vec<f64> = c
                .iter()
                .filter_map(|r| Some(r.chmura_cpu? / (r.bytes as f64 / 1e9)))
                .collect();
            let (lo, hi) = cpus.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
            let cpu = median(cpus);
            let cr = rate(&c);
            out += &format!(
                "median of {} rounds  {phase:<22} direct {dr:>7.1} MB/s  {target:<6} {cr:>7.1} MB/s  ratio {:>4.0} %  {target} {cpu:.2} CPU-s/GB (min {lo:.2}, max {hi:.2})\n",
                c.len(),
                100.0 * cr / dr,
            );
        }
    }
    out.trim_end().to_string()
}
