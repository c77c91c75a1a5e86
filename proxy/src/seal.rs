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
    scratch: Vec<chmura_crypto::pool::Buf>,
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
            // Each buffer goes back to `chmura_crypto::pool` once hyper has written it.
            this.out
                .extend(this.scratch.drain(..).map(Bytes::from_owner));
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// How much of a pass-through body [`CopyingBody`] gathers into one buffer at most.
const COPY_BLOCK: usize = 256 * 1024;

/// Copies a pass-through body into pooled buffers ([`chmura_crypto::pool`]) so that the
/// frames hyper read it into are released at once. Held until the store took them, those
/// frames kept hyper's read buffer shared, so hyper allocated a fresh one for every read:
/// new pages each time, ~16 % of the proxy's CPU in page faults on a single-stream upload.
/// Frames are gathered up to [`COPY_BLOCK`] bytes; whatever is gathered goes out as soon as
/// the client's side has nothing more ready, so nothing waits on a full buffer.
pub struct CopyingBody {
    inner: Inner,
    gathered: Option<chmura_crypto::pool::Buf>,
    trailers: Option<Frame<Bytes>>,
    done: bool,
}

impl CopyingBody {
    pub fn new<B>(inner: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        CopyingBody {
            inner: Box::pin(inner),
            gathered: None,
            trailers: None,
            done: false,
        }
    }

    fn flush(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        let b = self.gathered.as_mut().filter(|b| !b.is_empty())?;
        // A trickle (a client sending a little at a time) goes out as a small copy, and the
        // pooled buffer stays for what follows: queued frames never pin large buffers for
        // a few bytes each.
        if b.len() < chmura_crypto::pool::MIN_CAPACITY {
            let small = Bytes::copy_from_slice(b);
            b.clear();
            return Some(Ok(Frame::data(small)));
        }
        let b = self.gathered.take()?;
        Some(Ok(Frame::data(Bytes::from_owner(b))))
    }
}

impl Body for CopyingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                if let Some(f) = this.flush() {
                    return Poll::Ready(Some(f));
                }
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    return match this.flush() {
                        Some(f) => Poll::Ready(Some(f)),
                        None => Poll::Pending,
                    }
                }
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.gathered = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        let b = this
                            .gathered
                            .get_or_insert_with(|| chmura_crypto::pool::Buf::with_room(COPY_BLOCK));
                        b.extend_from_slice(&d);
                        if b.len() >= COPY_BLOCK {
                            if let Some(f) = this.flush() {
                                return Poll::Ready(Some(f));
                            }
                        }
                    }
                    // Trailers (none reach the store today) end the body, after the data.
                    Err(f) => {
                        this.trailers = Some(f);
                        this.done = true;
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none() && self.gathered.as_ref().is_none_or(|b| b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self.gathered.as_ref().map_or(0, |b| b.len() as u64);
        let mut h = SizeHint::new();
        if let Some(u) = inner.upper() {
            h.set_upper(u + held);
        }
        h.set_lower(inner.lower() + held);
        h
    }
}

/// Passes a body of `len` bytes through unchanged and sums its data with one checksum
/// algorithm; the digest is in `digest` once `len` bytes went through (a reader that knows the
/// length, such as `Sealer`, may never poll for the end; an empty body's at once), never for
/// a body that broke off, ended short, or overran `len` in the piece that would reach it
/// (bytes after it are the reader's to refuse: `Sealer` does).
pub struct HashingBody {
    inner: Inner,
    hasher: Option<crate::checksum::Hasher>,
    /// Bytes still to come.
    left: u64,
    digest: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl HashingBody {
    pub fn new<B>(
        inner: B,
        alg: crate::checksum::ChecksumAlgorithm,
        len: u64,
    ) -> (Self, Arc<std::sync::Mutex<Option<Vec<u8>>>>)
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let digest = Arc::new(std::sync::Mutex::new(None));
        let mut body = HashingBody {
            inner: Box::pin(inner),
            hasher: Some(crate::checksum::Hasher::new(alg)),
            left: len,
            digest: digest.clone(),
        };
        if len == 0 {
            // Known now: a reader of an empty body may never poll it.
            body.finish();
        }
        (body, digest)
    }

    fn finish(&mut self) {
        if let Some(h) = self.hasher.take() {
            if let Ok(mut slot) = self.digest.lock() {
                *slot = Some(h.finish());
            }
        }
    }
}

