//! The tamper-evident audit log (issue 6): one JSON line per request, each carrying the
//! SHA-256 of the previous line (`prev`), and checkpoint lines carrying an HMAC-SHA256 of the
//! chain under a key from the key provider (wrapped in the log's header line, so
//! `chmura audit verify` can check it with the same provider).
//!
//! Requests never wait on the disk: records go through a bounded queue to a writer thread. A
//! slot is reserved when the request starts: with `on_full = "backpressure"` the request waits
//! for room, with `"fail_closed"` it is refused (503) and nothing is done.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chmura_config::AuditConfig;
use chmura_crypto::envelope::{b64, EncryptionContext};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::error::S3Error;

/// Format 2 adds `record`, every line's number (from 0, continuing across restarts and
/// rotated files), so `verify` tells an edited line from deleted, inserted or reordered ones.
/// Format 1 lines (without it) still verify.
pub const FORMAT: &str = "chmura-audit/2";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The encryption context of the audit MAC key.
pub fn key_context() -> EncryptionContext {
    EncryptionContext::new([("chmura:purpose", "audit")])
}

pub fn sha256_hex(line: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, line).as_ref())
}

/// The MAC of a checkpoint: HMAC-SHA256(key, "chmura-audit checkpoint" || u64 BE seq || prev).
pub fn checkpoint_mac(key: &[u8], seq: u64, prev: &str) -> String {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&k);
    ctx.update(b"chmura-audit checkpoint");
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev.as_bytes());
    hex::encode(ctx.sign().as_ref())
}

/// One request's record (fields as in README "Audit log"; no secrets, signatures or data).
pub type Record = Map<String, Value>;

pub struct Audit {
    tx: std::sync::Mutex<Option<mpsc::Sender<Record>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// False once a write failed (reported by /readyz).
    pub healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fail_closed: bool,
    /// Requests refused because the queue was full (fail_closed).
    pub refused: AtomicU64,
    /// Requests that waited for room in a full queue (backpressure).
    pub waited: AtomicU64,
    /// Records written.
    pub written: std::sync::Arc<AtomicU64>,
}

impl Audit {
    /// Closes the queue and waits for the writer to write what is queued and seal the log with
    /// a last checkpoint (at shutdown, after in-flight requests drained).
    pub fn shutdown(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// A reserved place in the queue, filled when the request ends.
pub struct Slot(mpsc::OwnedPermit<Record>);

impl Slot {
    pub fn send(self, r: Record) {
        self.0.send(r);
    }
}

impl Audit {
    /// Starts the writer. `mac_key` and `wrapped` come from the key provider (a data key for
    /// [`key_context`]).
    pub fn start(
        cfg: &AuditConfig,
        key_id: &str,
        mac_key: Zeroizing<[u8; 32]>,
        wrapped: Vec<u8>,
    ) -> Result<Audit, String> {
        let (tx, rx) = mpsc::channel::<Record>(cfg.queue);
        let mut writer = Writer::open(cfg.file.clone(), cfg.stdout, mac_key)?;
        writer.max_bytes = cfg.max_file_bytes;
        writer.key_id = key_id.to_string();
        writer.wrapped = wrapped;
        writer.header()?;
        // Lines left unsealed by a crash (after the last checkpoint) are sealed at once.
        if std::mem::take(&mut writer.unsealed) {
            writer.checkpoint()?;
        }
        writer.flush()?;
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let every = cfg.checkpoint_every;
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        writer.healthy = healthy.clone();
        let handle = std::thread::Builder::new()
            .name("chmura-audit".into())
            .spawn(move || writer.run(rx, every, counter))
            .map_err(|e| format!("audit writer: {e}"))?;
        Ok(Audit {
            tx: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(handle)),
            healthy,
            fail_closed: cfg.fail_closed,
            refused: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            written,
        })
    }

    /// Reserves a slot for a request's record.
    pub async fn reserve(&self) -> Result<Slot, S3Error> {
        let unavailable = || {
            S3Error::new(
                "ServiceUnavailable",
                "The audit log is not keeping up; please retry.",
            )
        };
        let Some(tx) = self.tx.lock().ok().and_then(|g| g.clone()) else {
            return Err(unavailable());
        };
        if self.fail_closed {
            match tx.clone().try_reserve_owned() {
                Ok(p) => Ok(Slot(p)),
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    Err(unavailable())
                }
            }
        } else {
            match tx.clone().try_reserve_owned() {
                Ok(p) => Ok(Slot(p)),
                Err(_) => {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    tx.reserve_owned()
                        .await
                        .map(Slot)
                        .map_err(|_| unavailable())
                }
            }
        }
    }
}

pub fn now_iso() -> String {
    crate::auth::format_iso8601(std::time::SystemTime::now())
}

