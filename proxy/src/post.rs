//! POST Object: uploads from HTML forms (`multipart/form-data` with a signed POST policy).
//!
//! The form is read up to the `file` field (at most [`MAX_PRE_FILE`] bytes), the policy's
//! signature and conditions are checked here (pure), and the request becomes a PutObject of the
//! file's bytes with the form's fields as headers: from there it takes the same way as any
//! upload (the tenant's IAM decision, encryption, the end withheld until every check passed).
//!
//! The file's length must be known before anything is sent upstream (the ciphertext length
//! follows from it, FORMAT.md). A form whose rest after the file's headers fits in
//! [`LOOKAHEAD`] bytes is read whole and the file ends at the next boundary (fields after the
//! file are ignored, as S3 does). A longer form must end with the file, closed by
//! `\r\n--BOUNDARY--\r\n` (what browsers, curl, Python requests and Go write): the length is
//! the Content-Length minus what came before the file and that closing line, and anything else
//! (a boundary inside, another closing) fails the request before its end is released, so
//! nothing is stored.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use memchr::memmem;

use crate::auth::{AuthKind, AuthSettings, Authenticated, PayloadCheck, TenantIndex};
use crate::error::S3Error;
use crate::sigv4;
use crate::upstream::{BoxError, UpstreamBody};

/// Most bytes of form read before the file field (S3 allows 20 KB of fields there).
pub const MAX_PRE_FILE: usize = 64 * 1024;
/// A form whose rest (file and anything after it) is at most this long is read whole.
pub const LOOKAHEAD: usize = 1024 * 1024;

/// The form's fields before the file, and the file part's name and type.
pub struct Fields {
    /// Field names as sent (matched without case, each at most once), values as sent.
    pub fields: Vec<(String, String)>,
    pub file_name: String,
    pub file_type: Option<String>,
}

/// A form read up to the start of its file: authenticate it before reading on.
pub struct Pending {
    pub head: Fields,
    reader: FileReader,
}

struct FileReader {
    body: UpstreamBody,
    buf: BytesMut,
    data_start: u64,
    declared: Option<u64>,
    delim: Vec<u8>,
    finder: memmem::Finder<'static>,
    idle: Duration,
}

impl Pending {
    /// Reads on: the file as a body of known length (the rest read whole when small).
    pub async fn file(self) -> Result<Form, S3Error> {
        let (file_len, body) = self.reader.read().await?;
        Ok(Form {
            head: self.head,
            file_len,
            body,
        })
    }
}

impl std::ops::Deref for Pending {
    type Target = Fields;
    fn deref(&self) -> &Fields {
        &self.head
    }
}

/// A parsed form: its fields, and the file as a body of known length.
pub struct Form {
    pub head: Fields,
    pub file_len: u64,
    pub body: FileBody,
}

impl std::ops::Deref for Form {
    type Target = Fields;
    fn deref(&self) -> &Fields {
        &self.head
    }
}

impl Fields {
    /// A field's value; names are matched without case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The object key: the `key` field with `${filename}` replaced by the file's name.
    pub fn key(&self) -> Result<String, S3Error> {
        let k = self.get("key").ok_or_else(|| {
            S3Error::invalid_argument(
                "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.",
            )
        })?;
        // The file's name without any path; a file part without a name leaves the variable.
        let name = self.file_name.rsplit(['/', '\\']).next().unwrap_or("");
        let k = if name.is_empty() {
            k.to_string()
        } else {
            k.replace("${filename}", name)
        };
        if k.is_empty() {
            return Err(S3Error::invalid_argument(
                "User key must have a length greater than 0.",
            ));
        }
        Ok(k)
    }
}

fn malformed(why: &str) -> S3Error {
    S3Error::new(
        "MalformedPOSTRequest",
        "The body of your POST request is not well-formed multipart/form-data.",
    )
    .with_detail(why.to_string())
}

fn one_file() -> S3Error {
    S3Error::invalid_argument("POST requires exactly one file upload per request.")
}

/// The boundary of a `multipart/form-data` Content-Type.
pub fn boundary(headers: &HeaderMap) -> Result<String, S3Error> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut params = ct.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(S3Error::new(
            "PreconditionFailed",
            "Bucket POST must be of the enclosure-type multipart/form-data",
        )
        .with_detail("POST on a bucket without multipart/form-data"));
    }
    for p in params {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("boundary") {
                let v = v.trim().trim_matches('"');
                if !v.is_empty() && v.len() <= 70 {
                    return Ok(v.to_string());
                }
            }
        }
    }
    Err(malformed("no boundary"))
}

/// Reads more of the body into `buf`; false at its end.
async fn fill(
    body: &mut UpstreamBody,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<bool, S3Error> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(S3Error::new(
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period.",
                ))
            }
            Ok(None) => return Ok(false),
            Ok(Some(Err(e))) => {
                return Err(S3Error::incomplete_body().with_detail(format!("client body: {e}")))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(d) = frame.into_data() {
            if !d.is_empty() {
                buf.extend_from_slice(&d);
                return Ok(true);
            }
        }
    }
}

