//! The request-body adapter: decodes aws-chunked framing, verifies every integrity check the
//! client declared while the body streams, and withholds the end of the body from the upstream
//! until all checks passed.
//!
//! Invariant ("nothing unverified is committed"): the last decoded frame is held back. It is
//! released only after the client's body ended and the signature chain, SHA-256, Content-MD5,
//! `x-amz-checksum-*` (header or trailer) and the declared length all matched. On any failure the
//! adapter yields an error instead, so the upstream request is aborted short of its
//! Content-Length and the store commits nothing. The failure is also put in a [`FailureSlot`]
//! so the handler can answer the client with the right S3 error.
//!
//! Memory: one held frame plus, in the signed chunk modes, the chunk being verified.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::checksum::{ChecksumAlgorithm, Hasher};
use crate::chunked::ChunkedDecoder;
use crate::error::S3Error;
use crate::upstream::BoxError;

/// Where the body adapter leaves its failure for the handler (and, on success, the checksum
/// it verified, which S3 echoes in the answer).
#[derive(Clone, Default)]
pub struct FailureSlot(Arc<Mutex<Option<S3Error>>>, Arc<Mutex<Option<Verified>>>);

/// A checksum the body matched: its algorithm and raw value.
type Verified = (ChecksumAlgorithm, Vec<u8>);

impl FailureSlot {
    pub fn set(&self, e: S3Error) {
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert(e);
        }
    }
    pub fn take(&self) -> Option<S3Error> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
    fn set_checksum(&self, alg: ChecksumAlgorithm, value: Vec<u8>) {
        if let Ok(mut g) = self.1.lock() {
            *g = Some((alg, value));
        }
    }
    /// The client's checksum of the body, once every check passed.
    pub fn verified_checksum(&self) -> Option<(ChecksumAlgorithm, Vec<u8>)> {
        self.1.lock().ok().and_then(|g| g.clone())
    }
}

/// The checks to run on the decoded body.
#[derive(Default)]
pub struct Expectations {
    pub sha256: Option<[u8; 32]>,
    pub md5: Option<Vec<u8>>,
    /// `x-amz-checksum-<alg>` sent as a header.
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
    /// `x-amz-trailer: x-amz-checksum-<alg>`: the value arrives in the aws-chunked trailer.
    pub trailer_checksum: Option<ChecksumAlgorithm>,
    /// Exact decoded length, when known (Content-Length or x-amz-decoded-content-length).
    pub decoded_len: Option<u64>,
}

type Inner = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

