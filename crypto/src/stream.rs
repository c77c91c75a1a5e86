//! Chunked AES-256-GCM (FORMAT.md §3). Each chunk is `nonce(12) || ciphertext || tag(16)`
//! with a fresh random nonce (for multipart parts, one derived from the chunk, §13); the AAD
//! binds the format version, the part number, the chunk index and whether the chunk is the
//! last one, so reordering, dropping, duplicating, truncating and appending chunks all fail
//! authentication or the length check.

use aws_lc_rs::aead::{Aad, Nonce};

use crate::keys::{random, ObjectKey, PartNonceKey};
use crate::layout::{chunk_count, CHUNK, NONCE, OVERHEAD, SEALED_CHUNK, TAG};
use crate::pool::Buf;
use crate::CryptoError;

const AAD_PREFIX: &[u8; 9] = b"chmura/v1";

/// Highest part number of a multipart upload (S3's limit).
pub const MAX_PART: u32 = 10_000;
/// Most chunks one multipart part may have (the nonce's index field, §13): 8 GiB, above S3's
/// 5 GiB part limit.
pub const MAX_PART_CHUNKS: u64 = 1 << 17;

/// AAD of one chunk of a single-part object (§3): `"chmura/v1" || part u32 BE || index u64 BE
/// || final u8`.
pub fn chunk_aad(part: u32, index: u64, last: bool) -> [u8; 22] {
    let mut a = [0u8; 22];
    a[..9].copy_from_slice(AAD_PREFIX);
    a[9..13].copy_from_slice(&part.to_be_bytes());
    a[13..21].copy_from_slice(&index.to_be_bytes());
    a[21] = u8::from(last);
    a
}

/// AAD of one chunk of multipart part `part` (§13): the single-part AAD followed by `u64 BE
/// count`, the number of chunks in the part (0 for part 1, whose place is fixed).
pub fn mp_chunk_aad(part: u32, index: u64, last: bool, count: u64) -> [u8; 30] {
    let mut a = [0u8; 30];
    a[..22].copy_from_slice(&chunk_aad(part, index, last));
    a[22..].copy_from_slice(&count.to_be_bytes());
    a
}

/// The identity a multipart chunk carries in the first 4 bytes of its nonce (§13):
/// `part << 18 | index << 1 | final`.
pub fn chunk_ident(part: u32, index: u64, last: bool) -> [u8; 4] {
    let v = (part << 18) | ((index as u32 & 0x1_FFFF) << 1) | u32::from(last);
    v.to_be_bytes()
}

/// Reads `(part, index, final)` back from a nonce's first 4 bytes.
pub fn parse_ident(nonce: &[u8]) -> (u32, u64, bool) {
    let mut b = [0u8; 4];
    b.copy_from_slice(&nonce[..4]);
    let v = u32::from_be_bytes(b);
    (v >> 18, u64::from((v >> 1) & 0x1_FFFF), v & 1 == 1)
}

/// An AAD of either form, without allocating.
struct AadBuf {
    b: [u8; 30],
    n: usize,
}

