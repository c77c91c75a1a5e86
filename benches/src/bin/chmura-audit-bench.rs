//! `chmura-audit-bench`: what the audit log adds to a request — reserving a queue slot when
//! the request starts and handing over its record when it ends (the writer thread does the
//! hashing and disk I/O) — measured per request, with a writer writing to a real file.
//!
//!   cargo build --release --bin chmura-audit-bench && target/release/chmura-audit-bench [--requests 200000] [--rate 20000]

use std::time::Instant;

use chmura_config::AuditConfig;
use chmura_proxy::audit::{Audit, Record};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // Offered load in requests per second (0: as fast as possible, which measures the queue
    // full and back-pressure rather than the added latency).
    let rate: u64 = args
        .iter()
        .position(|a| a == "--rate")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = AuditConfig {
        file: Some(dir.path().join("audit.log")),
        stdout: false,
        checkpoint_every: 1000,
        queue: 65_536,
        fail_closed: false,
        max_file_bytes: None,
    };
    let audit = Audit::start(
        &cfg,
        "bench",
        zeroize::Zeroizing::new([7u8; 32]),
        vec![1, 2, 3],
    )
    .expect("audit");
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        if rate > 0 && i % 100 == 0 {
            let due = t + std::time::Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let s = Instant::now();
        let slot = audit.reserve().await.expect("slot");
        let mut r = Record::new();
        r.insert("type".into(), "request".into());
        r.insert("time".into(), chmura_proxy::audit::now_iso().into());
        r.insert("request_id".into(), format!("{i:016X}").into());
        r.insert("tenant".into(), "acme".into());
        r.insert("operation".into(), "GetObject".into());
        r.insert("bucket".into(), "data".into());
        r.insert("key".into(), "reports/2026/q4.csv".into());
        r.insert("status".into(), 200.into());
        r.insert(
            "decision".into(),
            "allow: s3:GetObject: acme.json Statement[0]".into(),
        );
        slot.send(r);
        lat.push(s.elapsed());
    }
    let total = t.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    // Let the writer finish, then report what it wrote.
    while audit.written.load(std::sync::atomic::Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let drained = t.elapsed();
    let size = std::fs::metadata(dir.path().join("audit.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "audit: {n} records; added per request p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs; {:.0} records/s offered, writer done after {:.2} s ({:.0} records/s, {} MiB)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        n as f64 / total.as_secs_f64(),
        drained.as_secs_f64(),
        n as f64 / drained.as_secs_f64(),
        size >> 20
    );
}
