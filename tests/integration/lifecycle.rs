//! Connection lifecycle: keep-alive, Expect: 100-continue, timeouts, graceful shutdown.

use std::time::{Duration, Instant, SystemTime};

use chmura_tests::raw::{self, RawRequest};
use chmura_tests::{Env, ProxyOptions, TENANT_AK, TENANT_SK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let env = Env::start().await;
    env.make_bucket("keepalive");
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let mut s = raw::tls_connect(port, raw::tls_client(&env.proxy.certs.ca_pem))
        .await
        .expect("connect");
    let started = Instant::now();
    for i in 0..20 {
        let req = RawRequest::new("PUT", &format!("/keepalive/k{i}"))
            .body(format!("v{i}").into_bytes())
            .sign_v4(
                &host,
                TENANT_AK,
                TENANT_SK,
                "UNSIGNED-PAYLOAD",
                SystemTime::now(),
            );
        let mut bytes = req.to_bytes(&host);
        // Keep the connection open: drop our "connection: close".
        let text = String::from_utf8(bytes.clone())
            .expect("utf8")
            .replace("connection: close\r\n", "");
        bytes = text.into_bytes();
        s.write_all(&bytes).await.expect("write");
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed after {i} requests");
            got.extend_from_slice(&buf[..n]);
        }
        let resp = raw::parse_response(&got);
        assert_eq!(resp.status, 200, "request {i}");
    }
    // 20 small requests: with TCP_NODELAY on both sides this is far below 20 × 40 ms.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        env.store.stored("keepalive", "k19").as_deref(),
        Some(&b"v19"[..])
    );
}

#[tokio::test]
async fn expect_100_continue_is_honoured_and_refusal_skips_the_body() {
    let env = Env::start().await;
    env.make_bucket("expect");
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let mut s = raw::tls_connect(port, raw::tls_client(&env.proxy.certs.ca_pem))
        .await
        .expect("connect");
    let req = RawRequest::new("PUT", "/expect/k")
        .header("expect", "100-continue")
        .header("content-length", "5")
        .sign_v4(
            &host,
            TENANT_AK,
            TENANT_SK,
            "UNSIGNED-PAYLOAD",
            SystemTime::now(),
        );
    s.write_all(&req.to_bytes(&host)).await.expect("write head");
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.expect("read 100");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.expect("body");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert_eq!(raw::parse_response(&rest).status, 200);
    assert_eq!(
        env.store.stored("expect", "k").as_deref(),
        Some(&b"hello"[..])
    );

    // A bad signature is answered without asking for the body.
    let mut s = raw::tls_connect(port, raw::tls_client(&env.proxy.certs.ca_pem))
        .await
        .expect("connect");
    let req = RawRequest::new("PUT", "/expect/k2")
        .header("expect", "100-continue")
        .header("content-length", "5")
        .sign_v4(
            &host,
            TENANT_AK,
            "not-the-secret-not-the-secret",
            "UNSIGNED-PAYLOAD",
            SystemTime::now(),
        );
    s.write_all(&req.to_bytes(&host)).await.expect("write head");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let r = raw::parse_response(&got);
    assert_eq!(
        (r.status, r.code().as_deref()),
        (403, Some("SignatureDoesNotMatch"))
    );
    assert!(env.store.stored("expect", "k2").is_none());
}

#[tokio::test]
async fn stalled_body_times_out_with_s3_error_and_commits_nothing() {
    let env = Env::start().await; // body_idle_timeout_secs = 5 in the harness
    env.make_bucket("stall");
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let mut s = raw::tls_connect(port, raw::tls_client(&env.proxy.certs.ca_pem))
        .await
        .expect("connect");
    let req = RawRequest::new("PUT", "/stall/k")
        .header("content-length", "1000")
        .sign_v4(
            &host,
            TENANT_AK,
            TENANT_SK,
            "UNSIGNED-PAYLOAD",
            SystemTime::now(),
        );
    s.write_all(&req.to_bytes(&host)).await.expect("head");
    s.write_all(&[7u8; 100]).await.expect("part of body");
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    let r = raw::parse_response(&got);
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("RequestTimeout")),
        "{}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(env.store.stored("stall", "k").is_none());
}

