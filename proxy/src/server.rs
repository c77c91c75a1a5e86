//! Listeners: TLS termination (rustls, TLS 1.2+ only), HTTP/1.1 with keep-alive, timeouts,
//! a connection limit, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chmura_config::{ServerConfig, TlsVersion};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::handler::{handle, ConnInfo};
use crate::State;

/// Builds the rustls server config: aws-lc-rs provider, TLS 1.2 and/or 1.3 only.
pub fn tls_config(s: &ServerConfig) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.tls_cert_file)
        .map_err(|e| format!("server.tls_cert_file: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server.tls_cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("server.tls_cert_file: no certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_file(&s.tls_key_file)
        .map_err(|e| format!("server.tls_key_file: {e}"))?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_tls_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_key_file: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A connection that never got to a request (a TLS 1.0 client, a scanner): counted, and
/// audited as a `connection` line.
async fn handshake_failed(state: &State, peer: std::net::SocketAddr, why: &str) {
    state.metrics.tls_handshake_failures.inc();
    if let Some(a) = state.audit.as_ref() {
        if let Ok(slot) = a.reserve().await {
            let mut r = crate::audit::Record::new();
            r.insert("type".into(), "connection".into());
            r.insert("time".into(), crate::audit::now_iso().into());
            r.insert("source_ip".into(), peer.ip().to_string().into());
            r.insert("error".into(), why.into());
            slot.send(r);
        }
    }
}

/// Listeners the server accepts on.
pub struct Listeners {
    pub tls: TcpListener,
    pub insecure_http: Option<TcpListener>,
    /// `[admin]`: /metrics, /healthz, /readyz.
    pub admin: Option<TcpListener>,
}

/// Serves until `shutdown` completes, then drains in-flight requests (bounded by
/// `shutdown_grace_secs`) and returns.
pub async fn serve(
    listeners: Listeners,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = state.config.server.clone();
    let tls = tls_config(&server).map_err(std::io::Error::other)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    let handshake_timeout = Duration::from_secs(server.header_read_timeout_secs);
    tokio::pin!(shutdown);
    let mut listeners = listeners;
    if let Some(admin) = listeners.admin.take() {
        tokio::spawn(crate::metrics::serve_admin(admin, state.clone()));
    }
    // Readiness: probe the store and the key provider now, then whenever they are idle.
    let prober = {
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                crate::metrics::probe(&st).await;
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        })
    };

    loop {
        let accept_plain = async {
            match &listeners.insecure_http {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        let (stream, peer, is_tls) = tokio::select! {
            () = &mut shutdown => break,
            r = listeners.tls.accept() => match r {
                Ok((s, p)) => (s, p, true),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            r = accept_plain => match r {
                Ok((s, p)) => (s, p, false),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = crate::metrics::ConnGuard::new(&state.metrics.open_connections);
        let conn_info = ConnInfo {
            peer,
            tls: is_tls,
            tls_version: None,
        };
        let st = state.clone();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(server.header_read_timeout_secs))
            .keep_alive(true)
            // The read buffer also bounds how much body one read takes; header size is enforced by
            // the handler (RequestHeaderSectionTooLarge), so the buffer may be larger.
            .max_buf_size((server.max_header_bytes * 2).max(256 * 1024));
        if is_tls {
            let acceptor = acceptor.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let _open = open;
                let tls_stream = match tokio::time::timeout(
                    handshake_timeout,
                    acceptor.accept(BlockReader::new(stream)),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %peer, error = %e, "TLS handshake failed");
                        handshake_failed(&st, peer, "TLS handshake failed").await;
                        return;
                    }
                    Err(_) => {
                        tracing::info!(peer = %peer, "TLS handshake timed out");
                        handshake_failed(&st, peer, "TLS handshake timed out").await;
                        return;
                    }
                };
                let version = match tls_stream.get_ref().1.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
                    _ => "other",
                };
                st.metrics
                    .tls_handshakes
                    .with_label_values(&[version])
                    .inc();
                let info = ConnInfo {
                    tls_version: Some(version),
                    ..conn_info
                };
                let svc = service_fn(move |req| handle(st.clone(), info, req));
                let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with error");
                }
            });
        } else {
            let svc = service_fn(move |req| handle(st.clone(), conn_info, req));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let fut = graceful.watch(conn);
            tokio::spawn(async move {
                let _permit = permit;
                let _open = open;
                if let Err(e) = fut.await {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with error");
                }
            });
        }
    }
    state
        .metrics
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    drop(listeners);
    prober.abort();
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(Duration::from_secs(server.shutdown_grace_secs)) => {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }
    // Write what the audit queue holds and seal the log.
    if state.audit.is_some() {
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(a) = st.audit.as_ref() {
                a.shutdown();
            }
        })
        .await;
    }
    Ok(())
}