struct Writer {
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    path: Option<PathBuf>,
    /// Bytes in the current file.
    size: u64,
    max_bytes: Option<u64>,
    key_id: String,
    wrapped: Vec<u8>,
    stdout: bool,
    prev: String,
    key: Zeroizing<[u8; 32]>,
    seq: u64,
    since_checkpoint: u64,
    /// The file ended in a cut line (a crash): its hash, which the next header gives.
    recovered: Option<String>,
    /// The next line's `record` number.
    next_record: u64,
    /// The log did not end with a checkpoint when this writer opened it (a crash).
    unsealed: bool,
}

/// The rotated file (`<file>.N`) with the highest N.
fn newest_rotated(path: &std::path::Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for n in 1.. {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            break;
        }
        best = Some((n, candidate));
    }
    best.map(|(_, p)| p)
}

impl Writer {
    fn open(
        path: Option<PathBuf>,
        stdout: bool,
        key: Zeroizing<[u8; 32]>,
    ) -> Result<Writer, String> {
        let mut prev = GENESIS.to_string();
        let mut size = 0;
        let mut recovered = None;
        let mut next_record = 0;
        let mut unsealed = false;
        let file = match path.clone() {
            Some(p) => {
                // Continue the chain of an existing log (bytes: a crash may have cut a line,
                // even inside a character). The chain continues from the last whole line;
                // a cut line is named by its hash in the restart's header.
                let bytes = std::fs::read(&p).unwrap_or_default();
                size = bytes.len() as u64;
                let partial = !bytes.is_empty() && !bytes.ends_with(b"\n");
                let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                let mut lines: Vec<&[u8]> = if body.is_empty() {
                    Vec::new()
                } else {
                    body.split(|b| *b == b'\n').collect()
                };
                if partial {
                    recovered = lines.pop().map(sha256_hex);
                }
                // No whole line here (a crash right after a rotation): the chain goes on from
                // the newest rotated file.
                let rotated;
                if lines.is_empty() {
                    rotated = newest_rotated(&p)
                        .and_then(|r| std::fs::read(r).ok())
                        .unwrap_or_default();
                    let body = rotated.strip_suffix(b"\n").unwrap_or(&rotated);
                    if !body.is_empty() {
                        lines = body.split(|b| *b == b'\n').collect();
                    }
                }
                if let Some(last) = lines.last() {
                    prev = sha256_hex(last);
                    unsealed = serde_json::from_slice::<Value>(last)
                        .ok()
                        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
                        .as_deref()
                        != Some("checkpoint");
                }
                unsealed |= recovered.is_some();
                // The last whole line's number (a cut line's number is lost: it is reused).
                next_record = lines
                    .iter()
                    .rev()
                    .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
                    .find_map(|v| v.get("record").and_then(Value::as_u64))
                    .map_or(0, |n| n + 1);
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(|e| format!("audit file {}: {e}", p.display()))?;
                if partial {
                    // End the cut line; the header that follows says so (verify reports it).
                    f.write_all(b"\n")
                        .map_err(|e| format!("audit file {}: {e}", p.display()))?;
                    size += 1;
                }
                Some(std::io::BufWriter::new(f))
            }
            None => None,
        };
        Ok(Writer {
            healthy: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            file,
            path,
            size,
            max_bytes: None,
            key_id: String::new(),
            wrapped: Vec::new(),
            stdout,
            prev,
            key,
            seq: 0,
            since_checkpoint: 0,
            recovered,
            next_record,
            unsealed,
        })
    }

    /// The line that names the MAC key (at each start and at the top of each rotated file).
    fn header(&mut self) -> Result<(), String> {
        let mut header = Map::new();
        header.insert("type".into(), "header".into());
        header.insert("format".into(), FORMAT.into());
        header.insert("time".into(), now_iso().into());
        header.insert("kid".into(), self.key_id.clone().into());
        header.insert("wrapped_key".into(), b64::encode(&self.wrapped).into());
        if let Some(cut) = self.recovered.take() {
            header.insert("recovered_cut_line".into(), true.into());
            header.insert("cut_sha256".into(), cut.into());
        }
        // Checkpoint numbers count from each header.
        self.seq = 0;
        self.write(header)
    }

