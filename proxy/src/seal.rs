//! Body adapters around `chmura_crypto::stream`: encrypt a verified upload as it streams,
//! decrypt a download as it streams. Errors end the body abnormally; they never produce a
//! clean short body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use chmura_crypto::keys::ObjectKey;
use chmura_crypto::stream::{Open, Sealer};
use http_body::{Body, Frame, SizeHint};

use crate::error::S3Error;
use crate::upstream::BoxError;

type Inner = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// Seals the plaintext of `inner` (already verified by `VerifyingBody`) into chunks.
pub struct EncryptingBody {
    inner: Inner,
    sealer: Sealer<Arc<ObjectKey>>,
    out: VecDeque<Bytes>,
    scratch: Vec<Vec<u8>>,
    /// Ciphertext bytes not yet handed out.
    remaining: u64,
    done: bool,
}

impl EncryptingBody {
    pub fn new<B>(inner: B, sealer: Sealer<Arc<ObjectKey>>, cipher_len: u64) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        EncryptingBody {
            inner: Box::pin(inner),
            sealer,
            out: VecDeque::new(),
            scratch: Vec::new(),
            remaining: cipher_len,
            done: false,
        }
    }
}

impl Body for EncryptingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                this.remaining = this.remaining.saturating_sub(b.len() as u64);
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let res = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => this.sealer.push(&d, &mut this.scratch),
                    Err(_) => Ok(()),
                },
                Poll::Ready(None) => {
                    this.done = true;
                    this.sealer.finish(&mut this.scratch)
                }
            };
            if let Err(e) = res {
                this.done = true;
                return Poll::Ready(Some(Err(Box::new(
                    S3Error::incomplete_body().with_detail(format!("seal: {e}")),
                ))));
            }
            this.out.extend(this.scratch.drain(..).map(Bytes::from));
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Opens the ciphertext of an upstream response as it streams.
pub struct DecryptingBody {
    inner: Inner,
    opener: Box<dyn Open>,
    out: VecDeque<Bytes>,
    scratch: Vec<Vec<u8>>,
    done: bool,
    /// Where the object came from, for the integrity-failure log line (no key material).
    what: String,
}

impl DecryptingBody {
    pub fn new<B, O>(inner: B, opener: O, what: String) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
        O: Open + 'static,
    {
        DecryptingBody {
            inner: Box::pin(inner),
            opener: Box::new(opener),
            out: VecDeque::new(),
            scratch: Vec::new(),
            done: false,
            what,
        }
    }

    fn fail(&mut self, detail: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if !detail.starts_with("upstream body") {
            crate::metrics::INTEGRITY_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.out.clear();
        tracing::error!(object = %self.what, detail = %detail, "integrity failure while decrypting; response aborted");
        Poll::Ready(Some(Err(Box::new(S3Error::internal(format!(
            "integrity: {detail}"
        ))))))
    }
}

impl Body for DecryptingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return this.fail(format!("upstream body: {e}")),
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        if let Err(e) = this.opener.push(&d, &mut this.scratch) {
                            return this.fail(e.to_string());
                        }
                        this.out.extend(this.scratch.drain(..).map(Bytes::from));
                    }
                }
                Poll::Ready(None) => {
                    if let Err(e) = this.opener.finish() {
                        return this.fail(e.to_string());
                    }
                    this.done = true;
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(
            self.opener.remaining() + self.out.iter().map(|b| b.len() as u64).sum::<u64>(),
        )
    }
}

/// One body read as consecutive pieces of given lengths, each its own request body (the parts
/// of a multipart upload Chmura writes from one stream). The pieces are read one after the
/// other, never at the same time, so the source sits behind a plain mutex.
pub struct Piece {
    src: Arc<std::sync::Mutex<PieceSource>>,
    left: u64,
}

pub struct PieceSource {
    inner: Inner,
    carry: Option<Bytes>,
}

impl PieceSource {
    pub fn new<B>(inner: B) -> Arc<std::sync::Mutex<PieceSource>>
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        Arc::new(std::sync::Mutex::new(PieceSource {
            inner: Box::pin(inner),
            carry: None,
        }))
    }
}

impl Piece {
    pub fn new(src: Arc<std::sync::Mutex<PieceSource>>, len: u64) -> Self {
        Piece { src, left: len }
    }
}

impl Body for Piece {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let Ok(mut src) = this.src.lock() else {
            return Poll::Ready(Some(Err(Box::new(S3Error::internal("piece source")))));
        };
        let data = loop {
            if let Some(c) = src.carry.take() {
                break c;
            }
            match src.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(Box::new(S3Error::internal(
                        "integrity: the body ended before its last piece",
                    )))))
                }
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        if !d.is_empty() {
                            break d;
                        }
                    }
                }
            }
        };
        let mut data = data;
        if data.len() as u64 > this.left {
            src.carry = Some(data.split_off(this.left as usize));
        }
        this.left -= data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
