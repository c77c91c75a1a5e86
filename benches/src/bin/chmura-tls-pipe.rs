//! `chmura-tls-pipe`: the floor a TLS-terminating proxy is measured against.
//!
//! Terminates TLS from the client, opens one connection to the store per client connection
//! (TLS with `--upstream-tls`), and copies bytes both ways with `tokio::io::copy_bidirectional`:
//! no HTTP parsing, no signature check, no re-signing, no encryption. `chmura-load --floor`
//! runs it in Chmura's place (two runtime threads, as Chmura on this machine), so its CPU per
//! GB is what TLS-in → copy → TLS-out costs on the machine of the day, in the same harness.
//!
//!   chmura-tls-pipe --listen 127.0.0.1:8443 --cert cert.pem --key key.pem \
//!     --upstream 127.0.0.1:9000 [--upstream-tls --ca ca.pem]

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const COPY_BUF: usize = 64 * 1024;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| arg(&args, name).unwrap_or_else(|| panic!("{name} is required"));
    let listen = need("--listen");
    let upstream = need("--upstream");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(need("--cert"))
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("cert pem");
    let key = PrivateKeyDer::from_pem_file(need("--key")).expect("key pem");
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = args.iter().any(|a| a == "--upstream-tls").then(|| {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(need("--ca")).expect("ca file") {
            roots.add(c.expect("ca pem")).expect("root");
        }
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(client))
    });
    let listener = TcpListener::bind(&listen).await.expect("listen");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, connector, upstream) =
            (acceptor.clone(), connector.clone(), upstream.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut front) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(back) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = back.set_nodelay(true);
            match connector {
                Some(c) => {
                    let name = ServerName::try_from("localhost").expect("name");
                    let Ok(mut back) = c.connect(name, back).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut front, &mut back, COPY_BUF, COPY_BUF,
                    )
                    .await;
                }
                None => {
                    let mut back = back;
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut front, &mut back, COPY_BUF, COPY_BUF,
                    )
                    .await;
                }
            }
        });
    }
}