/// `form-data; name="a"; filename="x;y.txt"` as (name, value) pairs, the first being the
/// disposition type; quoted values may hold `;` and backslash escapes.
fn disposition_params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        c => value.push(c),
                    }
                }
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        out.push((key.trim().to_string(), value));
        if chars.next().is_none() {
            break;
        }
    }
    out
}

/// A part's headers: the field name, the file name (file parts), the part's Content-Type.
fn part_headers(block: &[u8]) -> Result<(String, Option<String>, Option<String>), S3Error> {
    let text = std::str::from_utf8(block).map_err(|_| malformed("part headers not UTF-8"))?;
    let mut name = None;
    let mut filename = None;
    let mut ctype = None;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let Some((h, v)) = line.split_once(':') else {
            return Err(malformed("part header without a colon"));
        };
        let h = h.trim();
        if h.eq_ignore_ascii_case("content-disposition") {
            let mut params = disposition_params(v).into_iter();
            if !params
                .next()
                .is_some_and(|(k, _)| k.eq_ignore_ascii_case("form-data"))
            {
                return Err(malformed("part is not form-data"));
            }
            for (k, val) in params {
                match k.to_ascii_lowercase().as_str() {
                    "name" => name = Some(val),
                    "filename" => filename = Some(val),
                    _ => {}
                }
            }
        } else if h.eq_ignore_ascii_case("content-type") {
            ctype = Some(v.trim().to_string());
        }
    }
    let name = name.ok_or_else(|| malformed("part without a name"))?;
    Ok((name, filename, ctype))
}

/// Reads the form up to its file and returns the fields and the file as a body.
pub async fn read_form(
    headers: &HeaderMap,
    mut body: UpstreamBody,
    idle: Duration,
) -> Result<Pending, S3Error> {
    let boundary = boundary(headers)?;
    let declared: Option<u64> = match headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| S3Error::invalid_request("Invalid Content-Length."))?,
        ),
        None => None,
    };
    let delim = format!("\r\n--{boundary}").into_bytes();
    let finder = memmem::Finder::new(&delim).into_owned();
    // The body is read as if it began with CRLF, so the first boundary needs no special case.
    let mut buf = BytesMut::from(&b"\r\n"[..]);
    let mut consumed: u64 = 0; // bytes of `buf` already parsed, counting the 2 added

    // The first boundary (anything before it is a preamble).
    let i = read_to(
        &finder,
        &mut body,
        &mut buf,
        consumed,
        idle,
        "no boundary in the body",
    )
    .await?;
    consumed += (i + delim.len()) as u64;
    buf.advance(i + delim.len());
    let mut fields: Vec<(String, String)> = Vec::new();
    loop {
        // After a boundary: "--" ends the form; otherwise the line ends, then the part's
        // headers up to an empty line.
        let headers_end = loop {
            if buf.len() >= 2 && &buf[..2] == b"--" {
                return Err(one_file());
            }
            if let Some(eol) = memmem::find(&buf, b"\r\n") {
                if buf[..eol].iter().any(|b| !matches!(b, b' ' | b'\t')) {
                    return Err(malformed("text after a boundary"));
                }
                if let Some(end) = memmem::find(&buf[eol..], b"\r\n\r\n") {
                    break (eol, eol + end);
                }
            }
            if consumed + buf.len() as u64 > MAX_PRE_FILE as u64 {
                return Err(too_big());
            }
            if !fill(&mut body, &mut buf, idle).await? {
                return Err(malformed("the body ended inside a part's headers"));
            }
        };
        let (name, filename, ctype) = part_headers(&buf[headers_end.0 + 2..headers_end.1 + 2])?;
        let skip = headers_end.1 + 4;
        consumed += skip as u64;
        buf.advance(skip);
        if name.eq_ignore_ascii_case("file") {
            return Ok(Pending {
                head: Fields {
                    fields,
                    file_name: filename.unwrap_or_default(),
                    file_type: ctype,
                },
                reader: FileReader {
                    body,
                    buf,
                    data_start: consumed - 2,
                    declared,
                    delim,
                    finder,
                    idle,
                },
            });
        }
        // A field given twice could be checked by the policy in one form and stored in the
        // other: refused.
        if !name.to_ascii_lowercase().starts_with("x-ignore-")
            && fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            return Err(S3Error::invalid_argument(format!(
                "POST form fields must not repeat: {name}"
            )));
        }
        let end = read_to(
            &finder,
            &mut body,
            &mut buf,
            consumed,
            idle,
            "the body ended inside a field",
        )
        .await?;
        let value = String::from_utf8(buf[..end].to_vec()).map_err(|_| {
            S3Error::invalid_argument(format!("The value of field {name} is not UTF-8."))
        })?;
        fields.push((name, value));
        consumed += (end + delim.len()) as u64;
        buf.advance(end + delim.len());
    }
}