impl AsRef<[u8]> for AadBuf {
    fn as_ref(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

impl AadBuf {
    fn single(part: u32, index: u64, last: bool) -> Self {
        let mut b = [0u8; 30];
        b[..22].copy_from_slice(&chunk_aad(part, index, last));
        AadBuf { b, n: 22 }
    }
    fn multi(part: u32, index: u64, last: bool, count: u64) -> Self {
        AadBuf {
            b: mp_chunk_aad(part, index, last, count),
            n: 30,
        }
    }
}

/// Appends one sealed chunk (`nonce || ciphertext || tag`) of `parts` (concatenated) to `out`,
/// encrypting from the plaintext straight into `out`.
fn seal_into(key: &ObjectKey, nonce: [u8; 12], aad: AadBuf, parts: [&[u8]; 2], out: &mut Buf) {
    let n = NONCE as usize + parts[0].len() + parts[1].len() + TAG as usize;
    let dst = out.room(n);
    let (head, rest) = dst.split_at_mut(NONCE as usize);
    head.copy_from_slice(&nonce);
    let (first, second_and_tag) = rest.split_at_mut(parts[0].len());
    // Sealing fails only for inputs over 2^36 bytes or mis-sized outputs; a chunk is 64 KiB
    // and the outputs are cut to size above.
    #[allow(clippy::expect_used)]
    key.aead
        .seal_out_of_place_scatter(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            parts[0],
            first,
            parts[1],
            second_and_tag,
        )
        .expect("AES-GCM seal of one chunk");
    out.commit(n);
}

/// Encrypts a body of known plaintext length as it streams.
pub struct Sealer<K> {
    key: K,
    part: u32,
    next: u64,
    chunks: u64,
    remaining: u64,
    buf: Vec<u8>,
    nonce_source: Option<Vec<[u8; 12]>>,
    /// Multipart parts only, made at the first chunk: their nonces are synthetic (§13).
    part_nonce: Option<PartNonceKey>,
}

/// Whether `plain_len` bytes fit in one multipart part (§13).
pub fn part_fits(plain_len: u64) -> bool {
    chunk_count(plain_len) <= MAX_PART_CHUNKS
}

impl<K: std::ops::Deref<Target = ObjectKey>> Sealer<K> {
    /// `plain_len`: the exact plaintext length of this object (part 0, §3) or of multipart
    /// part `part` (1..=10000, §13; callers check [`part_fits`] first).
    pub fn new(key: K, part: u32, plain_len: u64) -> Self {
        Sealer {
            part_nonce: None,
            key,
            part,
            next: 0,
            chunks: chunk_count(plain_len),
            remaining: plain_len,
            // A small body never needs a whole chunk's buffer (allocations are a visible
            // share of the CPU a small request costs).
            buf: Vec::with_capacity(plain_len.min(CHUNK) as usize),
            nonce_source: None,
        }
    }

    /// Test vectors only: use these nonces, in order, instead of random ones.
    #[doc(hidden)]
    pub fn with_fixed_nonces(mut self, nonces: Vec<[u8; 12]>) -> Self {
        self.nonce_source = Some(nonces.into_iter().rev().collect());
        self
    }

    /// Seals the pending tail plus `more` as chunk `self.next` into `out`.
    fn emit(&mut self, mut more: &[u8], out: &mut Buf) {
        let index = self.next;
        let last = index + 1 == self.chunks;
        let mut nonce = match self.nonce_source.as_mut().and_then(Vec::pop) {
            Some(n) => n,
            None if self.part == 0 => random::<12>(),
            None => {
                // A part's nonce is a function of the chunk's place and plaintext, so the
                // same part sent again seals to the same bytes (and the store gives it the
                // same ETag, as S3 does). The plaintext must be one slice: however the
                // network cut the body, the nonce must come out the same.
                if !self.buf.is_empty() && !more.is_empty() {
                    self.buf.extend_from_slice(more);
                    more = &[];
                }
                let plain = if self.buf.is_empty() {
                    more
                } else {
                    &self.buf[..]
                };
                let ident = chunk_ident(self.part, index, last);
                let key = &self.key;
                let k = self.part_nonce.get_or_insert_with(|| key.part_nonce_key());
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(&k.synthetic(ident, plain));
                n
            }
        };
        if self.part != 0 {
            nonce[..4].copy_from_slice(&chunk_ident(self.part, index, last));
        }
        let aad = if self.part == 0 {
            AadBuf::single(0, index, last)
        } else {
            let count = if self.part == 1 { 0 } else { self.chunks };
            AadBuf::multi(self.part, index, last, count)
        };
        seal_into(&self.key, nonce, aad, [&self.buf, more], out);
        self.buf.clear();
        self.next += 1;
    }

    /// Feeds plaintext; the chunks it completes are sealed, back to back, into one buffer
    /// pushed to `out` (from [`crate::pool`]: drop it once written and it is reused).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Buf>) -> Result<(), CryptoError> {
        if data.len() as u64 > self.remaining {
            return Err(CryptoError::TooLong);
        }
        self.remaining -= data.len() as u64;
        let chunk = CHUNK as usize;
        let completes = (self.buf.len() + data.len()) / chunk
            + usize::from(
                self.remaining == 0 && !(self.buf.len() + data.len()).is_multiple_of(chunk),
            );
        if completes == 0 {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        let mut sealed = Buf::with_room(completes * (chunk + OVERHEAD as usize));
        if !self.buf.is_empty() {
            let need = (chunk - self.buf.len()).min(data.len());
            if self.buf.len() + need == chunk || (self.remaining == 0 && need == data.len()) {
                let (head, rest) = data.split_at(need);
                self.emit(head, &mut sealed);
                data = rest;
            }
        }
        while data.len() >= chunk {
            let (head, rest) = data.split_at(chunk);
            self.emit(head, &mut sealed);
            data = rest;
        }
        if self.remaining == 0 && !data.is_empty() {
            self.emit(data, &mut sealed);
            data = &[];
        }
        self.buf.extend_from_slice(data);
        if !sealed.is_empty() {
            out.push(sealed);
        }
        Ok(())
    }

    /// Ends the body: every declared byte must have been pushed. Emits the final chunk when it
    /// is still pending (an empty body has one empty chunk).
    pub fn finish(&mut self, out: &mut Vec<Buf>) -> Result<(), CryptoError> {
        if self.remaining != 0 {
            let want = self.chunks.saturating_mul(CHUNK);
            return Err(CryptoError::Truncated {
                got: want.saturating_sub(self.remaining),
                want,
            });
        }
        if self.next < self.chunks {
            let mut sealed = Buf::with_room(self.buf.len() + OVERHEAD as usize);
            self.emit(&[], &mut sealed);
            out.push(sealed);
        }
        Ok(())
    }
}

/// Decrypts a run of chunks as it streams, delivering `take` plaintext bytes after dropping
/// `skip` (for ranges). No plaintext of a chunk is released before its tag verified.
pub struct Opener<K> {
    key: K,
    part: u32,
    /// Multipart object (§13): chunk identities come from the nonces and are checked against
    /// their place; `k` is the chunk count of every part but the last, once known.
    multi: bool,
    /// Reading exactly part `part` of a multipart object, its length known (§13, irregular
    /// layouts): every chunk must say it is chunk `next` of `part`.
    exact: bool,
    k: Option<u64>,
    next: u64,
    end: u64,
    last_index: u64,
    last_len: u64,
    buf: Vec<u8>,
    skip: u64,
    take: u64,
}

impl<K: std::ops::Deref<Target = ObjectKey>> Opener<K> {
    /// `plain_len`: plaintext length of the whole object (or part); chunks
    /// `first_chunk..first_chunk + chunks` arrive; `skip`/`take` trim the plaintext.
    pub fn new(
        key: K,
        part: u32,
        plain_len: u64,
        first_chunk: u64,
        chunks: u64,
        skip: u64,
        take: u64,
    ) -> Self {
        let count = chunk_count(plain_len);
        Opener {
            key,
            part,
            multi: false,
            exact: false,
            k: None,
            next: first_chunk,
            end: first_chunk + chunks,
            last_index: count - 1,
            last_len: plain_len - (count - 1) * CHUNK,
            // Filled only when a chunk arrives split across pushes; sized then.
            buf: Vec::new(),
            skip,
            take,
        }
    }

    /// Opener for a whole object.
    pub fn whole(key: K, part: u32, plain_len: u64) -> Self {
        Opener::new(
            key,
            part,
            plain_len,
            0,
            chunk_count(plain_len),
            0,
            plain_len,
        )
    }

    /// Opener for chunks `first_chunk..first_chunk + chunks` of a multipart object of
    /// `plain_len` plaintext bytes (§13); `skip`/`take` trim the plaintext.
    pub fn multipart(
        key: K,
        plain_len: u64,
        first_chunk: u64,
        chunks: u64,
        skip: u64,
        take: u64,
    ) -> Self {
        let mut o = Opener::new(key, 0, plain_len, first_chunk, chunks, skip, take);
        o.multi = true;
        o
    }

    /// Opener for the whole of multipart part `part` (1..=10000) of `plain_len` plaintext
    /// bytes, for reading an object whose part sizes are known (§13, irregular layouts).
    pub fn part(key: K, part: u32, plain_len: u64) -> Self {
        let mut o = Opener::whole(key, part, plain_len);
        o.multi = true;
        o.exact = true;
        o
    }

    /// Requires every part but the last to have `k` chunks (a layout learned elsewhere, for
    /// reading one part).
    pub fn with_part_chunks(mut self, k: u64) -> Self {
        self.k = Some(k);
        self
    }

    /// The identity check of §13 for chunk `g` whose nonce says `(p, i, last)`: the AAD's
    /// count field and the part chunk count this chunk establishes, or `None` when the
    /// chunk cannot be at this place.
    fn place(&self, g: u64, p: u32, i: u64, last: bool) -> Option<(u64, Option<u64>)> {
        let total = self.last_index + 1;
        if self.exact {
            let ok = p == self.part && i == g && last == (g == self.last_index);
            return ok.then_some((if p == 1 { 0 } else { total }, None));
        }
        if p == 0 || p > MAX_PART {
            return None;
        }
        let p64 = u64::from(p);
        let k = match self.k {
            Some(k) => k,
            None if p == 1 => {
                // Part 1 starts the object: its chunk i is chunk i of the object.
                if i != g || (g == self.last_index && !last) {
                    return None;
                }
                return Some((0, last.then_some(i + 1)));
            }
            None => {
                if g < i || !(g - i).is_multiple_of(p64 - 1) {
                    return None;
                }
                (g - i) / (p64 - 1)
            }
        };
        if k == 0 || k > MAX_PART_CHUNKS || g / k + 1 != p64 || g % k != i {
            return None;
        }
        let count = k.min(total - (p64 - 1) * k);
        if last != (i + 1 == count) {
            return None;
        }
        Some((if p == 1 { 0 } else { count }, Some(k)))
    }

    fn expected(&self) -> usize {
        if self.next == self.last_index {
            (self.last_len + OVERHEAD) as usize
        } else {
            SEALED_CHUNK as usize
        }
    }

    /// Feeds ciphertext; the plaintext of the chunks it completes (each verified before it is
    /// kept) goes to `out` as one buffer per call.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), CryptoError> {
        // Allocated when the first chunk completes, for all the plaintext this call can
        // yield (never more than the ciphertext it comes from): one allocation per call.
        let mut plain = Vec::new();
        let res = (|| {
            while !data.is_empty() {
                if self.next >= self.end {
                    return Err(CryptoError::TooLong);
                }
                let want = self.expected();
                if self.buf.is_empty() && data.len() >= want {
                    // A whole chunk in the input: decrypt straight into the output buffer.
                    if plain.capacity() == 0 {
                        plain.reserve_exact(data.len());
                    }
                    let (chunk, rest) = data.split_at(want);
                    self.open_into(chunk, &mut plain)?;
                    data = rest;
                    continue;
                }
                let n = (want - self.buf.len()).min(data.len());
                self.buf.reserve_exact(want - self.buf.len());
                self.buf.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.buf.len() == want {
                    if plain.capacity() == 0 {
                        plain.reserve_exact(want + data.len());
                    }
                    let chunk = std::mem::take(&mut self.buf);
                    let r = self.open_into(&chunk, &mut plain);
                    self.buf = chunk;
                    self.buf.clear();
                    r?;
                }
            }
            Ok(())
        })();
        if !plain.is_empty() {
            out.push(plain);
        }
        res
    }

    /// Opens one sealed chunk, appending its (trimmed) plaintext to `plain`. On failure
    /// nothing of this chunk stays in `plain`.
    fn open_into(&mut self, sealed: &[u8], plain: &mut Vec<u8>) -> Result<(), CryptoError> {
        let index = self.next;
        let fail = CryptoError::ChunkAuth {
            part: self.part,
            index,
        };
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&sealed[..NONCE as usize]);
        let mut learned = None;
        let (aad, fail) = if self.multi {
            let (p, i, last) = parse_ident(&nonce);
            let fail = CryptoError::ChunkAuth { part: p, index: i };
            let Some((count, k)) = self.place(index, p, i, last) else {
                return Err(fail);
            };
            learned = k;
            (AadBuf::multi(p, i, last, count), fail)
        } else {
            (
                AadBuf::single(self.part, index, index == self.last_index),
                fail,
            )
        };
        let start = plain.len();
        plain.extend_from_slice(&sealed[NONCE as usize..]);
        let opened = self
            .key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut plain[start..],
            )
            .map(|p| p.len());
        let n = match opened {
            Ok(n) => n,
            Err(_) => {
                plain.truncate(start);
                return Err(fail);
            }
        };
        plain.truncate(start + n);
        if learned.is_some() {
            self.k = learned;
        }
        let skip = (self.skip as usize).min(n);
        if skip > 0 {
            plain.drain(start..start + skip);
            self.skip -= skip as u64;
        }
        let keep = ((n - skip) as u64).min(self.take) as usize;
        plain.truncate(start + keep);
        self.take -= keep as u64;
        self.next += 1;
        Ok(())
    }

    /// Plaintext bytes still to deliver.
    pub fn remaining(&self) -> u64 {
        self.take
    }

    /// Ends the ciphertext: every expected chunk must have arrived.
    pub fn finish(&self) -> Result<(), CryptoError> {
        if self.next != self.end || !self.buf.is_empty() {
            return Err(CryptoError::Truncated {
                got: self.next,
                want: self.end,
            });
        }
        Ok(())
    }
}

