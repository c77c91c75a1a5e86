//! The audit log (issue 6): one hash-chained JSON line per request with the fields operators
//! need and no secrets; `chmura audit verify` accepts an honest log and names the first line of
//! every kind of tampering.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::raw::{self, RawRequest};
use chmura_tests::{Env, ProxyOptions, TENANT_AK, TENANT_SK};

#[tokio::test]
async fn every_request_is_audited_in_a_verifiable_chain() {
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["s3:PutObject","s3:GetObject"],"Resource":"arn:aws:s3:::aud/ok/*"}
    ]}"#;
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        policy: Some(policy.into()),
        extra_sections: "[audit]\nfile = \"audit.log\"\ncheckpoint_every = 3\n".into(),
        ..Default::default()
    })
    .await;
    env.make_bucket("aud");
    let s3 = env.proxy.sdk_client();
    // Under a customer key (SSE-C): the record says so, and holds neither the key nor its MD5.
    let customer_key = "Y3VzdG9tZXIta2V5LWZvci10aGUtYXVkaXQtdGVzdCE=";
    let customer_md5 = {
        use base64::Engine;
        use md5::Digest;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(customer_key)
            .expect("b64");
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(raw))
    };
    let put = s3
        .put_object()
        .bucket("aud")
        .key("ok/a.txt")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(customer_key)
        .sse_customer_key_md5(&customer_md5)
        .body(ByteStream::from_static(b"audited body bytes"))
        .send()
        .await
        .expect("put");
    // The `x-amz-request-id` the client saw, to find the record by.
    let put_request_id = {
        use aws_sdk_s3::operation::RequestId;
        put.request_id().expect("x-amz-request-id").to_string()
    };
    // Read the body to the end: the record counts the bytes actually sent, and a body the
    // client drops unread may legitimately be recorded as abandoned.
    let got = s3
        .get_object()
        .bucket("aud")
        .key("ok/a.txt")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(customer_key)
        .sse_customer_key_md5(&customer_md5)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("get body")
        .into_bytes();
    assert_eq!(&got[..], b"audited body bytes");
    let e = s3
        .put_object()
        .bucket("aud")
        .key("denied/b.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("denied");
    assert!(format!("{e:?}").contains("AccessDenied"));
    let host = format!("localhost:{}", env.proxy.addr.port());
    let bad = RawRequest::new("GET", "/aud/ok/a.txt").sign_v4(
        &host,
        TENANT_AK,
        "not-the-secret-not-the-secret",
        "UNSIGNED-PAYLOAD",
        SystemTime::now(),
    );
    let r = raw::send(env.proxy.addr.port(), &env.proxy.certs.ca_pem, &bad).await;
    assert_eq!(r.code().as_deref(), Some("SignatureDoesNotMatch"));
    // A connection that never gets to a request (not TLS at all) is audited too.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(env.proxy.addr)
            .await
            .expect("connect");
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut sink)).await;
    }
    // Nor does a TLS connection whose bytes are no HTTP request (the HTTP layer answers 400).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = raw::tls_connect(
            env.proxy.addr.port(),
            raw::tls_client(&env.proxy.certs.ca_pem),
        )
        .await
        .expect("tls connect");
        c.write_all(b"NOT HTTP AT ALL\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The writer seals an idle log with a checkpoint within a second.
    let path = env.proxy.dir.join("audit.log");
    let mut text = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"checkpoint\""))
            && text.lines().filter(|l| l.contains("\"request\"")).count() >= 4
            && text
                .lines()
                .filter(|l| l.contains("\"connection\""))
                .count()
                >= 2
        {
            break;
        }
    }
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|v: &serde_json::Value| v["type"] == "request")
        .collect();
    assert_eq!(records.len(), 4, "{text}");
    let put = &records[0];
    assert_eq!(put["request_id"], put_request_id.as_str());
    assert_eq!(put["operation"], "PutObject");
    assert_eq!(put["tenant"], "test");
    assert_eq!(put["access_key_id"], TENANT_AK);
    assert_eq!(put["bucket"], "aud");
    assert_eq!(put["key"], "ok/a.txt");
    assert_eq!(put["status"], 200);
    assert_eq!(put["bytes_in"], 18);
    assert_eq!(put["tls"], true);
    assert_eq!(put["tls_version"], "1.3");
    assert_eq!(put["source_ip"], "127.0.0.1");
    assert!(put["decision"]
        .as_str()
        .unwrap()
        .starts_with("allow: s3:PutObject: policy.json Statement[0]"));
    assert_eq!(put["kms_key_id"], "main");
    assert_eq!(put["customer_key"], true);
    assert_eq!(records[1]["customer_key"], true);
    assert_eq!(records[2]["customer_key"], false);
    assert_eq!(records[1]["operation"], "GetObject");
    assert_eq!(records[1]["bytes_out"], 18);
    assert_eq!(records[1]["body"], "complete");
    assert_eq!(records[2]["status"], 403);
    assert!(records[2]["decision"]
        .as_str()
        .unwrap()
        .starts_with("deny:"));
    assert_eq!(records[3]["error"], "SignatureDoesNotMatch");
    assert!(records[3]["tenant"].is_null());
    assert!(
        text.lines()
            .any(|l| l.contains("\"type\":\"connection\"") && l.contains("TLS handshake failed")),
        "{text}"
    );
    let malformed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|v: &serde_json::Value| {
            v["type"] == "connection"
                && v["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("malformed HTTP request"))
        })
        .collect();
    assert_eq!(malformed.len(), 1, "{text}");
    assert_eq!(malformed[0]["tls_version"], "1.3");
    assert_eq!(malformed[0]["source_ip"], "127.0.0.1");
    for secret in [
        TENANT_SK,
        "audited body bytes",
        "Signature=",
        customer_key,
        &customer_md5,
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    // Verify: intact, then each kind of tampering is named.
    let kms = env.proxy.state.kms.as_ref().expect("kms");
    let check = |t: String| {
        let p = env.dir.path().join("tampered.log");
        std::fs::write(&p, t).expect("write");
        p
    };
    assert_eq!(
        chmura_proxy::audit::verify_paths(kms, std::slice::from_ref(&path)).await,
        Ok(6),
        "4 requests and 2 connections"
    );
    let lines: Vec<&str> = text.lines().collect();
    let join = |v: Vec<&str>| v.join("\n") + "\n";
    // Line 3 is the GetObject record (header, PutObject, GetObject, ...).
    let edited = lines[2].replace("\"status\":200", "\"status\":404");
    let mut v = lines.clone();
    v[2] = &edited;
    let e = chmura_proxy::audit::verify_paths(kms, &[check(join(v))])
        .await
        .unwrap_err();
    assert_eq!(e.line, 3, "edit: the edited line itself is named: {e:?}");
    let mut v = lines.clone();
    v.remove(2);
    let e = chmura_proxy::audit::verify_paths(kms, &[check(join(v))])
        .await
        .unwrap_err();
    assert_eq!(e.line, 3, "delete: {e:?}");
    let mut v = lines.clone();
    v.insert(2, lines[1]);
    let e = chmura_proxy::audit::verify_paths(kms, &[check(join(v))])
        .await
        .unwrap_err();
    assert_eq!(e.line, 3, "insert: {e:?}");
    let mut v = lines.clone();
    v.swap(1, 2);
    let e = chmura_proxy::audit::verify_paths(kms, &[check(join(v))])
        .await
        .unwrap_err();
    assert_eq!(e.line, 2, "reorder: {e:?}");
    // The CLI says the same.
    {
        let bin = chmura_tests::chmura_bin();
        let cfg = env.proxy.dir.join("chmura.toml");
        let run = |log: std::path::PathBuf| {
            let cfg = cfg.clone();
            let bin = bin.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    std::process::Command::new(bin)
                        .args(["audit", "verify", "--config"])
                        .arg(cfg)
                        .arg(log)
                        .output()
                        .expect("run")
                })
                .await
                .expect("join")
            }
        };
        let ok = run(path.clone()).await;
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stdout)
        );
        // `chmura audit verify FILE` in the config's folder: ./chmura.toml by default.
        let here = {
            let bin = bin.clone();
            let dir = env.proxy.dir.clone();
            let log = path.clone();
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(bin)
                    .current_dir(dir)
                    .env_remove("CHMURA_CONFIG")
                    .args(["audit", "verify"])
                    .arg(log)
                    .output()
                    .expect("run")
            })
            .await
            .expect("join")
        };
        assert!(
            here.status.success(),
            "{}{}",
            String::from_utf8_lossy(&here.stdout),
            String::from_utf8_lossy(&here.stderr)
        );
        // Cut back to an earlier checkpoint: the chain verifies, the head does not.
        let cp = lines
            .iter()
            .rposition(|l| l.contains("\"checkpoint\""))
            .expect("checkpoint");
        let earlier = lines[..cp]
            .iter()
            .rposition(|l| l.contains("\"checkpoint\""));
        if let Some(e) = earlier {
            let head = chmura_proxy::audit::sha256_hex(lines[cp].as_bytes());
            let cut = check(join(lines[..=e].to_vec()));
            let with_head = |log: std::path::PathBuf, head: String| {
                let cfg = cfg.clone();
                let bin = bin.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        std::process::Command::new(bin)
                            .args(["audit", "verify", "--config"])
                            .arg(cfg)
                            .args(["--head", &head])
                            .arg(log)
                            .output()
                            .expect("run")
                    })
                    .await
                    .expect("join")
                }
            };
            assert!(with_head(path.clone(), head.clone()).await.status.success());
            assert!(
                run(cut.clone()).await.status.success(),
                "a cut at a checkpoint verifies alone"
            );
            assert!(
                !with_head(cut, head).await.status.success(),
                "but not against the head"
            );
        }
        let mut v = lines.clone();
        v.remove(2);
        let bad = run(check(join(v))).await;
        assert!(!bad.status.success());
        assert!(
            String::from_utf8_lossy(&bad.stdout).contains(":3:"),
            "{}",
            String::from_utf8_lossy(&bad.stdout)
        );
    }
}

