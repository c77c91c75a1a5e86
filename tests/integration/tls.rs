//! TLS: 1.2 and 1.3 accepted, 1.3-only when configured, anything older refused.

use std::sync::Arc;

use chmura_tests::{raw, Env, ProxyOptions};

fn client(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

async fn negotiated(port: u16, cfg: Arc<rustls::ClientConfig>) -> Option<rustls::ProtocolVersion> {
    let s = raw::tls_connect(port, cfg).await.ok()?;
    s.get_ref().1.protocol_version()
}

#[tokio::test]
async fn tls12_and_tls13_are_accepted_by_default() {
    let env = Env::start().await;
    let (port, ca) = (env.proxy.addr.port(), env.proxy.certs.ca_pem.clone());
    assert_eq!(
        negotiated(port, client(&ca, &[&rustls::version::TLS12])).await,
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        negotiated(port, client(&ca, &[&rustls::version::TLS13])).await,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn min_tls_13_refuses_tls12() {
    let env = Env::start_with(ProxyOptions {
        min_tls: Some("1.3"),
        ..Default::default()
    })
    .await;
    let (port, ca) = (env.proxy.addr.port(), env.proxy.certs.ca_pem.clone());
    assert_eq!(
        negotiated(port, client(&ca, &[&rustls::version::TLS12])).await,
        None
    );
    assert_eq!(
        negotiated(port, client(&ca, &[&rustls::version::TLS13])).await,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// TLS 1.0 and 1.1 handshakes, made with the openssl command-line client (rustls cannot speak
/// them), are refused.
#[tokio::test]
async fn tls10_and_tls11_are_refused() {
    let Some(openssl) = chmura_tests::tools::require("openssl", "tls10_and_tls11_are_refused")
    else {
        return;
    };
    let env = Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true, // the audit log's checkpoint key comes from the key provider
        extra_sections: "[audit]\nfile = \"audit.log\"\n".into(),
        ..Default::default()
    })
    .await;
    let port = env.proxy.addr.port();
    let run = |flag: &'static str| {
        let openssl = openssl.clone();
        let ca = env.proxy.certs.ca_file.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(openssl)
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    flag,
                    "-cipher",
                    "DEFAULT@SECLEVEL=0",
                ])
                .arg("-CAfile")
                .arg(ca)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("openssl runs")
        })
    };
    // The control: openssl's TLS 1.2 handshake succeeds, so a failure below is the version.
    let ok = run("-tls1_2").await.expect("join");
    assert!(
        ok.status.success(),
        "tls1.2 control failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for flag in ["-tls1", "-tls1_1"] {
        let out = run(flag).await.expect("join");
        assert!(
            !out.status.success(),
            "{flag} handshake was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Each refused client is counted and audited (issue 6: a connection line per connection
    // that failed before a request could be read).
    assert_eq!(env.proxy.state.metrics.tls_handshake_failures.get(), 2);
    let log = env.proxy.dir.join("audit.log");
    let mut refused = 0;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        refused = text
            .lines()
            .filter(|l| {
                l.contains("\"type\":\"connection\"")
                    && l.contains("TLS handshake failed")
                    && l.contains("\"tls\":true")
            })
            .count();
        if refused >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(refused, 2, "one connection line per refused client");
}

/// A store reached over https (as AWS S3 is): objects go up encrypted and come back whole
/// and by range, through rustls on Chmura's client side; a store whose certificate Chmura
/// does not trust gets nothing.
#[tokio::test]
async fn an_https_store_is_verified_and_used() {
    use chmura_tests::{Proxy, Store, TestCerts};
    let dir = tempfile::tempdir().expect("tempdir");
    let store_certs_dir = dir.path().join("store-certs");
    std::fs::create_dir_all(&store_certs_dir).expect("dir");
    let store_certs = TestCerts::generate(&store_certs_dir);
    let store = Store::start_tls(&dir.path().join("store"), &store_certs).await;
    assert!(store.endpoint().starts_with("https://"));
    std::fs::create_dir_all(store.root.join("secure")).expect("bucket");

    let trusting = Proxy::start(
        &dir.path().join("proxy"),
        &store.endpoint(),
        ProxyOptions {
            encrypt: true,
            extra_upstream: format!(
                "ca_file = {:?}\n",
                store_certs.ca_file.display().to_string()
            ),
            ..Default::default()
        },
    )
    .await;
    let s3 = trusting.sdk_client();
    // Several blocks' worth, and not a multiple of any buffer size.
    let body = chmura_tests::pattern(3 * 1024 * 1024 + 12_345, 77);
    s3.put_object()
        .bucket("secure")
        .key("obj")
        .body(body.clone().into())
        .send()
        .await
        .expect("put over an https store");
    let stored = store.stored("secure", "obj").expect("stored");
    assert_ne!(stored.len(), 0);
    assert!(
        !stored.windows(64).any(|w| w == &body[1000..1064]),
        "the store holds plaintext"
    );
    let got = s3
        .get_object()
        .bucket("secure")
        .key("obj")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(got[..] == body[..], "whole object differs");
    let part = s3
        .get_object()
        .bucket("secure")
        .key("obj")
        .range("bytes=65000-2200000")
        .send()
        .await
        .expect("ranged get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(part[..] == body[65000..=2_200_000], "range differs");

    // The same store, but Chmura trusts only the system's roots: the handshake fails and
    // the client gets an error; nothing new is stored.
    let distrusting = Proxy::start(
        &dir.path().join("proxy2"),
        &store.endpoint(),
        ProxyOptions {
            encrypt: true,
            ..Default::default()
        },
    )
    .await;
    let r = distrusting
        .sdk_client()
        .put_object()
        .bucket("secure")
        .key("other")
        .body(b"not to be stored".to_vec().into())
        .send()
        .await;
    assert!(r.is_err(), "a store with an untrusted certificate was used");
    assert!(store.stored("secure", "other").is_none());
}