/// A decryptor fed ciphertext as it streams: [`Opener`] for one run of chunks,
/// [`PartsOpener`] for a multipart object read part by part.
pub trait Open: Send {
    /// Feeds ciphertext; verified plaintext goes to `out`.
    fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), CryptoError>;
    /// Plaintext bytes still to deliver.
    fn remaining(&self) -> u64;
    /// Ends the ciphertext: everything expected must have arrived.
    fn finish(&self) -> Result<(), CryptoError>;
}

impl<K: std::ops::Deref<Target = ObjectKey> + Send> Open for Opener<K> {
    fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), CryptoError> {
        Opener::push(self, data, out)
    }
    fn remaining(&self) -> u64 {
        Opener::remaining(self)
    }
    fn finish(&self) -> Result<(), CryptoError> {
        Opener::finish(self)
    }
}

/// Opens a whole multipart object whose parts are known, in order, as `(part number,
/// plaintext length)` (§13, irregular layouts): each part's ciphertext is exactly
/// `ciphertext_len(len)` bytes and every chunk must carry its part's identity.
pub struct PartsOpener<K> {
    key: K,
    parts: std::collections::VecDeque<(u32, u64)>,
    current: Option<(Opener<K>, u64)>,
    /// Plaintext bytes of the parts not started yet.
    later: u64,
}