/// Size of the block [`BlockReader`] reads from the client's socket.
const READ_BLOCK: usize = 64 * 1024;

/// Reads a TCP stream in 64 KiB blocks under rustls, which asks for at most 4 KiB per read:
/// without it a 1 GiB upload costs ~260,000 `recvmsg` calls instead of ~16,000. Used for
/// clients' connections and for https connections to the store.
/// The block is released whenever the socket has nothing to read, so idle keep-alive
/// connections hold no buffer. Writes pass straight through.
pub(crate) struct BlockReader<S> {
    inner: S,
    buf: bytes::BytesMut,
    /// Off: reads go straight to `inner` (plain-HTTP upstream connections, read by hyper
    /// in large buffers of its own).
    enabled: bool,
}

impl<S> BlockReader<S> {
    pub(crate) fn new(inner: S) -> Self {
        BlockReader::with(inner, true)
    }

    pub(crate) fn with(inner: S, enabled: bool) -> Self {
        BlockReader {
            inner,
            buf: bytes::BytesMut::new(),
            enabled,
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for BlockReader<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.buf.is_empty() {
            if !this.enabled || out.remaining() >= READ_BLOCK {
                return std::pin::Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // Reuses the block's allocation once it has been read out.
            this.buf.reserve(READ_BLOCK);
            match tokio_util::io::poll_read_buf(
                std::pin::Pin::new(&mut this.inner),
                cx,
                &mut this.buf,
            ) {
                Poll::Pending => {
                    this.buf = bytes::BytesMut::new();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    this.buf = bytes::BytesMut::new();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
        let n = out.remaining().min(this.buf.len());
        out.put_slice(&this.buf[..n]);
        bytes::Buf::advance(&mut this.buf, n);
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for BlockReader<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn block_reader_delivers_every_byte_and_holds_no_block_while_idle() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let mut br = BlockReader::new(r);
        // Nothing to read yet: the read waits, and no block is held meanwhile.
        let mut small = [0u8; 4096];
        let waited = tokio::time::timeout(Duration::from_millis(20), br.read(&mut small)).await;
        assert!(waited.is_err());
        assert_eq!(br.buf.capacity(), 0);

        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(90_001) {
                w.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        // Small reads (as rustls makes), odd sizes, and reads larger than a block (which
        // bypass it).
        let sizes = [4096, 17, READ_BLOCK + 1, 5, 65_536];
        for i in 0.. {
            let mut buf = vec![0u8; sizes[i % sizes.len()]];
            let n = br.read(&mut buf).await.unwrap();
            assert!(n > 0, "early end after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            assert!(br.buf.len() <= READ_BLOCK);
            if got.len() == data.len() {
                break;
            }
        }
        writer.await.unwrap();
        assert!(got == data, "bytes differ");
        // The writer is gone: end of stream, and the block is released.
        assert_eq!(br.read(&mut small).await.unwrap(), 0);
        assert_eq!(br.buf.capacity(), 0);
    }
}