pub struct VerifyingBody {
    inner: Inner,
    decoder: Option<ChunkedDecoder>,
    exp: Expectations,
    sha256: Option<Hasher>,
    md5: Option<Hasher>,
    checksum: Option<Hasher>,
    pending: VecDeque<Bytes>,
    scratch: Vec<Bytes>,
    total: u64,
    finished: bool,
    failed: bool,
    slot: FailureSlot,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl VerifyingBody {
    pub fn new<B>(
        inner: B,
        decoder: Option<ChunkedDecoder>,
        exp: Expectations,
        slot: FailureSlot,
        idle: Duration,
    ) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let checksum_alg = exp
            .checksum
            .as_ref()
            .map(|(a, _)| *a)
            .or(exp.trailer_checksum);
        VerifyingBody {
            inner: Box::pin(inner.map_err(Into::into)),
            decoder,
            sha256: exp.sha256.map(|_| Hasher::new(ChecksumAlgorithm::Sha256)),
            md5: exp.md5.as_ref().map(|_| Hasher::md5()),
            checksum: checksum_alg.map(Hasher::new),
            exp,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            total: 0,
            finished: false,
            failed: false,
            slot,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn fail(&mut self, e: S3Error) -> Poll<Option<Result<Frame<Bytes>, S3Error>>> {
        self.failed = true;
        self.pending.clear();
        self.slot.set(e.clone());
        Poll::Ready(Some(Err(e)))
    }

    fn accept(&mut self, data: Bytes) -> Result<(), S3Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.total += data.len() as u64;
        if let Some(limit) = self.exp.decoded_len {
            if self.total > limit {
                return Err(S3Error::invalid_request(
                    "The request body is longer than its declared length.",
                ));
            }
        }
        for h in [&mut self.sha256, &mut self.md5, &mut self.checksum]
            .into_iter()
            .flatten()
        {
            h.update(&data);
        }
        self.pending.push_back(data);
        Ok(())
    }

    /// All checks at end of body.
    fn verify_end(&mut self) -> Result<(), S3Error> {
        if let Some(d) = self.decoder.as_mut() {
            d.finish()?;
        }
        if let Some(want) = self.exp.decoded_len {
            if self.total != want {
                return Err(S3Error::incomplete_body()
                    .with_detail(format!("got {} of {want} bytes", self.total)));
            }
        }
        if let (Some(h), Some(want)) = (self.sha256.take(), self.exp.sha256) {
            if !crate::sigv4::ct_eq(&h.finish(), &want) {
                return Err(S3Error::new(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        if let (Some(h), Some(want)) = (self.md5.take(), self.exp.md5.as_ref()) {
            if h.finish() != *want {
                return Err(S3Error::bad_digest(
                    "The Content-MD5 you specified did not match what we received.",
                ));
            }
        }
        if let Some(h) = self.checksum.take() {
            let (alg, want) = match (&self.exp.checksum, self.exp.trailer_checksum) {
                (Some((alg, want)), _) => (*alg, want.clone()),
                (None, Some(alg)) => {
                    let value = self
                        .decoder
                        .as_ref()
                        .and_then(|d| {
                            d.trailers()
                                .iter()
                                .find(|(n, _)| n == alg.header_name())
                                .map(|(_, v)| v.clone())
                        })
                        .ok_or_else(|| {
                            S3Error::invalid_request(format!(
                                "The {} trailer was declared but not sent.",
                                alg.header_name()
                            ))
                        })?;
                    let want =
                        crate::checksum::decode_b64(&value, alg.digest_len()).ok_or_else(|| {
                            S3Error::invalid_request(format!(
                                "Value for {} trailing header is invalid.",
                                alg.header_name()
                            ))
                        })?;
                    (alg, want)
                }
                (None, None) => return Ok(()),
            };
            if h.finish() != want {
                return Err(S3Error::bad_digest(format!(
                    "The {} you specified did not match the calculated checksum.",
                    alg.name()
                ))
                .with_detail("checksum mismatch"));
            }
            self.slot.set_checksum(alg, want);
        }
        Ok(())
    }

    /// Reads a small body completely and returns it once every check passed: used when the
    /// upstream length is 0 (nothing could be withheld), and for a small PutObject whose
    /// checksum arrives as a trailer (kept with the object, so needed before the metadata
    /// leaves). More than `max` bytes is refused, so at most `max` is held.
    pub async fn collect_verified(mut self, max: usize) -> Result<Bytes, S3Error> {
        let mut held = bytes::BytesMut::new();
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await {
                None => return Ok(held.freeze()),
                Some(Err(e)) => return Err(e),
                Some(Ok(f)) => {
                    let Some(d) = f.data_ref() else { continue };
                    if held.len() + d.len() > max {
                        return Err(S3Error::invalid_request(
                            "The request body is longer than its declared length.",
                        ));
                    }
                    held.extend_from_slice(d);
                }
            }
        }
    }
}

impl Body for VerifyingBody {
    type Data = Bytes;
    type Error = S3Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, S3Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            // Keep one frame back until the whole body verified.
            if this.pending.len() > 1 || (this.finished && !this.pending.is_empty()) {
                let b = this.pending.pop_front().unwrap_or_default();
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let polled = this.inner.as_mut().poll_frame(cx);
            let frame = match polled {
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return this.fail(S3Error::new(
                            "RequestTimeout",
                            "Your socket connection to the server was not read from or written to within the timeout period.",
                        ));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(f) => f,
            };
            let deadline = tokio::time::Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
            match frame {
                None => {
                    this.finished = true;
                    if let Err(e) = this.verify_end() {
                        return this.fail(e);
                    }
                }
                Some(Err(e)) => {
                    // An S3 error from an adapter under this one (post.rs) is the answer.
                    let e = match e.downcast::<S3Error>() {
                        Ok(s3) => *s3,
                        Err(e) => {
                            S3Error::incomplete_body().with_detail(format!("client body: {e}"))
                        }
                    };
                    return this.fail(e);
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let res = match this.decoder.as_mut() {
                        Some(d) => {
                            let mut out = std::mem::take(&mut this.scratch);
                            let r = d.feed(data, &mut out);
                            let mut r2 = Ok(());
                            for piece in out.drain(..) {
                                if r2.is_ok() {
                                    r2 = this.accept(piece);
                                }
                            }
                            this.scratch = out;
                            r.and(r2)
                        }
                        None => this.accept(data),
                    };
                    if let Err(e) = res {
                        return this.fail(e);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.finished && self.pending.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self.exp.decoded_len {
            Some(n) => SizeHint::with_exact(
                n.saturating_sub(self.total)
                    + self.pending.iter().map(|b| b.len() as u64).sum::<u64>(),
            ),
            None => SizeHint::default(),
        }
    }
}

/// Merges the small frames an upstream store often sends into larger ones, so each TLS record
/// and write carries more data. Only frames that are already available are merged: it never
/// waits to fill a buffer, so latency is unchanged. A frame with nothing ready behind it goes
/// on as it is, uncopied.
pub struct Coalesce<B: Body> {
    inner: Pin<Box<B>>,
    target: usize,
    /// What the inner body answered after a frame that was passed on first (trailers, an
    /// error, or its end).
    held: Option<Option<Result<Frame<Bytes>, B::Error>>>,
}

// Nothing in it is pinned in place: the inner body is boxed, the held answer is moved out.
impl<B: Body> Unpin for Coalesce<B> {}

impl<B: Body> Coalesce<B> {
    pub fn new(inner: B, target: usize) -> Self {
        Coalesce {
            inner: Box::pin(inner),
            target,
            held: None,
        }
    }
}

impl<B> Body for Coalesce<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(held) = self.held.take() {
            if held.is_none() {
                // The end: stays the end.
                self.held = Some(None);
            }
            return Poll::Ready(held);
        }
        let first = match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(None) => {
                self.held = Some(None);
                return Poll::Ready(None);
            }
            other => return other,
        };
        let first = match first.into_data() {
            Ok(d) if d.len() < self.target => d,
            Ok(d) => return Poll::Ready(Some(Ok(Frame::data(d)))),
            Err(f) => return Poll::Ready(Some(Ok(f))),
        };
        let mut buf: Option<bytes::BytesMut> = None;
        loop {
            let len = buf.as_ref().map_or(first.len(), |b| b.len());
            if len >= self.target {
                break;
            }
            match self.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        let b = buf.get_or_insert_with(|| {
                            // Room for a few more frames like these, not the whole target:
                            // two small frames do not take a 256 KiB buffer.
                            let room = (4 * (len + d.len())).min(self.target).max(len + d.len());
                            let mut b = bytes::BytesMut::with_capacity(room);
                            b.extend_from_slice(&first);
                            b
                        });
                        b.extend_from_slice(&d);
                    }
                    Err(trailers) => {
                        self.held = Some(Some(Ok(trailers)));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.held = Some(Some(Err(e)));
                    break;
                }
                Poll::Ready(None) => {
                    self.held = Some(None);
                    break;
                }
                Poll::Pending => break,
            }
        }
        let data = match buf {
            Some(b) => b.freeze(),
            None => first,
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.held {
            Some(None) => true,
            Some(Some(_)) => false,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.held {
            Some(None) => SizeHint::with_exact(0),
            Some(Some(_)) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(
        parts: Vec<&'static [u8]>,
    ) -> impl Body<Data = Bytes, Error = hyper::Error> + Send + 'static {
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn run(body: VerifyingBody) -> (Vec<Vec<u8>>, Option<String>) {
        let mut b = body;
        let mut got = Vec::new();
        loop {
            match b.frame().await {
                None => return (got, None),
                Some(Ok(f)) => got.push(f.into_data().unwrap().to_vec()),
                Some(Err(e)) => return (got, Some(e.code.to_string())),
            }
        }
    }

    fn md5_of(d: &[u8]) -> Vec<u8> {
        let mut h = Hasher::md5();
        h.update(d);
        h.finish()
    }

    #[tokio::test]
    async fn good_body_passes_and_bad_md5_withholds_the_end() {
        let exp = Expectations {
            md5: Some(md5_of(b"hello world")),
            decoded_len: Some(11),
            ..Default::default()
        };
        let (got, err) = run(VerifyingBody::new(
            body_of(vec![b"hello", b" world"]),
            None,
            exp,
            FailureSlot::default(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!((got.concat(), err), (b"hello world".to_vec(), None));

        let slot = FailureSlot::default();
        let exp = Expectations {
            md5: Some(md5_of(b"hello there")),
            decoded_len: Some(11),
            ..Default::default()
        };
        let (got, err) = run(VerifyingBody::new(
            body_of(vec![b"hello", b" world"]),
            None,
            exp,
            slot.clone(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(err.as_deref(), Some("BadDigest"));
        assert!(
            got.concat().len() < 11,
            "the end of the body must be withheld"
        );
        assert_eq!(slot.take().map(|e| e.code), Some("BadDigest"));
    }

    #[tokio::test]
    async fn coalesce_merges_ready_frames_and_keeps_bytes() {
        let parts: Vec<&'static [u8]> = vec![b"ab", b"cd", b"ef", b"gh"];
        let mut c = Coalesce::new(body_of(parts), 5);
        let mut frames = Vec::new();
        while let Some(f) = c.frame().await {
            frames.push(f.unwrap().into_data().unwrap().to_vec());
        }
        assert_eq!(frames.concat(), b"abcdefgh");
        assert!(frames.len() < 4, "frames were merged: {frames:?}");
    }

    /// Answers from a script: a frame, an error, `Pending` (waking itself) or the end.
    type Answer = Poll<Option<Result<Frame<Bytes>, &'static str>>>;
    struct Scripted(std::collections::VecDeque<Answer>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Answer {
            let next = self.0.pop_front().unwrap_or(Poll::Ready(None));
            if next.is_pending() {
                cx.waker().wake_by_ref();
            }
            next
        }
    }

    #[tokio::test]
    async fn coalesce_passes_a_lone_frame_uncopied_and_keeps_what_follows_merged_data() {
        let lone = Bytes::from(vec![7u8; 1000]);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-amz-checksum-crc32", "AAAAAA==".parse().unwrap());
        let script = vec![
            Poll::Ready(Some(Ok(Frame::data(lone.clone())))),
            Poll::Pending,
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"ab"))))),
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"cd"))))),
            Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
        ];
        let mut c = Coalesce::new(Scripted(script.into()), 1 << 20);
        let f = c.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(f.as_ptr(), lone.as_ptr(), "a lone frame is not copied");
        let f = c.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b"abcd");
        let t = c.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert!(t.contains_key("x-amz-checksum-crc32"), "trailers are kept");
        assert!(c.frame().await.is_none());
        assert!(c.is_end_stream());

        let script = vec![
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"ab"))))),
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"cd"))))),
            Poll::Ready(Some(Err("reset"))),
        ];
        let mut c = Coalesce::new(Scripted(script.into()), 1 << 20);
        let f = c.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b"abcd", "the data before an error goes out");
        assert_eq!(
            c.frame().await.unwrap().unwrap_err(),
            "reset",
            "then the error"
        );
    }

    #[tokio::test]
    async fn sha256_length_and_trailer_checks() {
        let mut sha = [0u8; 32];
        sha.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"abc").as_ref());
        let exp = Expectations {
            sha256: Some(sha),
            decoded_len: Some(3),
            ..Default::default()
        };
        let (_, err) = run(VerifyingBody::new(
            body_of(vec![b"abd"]),
            None,
            exp,
            FailureSlot::default(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(err.as_deref(), Some("XAmzContentSHA256Mismatch"));

        let exp = Expectations {
            decoded_len: Some(5),
            ..Default::default()
        };
        let (_, err) = run(VerifyingBody::new(
            body_of(vec![b"abc"]),
            None,
            exp,
            FailureSlot::default(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(err.as_deref(), Some("IncompleteBody"));

        let framed: &'static [u8] =
            b"5\r\nHello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:i9aeUg==\r\n\r\n";
        let exp = Expectations {
            trailer_checksum: Some(ChecksumAlgorithm::Crc32),
            decoded_len: Some(11),
            ..Default::default()
        };
        let (got, err) = run(VerifyingBody::new(
            body_of(vec![framed]),
            Some(ChunkedDecoder::new(None, true)),
            exp,
            FailureSlot::default(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!((got.concat(), err), (b"Hello world".to_vec(), None));

        let framed: &'static [u8] =
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        let exp = Expectations {
            trailer_checksum: Some(ChecksumAlgorithm::Crc32),
            decoded_len: Some(11),
            ..Default::default()
        };
        let (got, err) = run(VerifyingBody::new(
            body_of(vec![framed]),
            Some(ChunkedDecoder::new(None, true)),
            exp,
            FailureSlot::default(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(err.as_deref(), Some("BadDigest"));
        assert!(got.concat().len() < 11);
    }
}

/// A response that starts at once and ends when `task` does, as S3 answers long
/// CompleteMultipartUploads: the XML declaration first, then a space every `every` while the
/// task runs (so clients' read timeouts do not fire), then the task's document without its
/// own declaration (a result, or an Error document: the status is already 200).
pub struct KeepAlive {
    task: tokio::task::JoinHandle<String>,
    tick: tokio::time::Interval,
    started: bool,
    done: bool,
}

impl KeepAlive {
    pub fn new(task: tokio::task::JoinHandle<String>, every: Duration) -> Self {
        KeepAlive {
            task,
            tick: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            started: false,
            done: false,
        }
    }
}

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

impl Body for KeepAlive {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.started {
            this.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                XML_DECLARATION.as_bytes(),
            )))));
        }
        match Pin::new(&mut this.task).poll(cx) {
            Poll::Ready(Ok(doc)) => {
                this.done = true;
                let body = match doc.find("?>") {
                    Some(i) if doc.starts_with("<?xml") => doc[i + 2..].trim_start().to_string(),
                    _ => doc,
                };
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(body)))))
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(S3Error::internal(format!(
                    "background task: {e}"
                ))))))
            }
            Poll::Pending => match this.tick.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" "))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod keepalive_tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn spaces_until_the_task_ends_then_its_document() {
        let task = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            format!("{XML_DECLARATION}<Result>done</Result>")
        });
        let mut body = KeepAlive::new(task, Duration::from_millis(20));
        let mut text = String::new();
        while let Some(f) = body.frame().await {
            let data = f.expect("frame").into_data().expect("data");
            text.push_str(&String::from_utf8_lossy(&data));
        }
        let middle = text
            .strip_prefix(XML_DECLARATION)
            .and_then(|t| t.strip_suffix("<Result>done</Result>"))
            .expect("declaration, then the document without its own");
        assert!(
            !middle.is_empty() && middle.chars().all(|c| c == ' '),
            "{text:?}"
        );
        // A task that fails ends the body with an error.
        let task = tokio::spawn(async { panic!("rewrite task") });
        let mut body = KeepAlive::new(task, Duration::from_secs(10));
        assert!(body.frame().await.expect("declaration").is_ok());
        assert!(body.frame().await.expect("end").is_err());
    }
}