impl Body for HashingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = this.inner.as_mut().poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(h)) = (f.data_ref(), this.hasher.as_mut()) {
                    match this.left.checked_sub(d.len() as u64) {
                        Some(left) => {
                            h.update(d);
                            this.left = left;
                            if left == 0 {
                                this.finish();
                            }
                        }
                        None => this.hasher = None,
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => this.hasher = None,
            Poll::Ready(None) if this.left == 0 => this.finish(),
            Poll::Ready(None) => this.hasher = None,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Frames an upload to the store as `aws-chunked` with a checksum trailer over what it
/// carries (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`):
/// - encrypted, a CRC32 for stores that require a checksum with an upload (S3 for PutObject
///   with Object Lock headers): the client's checksums describe the plaintext, this one the
///   ciphertext the store receives;
/// - passed through, the client's trailer algorithm, so the store keeps the checksum the
///   client sent (and, for a part, can check the ones stated at Complete).
///
/// The trailer goes out only after the inner body ended cleanly: an error in it aborts the
/// request before the store could commit.
pub struct TrailerBody {
    inner: Inner,
    alg: crate::checksum::ChecksumAlgorithm,
    hasher: crate::checksum::Hasher,
    out: VecDeque<Bytes>,
    /// A data frame went out (its closing CRLF is owed).
    open: bool,
    done: bool,
}

impl TrailerBody {
    pub fn new<B>(inner: B, alg: crate::checksum::ChecksumAlgorithm) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        TrailerBody {
            inner: Box::pin(inner),
            alg,
            hasher: crate::checksum::Hasher::new(alg),
            out: VecDeque::new(),
            open: false,
            done: false,
        }
    }

    /// Sets the headers of an upstream request whose body this is: `aws-chunked`, the
    /// trailer's name, the decoded length; no Content-Length (the framing goes out chunked).
    pub fn frame_headers(
        h: &mut http::HeaderMap,
        alg: crate::checksum::ChecksumAlgorithm,
        decoded_len: u64,
    ) -> Result<(), crate::error::S3Error> {
        use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH};
        h.remove(CONTENT_LENGTH);
        h.insert(
            "x-amz-decoded-content-length",
            HeaderValue::from(decoded_len),
        );
        let encoding = match h.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
            Some(rest) => format!("aws-chunked,{rest}"),
            None => "aws-chunked".to_string(),
        };
        h.insert(
            CONTENT_ENCODING,
            HeaderValue::from_str(&encoding)
                .map_err(|_| crate::error::S3Error::internal("content-encoding"))?,
        );
        h.insert("x-amz-trailer", HeaderValue::from_static(alg.header_name()));
        h.insert(
            "x-amz-sdk-checksum-algorithm",
            HeaderValue::from_static(alg.name()),
        );
        Ok(())
    }
}

impl Body for TrailerBody {
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
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(f))) => {
                    let Ok(d) = f.into_data() else { continue };
                    if d.is_empty() {
                        continue;
                    }
                    this.hasher.update(&d);
                    let close = if this.open { "\r\n" } else { "" };
                    this.open = true;
                    this.out
                        .push_back(Bytes::from(format!("{close}{:x}\r\n", d.len())));
                    this.out.push_back(d);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let digest =
                        std::mem::replace(&mut this.hasher, crate::checksum::Hasher::new(this.alg))
                            .finish();
                    let close = if this.open { "\r\n" } else { "" };
                    this.out.push_back(Bytes::from(format!(
                        "{close}0\r\n{}:{}\r\n\r\n",
                        this.alg.header_name(),
                        crate::checksum::b64(&digest)
                    )));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
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
    /// `chmura_integrity_failures_total` of this instance's registry.
    failures: prometheus::IntCounter,
}