impl<K: std::ops::Deref<Target = ObjectKey> + Clone> PartsOpener<K> {
    pub fn new(key: K, parts: &[(u32, u64)]) -> Self {
        PartsOpener {
            key,
            parts: parts.iter().copied().collect(),
            current: None,
            later: parts.iter().map(|(_, l)| *l).sum(),
        }
    }
}

impl<K: std::ops::Deref<Target = ObjectKey> + Clone + Send> Open for PartsOpener<K> {
    fn push(&mut self, mut data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), CryptoError> {
        while !data.is_empty() {
            if self.current.as_ref().is_none_or(|(_, left)| *left == 0) {
                if let Some((o, _)) = &self.current {
                    o.finish()?;
                }
                let Some((part, len)) = self.parts.pop_front() else {
                    return Err(CryptoError::TooLong);
                };
                self.later -= len;
                self.current = Some((
                    Opener::part(self.key.clone(), part, len),
                    crate::layout::ciphertext_len(len),
                ));
            }
            let Some((o, left)) = self.current.as_mut() else {
                return Err(CryptoError::TooLong);
            };
            let n = (*left).min(data.len() as u64) as usize;
            o.push(&data[..n], out)?;
            *left -= n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.later + self.current.as_ref().map_or(0, |(o, _)| o.remaining())
    }

    fn finish(&self) -> Result<(), CryptoError> {
        match &self.current {
            Some((o, 0)) if self.parts.is_empty() => o.finish(),
            None if self.parts.is_empty() => Ok(()),
            _ => Err(CryptoError::Truncated {
                got: 0,
                want: self.parts.len() as u64 + 1,
            }),
        }
    }
}

/// Buf size of a chunk holding `plain` bytes (for callers that frame chunks themselves).
pub const fn sealed_len(plain: u64) -> u64 {
    plain + NONCE + TAG
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ciphertext_len, range_plan};
    use proptest::prelude::*;