    /// Seals the current file, renames it to the next free `<file>.N` and starts a new one; the
    /// chain continues across files.
    fn rotate(&mut self) -> Result<(), String> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.checkpoint()?;
        let mut n = 1;
        let rotated = loop {
            let mut name = path.clone().into_os_string();
            name.push(format!(".{n}"));
            let candidate = PathBuf::from(name);
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        if let Err(e) = std::fs::rename(&path, &rotated) {
            // Keep writing to the current file; try again at the next record.
            return Err(format!("audit rotate: {e}"));
        }
        self.file = None;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("audit file {}: {e}", path.display()))?;
        self.file = Some(std::io::BufWriter::new(f));
        self.size = 0;
        self.header()?;
        self.flush()
    }

    fn write(&mut self, mut rec: Record) -> Result<(), String> {
        rec.insert("prev".into(), self.prev.clone().into());
        rec.insert("record".into(), self.next_record.into());
        let line = Value::Object(rec).to_string();
        if let Some(f) = self.file.as_mut() {
            f.write_all(line.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .map_err(|e| format!("audit write: {e}"))?;
            self.size += line.len() as u64 + 1;
        }
        // The line is in the log: the chain moves on, whatever stdout does.
        self.prev = sha256_hex(line.as_bytes());
        self.next_record += 1;
        if self.stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").map_err(|e| format!("audit stdout: {e}"))?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), String> {
        self.seq += 1;
        let mut c = Map::new();
        c.insert("type".into(), "checkpoint".into());
        c.insert("seq".into(), self.seq.into());
        c.insert("time".into(), now_iso().into());
        c.insert(
            "mac".into(),
            checkpoint_mac(&self.key[..], self.seq, &self.prev).into(),
        );
        self.write(c)?;
        self.since_checkpoint = 0;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), String> {
        if let Some(f) = self.file.as_mut() {
            f.flush().map_err(|e| format!("audit flush: {e}"))?;
        }
        Ok(())
    }

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Record>,
        every: u64,
        written: std::sync::Arc<AtomicU64>,
    ) {
        let mut last_checkpoint = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(rec) => {
                    if let Err(e) = self.write(rec) {
                        self.healthy.store(false, Ordering::Relaxed);
                        tracing::error!(error = %e, "audit log write failed");
                    }
                    written.fetch_add(1, Ordering::Relaxed);
                    self.since_checkpoint += 1;
                    if self.since_checkpoint >= every {
                        let _ = self.checkpoint();
                        last_checkpoint = Instant::now();
                    }
                    if self.max_bytes.is_some_and(|m| self.size >= m) {
                        if let Err(e) = self.rotate() {
                            tracing::error!(error = %e, "audit log rotation failed");
                        }
                        last_checkpoint = Instant::now();
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    let _ = self.flush();
                    // An idle log is sealed within a second.
                    if self.since_checkpoint > 0
                        && last_checkpoint.elapsed() >= Duration::from_millis(500)
                    {
                        let _ = self.checkpoint();
                        last_checkpoint = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if self.since_checkpoint > 0 {
                        let _ = self.checkpoint();
                    }
                    return;
                }
            }
        }
    }
}

/// Verifies log files with the key provider (`chmura audit verify`).
pub async fn verify_paths(kms: &crate::kms::Kms, paths: &[PathBuf]) -> Result<usize, Broken> {
    let mut files = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| Broken {
            file: p.display().to_string(),
            line: 0,
            why: format!("cannot read: {e}"),
        })?;
        files.push((p.display().to_string(), log_text(bytes)));
    }
    // Open every header's key first (the provider is async), then check synchronously.
    let mut keys = std::collections::HashMap::new();
    for (_, text) in &files {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v.get("type").and_then(Value::as_str) != Some("header") {
                continue;
            }
            let kid = v
                .get("kid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(w) = v
                .get("wrapped_key")
                .and_then(Value::as_str)
                .and_then(b64::decode)
            else {
                continue;
            };
            if let Ok(k) = kms.decrypt(&kid, &w, &key_context()).await {
                keys.insert((kid, w), k);
            }
        }
    }
    verify(&files, &mut |kid, w| {
        keys.get(&(kid.to_string(), w.to_vec()))
            .map(|k| Zeroizing::new(**k))
            .ok_or_else(|| "the key provider does not open this log's key".to_string())
    })
}

/// Opens a header's wrapped MAC key: `(key id, wrapped) -> key`.
pub type KeyOpener<'a> = dyn FnMut(&str, &[u8]) -> Result<Zeroizing<[u8; 32]>, String> + 'a;

/// What `verify` found wrong: the file, the 1-based line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub why: String,
}

/// Marks a line that is not UTF-8 (a line a crash cut inside a character): the line holds
/// this prefix and the SHA-256 of its bytes, which is what `verify` hashes it as. Chmura
/// writes no control characters, so no written line starts so.
const RAW_LINE: &str = "\u{0}raw-line-sha256:";

/// A log file as text: lines that are not UTF-8 become [`RAW_LINE`] markers.
pub fn log_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let bytes = e.into_bytes();
            let mut out = String::with_capacity(bytes.len());
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                match std::str::from_utf8(line) {
                    Ok(l) => out.push_str(l),
                    Err(_) => {
                        out.push_str(RAW_LINE);
                        out.push_str(&sha256_hex(line));
                    }
                }
            }
            out
        }
    }
}

/// The hash a line is chained by (its bytes', or the one a [`RAW_LINE`] marker carries).
fn line_hash(line: &str) -> String {
    match line.strip_prefix(RAW_LINE) {
        Some(h) => h.to_string(),
        None => sha256_hex(line.as_bytes()),
    }
}