fn too_big() -> S3Error {
    S3Error::new(
        "MaxPostPreDataLengthExceeded",
        "Your POST request fields preceding the upload file were too large.",
    )
}

/// Reads on until `finder`'s needle is in `buf` (within the fields' limit, `consumed` bytes
/// already parsed before `buf`) and returns its offset; each byte is searched about once.
async fn read_to(
    finder: &memmem::Finder<'_>,
    body: &mut UpstreamBody,
    buf: &mut BytesMut,
    consumed: u64,
    idle: Duration,
    ended: &str,
) -> Result<usize, S3Error> {
    let overlap = finder.needle().len().saturating_sub(1);
    let mut searched: usize = 0;
    loop {
        let from = searched.saturating_sub(overlap).min(buf.len());
        if let Some(i) = finder.find(&buf[from..]) {
            return Ok(from + i);
        }
        searched = buf.len();
        if consumed + buf.len() as u64 > MAX_PRE_FILE as u64 {
            return Err(too_big());
        }
        if !fill(body, buf, idle).await? {
            return Err(malformed(ended));
        }
    }
}

impl FileReader {
    /// The file's length and bytes: the rest read whole when small, otherwise streamed.
    async fn read(self) -> Result<(u64, FileBody), S3Error> {
        let FileReader {
            mut body,
            mut buf,
            data_start,
            declared,
            delim,
            finder,
            idle,
        } = self;
        let remaining = match declared {
            Some(cl) => Some(
                cl.checked_sub(data_start)
                    .ok_or_else(|| malformed("the body is longer than its Content-Length"))?,
            ),
            None => None,
        };
        let whole = remaining.is_none_or(|r| r <= LOOKAHEAD as u64);
        if whole {
            // Small: read to the end, the file ends at the next boundary.
            loop {
                if buf.len() > LOOKAHEAD + delim.len() + 8 {
                    return Err(S3Error::new(
                        "MissingContentLength",
                        "You must provide the Content-Length HTTP header.",
                    ));
                }
                if !fill(&mut body, &mut buf, idle).await? {
                    break;
                }
            }
            let end = finder
                .find(&buf)
                .ok_or_else(|| malformed("the file part is not closed by a boundary"))?;
            // A boundary is followed by "--" (the end) or by optional white space and CRLF
            // (another part); anything else means the boundary occurs inside the file.
            let after = &buf[end + delim.len()..];
            let pad = after
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t'))
                .count();
            let closed = after.starts_with(b"--") || after[pad..].starts_with(b"\r\n");
            if !closed {
                return Err(malformed("the file's boundary is followed by other text"));
            }
            let file = buf.split_to(end).freeze();
            return Ok((file.len() as u64, FileBody::Whole(Some(file))));
        }
        let remaining = remaining.unwrap_or_default();
        let mut tail = delim.clone();
        tail.extend_from_slice(b"--\r\n");
        let file_len = remaining
            .checked_sub(tail.len() as u64)
            .ok_or_else(|| malformed("too short"))?;
        Ok((
            file_len,
            FileBody::Stream(Box::new(Streamed {
                head: (!buf.is_empty()).then(|| buf.freeze()),
                inner: body,
                file_len,
                pos: 0,
                carry: Vec::new(),
                delim_len: delim.len(),
                finder,
                tail_want: tail,
                tail_got: Vec::new(),
                done: false,
            })),
        ))
    }
}

/// The file's bytes: read whole, or streamed from the client with its end checked.
pub enum FileBody {
    Whole(Option<Bytes>),
    Stream(Box<Streamed>),
}

pub struct Streamed {
    head: Option<Bytes>,
    inner: UpstreamBody,
    file_len: u64,
    /// Bytes of file and closing seen so far.
    pos: u64,
    /// The last `delim_len - 1` bytes seen, to find a boundary split across frames.
    carry: Vec<u8>,
    delim_len: usize,
    finder: memmem::Finder<'static>,
    tail_want: Vec<u8>,
    tail_got: Vec<u8>,
    done: bool,
}

