//! The buffers of bytes bound for the store (sealed chunks; pass-through bodies), and a
//! small bounded pool that reuses them.
//!
//! A sealing buffer holds a few 64 KiB chunks (~256 KiB). Allocated fresh for every
//! write, each came from the allocator as new pages: a single-stream upload spent ~10 % of
//! the proxy's CPU in page faults zeroing them. Their memory also stays initialized across
//! reuse, so AES-GCM writes the ciphertext straight from the plaintext into it, without
//! first copying the plaintext there. The pool holds only what the store receives anyway
//! (decryption does not use it): at most [`MAX_BUFFERS`] idle buffers of
//! [`MIN_CAPACITY`]..=[`MAX_CAPACITY`] bytes.

use std::sync::Mutex;

/// At most this many idle buffers are kept.
pub const MAX_BUFFERS: usize = 16;
/// Larger buffers are freed rather than kept.
pub const MAX_CAPACITY: usize = 1 << 20;
/// Smaller buffers are freed rather than kept: they are cheap to allocate, and kept they
/// would fill the pool (small objects) and crowd out the large ones that are worth keeping.
pub const MIN_CAPACITY: usize = 64 * 1024;

/// Idle buffers; every byte of each (`len()`) is initialized.
struct Pool(Mutex<Vec<Vec<u8>>>);

static POOL: Pool = Pool(Mutex::new(Vec::new()));

impl Pool {
    /// An initialized buffer of at least `size` bytes: a kept one when one is large enough.
    fn take(&self, size: usize) -> Vec<u8> {
        let kept = self.0.lock().ok().and_then(|mut pool| {
            let i = pool.iter().rposition(|b| b.len() >= size)?;
            Some(pool.swap_remove(i))
        });
        kept.unwrap_or_else(|| vec![0; size])
    }

    /// Keeps `buf` for reuse unless the pool is full or the buffer is too large.
    fn give(&self, buf: Vec<u8>) {
        if buf.len() < MIN_CAPACITY || buf.len() > MAX_CAPACITY {
            return;
        }
        if let Ok(mut pool) = self.0.lock() {
            if pool.len() < MAX_BUFFERS {
                pool.push(buf);
            }
        }
    }
}

/// Bytes for the store (sealed chunks, back to back): they are `&buf[..]`. Dropping it
/// hands the buffer back to the pool.
pub struct Buf {
    buf: Vec<u8>,
    len: usize,
}

impl Buf {
    /// An empty buffer with room for `size` bytes before it has to grow.
    pub fn with_room(size: usize) -> Self {
        Buf {
            buf: POOL.take(size),
            len: 0,
        }
    }

    /// The next `n` bytes after the content, to be filled and then kept with [`Self::commit`].
    pub(crate) fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[self.len..end]
    }

    /// Keeps the `n` bytes just written into [`Self::room`].
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.len <= self.buf.len());
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.room(data.len()).copy_from_slice(data);
        self.commit(data.len());
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::borrow::Borrow<[u8]> for Buf {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pool::Buf({} bytes)", self.len)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        POOL.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        // A pool of its own: other tests seal through the shared one concurrently.
        let pool = Pool(Mutex::new(Vec::new()));
        let b = pool.take(300_000);
        assert!(b.len() >= 300_000);
        let ptr = b.as_ptr();
        pool.give(b);
        let again = pool.take(200_000);
        assert_eq!(again.as_ptr(), ptr, "a kept buffer large enough is reused");
        // Too small for the request: a new one.
        pool.give(again);
        let bigger = pool.take(400_000);
        assert_ne!(bigger.as_ptr(), ptr);
        assert_eq!(
            pool.0.lock().unwrap().len(),
            1,
            "the smaller one stays kept"
        );
        // Small buffers are not kept: they would crowd out the large ones.
        pool.give(vec![1; 4096]);
        assert_eq!(pool.0.lock().unwrap().len(), 1);
        for _ in 0..2 * MAX_BUFFERS {
            pool.give(vec![1; MIN_CAPACITY]);
        }
        pool.give(vec![0; MAX_CAPACITY + 1]);
        let kept = pool.0.lock().unwrap();
        assert_eq!(kept.len(), MAX_BUFFERS);
        assert!(kept
            .iter()
            .all(|b| (MIN_CAPACITY..=MAX_CAPACITY).contains(&b.len())));
    }

    #[test]
    fn a_buf_holds_exactly_what_was_written() {
        let mut s = Buf::with_room(100);
        assert!(s.is_empty());
        s.extend_from_slice(b"abc");
        s.room(5).copy_from_slice(b"defgh");
        s.commit(5);
        // Past its room: it grows.
        s.extend_from_slice(&[9; 200]);
        assert_eq!(&s[..8], b"abcdefgh");
        assert_eq!(s.len(), 208);
        assert!(s[8..].iter().all(|&b| b == 9));
    }
}
