//! A per-connection bandwidth limit for the test store (`CHMURA_STORE_MBPS`), so the load
//! driver can also measure Chmura in front of a store whose connections are network-bound, as
//! S3's are (tens of MB/s per connection), instead of only a store on the same two cores.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes one direction may send at once after an idle spell: 64 KiB.
const BURST: f64 = 64.0 * 1024.0;

/// What a sender waits to have earned before it sends again (16 KiB, a TLS record: a receiver
/// then sees pieces of the size a NIC's receive offload hands over).
const GRAIN: f64 = 16.0 * 1024.0;

/// One direction's token bucket: `rate` bytes per second, at most [`BURST`] saved up.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Bucket {
            rate,
            tokens: BURST,
            last: Instant::now(),
            sleep: None,
        }
    }

    /// How many of `want` bytes may pass now (at least 1), or `Pending` until they may. Bytes
    /// pass in pieces of [`GRAIN`] (or all of a smaller `want`), as a network delivers them,
    /// never as a trickle of the few bytes earned since the last piece.
    fn poll_allow(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        let need = (want as f64).clamp(1.0, GRAIN);
        loop {
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let now = Instant::now();
            let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(BURST);
            self.last = now;
            if self.tokens >= need {
                return Poll::Ready((self.tokens as usize).min(want).max(1));
            }
            let wait = (need - self.tokens) / self.rate;
            self.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
        }
    }

    fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// `inner` with each direction limited to `mbps` MB/s (10^6 bytes), or unlimited for `None`.
pub struct Throttled<S> {
    inner: S,
    read: Option<Bucket>,
    write: Option<Bucket>,
}

impl<S> Throttled<S> {
    pub fn new(inner: S, mbps: Option<f64>) -> Self {
        let bucket = || mbps.filter(|m| *m > 0.0).map(|m| Bucket::new(m * 1e6));
        Throttled {
            inner,
            read: bucket(),
            write: bucket(),
        }
    }
}

/// The limit the test store applies to each connection: `CHMURA_STORE_MBPS` (MB/s).
pub fn store_limit() -> Option<f64> {
    std::env::var("CHMURA_STORE_MBPS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|m| *m > 0.0)
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(bucket) = this.read.as_mut().filter(|_| buf.remaining() > 0) else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let allowed = match bucket.poll_allow(cx, buf.remaining()) {
            Poll::Ready(n) => n,
            Poll::Pending => return Poll::Pending,
        };
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(allowed));
        let r = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = r {
            buf.advance(n);
            bucket.spend(n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(bucket) = this.write.as_mut().filter(|_| !data.is_empty()) else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        let allowed = match bucket.poll_allow(cx, data.len()) {
            Poll::Ready(n) => n,
            Poll::Pending => return Poll::Pending,
        };
        let r = Pin::new(&mut this.inner).poll_write(cx, &data[..allowed]);
        if let Poll::Ready(Ok(n)) = r {
            bucket.spend(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// 2 MB through a 10 MB/s limit takes at least 0.19 s (the first 64 KiB go at once), in
    /// either direction; without a limit the bytes pass unchanged.
    #[tokio::test]
    async fn a_limited_connection_moves_at_its_rate() {
        for limit_reads in [false, true] {
            let (a, b) = tokio::io::duplex(1 << 20);
            let (mut tx, mut rx) = if limit_reads {
                (Throttled::new(a, None), Throttled::new(b, Some(10.0)))
            } else {
                (Throttled::new(a, Some(10.0)), Throttled::new(b, None))
            };
            let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
            let sent = data.clone();
            let start = Instant::now();
            let writer = tokio::spawn(async move {
                tx.write_all(&sent).await.expect("write");
                tx.shutdown().await.expect("shutdown");
            });
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.expect("read");
            writer.await.expect("writer");
            let took = start.elapsed().as_secs_f64();
            assert!(got == data, "bytes changed (reads limited: {limit_reads})");
            assert!(took >= 0.19, "{took} s (reads limited: {limit_reads})");
        }
        let (a, b) = tokio::io::duplex(1 << 20);
        let (mut tx, mut rx) = (Throttled::new(a, None), Throttled::new(b, None));
        tokio::spawn(async move {
            tx.write_all(&[1u8; 100_000]).await.expect("write");
            tx.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, vec![1u8; 100_000]);
    }
}