impl Streamed {
    /// Checks a frame and returns the part of it that is file.
    fn take(&mut self, c: Bytes) -> Result<Bytes, S3Error> {
        // A boundary before the file's computed end means the form goes on after the file.
        let window_len = (self.delim_len - 1).min(c.len());
        let mut window = std::mem::take(&mut self.carry);
        let carried = window.len() as u64;
        window.extend_from_slice(&c[..window_len]);
        let found = self
            .finder
            .find(&window)
            .map(|i| self.pos - carried + i as u64)
            .or_else(|| self.finder.find(&c).map(|i| self.pos + i as u64));
        if found.is_some_and(|at| at < self.file_len) {
            return Err(malformed("a form longer than 1 MiB must end with its file")
                .with_detail("a boundary inside the file: fields after the file in a large form"));
        }
        let keep_from = window.len().saturating_sub(self.delim_len - 1);
        self.carry = if c.len() >= self.delim_len - 1 {
            c[c.len() - (self.delim_len - 1)..].to_vec()
        } else {
            window[keep_from..].to_vec()
        };
        let file_left = self.file_len.saturating_sub(self.pos);
        let n = (c.len() as u64).min(file_left) as usize;
        self.pos += c.len() as u64;
        let rest = &c[n..];
        if self.tail_got.len() + rest.len() > self.tail_want.len() {
            return Err(malformed("more after the closing boundary than expected"));
        }
        self.tail_got.extend_from_slice(rest);
        Ok(c.slice(..n))
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let s = match self.get_mut() {
            FileBody::Whole(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FileBody::Stream(s) => s,
        };
        loop {
            if s.done {
                return Poll::Ready(None);
            }
            let chunk = match s.head.take() {
                Some(h) => h,
                None => match Pin::new(&mut s.inner).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(e))) => {
                        s.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(Some(Ok(f))) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Poll::Ready(None) => {
                        s.done = true;
                        if s.tail_got != s.tail_want {
                            let e = malformed("a form longer than 1 MiB must end with its file and the closing boundary");
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                        return Poll::Ready(None);
                    }
                },
            };
            match s.take(chunk) {
                Ok(d) if d.is_empty() => continue,
                Ok(d) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Err(e) => {
                    s.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FileBody::Whole(b) => b.is_none(),
            FileBody::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FileBody::Whole(Some(b)) => SizeHint::with_exact(b.len() as u64),
            FileBody::Whole(None) => SizeHint::with_exact(0),
            FileBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Fields that carry the signature or the file and need no policy condition.
fn exempt(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "policy" | "x-amz-signature" | "signature" | "awsaccesskeyid" | "file"
    ) || n.starts_with("x-ignore-")
        // Checksums only add a check on the file (S3 accepts them without a condition).
        || n.starts_with("x-amz-checksum-")
}

/// Checks the form's signature (SigV4 or SigV2 over the base64 policy) and its policy: not
/// expired, every condition holds, every field is covered by one. Pure.
pub fn authenticate(
    form: &Fields,
    tenants: &TenantIndex,
    s: &AuthSettings<'_>,
    bucket: &str,
) -> Result<Authenticated, S3Error> {
    let Some(policy) = form.get("policy") else {
        return Err(S3Error::access_denied()
            .with_detail("POST without a policy (anonymous uploads are not accepted)"));
    };
    let (tenant, kind) = if let Some(sig) = form.get("x-amz-signature") {
        let alg = form.get("x-amz-algorithm").unwrap_or("");
        if alg != "AWS4-HMAC-SHA256" {
            return Err(S3Error::invalid_argument(
                "POST form fields x-amz-algorithm must be AWS4-HMAC-SHA256",
            ));
        }
        let cred = form.get("x-amz-credential").ok_or_else(|| {
            S3Error::invalid_argument("Bucket POST must contain a field named 'x-amz-credential'.")
        })?;
        if form.get("x-amz-date").is_none() {
            return Err(S3Error::invalid_argument(
                "Bucket POST must contain a field named 'x-amz-date'.",
            ));
        }
        let cred = crate::auth::parse_credential(cred, s, false)?;
        let tenant = tenants.get(cred.access_key_id)?;
        let key = tenants.signing_key(tenant, cred.date, cred.region);
        if !sigv4::ct_eq(
            key.sign(policy).as_bytes(),
            sig.trim().to_ascii_lowercase().as_bytes(),
        ) {
            return Err(S3Error::signature_mismatch().with_detail("POST policy v4 signature"));
        }
        (tenant, AuthKind::PostV4)
    } else if let (Some(akid), Some(sig)) = (form.get("awsaccesskeyid"), form.get("signature")) {
        let tenant = tenants.get(akid)?;
        let want = sigv4::sigv2_sign(tenant.secret_access_key.expose(), policy);
        if !sigv4::ct_eq(want.as_bytes(), sig.trim().as_bytes()) {
            return Err(S3Error::signature_mismatch().with_detail("POST policy v2 signature"));
        }
        (tenant, AuthKind::PostV2)
    } else if form.get("awsaccesskeyid").is_some() {
        return Err(S3Error::invalid_argument(
            "Bucket POST must contain a field named 'Signature'.  If it is specified, please check the order of the fields.",
        ));
    } else {
        return Err(S3Error::invalid_argument(
            "Bucket POST must contain a field named 'X-Amz-Signature'.  If it is specified, please check the order of the fields.",
        ));
    };
    // The size range is checked once the file's length is known (`check_size`).
    check_policy(policy, form, bucket, s.now, None)?;
    Ok(Authenticated {
        tenant: tenant.clone(),
        kind,
        payload: PayloadCheck::Unsigned,
    })
}

fn policy_error(why: impl Into<String>) -> S3Error {
    S3Error::new(
        "InvalidPolicyDocument",
        format!("Invalid Policy: {}", why.into()),
    )
}

fn denied_by_policy(why: impl Into<String>) -> S3Error {
    S3Error::new(
        "AccessDenied",
        format!("Invalid according to Policy: {}", why.into()),
    )
}

/// The POST policy's expiration and conditions against the form (S3's "Creating a POST policy").
/// The policy's `content-length-range` against the file (after `authenticate`).
pub fn check_size(form: &Form, bucket: &str, now: i64) -> Result<(), S3Error> {
    match form.get("policy") {
        Some(p) => check_policy(p, form, bucket, now, Some(form.file_len)),
        None => Err(S3Error::access_denied()),
    }
}

/// `file_len`: `None` before the file is read (`content-length-range` is then not checked).
pub fn check_policy(
    policy_b64: &str,
    form: &Fields,
    bucket: &str,
    now: i64,
    file_len: Option<u64>,
) -> Result<(), S3Error> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(policy_b64.trim().as_bytes())
        .map_err(|_| policy_error("Policy is not base64."))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| policy_error("Invalid JSON."))?;
    let exp = doc
        .get("expiration")
        .and_then(|v| v.as_str())
        .ok_or_else(|| policy_error("Policy missing expiration."))?;
    let exp = chmura_config::policy::parse_date(exp)
        .filter(|_| exp.contains('T'))
        .ok_or_else(|| policy_error("Invalid 'expiration' value."))?;
    if now > exp {
        return Err(denied_by_policy("Policy expired."));
    }
    let conditions = doc
        .get("conditions")
        .and_then(|v| v.as_array())
        .ok_or_else(|| policy_error("Policy missing conditions."))?;
    let key = form.key()?;
    let value_of = |name: &str| -> Option<String> {
        match name {
            "bucket" => Some(bucket.to_string()),
            "key" => Some(key.clone()),
            n => form.get(n).map(str::to_string),
        }
    };
    let mut covered: HashSet<String> = HashSet::new();
    let text = |v: &serde_json::Value| v.to_string();
    for c in conditions {
        match c {
            serde_json::Value::Object(map) => {
                if map.is_empty() {
                    return Err(policy_error("Empty condition {}."));
                }
                for (k, v) in map {
                    let want = v
                        .as_str()
                        .ok_or_else(|| policy_error(format!("Invalid condition {}", text(c))))?;
                    let name = k.to_ascii_lowercase();
                    if value_of(&name).as_deref() != Some(want) {
                        return Err(denied_by_policy(format!(
                            "Policy Condition failed: [\"eq\", \"${k}\", \"{want}\"]"
                        )));
                    }
                    covered.insert(name);
                }
            }
            serde_json::Value::Array(items) => {
                let op = items
                    .first()
                    .and_then(|v| v.as_str())
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| policy_error(format!("Invalid condition {}", text(c))))?;
                if op == "content-length-range" {
                    let num = |v: Option<&serde_json::Value>| -> Option<u64> {
                        match v? {
                            serde_json::Value::Number(n) => n.as_u64(),
                            serde_json::Value::String(s) => s.trim().parse().ok(),
                            _ => None,
                        }
                    };
                    let (Some(min), Some(max), 3) =
                        (num(items.get(1)), num(items.get(2)), items.len())
                    else {
                        return Err(policy_error(format!("Invalid condition {}", text(c))));
                    };
                    let Some(len) = file_len else {
                        continue;
                    };
                    if len < min {
                        return Err(S3Error::new(
                            "EntityTooSmall",
                            "Your proposed upload is smaller than the minimum allowed size",
                        ));
                    }
                    if len > max {
                        return Err(S3Error::new(
                            "EntityTooLarge",
                            "Your proposed upload exceeds the maximum allowed size",
                        ));
                    }
                    continue;
                }
                let (Some(field), Some(want), 3) = (
                    items.get(1).and_then(|v| v.as_str()),
                    items.get(2).and_then(|v| v.as_str()),
                    items.len(),
                ) else {
                    return Err(policy_error(format!("Invalid condition {}", text(c))));
                };
                let name = field
                    .strip_prefix('$')
                    .ok_or_else(|| policy_error(format!("Invalid condition {}", text(c))))?
                    .to_ascii_lowercase();
                let have = value_of(&name);
                let ok = match (op.as_str(), have.as_deref()) {
                    ("eq", Some(h)) => h == want,
                    ("starts-with", Some(h)) if name == "content-type" => {
                        h.split(',').all(|p| p.trim().starts_with(want))
                    }
                    ("starts-with", Some(h)) => h.starts_with(want),
                    ("eq" | "starts-with", None) => false,
                    _ => {
                        return Err(policy_error(format!(
                            "Invalid condition operator {}",
                            text(&items[0])
                        )))
                    }
                };
                if !ok {
                    return Err(denied_by_policy(format!(
                        "Policy Condition failed: [\"{op}\", \"{field}\", \"{want}\"]"
                    )));
                }
                covered.insert(name);
            }
            _ => return Err(policy_error(format!("Invalid condition {}", text(c)))),
        }
    }
    for (name, _) in &form.fields {
        if !exempt(name) && !covered.contains(&name.to_ascii_lowercase()) {
            return Err(denied_by_policy(format!("Extra input fields: {name}")));
        }
    }
    Ok(())
}

/// How S3 answers a successful POST (`success_action_redirect` / `success_action_status`).
pub struct Reply {
    pub bucket: String,
    pub key: String,
    pub location: String,
    pub redirect: Option<String>,
    pub status: Option<String>,
}

/// The headers of the PutObject the form stands for, and how to answer it.
pub fn put_headers(
    form: &Form,
    original: &HeaderMap,
    bucket: &str,
    key: &str,
    scheme: &str,
    vhost: bool,
) -> Result<(HeaderMap, Reply), S3Error> {
    let mut h = HeaderMap::new();
    for n in ["host", "user-agent"] {
        if let Some(v) = original.get(n) {
            h.insert(HeaderName::from_static(n), v.clone());
        }
    }
    let value = |name: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| {
            S3Error::invalid_argument(format!(
                "The value of field {name} is not a valid header value."
            ))
        })
    };
    let mut redirect = None;
    let mut status = None;
    for (name, v) in &form.fields {
        let n = name.to_ascii_lowercase();
        let header = match n.as_str() {
            "content-type"
            | "cache-control"
            | "content-disposition"
            | "content-encoding"
            | "content-language"
            | "expires"
            | "content-md5" => n.clone(),
            "acl" => "x-amz-acl".to_string(),
            "tagging" => {
                h.insert("x-amz-tagging", value(name, &tagging_query(v)?)?);
                continue;
            }
            "success_action_redirect" | "redirect" => {
                if redirect.is_none() || n == "success_action_redirect" {
                    redirect = Some(v.clone());
                }
                continue;
            }
            "success_action_status" => {
                status = Some(v.trim().to_string());
                continue;
            }
            n if n.starts_with("x-amz-meta-")
                || n.starts_with("x-amz-server-side-encryption")
                || n.starts_with("x-amz-checksum-")
                || n.starts_with("x-amz-object-lock-")
                || n.starts_with("x-amz-grant-")
                || n == "x-amz-storage-class"
                || n == "x-amz-website-redirect-location" =>
            {
                n.to_string()
            }
            _ => continue,
        };
        let hn = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| S3Error::invalid_argument(format!("Invalid field name {name}.")))?;
        h.append(hn, value(name, v)?);
    }
    if !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("binary/octet-stream"),
        );
    }
    h.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(form.file_len),
    );
    let host = original
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let key_path = sigv4::uri_encode_string(key.as_bytes(), true);
    let location = if vhost {
        format!("{scheme}://{host}/{key_path}")
    } else {
        format!("{scheme}://{host}/{bucket}/{key_path}")
    };
    Ok((
        h,
        Reply {
            bucket: bucket.to_string(),
            key: key.to_string(),
            location,
            redirect,
            status,
        },
    ))
}

