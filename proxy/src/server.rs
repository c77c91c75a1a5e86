//! Listeners: TLS termination (rustls, TLS 1.2+ only), HTTP/1.1 with keep-alive, timeouts,
//! a connection limit, and graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    audit_connection(state, peer, true, None, why).await;
}

/// A `connection` audit line: a connection that failed before a request could be read.
async fn audit_connection(
    state: &State,
    peer: std::net::SocketAddr,
    tls: bool,
    tls_version: Option<&str>,
    why: &str,
) {
    if let Some(a) = state.audit.as_ref() {
        if let Ok(slot) = a.reserve().await {
            let mut r = crate::audit::Record::new();
            r.insert("type".into(), "connection".into());
            r.insert("time".into(), crate::audit::now_iso().into());
            r.insert("source_ip".into(), peer.ip().to_string().into());
            r.insert("tls".into(), tls.into());
            if let Some(v) = tls_version {
                r.insert("tls_version".into(), v.into());
            }
            r.insert("error".into(), why.into());
            slot.send(r);
        }
    }
}

/// How a connection ended, when the HTTP layer refused what the client sent before any of it
/// became a request (hyper answers 400 or 431, or closes on the header timeout): such a
/// connection gets a `connection` audit line, as a failed handshake does. Errors of requests
/// that reached the handler are in those requests' own lines.
async fn connection_ended(
    state: &State,
    peer: std::net::SocketAddr,
    tls_version: Option<&str>,
    served: usize,
    e: &hyper::Error,
) {
    let why = if e.is_parse_too_large() {
        "request header section too large (answered 431)"
    } else if e.is_parse() {
        "malformed HTTP request (answered 400)"
    } else if e.is_timeout() && served == 0 {
        // (After requests, a timeout is an idle keep-alive connection closed: not a failure.)
        "request headers not received in time"
    } else {
        tracing::debug!(peer = %peer, error = %e, "connection ended with error");
        return;
    };
    tracing::info!(peer = %peer, error = %e, "connection refused before a request");
    audit_connection(state, peer, tls_version.is_some(), tls_version, why).await;
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
///
/// Connections are accepted and served by `server.worker_threads` threads, each with its own
/// single-threaded runtime and its own pool of store connections: a request, its store
/// request and both TLS sessions run on one thread, with no task handed across threads.
/// The admin listener and the readiness probe run on the caller's runtime. Dropping the
/// returned future stops the workers at once (no drain).
pub async fn serve(
    listeners: Listeners,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = state.config.server.clone();
    let tls = tls_config(&server).map_err(std::io::Error::other)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let limit = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    let Listeners {
        tls: tls_listener,
        insecure_http,
        admin,
    } = listeners;
    if let Some(admin) = admin {
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
    let _stop_prober = AbortOnDrop(prober);
    let tls_listener = tls_listener.into_std()?;
    let insecure_http = insecure_http.map(|l| l.into_std()).transpose()?;
    // `true` asks the workers to drain; dropping the sender stops them at once.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let workers = server.worker_threads.max(1);
    for index in 0..workers {
        let worker = Worker {
            index,
            tls: tls_listener.try_clone()?,
            insecure_http: insecure_http
                .as_ref()
                .map(std::net::TcpListener::try_clone)
                .transpose()?,
            acceptor: acceptor.clone(),
            limit: limit.clone(),
            state: state.clone(),
            stop: stop_rx.clone(),
        };
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("chmura-worker-{index}"))
            .spawn(move || {
                let _ = done.send(worker.run());
            })?;
    }
    drop((tls_listener, insecure_http, done_tx, stop_rx));
    tokio::pin!(shutdown);
    // A worker ends early only when it could not start (its runtime or listener failed).
    let early = tokio::select! {
        () = &mut shutdown => None,
        r = done_rx.recv() => Some(r.unwrap_or(Ok(()))),
    };
    state
        .metrics
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let mut result = early.unwrap_or(Ok(()));
    // Each worker drains within the grace period, so this ends.
    while let Some(r) = done_rx.recv().await {
        if result.is_ok() {
            result = r;
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
    result
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One worker thread: accepts on its copy of the listeners and serves what it accepted.
struct Worker {
    index: usize,
    tls: std::net::TcpListener,
    insecure_http: Option<std::net::TcpListener>,
    acceptor: TlsAcceptor,
    limit: Arc<tokio::sync::Semaphore>,
    state: Arc<State>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    fn run(self) -> std::io::Result<()> {
        crate::upstream::set_worker(self.index);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(self.serve());
        // Connections still open after the grace period end here.
        rt.shutdown_timeout(Duration::from_secs(1));
        result
    }

    async fn serve(self) -> std::io::Result<()> {
        let Worker {
            tls,
            insecure_http,
            acceptor,
            limit,
            state,
            mut stop,
            ..
        } = self;
        let tls = TcpListener::from_std(tls)?;
        let insecure_http = insecure_http.map(TcpListener::from_std).transpose()?;
        let server = state.config.server.clone();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let handshake_timeout = Duration::from_secs(server.header_read_timeout_secs);
        let drain = loop {
            let accept_plain = async {
                match &insecure_http {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            let (stream, peer, is_tls) = tokio::select! {
                r = stop.changed() => break r.is_ok(),
                r = tls.accept() => match r {
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
                    let handler_state = st.clone();
                    let served = Arc::new(AtomicUsize::new(0));
                    let counter = served.clone();
                    let svc = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        handle(handler_state.clone(), info, req)
                    });
                    let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        let n = served.load(Ordering::Relaxed);
                        connection_ended(&st, peer, Some(version), n, &e).await;
                    }
                });
            } else {
                let handler_state = st.clone();
                let served = Arc::new(AtomicUsize::new(0));
                let counter = served.clone();
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    handle(handler_state.clone(), conn_info, req)
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    let _open = open;
                    if let Err(e) = fut.await {
                        let n = served.load(Ordering::Relaxed);
                        connection_ended(&st, peer, None, n, &e).await;
                    }
                });
            }
        };
        drop((tls, insecure_http));
        if !drain {
            return Ok(());
        }
        tokio::select! {
            () = graceful.shutdown() => tracing::debug!("worker: all connections closed"),
            () = tokio::time::sleep(Duration::from_secs(server.shutdown_grace_secs)) => {
                tracing::warn!("grace period over; closing remaining connections");
            }
        }
        Ok(())
    }
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
