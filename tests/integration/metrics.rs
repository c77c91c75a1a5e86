//! /metrics after a scripted mix of requests: each outcome counted under the right labels;
//! /healthz, /readyz, the bearer token; the shipped alert rules and dashboard name only
//! metrics that exist.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::raw::{self, RawRequest};
use chmura_tests::{Env, ProxyOptions, TENANT_AK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn admin_get(env: &Env, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(env.proxy.admin_addr)
        .await
        .expect("admin");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// `name{labels}` → value, from the Prometheus text format.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            k.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && labels
                    .iter()
                    .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn a_scripted_mix_is_counted_under_the_right_labels() {
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["s3:PutObject","s3:GetObject"],"Resource":"arn:aws:s3:::met/ok/*"}
    ]}"#;
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        policy: Some(policy.into()),
        files: vec![("metrics.token".into(), "scrape-token-0123456789".into())],
        // One cached data key: reading the second object evicts the first.
        extra_kms: "data_key_cache_entries = 1\n".into(),
        extra_sections:
            "[admin]\nlisten = \"127.0.0.1:9\"\nmetrics_bearer_token_file = \"metrics.token\"\n"
                .into(),
        ..Default::default()
    })
    .await;
    env.make_bucket("met");
    assert_eq!(admin_get(&env, "/healthz", None).await.0, 200);
    // Ready once the store and the key provider answered the first probe.
    let mut ready = 0;
    for _ in 0..50 {
        ready = admin_get(&env, "/readyz", None).await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 200);
    assert_eq!(admin_get(&env, "/metrics", None).await.0, 401);
    assert_eq!(admin_get(&env, "/metrics", Some("wrong")).await.0, 401);
    let before = samples(
        &admin_get(&env, "/metrics", Some("scrape-token-0123456789"))
            .await
            .1,
    );

    let s3 = env.proxy.sdk_client();
    for k in ["ok/a", "ok/b"] {
        s3.put_object()
            .bucket("met")
            .key(k)
            .body(ByteStream::from_static(b"metered"))
            .send()
            .await
            .expect("put");
    }
    // Read to the end so the request's metrics are recorded before the scrape below.
    s3.get_object()
        .bucket("met")
        .key("ok/a")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("get body");
    let e = s3
        .put_object()
        .bucket("met")
        .key("no/c")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("denied");
    assert!(format!("{e:?}").contains("AccessDenied"));
    let host = format!("localhost:{}", env.proxy.addr.port());
    let bad = RawRequest::new("GET", "/met/ok/a").sign_v4(
        &host,
        TENANT_AK,
        "not-the-secret-not-the-secret",
        "UNSIGNED-PAYLOAD",
        SystemTime::now(),
    );
    raw::send(env.proxy.addr.port(), &env.proxy.certs.ca_pem, &bad).await;
    // A tampered object: one flipped bit in the store.
    let path = env.store.root.join("met").join("ok/b");
    let mut stored = std::fs::read(&path).expect("stored");
    stored[20] ^= 1;
    std::fs::write(&path, stored).expect("tamper");
    let got = s3.get_object().bucket("met").key("ok/b").send().await;
    if let Ok(r) = got {
        assert!(r.body.collect().await.is_err(), "tampered body delivered");
    }

    let text = admin_get(&env, "/metrics", Some("scrape-token-0123456789"))
        .await
        .1;
    let after = samples(&text);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let t = ("tenant", "test");
    assert_eq!(
        delta(
            "chmura_requests_total",
            &[t, ("operation", "PutObject"), ("status", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "chmura_requests_total",
            &[t, ("operation", "PutObject"), ("status", "4xx")]
        ),
        1.0
    );
    assert!(
        delta(
            "chmura_requests_total",
            &[t, ("operation", "GetObject"), ("status", "2xx")]
        ) >= 1.0
    );
    assert_eq!(
        delta(
            "chmura_requests_total",
            &[("tenant", "-"), ("status", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "chmura_auth_failures_total",
            &[("reason", "SignatureDoesNotMatch")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "chmura_policy_denials_total",
            &[t, ("operation", "PutObject")]
        ),
        1.0
    );
    // This instance's own count: nothing before the tampered read (the registry is passed
    // in and nothing is process-wide, so other tests' failures do not show here), then one
    // per attempt (the SDK may retry a read that failed early).
    assert_eq!(value(&before, "chmura_integrity_failures_total", &[]), 0.0);
    assert!(
        value(&after, "chmura_integrity_failures_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        delta(
            "chmura_kms_calls_total",
            &[("operation", "GenerateDataKey")]
        ) >= 2.0
    );
    assert!(
        delta("chmura_data_key_cache_total", &[("result", "eviction")]) >= 1.0,
        "{text}"
    );
    assert!(delta("chmura_data_key_cache_total", &[("result", "miss")]) >= 1.0);
    assert!(delta("chmura_bytes_total", &[t, ("direction", "in")]) >= 14.0);
    assert!(
        value(
            &after,
            "chmura_request_duration_seconds_count",
            &[("operation", "PutObject")]
        ) >= 3.0
    );
    assert_eq!(value(&after, "chmura_requests_in_flight", &[]), 0.0);
    assert_eq!(value(&after, "chmura_build_info", &[]), 1.0);
    // The SDK's pooled connection(s) and the raw request's own.
    assert!(delta("chmura_tls_handshakes_total", &[("version", "1.3")]) >= 2.0);
    // Ciphertext to the store: 7 plaintext bytes become 35 per PUT.
    assert!(delta("chmura_upstream_bytes_total", &[("direction", "out")]) >= 70.0);
    assert!(
        value(
            &after,
            "chmura_upstream_request_duration_seconds_count",
            &[("outcome", "ok")]
        ) >= 3.0
    );
    assert!(
        value(
            &after,
            "chmura_kms_call_errors_total",
            &[("operation", "Decrypt")]
        ) == 0.0
    );
    // No bucket or key names in labels.
    assert!(!text.contains("met/") && !text.contains("ok/a"), "{text}");

    // Every metric the shipped rules and dashboard name exists.
    let names: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect();
    for f in [
        "deploy/prometheus/chmura-alerts.yml",
        "deploy/grafana/chmura-dashboard.json",
    ] {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(f),
        )
        .expect("deploy file");
        if f.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&doc).expect("dashboard is JSON");
        }
        let mut rest = doc.as_str();
        let mut seen = 0;
        while let Some(i) = rest.find("chmura_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            if name.ends_with('_') {
                continue; // "chmura_*" in prose
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                names.contains(base),
                "{f} names {name}, which Chmura does not export"
            );
            seen += 1;
        }
        assert!(seen >= 5, "{f}");
    }
}

#[tokio::test]
async fn not_ready_without_a_store_or_while_draining() {
    // An upstream that refuses connections: alive, never ready.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        upstream_endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..Default::default()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(admin_get(&env, "/healthz", None).await.0, 200);
    let (status, body) = admin_get(&env, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream"), "{body}");
    // A working one: ready, then draining after shutdown.
    let mut env = Env::start().await;
    let mut ready = 0;
    for _ in 0..50 {
        ready = admin_get(&env, "/readyz", None).await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 200);
    env.proxy.shutdown().await.expect("shutdown");
    let (status, body) = admin_get(&env, "/readyz", None).await;
    assert_eq!((status, body.trim()), (503, "not ready: draining"));
}