/// Checks the logs in order: every line's `prev` is the hash of the line before (across
/// files), record numbers follow each other, every checkpoint's MAC verifies under the key of
/// the header before it, and the log ends with a checkpoint. `unwrap(kid, wrapped)` opens a
/// header's key.
///
/// The first line that is wrong is named. When a line does not link to the one before it and
/// the numbers say nothing was deleted or inserted there, one of the two was edited: the line
/// before is named only when this one is proven intact, by the chain from it to the next
/// checkpoint and that checkpoint's MAC; otherwise this one is. A gap in record numbers names
/// the line after deleted ones; a number seen again or too early names an inserted or moved
/// line.
pub fn verify(files: &[(String, String)], unwrap: &mut KeyOpener<'_>) -> Result<usize, Broken> {
    // Every line with its place, across files; lines are parsed as they are reached.
    let all: Vec<(&str, usize, &str)> = files
        .iter()
        .flat_map(|(name, text)| {
            text.lines()
                .enumerate()
                .map(move |(i, l)| (name.as_str(), i + 1, l))
        })
        .collect();
    let parse = |i: usize| {
        all.get(i)
            .and_then(|(_, _, l)| serde_json::from_str::<Value>(l).ok())
    };
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut prev = GENESIS.to_string();
    let mut key: Option<Zeroizing<[u8; 32]>> = None;
    let mut records = 0usize;
    let mut last_kind = String::new();
    let mut expect_seq = 0u64;
    let mut expect_record: Option<u64> = None;
    for (idx, &(name, _, line)) in all.iter().enumerate() {
        let at = |i: usize, why: String| Broken {
            file: all[i].0.to_string(),
            line: all[i].1,
            why,
        };
        let broken = |why: String| at(idx, why);
        let Some(v) = parse(idx) else {
            // A line cut by a crash is accepted only when the restart's header that follows in
            // the same file says so (and names the cut line's hash, in format 2).
            let recovery = all
                .get(idx + 1)
                .filter(|n| n.0 == name)
                .and_then(|_| parse(idx + 1))
                .filter(|n| {
                    n.get("type").and_then(Value::as_str) == Some("header")
                        && n.get("recovered_cut_line").and_then(Value::as_bool) == Some(true)
                });
            let Some(header) = recovery else {
                return Err(broken("not a JSON line (edited)".into()));
            };
            let hash = line_hash(line);
            match str_of(&header, "cut_sha256") {
                // Format 2: the header names the cut line and links to the last whole line.
                Some(named) if named == hash => {}
                Some(_) => {
                    return Err(broken(
                        "a cut line that is not the one its recovery header names (edited)".into(),
                    ))
                }
                // Format 1: the header links to the cut line itself.
                None => prev = hash,
            }
            last_kind = "cut".into();
            continue;
        };
        let kind = str_of(&v, "type").unwrap_or_default();
        let record = v.get("record").and_then(Value::as_u64);
        // A header of format 1 (a restart by an older Chmura): its lines carry no numbers.
        let unnumbered =
            kind == "header" && str_of(&v, "format").as_deref() == Some("chmura-audit/1");
        if unnumbered {
            expect_record = None;
        }
        match (record, expect_record) {
            (Some(n), Some(e)) if n != e => {
                let next = parse(idx + 1).and_then(|n| n.get("record").and_then(Value::as_u64));
                if next == Some(e + 1) {
                    return Err(broken(format!(
                        "its record number was edited (record {e} expected, {n} found)"
                    )));
                }
                if n > e {
                    return Err(broken(format!(
                        "record {e} expected, {n} found: {} line(s) before this one were deleted, or lines were reordered",
                        n - e
                    )));
                }
                return Err(broken(format!(
                    "record {n} where {e} was expected: this line was inserted, or lines were reordered"
                )));
            }
            (None, Some(_)) if !unnumbered => {
                return Err(broken("its record number was removed (edited)".into()))
            }
            _ => {}
        }
        let got_prev = str_of(&v, "prev").unwrap_or_default();
        if got_prev != prev {
            let in_order = record.is_some() && expect_record.is_some() && idx > 0;
            if in_order && sealed_from(&all, idx, key.as_deref()) {
                return Err(at(
                    idx - 1,
                    "edited: the next line, sealed by the checkpoint after it, does not link to it"
                        .into(),
                ));
            }
            return Err(broken(
                "does not follow the line before it: that line or this one was edited, or lines were deleted, inserted or reordered here".into(),
            ));
        }
        match kind.as_str() {
            "header" => {
                let kid = str_of(&v, "kid").unwrap_or_default();
                let wrapped = str_of(&v, "wrapped_key")
                    .as_deref()
                    .and_then(b64::decode)
                    .ok_or_else(|| broken("header without a wrapped key".into()))?;
                key = Some(unwrap(&kid, &wrapped).map_err(|e| broken(format!("header key: {e}")))?);
                expect_seq = 0;
            }
            "checkpoint" => {
                let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let mac = str_of(&v, "mac").unwrap_or_default();
                let k = key
                    .as_ref()
                    .ok_or_else(|| broken("checkpoint before any header".into()))?;
                let want = checkpoint_mac(&k[..], seq, &prev);
                if seq != expect_seq + 1 || !crate::sigv4::ct_eq(want.as_bytes(), mac.as_bytes()) {
                    return Err(broken(
                        "checkpoint does not verify: lines since the previous checkpoint were altered, deleted, inserted or reordered".into(),
                    ));
                }
                expect_seq = seq;
            }
            "request" | "connection" => records += 1,
            _ => return Err(broken("unknown line type (edited)".into())),
        }
        if let Some(n) = record {
            expect_record = Some(n + 1);
        }
        last_kind = kind;
        prev = sha256_hex(line.as_bytes());
    }
    if last_kind != "checkpoint" {
        let (file, line) = all
            .last()
            .map_or((String::new(), 0), |(f, l, _)| (f.to_string(), *l));
        return Err(Broken {
            file,
            line,
            why: "the log does not end with a checkpoint: its last lines are not sealed (cut, or still being written)".into(),
        });
    }
    Ok(records)
}