    fn key() -> ObjectKey {
        ObjectKey::derive(&[7; 32], &[9; 32])
    }

    fn seal_all(k: &ObjectKey, part: u32, data: &[u8], step: usize) -> Vec<u8> {
        let mut s = Sealer::new(k, part, data.len() as u64);
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            s.push(piece, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out.concat()
    }

    fn open_all(
        k: &ObjectKey,
        part: u32,
        plain_len: u64,
        ct: &[u8],
        step: usize,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut o = Opener::whole(k, part, plain_len);
        let mut out = Vec::new();
        for piece in ct.chunks(step.max(1)) {
            o.push(piece, &mut out)?;
        }
        o.finish()?;
        Ok(out.concat())
    }

    #[test]
    fn boundary_round_trips() {
        let k = key();
        let c = CHUNK as usize;
        for len in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let ct = seal_all(&k, 0, &data, 10_000);
            assert_eq!(ct.len() as u64, ciphertext_len(len as u64), "len {len}");
            assert_eq!(
                open_all(&k, 0, len as u64, &ct, 7_000).unwrap(),
                data,
                "len {len}"
            );
        }
    }

    #[test]
    fn sealing_is_randomized() {
        let k = key();
        assert_ne!(seal_all(&k, 0, b"same", 4), seal_all(&k, 0, b"same", 4));
    }

