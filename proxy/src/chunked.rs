//! Incremental decoder for `aws-chunked` request bodies (S3-PROTOCOL-NOTES §3), with the
//! chunk-signature chain and the trailer signature verified as chunks complete.
//!
//! Limits: chunk header lines ≤ 4 KiB, chunks ≤ [`MAX_CHUNK`], trailers ≤ 16 KiB. A signed
//! chunk's bytes are released only after its signature verified; unsigned chunks stream.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::S3Error;
use crate::sigv4::{self, SigningKey};

/// Largest chunk accepted (clients send 64 KiB or 1 MiB).
pub const MAX_CHUNK: usize = 16 * 1024 * 1024;
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Everything needed to verify a chunk-signature chain.
#[derive(Clone)]
pub struct ChunkSigner {
    pub key: SigningKey,
    pub amz_date: String,
    pub scope: String,
    /// The seed signature (from the Authorization header), then each chunk's.
    pub prev_signature: String,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Header,
    Data { remaining: usize },
    DataEnd,
    FinalCrlf,
    Trailers,
    Done,
}

pub struct ChunkedDecoder {
    state: State,
    buf: BytesMut,
    signer: Option<ChunkSigner>,
    trailers_expected: bool,
    /// Signature the current chunk must match (signed modes).
    current_sig: Option<String>,
    current: BytesMut,
    current_len: usize,
    trailer_block: Vec<(String, String)>,
    trailer_bytes: usize,
    decoded_total: u64,
}