/// `<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag>…` as `k=v&…` (x-amz-tagging).
fn tagging_query(xml: &str) -> Result<String, S3Error> {
    let tags = crate::multipart::parse_tags(xml);
    if tags.len() != crate::multipart::tag_values(xml, "Tag").len() {
        return Err(S3Error::new(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        ));
    }
    Ok(crate::multipart::tagging_header(&tags))
}

impl Reply {
    /// Turns the PutObject's answer into POST's.
    pub fn respond(
        self,
        resp: http::Response<crate::handler::ResponseBody>,
    ) -> http::Response<crate::handler::ResponseBody> {
        use http_body_util::{Empty, Full};
        let (mut parts, _) = resp.into_parts();
        let etag = parts
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let empty = || Empty::new().map_err(|e| match e {}).boxed_unsync();
        if let Ok(loc) = HeaderValue::from_str(&self.location) {
            parts.headers.insert(http::header::LOCATION, loc);
        }
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.remove(http::header::CONTENT_TYPE);
        if let Some(r) = self
            .redirect
            .as_deref()
            .filter(|r| r.parse::<http::Uri>().is_ok_and(|u| u.scheme().is_some()))
        {
            let enc = |s: &str| sigv4::uri_encode_string(s.as_bytes(), false);
            let sep = if r.contains('?') { '&' } else { '?' };
            let to = format!(
                "{r}{sep}bucket={}&key={}&etag={}",
                enc(&self.bucket),
                enc(&self.key),
                enc(&etag)
            );
            if let Ok(v) = HeaderValue::from_str(&to) {
                parts.status = StatusCode::SEE_OTHER;
                parts.headers.insert(http::header::LOCATION, v);
                return http::Response::from_parts(parts, empty());
            }
        }
        match self.status.as_deref() {
            Some("200") => {
                parts.status = StatusCode::OK;
                http::Response::from_parts(parts, empty())
            }
            Some("201") => {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></PostResponse>",
                    crate::error::xml_escape(&self.location),
                    crate::error::xml_escape(&self.bucket),
                    crate::error::xml_escape(&self.key),
                    crate::error::xml_escape(&etag)
                );
                parts.status = StatusCode::CREATED;
                parts.headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml"),
                );
                http::Response::from_parts(
                    parts,
                    Full::new(Bytes::from(xml))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                )
            }
            _ => {
                parts.status = StatusCode::NO_CONTENT;
                http::Response::from_parts(parts, empty())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn body_of(chunks: Vec<Vec<u8>>) -> UpstreamBody {
        let s = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))),
        );
        StreamBody::new(s).boxed_unsync()
    }

    fn form_bytes(fields: &[(&str, &str)], file: &[u8], after: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in fields {
            b.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        b.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n",
        );
        b.extend_from_slice(file);
        b.extend_from_slice(format!("\r\n--XyZ{after}").as_bytes());
        b
    }

    fn headers(len: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        h.insert("content-length", HeaderValue::from(len));
        h
    }

    async fn parse(raw: Vec<u8>, split: usize) -> Result<(Form, Result<Vec<u8>, String>), S3Error> {
        let len = raw.len();
        let chunks: Vec<Vec<u8>> = raw.chunks(split).map(<[u8]>::to_vec).collect();
        let pending = read_form(&headers(len), body_of(chunks), Duration::from_secs(5)).await?;
        let mut form = pending.file().await?;
        let mut got = Vec::new();
        let mut res = Ok(());
        while let Some(f) = form.body.frame().await {
            match f {
                Ok(f) => got.extend_from_slice(f.data_ref().unwrap()),
                Err(e) => {
                    res = Err(e.to_string());
                    break;
                }
            }
        }
        Ok((form, res.map(|_| got)))
    }

    #[tokio::test]
    async fn small_forms_are_read_whole_and_fields_after_the_file_ignored() {
        for split in [1, 3, 7, 64, 100_000] {
            let raw = form_bytes(
                &[("key", "k/${filename}"), ("Content-Type", "text/x")],
                b"hello\r\n--Xy world",
                "\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nv\r\n--XyZ--\r\n",
            );
            let (form, got) = parse(raw, split).await.unwrap();
            assert_eq!(got.unwrap(), b"hello\r\n--Xy world");
            assert_eq!(form.file_len, 17);
            assert_eq!(form.get("content-type"), Some("text/x"));
            assert_eq!(form.get("after"), None);
            assert_eq!(form.key().unwrap(), "k/a.txt");
            assert_eq!(form.file_type.as_deref(), Some("text/plain"));
        }
    }

    #[tokio::test]
    async fn large_forms_stream_and_their_end_is_checked() {
        let file: Vec<u8> = (0..LOOKAHEAD + 300_000).map(|i| (i % 251) as u8).collect();
        for split in [4096, 65_536, 1_000_003] {
            let raw = form_bytes(&[("key", "k")], &file, "--\r\n");
            let (form, got) = parse(raw, split).await.unwrap();
            assert_eq!(form.file_len, file.len() as u64);
            assert!(got.unwrap() == file, "split {split}");
        }
        // A closing line without its CRLF, a field after the file, a boundary inside it: the
        // body fails (before its end), it is never cut short silently.
        let bad = [
            form_bytes(&[("key", "k")], &file, "--"),
            form_bytes(
                &[("key", "k")],
                &file,
                "\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--XyZ--\r\n",
            ),
            {
                let mut f = file.clone();
                f.splice(500_000..500_000, b"\r\n--XyZ".iter().copied());
                form_bytes(&[("key", "k")], &f, "--\r\n")
            },
        ];
        for (i, raw) in bad.into_iter().enumerate() {
            for split in [4096, 65_536] {
                let (_, got) = parse(raw.clone(), split).await.unwrap();
                assert!(got.is_err(), "case {i} split {split} was accepted");
            }
        }
    }

    #[tokio::test]
    async fn malformed_forms_are_refused() {
        // No file.
        let raw = b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--XyZ--\r\n"
            .to_vec();
        assert_eq!(parse(raw, 5).await.err().unwrap().code, "InvalidArgument");
        // Too much before the file.
        let big = "x".repeat(MAX_PRE_FILE + 1);
        let raw = form_bytes(&[("key", "k"), ("x-ignore-big", &big)], b"a", "--\r\n");
        assert_eq!(
            parse(raw, 4096).await.err().unwrap().code,
            "MaxPostPreDataLengthExceeded"
        );
        // A field given twice (names without case): the policy would check one, the store
        // get both.
        let raw = form_bytes(
            &[("acl", "private"), ("ACL", "public-read")],
            b"a",
            "--\r\n",
        );
        assert_eq!(parse(raw, 7).await.err().unwrap().code, "InvalidArgument");
        let raw = form_bytes(&[("x-ignore-a", "1"), ("x-ignore-a", "2")], b"a", "--\r\n");
        assert!(parse(raw, 7).await.is_ok(), "x-ignore-* fields may repeat");
        // The boundary inside a small file (followed by other text): refused, not cut short.
        let raw = form_bytes(&[("key", "k")], b"abc\r\n--XyZjunk", "--\r\n");
        assert_eq!(
            parse(raw, 7).await.err().unwrap().code,
            "MalformedPOSTRequest"
        );
        // Not multipart.
        let mut h = headers(3);
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let e = read_form(&h, body_of(vec![b"abc".to_vec()]), Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, "PreconditionFailed");
    }

    fn form_with(fields: &[(&str, &str)], len: u64) -> Form {
        Form {
            head: Fields {
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                file_name: "f.txt".into(),
                file_type: None,
            },
            file_len: len,
            body: FileBody::Whole(None),
        }
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn policy_conditions_follow_s3() {
        let now = 1_800_000_000; // 2027-01-15
        let p = b64(
            r#"{"expiration":"2030-01-01T00:00:00.000Z","conditions":[{"bucket":"b"},["starts-with","$key","up/"],{"acl":"private"},["starts-with","$Content-Type","image/"],["content-length-range",1,10],["eq","$x-amz-meta-a","1"]]}"#,
        );
        let ok = [
            ("key", "up/${filename}"),
            ("ACL", "private"),
            ("content-type", "image/png"),
            ("x-amz-meta-a", "1"),
            ("policy", p.as_str()),
            ("x-ignore-me", "z"),
            ("AWSAccessKeyId", "A"),
            ("signature", "s"),
        ];
        check_policy(&p, &form_with(&ok, 5), "b", now, Some(5)).unwrap();
        let code = |fields: &[(&str, &str)], len: u64, bucket: &str, now: i64| {
            check_policy(&p, &form_with(fields, len), bucket, now, Some(len))
                .err()
                .map(|e| (e.code, e.message))
        };
        assert_eq!(code(&ok, 5, "other", now).unwrap().0, "AccessDenied");
        assert_eq!(code(&ok, 0, "b", now).unwrap().0, "EntityTooSmall");
        assert_eq!(code(&ok, 11, "b", now).unwrap().0, "EntityTooLarge");
        let expired = code(&ok, 5, "b", 1_900_000_000).unwrap();
        assert!(expired.1.contains("Policy expired"), "{expired:?}");
        let mut extra = ok.to_vec();
        extra.push(("x-amz-meta-b", "2"));
        let e = code(&extra, 5, "b", now).unwrap();
        assert!(e.1.contains("Extra input fields: x-amz-meta-b"), "{e:?}");
        let mut wrong_key = ok.to_vec();
        wrong_key[0] = ("key", "down/x");
        assert!(code(&wrong_key, 5, "b", now)
            .unwrap()
            .1
            .contains("Condition failed"));
        let mut missing = ok.to_vec();
        missing.retain(|(k, _)| *k != "x-amz-meta-a");
        assert_eq!(code(&missing, 5, "b", now).unwrap().0, "AccessDenied");
        // Not base64, not JSON, no expiration, names in capitals, an empty condition, a date
        // that is not ISO 8601, a range without its maximum or below zero.
        for bad in [
            "%%%".to_string(),
            b64("{"),
            b64(r#"{"conditions":[]}"#),
            b64(r#"{"EXPIRATION":"2030-01-01T00:00:00Z","conditions":[]}"#),
            b64(r#"{"expiration":"2030-01-01T00:00:00Z","CONDITIONS":[]}"#),
            b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[{}]}"#),
            b64(r#"{"expiration":"2030-01-01 00:00:00+00:00","conditions":[]}"#),
            b64(
                r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["content-length-range",0]]}"#,
            ),
            b64(
                r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["content-length-range",-1,0]]}"#,
            ),
        ] {
            let bad = bad.as_str();
            let e = check_policy(bad, &form_with(&ok, 5), "b", now, Some(5)).unwrap_err();
            assert_eq!(e.code, "InvalidPolicyDocument");
        }
    }

    #[test]
    fn disposition_parameters_keep_quoted_text() {
        let p = disposition_params(r#"form-data; name="file"; filename="a;b \"c\".txt""#);
        assert_eq!(p[0].0, "form-data");
        assert_eq!(p[1], ("name".to_string(), "file".to_string()));
        assert_eq!(p[2], ("filename".to_string(), r#"a;b "c".txt"#.to_string()));
        let p = disposition_params("form-data; name=plain ; x");
        assert_eq!(p[1], ("name".to_string(), "plain".to_string()));
        assert_eq!(p[2], ("x".to_string(), String::new()));
    }

    #[test]
    fn tagging_becomes_a_query() {
        let q = tagging_query("<Tagging><TagSet><Tag><Key>a b</Key><Value>1&amp;2</Value></Tag><Tag><Key>c</Key><Value></Value></Tag></TagSet></Tagging>").unwrap();
        assert_eq!(q, "a%20b=1%262&c=");
    }
}