    #[test]
    fn a_part_sent_again_seals_to_the_same_bytes_however_it_is_cut() {
        // Three chunks and a tail, fed in pieces that do and do not line up with chunks.
        let data = body(3 * CHUNK as usize + 1000);
        let k = key();
        let once = seal_all(&k, 7, &data, 1 << 20);
        for step in [1, 4096, 65_535, 65_537, 100_000] {
            assert_eq!(seal_all(&k, 7, &data, step), once, "pieces of {step}");
        }
        // It opens, as part 7 of its own length.
        let mut o = Opener::part(&k, 7, data.len() as u64);
        let mut out = Vec::new();
        o.push(&once, &mut out).unwrap();
        o.finish().unwrap();
        assert_eq!(out.concat(), data);
        // Each nonce: the chunk's identity, then 8 bytes that differ from chunk to chunk.
        let nonces: Vec<&[u8]> = once
            .chunks(SEALED_CHUNK as usize)
            .map(|c| &c[..12])
            .collect();
        assert_eq!(nonces.len(), 4);
        for (i, n) in nonces.iter().enumerate() {
            assert_eq!(parse_ident(n), (7, i as u64, i == 3));
        }
        let tails: std::collections::HashSet<&[u8]> = nonces.iter().map(|n| &n[4..]).collect();
        assert_eq!(tails.len(), 4);
        // One byte changed: that chunk's nonce changes, the others stay.
        let mut other = data.clone();
        other[CHUNK as usize + 5] ^= 1;
        let again = seal_all(&k, 7, &other, 4096);
        let nonces2: Vec<&[u8]> = again
            .chunks(SEALED_CHUNK as usize)
            .map(|c| &c[..12])
            .collect();
        assert_eq!(nonces2[0], nonces[0]);
        assert_ne!(nonces2[1], nonces[1]);
        assert_eq!(nonces2[2..], nonces[2..]);
        // Another part number, another key or another salt: other nonces.
        assert_ne!(seal_all(&k, 8, &data, 4096)[4..12], once[4..12]);
        let k2 = ObjectKey::derive(&[1; 32], &[3; 32]);
        assert_ne!(seal_all(&k2, 7, &data, 4096)[4..12], once[4..12]);
        // Single-part objects keep random nonces.
        assert_ne!(seal_all(&k, 0, &data, 4096), seal_all(&k, 0, &data, 4096));
    }

    #[test]
    fn length_mismatches_are_refused() {
        let k = key();
        let mut s = Sealer::new(&k, 0, 3);
        let mut out = Vec::new();
        assert_eq!(s.push(b"abcd", &mut out), Err(CryptoError::TooLong));
        let mut s = Sealer::new(&k, 0, 3);
        s.push(b"ab", &mut out).unwrap();
        assert!(matches!(
            s.finish(&mut out),
            Err(CryptoError::Truncated { .. })
        ));
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn round_trip_any_length(len in 0usize..(3 * CHUNK as usize + 100), step in 1usize..100_000) {
            let k = key();
            let data = body(len);
            let ct = seal_all(&k, 0, &data, step);
            prop_assert_eq!(open_all(&k, 0, len as u64, &ct, step).unwrap(), data);
        }

        #[test]
        fn any_range_equals_the_slice(len in 1usize..(4 * CHUNK as usize), a in any::<usize>(), b in any::<usize>()) {
            let k = key();
            let data = body(len);
            let ct = seal_all(&k, 0, &data, 65_536);
            let (mut s, mut e) = (a % len, b % len);
            if s > e { std::mem::swap(&mut s, &mut e); }
            let r = range_plan(len as u64, s as u64, e as u64);
            let mut o = Opener::new(&k, 0, len as u64, r.first_chunk, r.chunks, r.skip, r.take);
            let mut out = Vec::new();
            o.push(&ct[r.cipher_start as usize..=r.cipher_end as usize], &mut out).unwrap();
            o.finish().unwrap();
            prop_assert_eq!(out.concat(), data[s..=e].to_vec());
        }

        #[test]
        fn any_bit_flip_fails(len in 1usize..(2 * CHUNK as usize + 10), pos in any::<usize>(), bit in 0u8..8) {
            let k = key();
            let data = body(len);
            let mut ct = seal_all(&k, 0, &data, 65_536);
            let i = pos % ct.len();
            ct[i] ^= 1 << bit;
            prop_assert!(open_all(&k, 0, len as u64, &ct, 4096).is_err());
        }

        #[test]
        fn truncation_and_appending_fail(len in 0usize..(3 * CHUNK as usize), cut in 1usize..200_000) {
            let k = key();
            let ct = seal_all(&k, 0, &body(len), 65_536);
            let cut = cut % ct.len().max(1) + 1;
            if cut < ct.len() {
                prop_assert!(open_all(&k, 0, len as u64, &ct[..ct.len() - cut], 4096).is_err());
            }
            let mut longer = ct.clone();
            longer.extend_from_slice(&ct[..cut.min(ct.len())]);
            prop_assert!(open_all(&k, 0, len as u64, &longer, 4096).is_err());
        }
    }