impl ChunkedDecoder {
    /// `signer`: verify chunk signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]).
    /// `trailers`: the body ends with a trailer block (…-TRAILER modes).
    pub fn new(signer: Option<ChunkSigner>, trailers: bool) -> Self {
        ChunkedDecoder {
            state: State::Header,
            buf: BytesMut::new(),
            signer,
            trailers_expected: trailers,
            current_sig: None,
            current: BytesMut::new(),
            current_len: 0,
            trailer_block: Vec::new(),
            trailer_bytes: 0,
            decoded_total: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn decoded_len(&self) -> u64 {
        self.decoded_total
    }

    /// Trailer fields (lowercased names), excluding the trailer signature.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailer_block
    }

    /// Feeds framed bytes; decoded data is pushed to `out`.
    pub fn feed(&mut self, input: Bytes, out: &mut Vec<Bytes>) -> Result<(), S3Error> {
        if self.buf.is_empty() {
            self.buf = BytesMut::from(input);
        } else {
            self.buf.extend_from_slice(&input);
        }
        loop {
            match self.state {
                State::Done => {
                    if self.buf.is_empty() {
                        return Ok(());
                    }
                    return Err(malformed("unexpected bytes after the final chunk"));
                }
                State::Header => {
                    let Some(line) = self.take_line()? else {
                        return Ok(());
                    };
                    let (size, sig) = self.parse_header(&line)?;
                    self.current_sig = sig;
                    self.current_len = size;
                    if size == 0 {
                        self.verify_chunk(&[])?;
                        self.state = if self.trailers_expected {
                            State::Trailers
                        } else {
                            State::FinalCrlf
                        };
                    } else {
                        self.state = State::Data { remaining: size };
                    }
                }
                State::Data { remaining } => {
                    if self.buf.is_empty() {
                        return Ok(());
                    }
                    let n = remaining.min(self.buf.len());
                    let piece = self.buf.split_to(n).freeze();
                    self.decoded_total += n as u64;
                    if self.signer.is_some() {
                        self.current.extend_from_slice(&piece);
                    } else {
                        out.push(piece);
                    }
                    if n == remaining {
                        if self.signer.is_some() {
                            let data = std::mem::take(&mut self.current).freeze();
                            self.verify_chunk(&data)?;
                            out.push(data);
                        }
                        self.state = State::DataEnd;
                    } else {
                        self.state = State::Data {
                            remaining: remaining - n,
                        };
                    }
                }
                State::DataEnd | State::FinalCrlf => {
                    if self.buf.len() < 2 {
                        return Ok(());
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    self.buf.advance(2);
                    self.state = if self.state == State::DataEnd {
                        State::Header
                    } else {
                        State::Done
                    };
                }
                State::Trailers => {
                    let Some(line) = self.take_line()? else {
                        return Ok(());
                    };
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > MAX_TRAILERS || self.trailer_block.len() > 64 {
                        return Err(malformed("trailers too large"));
                    }
                    if line.is_empty() {
                        self.finish_trailers()?;
                        self.state = State::Done;
                        continue;
                    }
                    let text = std::str::from_utf8(&line)
                        .map_err(|_| malformed("trailer is not UTF-8"))?;
                    let (n, v) = text
                        .split_once(':')
                        .ok_or_else(|| malformed("trailer without ':'"))?;
                    self.trailer_block
                        .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
        }
    }

    /// Called at end of input: the framing must be complete.
    pub fn finish(&mut self) -> Result<(), S3Error> {
        if self.state == State::Trailers && self.buf.is_empty() && self.trailer_block.is_empty() {
            // Some clients end an empty trailer section without the final blank line.
            self.finish_trailers()?;
            self.state = State::Done;
        }
        if self.state != State::Done {
            return Err(S3Error::incomplete_body().with_detail("aws-chunked body ended early"));
        }
        Ok(())
    }

    fn take_line(&mut self) -> Result<Option<Vec<u8>>, S3Error> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let line = self.buf.split_to(i).to_vec();
                self.buf.advance(2);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(malformed("chunk header line too long")),
            None => Ok(None),
        }
    }

    fn parse_header(&self, line: &[u8]) -> Result<(usize, Option<String>), S3Error> {
        let text = std::str::from_utf8(line).map_err(|_| malformed("chunk header is not ASCII"))?;
        let (size_hex, ext) = match text.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (text, None),
        };
        let size_hex = size_hex.trim();
        if size_hex.is_empty()
            || size_hex.len() > 8
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(malformed("invalid chunk size"));
        }
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| malformed("invalid chunk size"))?;
        if size > MAX_CHUNK {
            return Err(malformed("chunk too large"));
        }
        let sig = ext.and_then(|e| {
            e.split(';').find_map(|kv| {
                kv.trim()
                    .strip_prefix("chunk-signature=")
                    .map(|s| s.trim().to_string())
            })
        });
        if self.signer.is_some() && sig.is_none() {
            return Err(S3Error::signature_mismatch().with_detail("chunk without chunk-signature"));
        }
        Ok((size, sig))
    }

    fn verify_chunk(&mut self, data: &[u8]) -> Result<(), S3Error> {
        let Some(signer) = self.signer.as_mut() else {
            return Ok(());
        };
        let provided = self.current_sig.take().unwrap_or_default();
        let sts = sigv4::chunk_string_to_sign(
            &signer.amz_date,
            &signer.scope,
            &signer.prev_signature,
            &sigv4::sha256_hex(data),
        );
        let expected = signer.key.sign(&sts);
        if !sigv4::ct_eq(
            expected.as_bytes(),
            provided.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(S3Error::signature_mismatch().with_detail("chunk signature mismatch"));
        }
        signer.prev_signature = expected;
        Ok(())
    }

    fn finish_trailers(&mut self) -> Result<(), S3Error> {
        let sig_pos = self
            .trailer_block
            .iter()
            .position(|(n, _)| n == "x-amz-trailer-signature");
        let provided = sig_pos.map(|i| self.trailer_block.remove(i).1);
        if let Some(signer) = &self.signer {
            let provided = provided.ok_or_else(|| {
                S3Error::signature_mismatch().with_detail("missing x-amz-trailer-signature")
            })?;
            let mut sorted: Vec<&(String, String)> = self.trailer_block.iter().collect();
            sorted.sort();
            let canonical: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
            let sts = sigv4::trailer_string_to_sign(
                &signer.amz_date,
                &signer.scope,
                &signer.prev_signature,
                &canonical,
            );
            let expected = signer.key.sign(&sts);
            if !sigv4::ct_eq(
                expected.as_bytes(),
                provided.to_ascii_lowercase().as_bytes(),
            ) {
                return Err(S3Error::signature_mismatch().with_detail("trailer signature mismatch"));
            }
        }
        Ok(())
    }
}