/// Rotation by size loses and breaks nothing: the chain continues across files, and a missing
/// file is noticed.
#[tokio::test]
async fn rotated_logs_verify_as_one_chain() {
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        extra_sections:
            "[audit]\nfile = \"audit.log\"\ncheckpoint_every = 5\nmax_file_bytes = 4096\n".into(),
        ..Default::default()
    })
    .await;
    env.make_bucket("rot");
    let s3 = env.proxy.sdk_client();
    for i in 0..40 {
        s3.put_object()
            .bucket("rot")
            .key(format!("k{i}"))
            .body(ByteStream::from_static(b"r"))
            .send()
            .await
            .expect("put");
    }
    let dir = env.proxy.dir.clone();
    let kms = env.proxy.state.kms.as_ref().expect("kms");
    let mut files = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = (1..100)
            .map(|n| dir.join(format!("audit.log.{n}")))
            .take_while(|p| p.exists())
            .collect::<Vec<_>>();
        files.push(dir.join("audit.log"));
        if chmura_proxy::audit::verify_paths(kms, &files).await == Ok(40) {
            break;
        }
    }
    assert!(files.len() >= 3, "rotated into {} files", files.len());
    assert_eq!(chmura_proxy::audit::verify_paths(kms, &files).await, Ok(40));
    // Where verify finds a set of files broken: the file's name and the line.
    let named = |e: &chmura_proxy::audit::Broken, i: usize| {
        e.file
            .ends_with(&*files[i].file_name().unwrap().to_string_lossy())
    };
    // A file left out breaks the chain at the next one.
    let mut missing = files.clone();
    missing.remove(1);
    let e = chmura_proxy::audit::verify_paths(kms, &missing)
        .await
        .unwrap_err();
    assert!(named(&e, 2), "{e:?}");
    assert_eq!(e.line, 1);
    assert!(e.why.contains("deleted"), "{e:?}");
    // Files given in the wrong order: the first out of place is named.
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    let e = chmura_proxy::audit::verify_paths(kms, &swapped)
        .await
        .unwrap_err();
    assert!(named(&e, 1), "{e:?}");
    assert_eq!(e.line, 1);
}