    #[test]
    fn reordered_dropped_and_spliced_chunks_fail() {
        let k = key();
        let c = SEALED_CHUNK as usize;
        let data = body(3 * CHUNK as usize + 10);
        let ct = seal_all(&k, 0, &data, 65_536);
        let chunks: Vec<&[u8]> = vec![&ct[..c], &ct[c..2 * c], &ct[2 * c..3 * c], &ct[3 * c..]];
        // Swap chunks 0 and 1.
        let swapped = [chunks[1], chunks[0], chunks[2], chunks[3]].concat();
        assert_eq!(
            open_all(&k, 0, data.len() as u64, &swapped, 5000),
            Err(CryptoError::ChunkAuth { part: 0, index: 0 })
        );
        // Drop the last chunk: the new last (full) chunk was sealed as not-final.
        let dropped = [chunks[0], chunks[1], chunks[2]].concat();
        assert!(open_all(&k, 0, 3 * CHUNK, &dropped, 5000).is_err());
        // Duplicate a chunk.
        let dup = [chunks[0], chunks[0], chunks[2], chunks[3]].concat();
        assert!(open_all(&k, 0, data.len() as u64, &dup, 5000).is_err());
        // Splice a chunk from another object (same key, other salt → other content key).
        let other = ObjectKey::derive(&[7; 32], &[8; 32]);
        let ct2 = seal_all(&other, 0, &data, 65_536);
        let spliced = [chunks[0], &ct2[c..2 * c], chunks[2], chunks[3]].concat();
        assert_eq!(
            open_all(&k, 0, data.len() as u64, &spliced, 5000),
            Err(CryptoError::ChunkAuth { part: 0, index: 1 })
        );
        // The same chunks under another part number.
        assert!(open_all(&k, 1, data.len() as u64, &ct, 5000).is_err());
    }

    /// A multipart object (§13): parts of `part_len` bytes (the last shorter), each sealed on
    /// its own with its part number; returns the parts' ciphertexts.
    fn seal_parts(k: &ObjectKey, data: &[u8], part_len: usize) -> Vec<Vec<u8>> {
        data.chunks(part_len)
            .enumerate()
            .map(|(n, piece)| seal_all(k, n as u32 + 1, piece, 10_000))
            .collect()
    }

    fn open_mp(k: &ObjectKey, plain_len: u64, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut o = Opener::multipart(k, plain_len, 0, chunk_count(plain_len), 0, plain_len);
        let mut out = Vec::new();
        for piece in ct.chunks(5000) {
            o.push(piece, &mut out)?;
        }
        o.finish()?;
        Ok(out.concat())
    }

    #[test]
    fn multipart_ident_round_trips() {
        for (p, i, l) in [(1, 0, false), (10_000, 131_071, true), (2, 5, true)] {
            assert_eq!(parse_ident(&chunk_ident(p, i, l)), (p, i, l));
        }
    }

