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
    let env = Env::start().await;
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
}