impl DecryptingBody {
    pub fn new<B, O>(inner: B, opener: O, what: String, failures: prometheus::IntCounter) -> Self
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
            failures,
        }
    }

    fn fail(&mut self, detail: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if !detail.starts_with("upstream body") {
            self.failures.inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that yields a script: `None` entries are one `Pending`.
    struct Script(VecDeque<Option<Result<Frame<Bytes>, BoxError>>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(f)) => Poll::Ready(Some(f)),
                None => Poll::Ready(None),
            }
        }
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Data(usize),
        Trailers,
        Error,
        Pending,
        End,
    }

    fn run(script: Vec<Option<Result<Frame<Bytes>, BoxError>>>) -> (Vec<Event>, Vec<u8>) {
        let mut body = CopyingBody::new(Script(script.into()));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut events, mut bytes) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => events.push(Event::Pending),
                Poll::Ready(None) => {
                    events.push(Event::End);
                    assert!(body.is_end_stream());
                    return (events, bytes);
                }
                Poll::Ready(Some(Err(_))) => events.push(Event::Error),
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        events.push(Event::Data(d.len()));
                        bytes.extend_from_slice(&d);
                    }
                    Err(_) => events.push(Event::Trailers),
                },
            }
        }
        panic!("the body never ended: {events:?}");
    }

    fn data(len: usize, seed: u8) -> Option<Result<Frame<Bytes>, BoxError>> {
        let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        Some(Ok(Frame::data(Bytes::from(v))))
    }

    fn drain_crc(script: Vec<Option<Result<Frame<Bytes>, BoxError>>>) -> Result<Vec<u8>, ()> {
        let mut body = TrailerBody::new(
            Script(script.into()),
            crate::checksum::ChecksumAlgorithm::Crc32,
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        for _ in 0..100 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => {}
                Poll::Ready(None) => {
                    assert!(body.is_end_stream());
                    return Ok(out);
                }
                Poll::Ready(Some(Err(_))) => return Err(()),
                Poll::Ready(Some(Ok(f))) => out.extend_from_slice(f.data_ref().expect("data")),
            }
        }
        panic!("the body never ended");
    }

    #[test]
    fn crc_trailer_body_frames_aws_chunked_and_ends_with_the_crc_of_what_it_sent() {
        let bytes = |s: &'static [u8]| Some(Ok(Frame::data(Bytes::from_static(s))));
        let out = drain_crc(vec![
            bytes(b"abc"),
            None,
            bytes(b""),
            bytes(b"0123456789abcdefg"),
        ])
        .expect("body");
        let mut crc = crate::checksum::Hasher::new(crate::checksum::ChecksumAlgorithm::Crc32);
        crc.update(b"abc0123456789abcdefg");
        let expected = format!(
            "3\r\nabc\r\n11\r\n0123456789abcdefg\r\n0\r\nx-amz-checksum-crc32:{}\r\n\r\n",
            crate::checksum::b64(&crc.finish())
        );
        assert_eq!(String::from_utf8(out).expect("utf8"), expected);
        // Empty: the last chunk and the CRC of nothing.
        let out = drain_crc(vec![]).expect("empty body");
        assert_eq!(out, b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        // An error in the body ends it without the closing chunk: the store commits nothing.
        let failed = vec![bytes(b"abc"), Some(Err("client body failed".into()))];
        assert!(drain_crc(failed).is_err());
    }

    #[test]
    fn hashing_body_states_a_digest_only_for_the_whole_declared_length() {
        use crate::checksum::{ChecksumAlgorithm as A, Hasher};
        let bytes = |s: &'static [u8]| Some(Ok(Frame::data(Bytes::from_static(s))));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Polled `polls` times at most: a reader that knows the length stops at it.
        let mut digest = |script: Vec<_>, len: u64, polls: usize| {
            let (mut body, d) = HashingBody::new(Script(script.into()), A::Sha256, len);
            for _ in 0..polls {
                if let Poll::Ready(None) = Pin::new(&mut body).poll_frame(&mut cx) {
                    break;
                }
            }
            let got = d.lock().expect("lock").take();
            got
        };
        let mut h = Hasher::new(A::Sha256);
        h.update(b"abcdefg");
        let want = Some(h.finish());
        // Known as soon as the last byte went through, before any end is polled.
        assert_eq!(
            digest(vec![bytes(b"abc"), None, bytes(b"defg")], 7, 3),
            want
        );
        assert_eq!(digest(vec![bytes(b"abc"), bytes(b"defg")], 7, 10), want);
        // An empty body's digest is known before anything is read.
        let mut h = Hasher::new(A::Sha256);
        h.update(b"");
        assert_eq!(digest(vec![], 0, 0), Some(h.finish()));
        // Short, long, or broken off: no digest.
        assert_eq!(digest(vec![bytes(b"abc")], 7, 10), None);
        assert_eq!(digest(vec![bytes(b"abc"), bytes(b"defgh")], 7, 10), None);
        let broken = vec![bytes(b"abc"), Some(Err("source failed".into()))];
        assert_eq!(digest(broken, 3 + 4, 10), None);
    }

    #[test]
    fn copying_body_gathers_frames_and_sends_what_it_has_when_the_client_pauses() {
        let script = vec![
            None,
            data(100_000, 3),
            data(100_000, 5),
            None,
            data(300_000, 7),
            data(10, 11),
            Some(Ok(Frame::trailers(http::HeaderMap::new()))),
        ];
        let expected: Vec<u8> = script
            .iter()
            .filter_map(|f| f.as_ref()?.as_ref().ok()?.data_ref().cloned())
            .flat_map(|b| b.to_vec())
            .collect();
        let (events, bytes) = run(script);
        assert_eq!(
            events,
            [
                // Nothing gathered yet: the pause is passed on.
                Event::Pending,
                // Something gathered: it goes out instead of the pause.
                Event::Data(200_000),
                Event::Data(300_000),
                Event::Data(10),
                Event::Trailers,
                Event::End
            ]
        );
        assert!(bytes == expected, "bytes differ");
    }

    #[test]
    fn copying_body_sends_a_trickle_as_small_copies() {
        let script = vec![data(10, 3), None, data(20, 5), None, data(30, 7)];
        let (events, bytes) = run(script);
        assert_eq!(
            events,
            [
                Event::Data(10),
                Event::Data(20),
                Event::Data(30),
                Event::End
            ]
        );
        assert_eq!(bytes.len(), 60);
    }

    #[test]
    fn copying_body_passes_errors_without_the_data_gathered_before() {
        let script = vec![data(1000, 3), Some(Err("refused".into()))];
        let (events, bytes) = run(script);
        assert_eq!(events, [Event::Error, Event::End]);
        assert!(bytes.is_empty());
        let (events, _) = run(vec![]);
        assert_eq!(events, [Event::End]);
    }
}