#[tokio::test]
async fn idle_header_read_times_out() {
    let env = Env::start().await; // header_read_timeout_secs = 5
    let port = env.proxy.addr.port();
    let mut s = raw::tls_connect(port, raw::tls_client(&env.proxy.certs.ca_pem))
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("partial head");
    let started = Instant::now();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "connection was not closed by the header timeout");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut env = Env::start().await;
    env.make_bucket("graceful");
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let mut s = raw::tls_connect(port, raw::tls_client(&env.proxy.certs.ca_pem))
        .await
        .expect("connect");
    let req = RawRequest::new("PUT", "/graceful/k")
        .header("content-length", "10")
        .sign_v4(
            &host,
            TENANT_AK,
            TENANT_SK,
            "UNSIGNED-PAYLOAD",
            SystemTime::now(),
        );
    s.write_all(&req.to_bytes(&host)).await.expect("head");
    s.write_all(b"01234").await.expect("half");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shutdown = tokio::spawn(async move {
        let r = env.proxy.shutdown().await;
        (r, env)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused once draining started.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "listener still accepting"
    );
    s.write_all(b"56789").await.expect("rest");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert_eq!(raw::parse_response(&got).status, 200);
    let (r, env) = tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown in time")
        .expect("join");
    r.expect("serve returned Ok");
    assert_eq!(
        env.store.stored("graceful", "k").as_deref(),
        Some(&b"0123456789"[..])
    );
}

/// Connections are served by `server.worker_threads` threads, each accepting on its own copy
/// of the listener. Dropping `serve` (an aborted task, a runtime shutting down) stops every
/// worker at once: listeners closed, open connections closed, no drain.
#[tokio::test]
async fn worker_threads_serve_in_parallel_and_stop_when_serve_is_dropped() {
    let mut env = Env::start_with(ProxyOptions {
        extra_server: "worker_threads = 3\n".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(env.proxy.state.config.server.worker_threads, 3);
    env.make_bucket("workers");
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let ca = env.proxy.certs.ca_pem.clone();
    let puts: Vec<_> = (0..12)
        .map(|i| {
            let (host, ca) = (host.clone(), ca.clone());
            tokio::spawn(async move {
                let mut s = raw::tls_connect(port, raw::tls_client(&ca))
                    .await
                    .expect("connect");
                let req = RawRequest::new("PUT", &format!("/workers/k{i}"))
                    .body(format!("value {i}").into_bytes())
                    .sign_v4(
                        &host,
                        TENANT_AK,
                        TENANT_SK,
                        "UNSIGNED-PAYLOAD",
                        SystemTime::now(),
                    );
                s.write_all(&req.to_bytes(&host)).await.expect("write");
                let mut got = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
                raw::parse_response(&got).status
            })
        })
        .collect();
    for (i, p) in puts.into_iter().enumerate() {
        assert_eq!(p.await.expect("join"), 200, "PUT {i}");
        assert_eq!(
            env.store.stored("workers", &format!("k{i}")),
            Some(format!("value {i}").into_bytes())
        );
    }
    // An idle keep-alive connection, then `serve` dropped.
    let mut idle = raw::tls_connect(port, raw::tls_client(&ca))
        .await
        .expect("connect");
    env.proxy.task.take().expect("serve task").abort();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the open connection was not closed"
    );
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a worker still accepts after serve was dropped");
}

#[tokio::test]
async fn a_refused_upload_is_read_to_its_end_so_the_client_gets_the_error() {
    // A client that sends its body without `Expect: 100-continue` (the Rust SDK, the JS SDK)
    // reads the answer only after the last byte: refused before the body was read, the
    // request must still be read to its end (bounded), or the client sees a reset connection
    // instead of S3's error.
    let env = Env::start().await;
    env.make_bucket("refused");
    let s3 = env
        .proxy
        .sdk_client_as(TENANT_AK, "not-the-secret-not-the-secret");
    let e = s3
        .put_object()
        .bucket("refused")
        .key("big")
        .body(aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 8 << 20]))
        .send()
        .await
        .expect_err("bad signature");
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{e:?}"
    );
    assert_eq!(
        e.as_service_error()
            .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code),
        Some("SignatureDoesNotMatch")
    );
    assert!(env.store.stored("refused", "big").is_none());
}