/// The client's request body, handed back through a channel when the handler drops it
/// before its end, so that a refusal can read the rest before answering (`handler::handle`):
/// a client that sends its body without `Expect: 100-continue` reads the answer only after
/// its last byte, and a connection closed under it shows a reset instead of S3's error.
pub struct ReturningBody {
    inner: Option<hyper::body::Incoming>,
    polled: bool,
    back: Option<tokio::sync::oneshot::Sender<Returned>>,
}

/// A request body the handler left unfinished.
pub struct Returned {
    pub body: hyper::body::Incoming,
    /// Whether anything read it (for `Expect: 100-continue`, whether the client was told to
    /// send it).
    pub polled: bool,
}

impl ReturningBody {
    /// The body and, unless it is empty already (most GETs), the channel it comes back on.
    pub fn new(
        inner: hyper::body::Incoming,
    ) -> (
        ReturningBody,
        Option<tokio::sync::oneshot::Receiver<Returned>>,
    ) {
        let (back, rx) = if inner.is_end_stream() {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        };
        (
            ReturningBody {
                inner: Some(inner),
                polled: false,
                back,
            },
            rx,
        )
    }
}

impl Body for ReturningBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Ended (or broken): nothing left to hand back.
            self.back = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for ReturningBody {
    fn drop(&mut self) {
        if let (Some(body), Some(tx)) = (self.inner.take(), self.back.take()) {
            if !body.is_end_stream() {
                let _ = tx.send(Returned {
                    body,
                    polled: self.polled,
                });
            }
        }
    }
}