/// A keep-alive connection that idles out after its requests is no failure: it gets no
/// connection line. A connection that never sends a request within the header timeout does.
#[tokio::test]
async fn idle_keep_alive_connections_are_not_failures() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        extra_sections: "[audit]\nfile = \"audit.log\"\n".into(),
        ..Default::default()
    })
    .await;
    let port = env.proxy.addr.port();
    let cfg = raw::tls_client(&env.proxy.certs.ca_pem);
    // (The harness's header timeout is 5 s.) One request (unsigned: refused, but a request),
    // then idle until closed.
    let mut served = raw::tls_connect(port, cfg.clone()).await.expect("connect");
    served
        .write_all(format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // Nothing at all.
    let mut silent = raw::tls_connect(port, cfg).await.expect("connect");
    let mut sink = Vec::new();
    for c in [&mut served, &mut silent] {
        let r = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut sink)).await;
        assert!(r.is_ok(), "the connection was closed by the header timeout");
    }
    assert!(String::from_utf8_lossy(&sink).starts_with("HTTP/1.1 403"));
    let path = env.proxy.dir.join("audit.log");
    let mut text = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text
            .lines()
            .filter(|l| l.contains("\"type\":\"request\""))
            .count()
            == 1
            && text
                .lines()
                .last()
                .is_some_and(|l| l.contains("\"checkpoint\""))
            && text.contains("\"type\":\"connection\"")
        {
            break;
        }
    }
    let connections: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"type\":\"connection\""))
        .collect();
    assert_eq!(connections.len(), 1, "{text}");
    assert!(
        connections[0].contains("request headers not received in time"),
        "{text}"
    );
}