fn malformed(detail: &str) -> S3Error {
    S3Error::new(
        "IncompleteBody",
        "The request body is not a valid aws-chunked encoding.",
    )
    .with_detail(detail.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut ChunkedDecoder, input: &[u8], step: usize) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            dec.feed(Bytes::copy_from_slice(piece), &mut out)?;
        }
        dec.finish()?;
        Ok(out.concat())
    }

    #[test]
    fn unsigned_trailer_body_decodes_at_any_split() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:i9aeUg==\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let mut d = ChunkedDecoder::new(None, true);
            assert_eq!(decode_all(&mut d, body, step).unwrap(), b"hello world");
            assert_eq!(
                d.trailers(),
                &[("x-amz-checksum-crc32".to_string(), "i9aeUg==".to_string())]
            );
            assert_eq!(d.decoded_len(), 11);
        }
    }

    #[test]
    fn truncated_and_trailing_garbage_fail() {
        let mut d = ChunkedDecoder::new(None, true);
        assert!(decode_all(&mut d, b"5\r\nhello\r\n", 4).is_err());
        let mut d = ChunkedDecoder::new(None, true);
        assert!(decode_all(&mut d, b"5\r\nhello\r\n0\r\n\r\nextra", 4).is_err());
        let mut d = ChunkedDecoder::new(None, false);
        assert!(decode_all(&mut d, b"5\r\nhelloXX0\r\n\r\n", 4).is_err());
        let mut d = ChunkedDecoder::new(None, false);
        assert!(decode_all(&mut d, b"zz\r\n", 4).is_err());
    }

    fn signed_body(key: &SigningKey, seed: &str, chunks: &[&[u8]], tamper: bool) -> Vec<u8> {
        let scope = "20130524/us-east-1/s3/aws4_request";
        let mut prev = seed.to_string();
        let mut out = Vec::new();
        for c in chunks.iter().copied().chain(std::iter::once(&b""[..])) {
            let sig = key.sign(&sigv4::chunk_string_to_sign(
                "20130524T000000Z",
                scope,
                &prev,
                &sigv4::sha256_hex(c),
            ));
            out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
            let mut data = c.to_vec();
            if tamper && !data.is_empty() {
                data[0] ^= 1;
            }
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            prev = sig;
        }
        out
    }

    fn signer(key: &SigningKey, seed: &str) -> ChunkSigner {
        ChunkSigner {
            key: key.clone(),
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            prev_signature: seed.into(),
        }
    }

    #[test]
    fn signed_chain_verifies_and_detects_tamper() {
        let key = SigningKey::derive("secret", "20130524", "us-east-1", "s3");
        let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let good = signed_body(&key, seed, &[b"abc", b"defgh"], false);
        let mut d = ChunkedDecoder::new(Some(signer(&key, seed)), false);
        assert_eq!(decode_all(&mut d, &good, 5).unwrap(), b"abcdefgh");
        let bad = signed_body(&key, seed, &[b"abc", b"defgh"], true);
        let mut d = ChunkedDecoder::new(Some(signer(&key, seed)), false);
        assert_eq!(
            decode_all(&mut d, &bad, 5).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        // A wrong seed breaks the chain from the first chunk.
        let mut d = ChunkedDecoder::new(Some(signer(&key, &"0".repeat(64))), false);
        assert_eq!(
            decode_all(&mut d, &good, 64).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary network bytes, split anywhere, never panic the decoder.
        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), split in 1usize..64, trailers: bool, signed: bool) {
            let signer = signed.then(|| ChunkSigner {
                key: SigningKey::derive("secret", "20130524", "us-east-1", "s3"),
                amz_date: "20130524T000000Z".into(),
                scope: "20130524/us-east-1/s3/aws4_request".into(),
                prev_signature: "0".repeat(64),
            });
            let mut d = ChunkedDecoder::new(signer, trailers);
            let mut out = Vec::new();
            for piece in data.chunks(split) {
                if d.feed(Bytes::copy_from_slice(piece), &mut out).is_err() {
                    break;
                }
            }
            let _ = d.finish();
        }

        /// Well-formed unsigned framing decodes to the same bytes at any split.
        #[test]
        fn framing_round_trip(body in proptest::collection::vec(any::<u8>(), 0..5000), chunk in 1usize..700, split in 1usize..300) {
            let mut framed = Vec::new();
            for c in body.chunks(chunk) {
                framed.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                framed.extend_from_slice(c);
                framed.extend_from_slice(b"\r\n");
            }
            framed.extend_from_slice(b"0\r\n\r\n");
            let mut d = ChunkedDecoder::new(None, true);
            let mut out = Vec::new();
            for piece in framed.chunks(split) {
                d.feed(Bytes::copy_from_slice(piece), &mut out).unwrap();
            }
            d.finish().unwrap();
            prop_assert_eq!(out.concat(), body);
        }
    }
}