/// Whether the line at `from` is proven intact: each line after it links to the one before,
/// up to a checkpoint whose MAC (under `key`) verifies over its own `prev`, with no header in
/// between.
fn sealed_from(all: &[(&str, usize, &str)], from: usize, key: Option<&[u8; 32]>) -> bool {
    let Some(key) = key else { return false };
    let mut j = from;
    while let Some(&(_, _, line)) = all.get(j) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("checkpoint") => {
                let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let mac = v.get("mac").and_then(Value::as_str).unwrap_or("");
                let prev = v.get("prev").and_then(Value::as_str).unwrap_or("");
                return crate::sigv4::ct_eq(
                    checkpoint_mac(key, seq, prev).as_bytes(),
                    mac.as_bytes(),
                );
            }
            Some("header") if j > from => return false,
            _ => {}
        }
        let hash = sha256_hex(line.as_bytes());
        let links = all
            .get(j + 1)
            .and_then(|(_, _, l)| serde_json::from_str::<Value>(l).ok())
            .is_some_and(|n| n.get("prev").and_then(Value::as_str) == Some(hash.as_str()));
        if !links {
            return false;
        }
        j += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: usize, key: &[u8; 32]) -> String {
        log_of_format(lines, key, 2)
    }

    fn log_of_format(lines: usize, key: &[u8; 32], format: u8) -> String {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        let mut push = |mut m: Map<String, Value>, prev: &mut String| {
            m.insert("prev".into(), prev.clone().into());
            if format >= 2 {
                m.insert("record".into(), out.len().into());
            }
            let l = Value::Object(m).to_string();
            *prev = sha256_hex(l.as_bytes());
            out.push(l);
        };
        let mut h = Map::new();
        h.insert("type".into(), "header".into());
        h.insert("kid".into(), "k".into());
        h.insert("wrapped_key".into(), b64::encode(b"wrapped").into());
        push(h, &mut prev);
        let mut seq = 0;
        for i in 0..lines {
            let mut r = Map::new();
            r.insert("type".into(), "request".into());
            r.insert("n".into(), i.into());
            push(r, &mut prev);
            if i % 3 == 2 || i + 1 == lines {
                seq += 1;
                let mut c = Map::new();
                c.insert("type".into(), "checkpoint".into());
                c.insert("seq".into(), seq.into());
                c.insert("mac".into(), checkpoint_mac(key, seq, &prev).into());
                push(c, &mut prev);
            }
        }
        out.join("\n") + "\n"
    }

    #[tokio::test]
    async fn a_full_queue_refuses_requests_when_fail_closed() {
        let dir = tempfile_dir("fail-closed");
        let cfg = AuditConfig {
            file: Some(dir.path().join("a.log")),
            stdout: false,
            checkpoint_every: 10,
            queue: 1,
            fail_closed: true,
            max_file_bytes: None,
        };
        let a = Audit::start(&cfg, "k", Zeroizing::new([1u8; 32]), vec![1]).expect("start");
        let held = a.reserve().await.expect("the one slot");
        let e = a.reserve().await.err().expect("full queue refused");
        assert_eq!(e.code, "ServiceUnavailable");
        assert_eq!(a.refused.load(Ordering::Relaxed), 1);
        held.send(Record::new());
        // Once the writer took it, there is room again.
        for _ in 0..100 {
            if a.reserve().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the queue never drained");
    }

    #[tokio::test]
    async fn a_full_queue_makes_requests_wait_under_backpressure() {
        let (_dir, cfg) = log_config("backpressure", 10, 1, false);
        let a = std::sync::Arc::new(
            Audit::start(&cfg, "k", Zeroizing::new([1u8; 32]), vec![1]).expect("start"),
        );
        let held = a.reserve().await.expect("the one slot");
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.reserve().await.map(|s| s.send(Record::new())) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the second request waits for room");
        assert_eq!(a.waited.load(Ordering::Relaxed), 1);
        assert_eq!(a.refused.load(Ordering::Relaxed), 0);
        held.send(Record::new());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room came")
            .expect("join")
            .expect("not refused");
    }

    #[tokio::test]
    async fn a_restart_after_a_cut_line_recovers_and_shutdown_seals_the_log() {
        let (dir, cfg) = log_config("recover", 100, 16, false);
        let key = [3u8; 32];
        let a = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("start");
        write_requests(&a, 3).await;
        a.shutdown();
        let text = std::fs::read_to_string(dir.path().join("a.log")).expect("log");
        assert!(
            text.lines().last().unwrap().contains("\"checkpoint\""),
            "sealed at shutdown"
        );
        let open = |_: &str, _: &[u8]| Ok(Zeroizing::new(key));
        let check = |t: &str| verify(&[("a.log".into(), t.to_string())], &mut open.clone());
        assert_eq!(check(&text), Ok(3));
        // A crash cut the next line in the middle; the restart continues and says so.
        let cut = format!("{text}{{\"type\":\"request\",\"n\":9");
        std::fs::write(dir.path().join("a.log"), &cut).expect("cut");
        let b = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("restart");
        let mut r = Record::new();
        r.insert("type".into(), "request".into());
        b.reserve().await.expect("slot").send(r);
        b.shutdown();
        let text = std::fs::read_to_string(dir.path().join("a.log")).expect("log");
        assert!(text.contains("recovered_cut_line"));
        assert_eq!(check(&text), Ok(4));
        // Two records written after the last checkpoint, then a crash cut the third: a restart
        // seals them. Editing the first and re-linking the second is caught, because the
        // restart's header links to the last whole line as written (not to the cut line).
        {
            let unsealed = {
                let mut out: Vec<String> = text.lines().map(str::to_string).collect();
                let last: Value = serde_json::from_str(out.last().unwrap()).unwrap();
                let first = last["record"].as_u64().unwrap() + 1;
                let mut prev = sha256_hex(out.last().unwrap().as_bytes());
                for (record, n) in (first..).zip([100, 101]) {
                    let mut m = Map::new();
                    m.insert("type".into(), "request".into());
                    m.insert("n".into(), n.into());
                    m.insert("prev".into(), prev.clone().into());
                    m.insert("record".into(), record.into());
                    let l = Value::Object(m).to_string();
                    prev = sha256_hex(l.as_bytes());
                    out.push(l);
                }
                out.join("\n") + "\n{\"type\":\"request\",\"n\":102"
            };
            std::fs::write(dir.path().join("a.log"), &unsealed).expect("write");
            let c = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("restart");
            c.shutdown();
            let sealed = std::fs::read_to_string(dir.path().join("a.log")).expect("log");
            assert_eq!(check(&sealed), Ok(6));
            let lines: Vec<&str> = sealed.lines().collect();
            let a = lines.iter().position(|l| l.contains("\"n\":100")).unwrap();
            let mut m: Map<String, Value> = serde_json::from_str(lines[a]).unwrap();
            m.insert("n".into(), 666.into());
            let edited = Value::Object(m).to_string();
            let mut m: Map<String, Value> = serde_json::from_str(lines[a + 1]).unwrap();
            m.insert("prev".into(), sha256_hex(edited.as_bytes()).into());
            let relinked = Value::Object(m).to_string();
            let mut v = lines.clone();
            v[a] = &edited;
            v[a + 1] = &relinked;
            assert!(
                check(&(v.join("\n") + "\n")).is_err(),
                "an unsealed edit passed"
            );
            std::fs::write(dir.path().join("a.log"), &text).expect("restore");
        }
        // The same cut without the restart's header is an edit.
        let lines: Vec<&str> = text.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.contains("recovered_cut_line"))
            .unwrap();
        let mut v = lines.clone();
        v.remove(i);
        assert!(check(&(v.join("\n") + "\n")).is_err());
    }

    #[tokio::test]
    async fn a_crash_right_after_a_rotation_continues_the_chain_from_the_rotated_file() {
        let (dir, cfg) = log_config("rotation-crash", 100, 16, false);
        let key = [5u8; 32];
        let a = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("start");
        write_requests(&a, 3).await;
        a.shutdown();
        // The rotation renamed the file, then the process died writing the new header.
        std::fs::rename(dir.path().join("a.log"), dir.path().join("a.log.1")).expect("rename");
        std::fs::write(dir.path().join("a.log"), b"{\"format\":\"chmura-au").expect("cut header");
        let b = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("restart");
        let mut r = Record::new();
        r.insert("type".into(), "request".into());
        b.reserve().await.expect("slot").send(r);
        b.shutdown();
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).expect("log");
        let files = vec![
            ("a.log.1".to_string(), read("a.log.1")),
            ("a.log".to_string(), read("a.log")),
        ];
        let mut open = |_: &str, _: &[u8]| Ok(Zeroizing::new(key));
        assert_eq!(verify(&files, &mut open), Ok(4));
        // The cut line is the one the recovery header names.
        let mut forged = files.clone();
        forged[1].1 = forged[1].1.replacen("chmura-au", "chmura-XX", 1);
        let e = verify(&forged, &mut open).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("a.log", 1), "{e:?}");
    }

    #[tokio::test]
    async fn a_line_cut_inside_a_character_is_recovered_and_verifies() {
        let (dir, cfg) = log_config("cut-char", 100, 16, false);
        let key = [6u8; 32];
        let a = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("start");
        a.shutdown();
        // A crash cut a record in the middle of "é" (0xC3 0xA9).
        let mut bytes = std::fs::read(dir.path().join("a.log")).expect("log");
        bytes.extend_from_slice(b"{\"key\":\"caf\xC3");
        std::fs::write(dir.path().join("a.log"), &bytes).expect("cut");
        let b = Audit::start(&cfg, "k", Zeroizing::new(key), vec![9]).expect("restart");
        let mut r = Record::new();
        r.insert("type".into(), "request".into());
        r.insert("key".into(), "caf\u{e9}".into());
        b.reserve().await.expect("slot").send(r);
        b.shutdown();
        let bytes = std::fs::read(dir.path().join("a.log")).expect("log");
        assert!(
            String::from_utf8(bytes.clone()).is_err(),
            "the cut is in the file"
        );
        let mut open = |_: &str, _: &[u8]| Ok(Zeroizing::new(key));
        let files = vec![("a.log".to_string(), log_text(bytes))];
        assert_eq!(verify(&files, &mut open), Ok(1));
    }

    /// A fresh folder for one test's log, and a config writing `a.log` there.
    fn log_config(
        name: &str,
        checkpoint_every: u64,
        queue: usize,
        fail_closed: bool,
    ) -> (tempfile::TempDir, AuditConfig) {
        let dir = tempfile_dir(name);
        let cfg = AuditConfig {
            file: Some(dir.path().join("a.log")),
            stdout: false,
            checkpoint_every,
            queue,
            fail_closed,
            max_file_bytes: None,
        };
        (dir, cfg)
    }

    /// `n` request records, numbered in `n`.
    async fn write_requests(a: &Audit, n: usize) {
        for i in 0..n {
            let mut r = Record::new();
            r.insert("type".into(), "request".into());
            r.insert("n".into(), i.into());
            a.reserve().await.expect("slot").send(r);
        }
    }

    /// A folder of the test's own, removed when the test ends (pass or fail).
    fn tempfile_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("chmura-audit-{name}-"))
            .tempdir()
            .expect("dir")
    }

    fn check(text: &str) -> Result<usize, Broken> {
        let key = [7u8; 32];
        verify(&[("a.log".into(), text.into())], &mut |_, _| {
            Ok(Zeroizing::new(key))
        })
    }

    #[test]
    fn honest_logs_verify_and_every_tampering_is_named() {
        let text = log(7, &[7u8; 32]);
        assert_eq!(check(&text), Ok(7));
        let lines: Vec<&str> = text.lines().collect();
        let join = |v: Vec<&str>| v.join("\n");
        // Edited line 3: named itself (line 4 does not link to it, line 5 links to line 4).
        let mut v = lines.clone();
        let edited = v[2].replace("\"n\":1", "\"n\":9");
        v[2] = &edited;
        let e = check(&join(v)).unwrap_err();
        assert_eq!((e.line, e.why.contains("edited")), (3, true), "{e:?}");
        // The edited line before a checkpoint: the checkpoint's MAC vouches for its own `prev`.
        let cp = lines.iter().position(|l| l.contains("checkpoint")).unwrap();
        let mut v = lines.clone();
        let edited = v[cp - 1].replace("\"n\":", "\"n\":1");
        v[cp - 1] = &edited;
        let e = check(&join(v)).unwrap_err();
        assert_eq!(e.line, cp, "{e:?}");
        // The line before the last checkpoint (no line after it to link).
        let last = lines.len() - 1;
        let mut v = lines.clone();
        let edited = v[last - 1].replace("\"n\":", "\"n\":1");
        v[last - 1] = &edited;
        let e = check(&join(v)).unwrap_err();
        assert_eq!(e.line, last, "{e:?}");
        // Format 1 logs (no record numbers) still verify, and name the line after an edit.
        let old = log_of_format(7, &[7u8; 32], 1);
        assert!(!old.contains("\"record\""));
        assert_eq!(check(&old), Ok(7));
        let mut v: Vec<&str> = old.lines().collect();
        let edited = v[2].replace("\"n\":1", "\"n\":9");
        v[2] = &edited;
        assert_eq!(check(&join(v)).unwrap_err().line, 4);
        // An older Chmura (format 1) continuing a format-2 log: its lines carry no numbers.
        let mixed = {
            let key = [7u8; 32];
            let mut out: Vec<String> = text.lines().map(str::to_string).collect();
            let mut prev = sha256_hex(out.last().unwrap().as_bytes());
            let mut push = |m: Map<String, Value>, prev: &mut String| {
                let mut m = m;
                m.insert("prev".into(), prev.clone().into());
                let l = Value::Object(m).to_string();
                *prev = sha256_hex(l.as_bytes());
                out.push(l);
            };
            let mut h = Map::new();
            h.insert("type".into(), "header".into());
            h.insert("format".into(), "chmura-audit/1".into());
            h.insert("kid".into(), "k".into());
            h.insert("wrapped_key".into(), b64::encode(b"wrapped").into());
            push(h, &mut prev);
            let mut r = Map::new();
            r.insert("type".into(), "request".into());
            push(r, &mut prev);
            let mut c = Map::new();
            c.insert("type".into(), "checkpoint".into());
            c.insert("seq".into(), 1.into());
            c.insert("mac".into(), checkpoint_mac(&key, 1, &prev).into());
            push(c, &mut prev);
            out.join("\n") + "\n"
        };
        assert_eq!(check(&mixed), Ok(8));
        // Line 4's own `prev` edited: line 4 is named (line 5 no longer links to it).
        let mut v = lines.clone();
        let edited = {
            let mut m: Map<String, Value> = serde_json::from_str(lines[3]).unwrap();
            m.insert("prev".into(), "0".repeat(64).into());
            Value::Object(m).to_string()
        };
        v[3] = &edited;
        assert_eq!(check(&join(v)).unwrap_err().line, 4);
        // Deleted, inserted, reordered.
        let mut v = lines.clone();
        v.remove(3);
        let e = check(&join(v)).unwrap_err();
        assert_eq!((e.line, e.why.contains("deleted")), (4, true), "{e:?}");
        let mut v = lines.clone();
        v.insert(3, lines[2]);
        let e = check(&join(v)).unwrap_err();
        assert_eq!((e.line, e.why.contains("inserted")), (4, true), "{e:?}");
        let mut v = lines.clone();
        v.swap(2, 3);
        let e = check(&join(v)).unwrap_err();
        assert_eq!((e.line, e.why.contains("reordered")), (3, true), "{e:?}");
        // Line 4's `prev` changed and line 5 re-linked to it: line 3 is intact and not named
        // (only a checkpoint's MAC proves a line intact, and line 5 no longer reaches one).
        let mut v = lines.clone();
        let (l4, l5) = {
            let mut m4: Map<String, Value> = serde_json::from_str(lines[3]).unwrap();
            m4.insert("prev".into(), "1".repeat(64).into());
            let l4 = Value::Object(m4).to_string();
            let mut m5: Map<String, Value> = serde_json::from_str(lines[4]).unwrap();
            m5.insert("prev".into(), sha256_hex(l4.as_bytes()).into());
            (l4, Value::Object(m5).to_string())
        };
        v[3] = &l4;
        v[4] = &l5;
        let e = check(&join(v)).unwrap_err();
        assert_ne!(e.line, 3, "{e:?}");
        // A record number edited (the next line goes on from the right one).
        let mut v = lines.clone();
        let edited = {
            let mut m: Map<String, Value> = serde_json::from_str(lines[4]).unwrap();
            m.insert("record".into(), 40.into());
            Value::Object(m).to_string()
        };
        v[4] = &edited;
        let e = check(&join(v)).unwrap_err();
        assert_eq!(
            (e.line, e.why.contains("record number was edited")),
            (5, true),
            "{e:?}"
        );
        // A record number removed.
        let mut v = lines.clone();
        let edited = {
            let mut m: Map<String, Value> = serde_json::from_str(lines[4]).unwrap();
            m.remove("record");
            Value::Object(m).to_string()
        };
        v[4] = &edited;
        assert_eq!(check(&join(v)).unwrap_err().line, 5);
        // Cut after the last checkpoint's records: not sealed.
        let mut v = lines.clone();
        v.pop();
        assert!(check(&join(v)).unwrap_err().why.contains("checkpoint"));
        // A re-chained forgery fails at the next checkpoint.
        let forged = {
            let mut prev = GENESIS.to_string();
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                let mut m: Map<String, Value> = serde_json::from_str(l).unwrap();
                if i == 2 {
                    m.insert("n".into(), 99.into());
                }
                m.insert("prev".into(), prev.clone().into());
                let s = Value::Object(m).to_string();
                prev = sha256_hex(s.as_bytes());
                out.push(s);
            }
            out.join("\n")
        };
        let e = check(&forged).unwrap_err();
        assert!(e.why.contains("checkpoint does not verify"), "{e:?}");
    }
}