    #[test]
    fn multipart_objects_have_the_single_part_grid() {
        let k = key();
        let c = CHUNK as usize;
        for (len, part) in [
            (3 * c, c),
            (3 * c + 7, c),
            (7 * c + 1, 2 * c),
            (5, 2 * c),
            (2 * c, 2 * c),
        ] {
            let data = body(len);
            let ct = seal_parts(&k, &data, part).concat();
            assert_eq!(ct.len() as u64, ciphertext_len(len as u64), "len {len}");
            assert_eq!(open_mp(&k, len as u64, &ct).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn multipart_parts_swapped_dropped_or_duplicated_fail() {
        let k = key();
        let c = CHUNK as usize;
        let data = body(6 * c + 10);
        let parts = seal_parts(&k, &data, 2 * c);
        let len = |v: &[&Vec<u8>]| v.iter().map(|p| p.len()).sum::<usize>();
        let plain = |ct: usize| crate::layout::plaintext_len(ct as u64).unwrap();
        let (p1, p2, p3, p4) = (&parts[0], &parts[1], &parts[2], &parts[3]);
        for (what, v) in [
            ("swap 2 and 3", vec![p1, p3, p2, p4]),
            ("drop 2", vec![p1, p3, p4]),
            ("duplicate 2", vec![p1, p2, p2, p3, p4]),
            ("drop 1", vec![p2, p3, p4]),
            ("last part moved first", vec![p4, p1, p2, p3]),
        ] {
            let ct = v.iter().map(|p| p.as_slice()).collect::<Vec<_>>().concat();
            assert!(open_mp(&k, plain(len(&v)), &ct).is_err(), "{what}");
        }
        // Dropping whole trailing parts leaves a valid, shorter object (FORMAT.md §10 bound).
        let ct = [p1.as_slice(), p2].concat();
        assert_eq!(open_mp(&k, plain(ct.len()), &ct).unwrap(), data[..4 * c]);
        // A part sealed as single-part data does not open as part of a multipart object.
        let single = seal_all(&k, 0, &data[..2 * c], 10_000);
        let ct = [single.as_slice(), p2, p3, p4].concat();
        assert!(open_mp(&k, data.len() as u64, &ct).is_err());
    }

    /// Seals `sizes` as parts `numbers` of one upload and opens them with [`PartsOpener`].
    fn irregular(k: &ObjectKey, numbers: &[u32], sizes: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let data = body(sizes.iter().sum());
        let mut at = 0;
        let parts = numbers
            .iter()
            .zip(sizes)
            .map(|(n, len)| {
                let ct = seal_all(k, *n, &data[at..at + len], 7_000);
                at += len;
                ct
            })
            .collect();
        (data, parts)
    }

    fn open_parts(k: &ObjectKey, table: &[(u32, u64)], ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut o = PartsOpener::new(k, table);
        let mut out = Vec::new();
        for piece in ct.chunks(4099) {
            Open::push(&mut o, piece, &mut out)?;
        }
        Open::finish(&o)?;
        Ok(out.concat())
    }

    #[test]
    fn irregular_parts_open_with_their_table_and_nothing_else() {
        let k = key();
        let c = CHUNK as usize;
        let numbers = [1, 3, 7, 8];
        let sizes = [2 * c + 5, c - 1, 3 * c, 0];
        let (data, parts) = irregular(&k, &numbers, &sizes);
        let table: Vec<(u32, u64)> = numbers
            .iter()
            .zip(sizes)
            .map(|(n, s)| (*n, s as u64))
            .collect();
        let ct = parts.concat();
        assert_eq!(open_parts(&k, &table, &ct).unwrap(), data);
        let mut o = PartsOpener::new(&k, &table);
        assert_eq!(Open::remaining(&o), data.len() as u64);
        let mut out = Vec::new();
        Open::push(&mut o, &ct[..100_000], &mut out).unwrap();
        assert_eq!(
            Open::remaining(&o) + out.iter().map(|b| b.len() as u64).sum::<u64>(),
            data.len() as u64
        );
        // A wrong table, swapped parts, a missing part or extra bytes all fail.
        let mut wrong = table.clone();
        wrong[0].1 += 1;
        wrong[1].1 -= 1;
        assert!(open_parts(&k, &wrong, &ct).is_err(), "sizes shifted");
        let mut renumbered = table.clone();
        renumbered[1].0 = 2;
        assert!(open_parts(&k, &renumbered, &ct).is_err(), "part number");
        let swapped = [parts[1].as_slice(), &parts[0], &parts[2], &parts[3]].concat();
        assert!(open_parts(&k, &table, &swapped).is_err(), "swapped");
        assert!(
            open_parts(&k, &table, &ct[..ct.len() - 28]).is_err(),
            "last part dropped"
        );
        let mut longer = ct.clone();
        longer.push(0);
        assert!(open_parts(&k, &table, &longer).is_err(), "appended");
        // A single-part object does not open as a part.
        let single = seal_all(&k, 0, &data[..sizes[0]], 7_000);
        assert!(open_parts(&k, &table[..1], &single).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn multipart_any_range_equals_the_slice(
            chunks_per_part in 1usize..4,
            len in 1usize..(9 * CHUNK as usize),
            a in any::<usize>(),
            b in any::<usize>(),
        ) {
            let k = key();
            let data = body(len);
            let ct = seal_parts(&k, &data, chunks_per_part * CHUNK as usize).concat();
            let (mut s, mut e) = (a % len, b % len);
            if s > e { std::mem::swap(&mut s, &mut e); }
            let r = range_plan(len as u64, s as u64, e as u64);
            let mut o = Opener::multipart(&k, len as u64, r.first_chunk, r.chunks, r.skip, r.take);
            let mut out = Vec::new();
            o.push(&ct[r.cipher_start as usize..=r.cipher_end as usize], &mut out).unwrap();
            o.finish().unwrap();
            prop_assert_eq!(out.concat(), data[s..=e].to_vec());
            // The same chunks read as if the parts were one chunk longer fail.
            let mut o = Opener::multipart(&k, len as u64, r.first_chunk, r.chunks, r.skip, r.take)
                .with_part_chunks(chunks_per_part as u64 + 1);
            let mut out = Vec::new();
            let wrong = o.push(&ct[r.cipher_start as usize..=r.cipher_end as usize], &mut out);
            if (len as u64).div_ceil(CHUNK) > chunks_per_part as u64 {
                prop_assert!(wrong.is_err() || r.first_chunk + r.chunks <= chunks_per_part as u64);
            }
        }
    }
}
