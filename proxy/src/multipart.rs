//! Multipart uploads of encrypted objects (FORMAT.md §13), with no state in Chmura.
//!
//! - The UploadId Chmura hands out is a token carrying the store's upload id and the upload's
//!   envelope (key id, wrapped data key, salt). Any Chmura instance can seal a part of the
//!   upload from the token alone; the data key unwraps only for the same tenant, bucket and
//!   key (the encryption context), so a token is useless elsewhere.
//! - CompleteMultipartUpload checks the part layout against the store's ListParts: every part
//!   but the last holds the same number of whole chunks, numbered 1..N. That layout keeps the
//!   object on the single-part ciphertext grid, so lengths, listings and range reads need no
//!   part table.
//! - XML in and out is small control data (parts lists, listings), parsed by scanning tags.

use chmura_crypto::envelope::b64;
use chmura_crypto::layout::{self, CHUNK, SEALED_CHUNK};

use crate::error::S3Error;

const TOKEN_PREFIX: &str = "c1.";
/// Trailing-byte flag of an upload created with Object Lock headers.
const LOCKED: u8 = 0x80;
/// Flag bit: the upload is under a customer key (SSE-C); its check value follows (32 bytes).
const SSEC: u8 = 0x40;
/// Flag bit: the store's id of the upload's sidecar follows (u16 length, bytes).
const SIDECAR: u8 = 0x20;
/// Token flag: the upload was created with a checksum algorithm, so its envelope says the
/// object's checksum is kept in a tag (FORMAT.md §8a) and Complete writes that tag.
const CHECKSUM_TAG: u8 = 0x10;
/// Token flag: the upload was created with a composite checksum algorithm, named by bits 0–1
/// (`composite_code`); without it, bits 0–1 name a full-object CRC.
const COMPOSITE: u8 = 0x04;

/// What a Chmura UploadId carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadToken {
    pub upstream_id: String,
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    pub salt: [u8; 32],
    /// A full-object CRC asked for at CreateMultipartUpload (`x-amz-checksum-type:
    /// FULL_OBJECT`, or CRC64NVME, which S3 only has as full-object): Complete answers with
    /// the CRC of the whole plaintext. Encoded as one optional trailing byte.
    pub full_object: Option<crate::checksum::ChecksumAlgorithm>,
    /// The upload was created with Object Lock headers: its parts reach the store with a
    /// checksum (S3 requires one), a CRC32 of their ciphertext. Bit 7 of the trailing byte.
    pub locked: bool,
    /// SSE-C (FORMAT.md §14): the check value of the customer key the upload's data key is
    /// masked with; every part must come with that key. Bit 6 of the trailing byte, then the
    /// 32 bytes.
    pub customer_check: Option<[u8; 32]>,
    /// The store's id of the upload's sidecar (an empty upload whose key records this token
    /// without the ids, so ListMultipartUploads can show the token: `sidecar_key`). Bit 5 of
    /// the trailing byte, then its length (u16) and bytes.
    pub sidecar_id: Option<String>,
    /// The upload's envelope has `chmura-ckt` (FORMAT.md §8a): Complete keeps the checksum
    /// it states in the object tag `chmura-ck`. Bit 4 of the trailing byte.
    pub checksum_tag: bool,
    /// The composite checksum algorithm the upload was created with (`x-amz-checksum-algorithm`
    /// without `FULL_OBJECT`): every UploadPart must carry that checksum, UploadPartCopy
    /// answers with the copied part's, and a Complete may state no other checksum type. Bit 2 of the trailing byte, the
    /// algorithm in bits 0–1.
    pub composite: Option<crate::checksum::ChecksumAlgorithm>,
}

/// The token byte for a full-object CRC algorithm.
fn full_object_code(a: crate::checksum::ChecksumAlgorithm) -> Option<u8> {
    use crate::checksum::ChecksumAlgorithm as A;
    match a {
        A::Crc32 => Some(1),
        A::Crc32c => Some(2),
        A::Crc64Nvme => Some(3),
        A::Sha1 | A::Sha256 => None,
    }
}

/// The token bits 0–1 for a composite checksum algorithm (beside [`COMPOSITE`]).
fn composite_code(a: crate::checksum::ChecksumAlgorithm) -> Option<u8> {
    use crate::checksum::ChecksumAlgorithm as A;
    match a {
        A::Crc32 => Some(0),
        A::Crc32c => Some(1),
        A::Sha1 => Some(2),
        A::Sha256 => Some(3),
        A::Crc64Nvme => None,
    }
}

/// URL- and XML-safe base64 (RFC 4648 §5, no padding).
fn b64url(data: &[u8]) -> String {
    b64::encode(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.contains(['+', '/', '=']) {
        return None;
    }
    let mut t = s.replace('-', "+").replace('_', "/");
    while !t.len().is_multiple_of(4) {
        t.push('=');
    }
    b64::decode(&t)
}

impl UploadToken {
    pub fn encode(&self) -> String {
        let mut b = Vec::new();
        let id = self.upstream_id.as_bytes();
        b.extend_from_slice(&(id.len() as u16).to_be_bytes());
        b.extend_from_slice(id);
        b.push(self.key_id.len() as u8);
        b.extend_from_slice(self.key_id.as_bytes());
        b.extend_from_slice(&(self.wrapped_key.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.wrapped_key);
        b.extend_from_slice(&self.salt);
        let code = match self.composite.and_then(composite_code) {
            Some(c) => COMPOSITE | c,
            None => self.full_object.and_then(full_object_code).unwrap_or(0),
        } | if self.locked { LOCKED } else { 0 }
            | if self.customer_check.is_some() {
                SSEC
            } else {
                0
            }
            | if self.sidecar_id.is_some() {
                SIDECAR
            } else {
                0
            }
            | if self.checksum_tag { CHECKSUM_TAG } else { 0 };
        if code != 0 {
            b.push(code);
        }
        if let Some(c) = &self.customer_check {
            b.extend_from_slice(c);
        }
        if let Some(id) = &self.sidecar_id {
            b.extend_from_slice(&(id.len() as u16).to_be_bytes());
            b.extend_from_slice(id.as_bytes());
        }
        format!("{TOKEN_PREFIX}{}", b64url(&b))
    }

    /// `None` when `s` is not a Chmura token (for example a raw upload id from
    /// ListMultipartUploads).
    pub fn decode(s: &str) -> Option<UploadToken> {
        Self::decode_fields(s).filter(|t| !t.upstream_id.is_empty())
    }

    fn decode_fields(s: &str) -> Option<UploadToken> {
        let raw = b64url_decode(s.strip_prefix(TOKEN_PREFIX)?)?;
        let mut r = raw.as_slice();
        let mut take = |n: usize| -> Option<&[u8]> {
            if r.len() < n {
                return None;
            }
            let (a, b) = r.split_at(n);
            r = b;
            Some(a)
        };
        let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let upstream_id = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = take(1)?[0] as usize;
        let key_id = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let wrapped_key = take(n)?.to_vec();
        let salt: [u8; 32] = take(32)?.try_into().ok()?;
        use crate::checksum::ChecksumAlgorithm as A;
        let flags = match take(1) {
            None => 0,
            // Written only when something is set.
            Some([0]) => return None,
            Some(c) => c[0],
        };
        let customer_check = match flags & SSEC {
            0 => None,
            _ => Some(<[u8; 32]>::try_from(take(32)?).ok()?),
        };
        let sidecar_id = match flags & SIDECAR {
            0 => None,
            _ => {
                let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
                let id = String::from_utf8(take(n)?.to_vec()).ok()?;
                if id.is_empty() {
                    return None;
                }
                Some(id)
            }
        };
        if !r.is_empty() {
            return None;
        }
        let code = flags & !(LOCKED | SSEC | SIDECAR | CHECKSUM_TAG | COMPOSITE);
        let (full_object, composite) = match (code, flags & COMPOSITE) {
            (0, 0) => (None, None),
            (_, 0) => (
                Some(
                    [A::Crc32, A::Crc32c, A::Crc64Nvme]
                        .into_iter()
                        .find(|a| full_object_code(*a) == Some(code))?,
                ),
                None,
            ),
            _ => (
                None,
                Some(
                    [A::Crc32, A::Crc32c, A::Sha1, A::Sha256]
                        .into_iter()
                        .find(|a| composite_code(*a) == Some(code))?,
                ),
            ),
        };
        let locked = flags & LOCKED != 0;
        Some(UploadToken {
            upstream_id,
            key_id,
            wrapped_key,
            salt,
            full_object,
            locked,
            customer_check,
            sidecar_id,
            checksum_tag: flags & CHECKSUM_TAG != 0,
            composite,
        })
    }

    /// The key of this upload's sidecar in the store: the upload's key, [`SIDECAR_SEP`], a
    /// hash of the store's upload id (which upload of the key it belongs to) and the token
    /// without the two ids. An empty multipart upload under that key is never completed: the
    /// store's ListMultipartUploads then holds what a client needs to continue the upload, and
    /// Chmura keeps nothing (`sidecar_of` reads it back).
    pub fn sidecar_key(&self, key: &str) -> String {
        let rest = UploadToken {
            upstream_id: String::new(),
            sidecar_id: None,
            ..self.clone()
        }
        .encode();
        format!("{}{rest}", sidecar_prefix(key, &self.upstream_id))
    }
}

/// Between an upload's key and the rest of its sidecar's key. No character of the rest is
/// `/`, so a sidecar never makes a common prefix of its own under the `/` delimiter.
pub const SIDECAR_SEP: &str = ".chmura-upload.";

/// Every sidecar key of the upload `upstream_id` of `key` starts with this.
pub fn sidecar_prefix(key: &str, upstream_id: &str) -> String {
    format!("{key}{SIDECAR_SEP}{}.", upload_id_hash(upstream_id))
}

/// 96 bits of SHA-256 of the store's upload id, URL-safe base64 (16 characters).
fn upload_id_hash(upstream_id: &str) -> String {
    let mut h = crate::checksum::Hasher::new(crate::checksum::ChecksumAlgorithm::Sha256);
    h.update(upstream_id.as_bytes());
    b64url(&h.finish()[..12])
}

/// A sidecar key read back: the upload's key, the hash of its store id, and the token without
/// its ids. `None` for any other key.
pub fn parse_sidecar_key(k: &str) -> Option<(&str, &str, UploadToken)> {
    let at = k.rfind(SIDECAR_SEP)?;
    let (key, rest) = (&k[..at], &k[at + SIDECAR_SEP.len()..]);
    let (hash, token) = rest.split_once('.')?;
    if hash.len() != 16 {
        return None;
    }
    let t = UploadToken::decode_fields(token)?;
    (t.upstream_id.is_empty() && t.sidecar_id.is_none()).then_some((key, hash, t))
}

/// The token of the upload `upstream_id` of `key`, when `sidecar` (a key and its store id, as
/// a listing shows them) is that upload's sidecar.
pub fn sidecar_of(key: &str, upstream_id: &str, sidecar: (&str, &str)) -> Option<UploadToken> {
    let (k, hash, t) = parse_sidecar_key(sidecar.0)?;
    (k == key && hash == upload_id_hash(upstream_id)).then(|| UploadToken {
        upstream_id: upstream_id.to_string(),
        sidecar_id: Some(sidecar.1.to_string()),
        ..t
    })
}

/// GetObjectAttributes' `ObjectParts` of a multipart object on the grid (FORMAT.md §13):
/// `parts` parts of `part_len` plaintext bytes (the last one holds the rest of `plain_len`),
/// at most `max_parts` of them after part `marker`, as S3 lists them (no part checksums:
/// Chmura keeps none per part).
pub fn object_parts_xml(
    plain_len: u64,
    part_len: u64,
    parts: u32,
    max_parts: u32,
    marker: u32,
) -> String {
    let size = |n: u32| {
        if n < parts {
            part_len
        } else {
            plain_len.saturating_sub(u64::from(parts - 1) * part_len)
        }
    };
    let listed: Vec<u32> = (marker.saturating_add(1)..=parts)
        .take(max_parts as usize)
        .collect();
    let truncated = listed.last().is_some_and(|&l| l < parts);
    let mut xml = format!(
        "<ObjectParts><PartsCount>{parts}</PartsCount><PartNumberMarker>{marker}</PartNumberMarker>"
    );
    if let Some(l) = listed.last() {
        xml.push_str(&format!("<NextPartNumberMarker>{l}</NextPartNumberMarker>"));
    }
    xml.push_str(&format!(
        "<MaxParts>{max_parts}</MaxParts><IsTruncated>{truncated}</IsTruncated>"
    ));
    for n in listed {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><Size>{}</Size></Part>",
            size(n)
        ));
    }
    xml.push_str("</ObjectParts>");
    xml
}

/// Every `<Upload>` of a ListMultipartUploads answer: its key (XML-unescaped, and URL-decoded
/// when the listing is `url_encoded`) and upload id.
pub fn listed_uploads(xml: &str, url_encoded: bool) -> Vec<(String, String)> {
    tag_values(xml, "Upload")
        .into_iter()
        .filter_map(|u| upload_fields(u, url_encoded))
        .collect()
}

/// A key as a listing writes it (XML-escaped, and URL-encoded when `url_encoded`), read back.
pub fn listed_key(text: &str, url_encoded: bool) -> Option<String> {
    let key = unescape(text);
    if !url_encoded {
        return Some(key);
    }
    // S3 writes a space as `+` in URL-encoded listings.
    percent_encoding::percent_decode_str(&key.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

fn upload_fields(upload: &str, url_encoded: bool) -> Option<(String, String)> {
    let key = listed_key(tag_values(upload, "Key").first()?, url_encoded)?;
    let id = unescape(tag_values(upload, "UploadId").first()?.trim());
    Some((key, id))
}

/// A ListMultipartUploads answer as the client sees it: sidecars left out, each upload shown
/// by `token(key, store id)` when that gives one (its store id otherwise), the
/// `upload-id-marker` the client sent (`asked_marker`) echoed as sent, and the next marker
/// naming the page's last upload as the page shows it.
pub fn rewrite_upload_listing(
    xml: &str,
    url_encoded: bool,
    asked_marker: Option<&str>,
    token: impl Fn(&str, &str) -> Option<String>,
) -> String {
    let xml = rewrite_uploads(xml, url_encoded, &token);
    let xml = match asked_marker {
        Some(m) => replace_tag(&xml, "UploadIdMarker", |_| escape(m)),
        None => xml,
    };
    match tag_values(&xml, "NextKeyMarker")
        .first()
        .and_then(|k| listed_key(k, url_encoded))
    {
        Some(k) => replace_tag(&xml, "NextUploadIdMarker", |id| {
            match token(&k, &unescape(id.trim())) {
                Some(t) => escape(&t),
                None => id.to_string(),
            }
        }),
        None => xml,
    }
}

fn rewrite_uploads(
    xml: &str,
    url_encoded: bool,
    token: &impl Fn(&str, &str) -> Option<String>,
) -> String {
    let (open, close) = ("<Upload>", "</Upload>");
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find(close) else {
            rest = &rest[i..];
            break;
        };
        let element = &rest[i..i + j + close.len()];
        rest = &rest[i + j + close.len()..];
        match upload_fields(
            &element[open.len()..element.len() - close.len()],
            url_encoded,
        ) {
            Some((key, _)) if parse_sidecar_key(&key).is_some() => {}
            Some((key, id)) => match token(&key, &id) {
                Some(t) => out.push_str(&replace_tag(element, "UploadId", |_| escape(&t))),
                None => out.push_str(element),
            },
            None => out.push_str(element),
        }
    }
    out.push_str(rest);
    out
}

impl UploadToken {
    /// Whether the parts fit in a token field (key ids up to 255 bytes, ids and wrapped keys up
    /// to 64 KiB).
    pub fn fits(upstream_id: &str, key_id: &str, wrapped: &[u8]) -> bool {
        upstream_id.len() <= u16::MAX as usize
            && key_id.len() <= u8::MAX as usize
            && wrapped.len() <= u16::MAX as usize
    }
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
pub fn tag_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

/// Replaces the text of every `<tag>…</tag>` with `f(old)`.
pub fn replace_tag(xml: &str, tag: &str, f: impl Fn(&str) -> String) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        out.push_str(&rest[..i + open.len()]);
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push_str(&f(&rest[..j]));
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

/// Drops every `<tag>…</tag>` element (for checksum elements that describe plaintext).
pub fn remove_elements(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find(&close) else {
            rest = &rest[i..];
            break;
        };
        rest = &rest[i + j + close.len()..];
    }
    out.push_str(rest);
    out
}

/// One `<Part>` of a client's CompleteMultipartUpload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletePart {
    pub number: u32,
    pub etag: String,
    /// Plaintext checksums the client states for the part: (algorithm name, base64 value).
    pub checksums: Vec<(String, String)>,
}

const CHECKSUM_NAMES: &[&str] = &["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

/// The composite checksum S3 computes at Complete (S3-PROTOCOL-NOTES §3): the algorithm over
/// the concatenated raw part checksums, base64, `-N`. `None` unless every part states one of
/// the same algorithm. Returns (element name, value).
pub fn composite_checksum(parts: &[CompletePart], used: &[u32]) -> Option<(String, String)> {
    use crate::checksum::{b64, decode_b64, ChecksumAlgorithm, Hasher};
    let first = parts.iter().find(|p| used.contains(&p.number))?;
    let (name, _) = first.checksums.first()?;
    let alg = ChecksumAlgorithm::from_name(name)?;
    let mut h = Hasher::new(alg);
    let mut n = 0;
    for p in parts.iter().filter(|p| used.contains(&p.number)) {
        let (_, v) = p.checksums.iter().find(|(a, _)| a == name)?;
        h.update(&decode_b64(v, alg.digest_len())?);
        n += 1;
    }
    Some((
        format!("Checksum{name}"),
        format!("{}-{n}", b64(&h.finish())),
    ))
}

/// The full-object CRC S3 computes at Complete for an upload created with `FULL_OBJECT`: the
/// part CRCs the client lists, combined in order with each part's plaintext length (`sizes`,
/// the parts used). `None` unless every used part states a CRC of `alg`. Returns the raw
/// big-endian value.
pub fn full_object_crc(
    alg: crate::checksum::ChecksumAlgorithm,
    parts: &[CompletePart],
    sizes: &[(u32, u64)],
) -> Option<Vec<u8>> {
    use crate::checksum::{decode_b64, ChecksumAlgorithm as A};
    use crc_fast::CrcAlgorithm as C;
    let (calg, width) = match alg {
        A::Crc32 => (C::Crc32IsoHdlc, 4),
        A::Crc32c => (C::Crc32Iscsi, 4),
        A::Crc64Nvme => (C::Crc64Nvme, 8),
        A::Sha1 | A::Sha256 => return None,
    };
    let mut crc: Option<u64> = None;
    for (number, len) in sizes {
        let p = parts.iter().find(|p| p.number == *number)?;
        let (_, v) = p.checksums.iter().find(|(a, _)| a == alg.name())?;
        let raw = decode_b64(v, width)?;
        let value = raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        crc = Some(match crc {
            None => value,
            Some(c) => crc_fast::checksum_combine(calg, c, value, *len),
        });
    }
    let c = crc?;
    Some(c.to_be_bytes()[8 - width..].to_vec())
}

fn malformed() -> S3Error {
    S3Error::new(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

/// Parses a CompleteMultipartUpload body into its parts (ETags as sent, XML entities decoded).
pub fn parse_complete(xml: &str) -> Result<Vec<CompletePart>, S3Error> {
    if !xml.contains("<CompleteMultipartUpload") {
        return Err(malformed());
    }
    let mut parts = Vec::new();
    for p in tag_values(xml, "Part") {
        let number = tag_values(p, "PartNumber")
            .first()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(malformed)?;
        let etag = tag_values(p, "ETag")
            .first()
            .map(|v| unescape(v.trim()))
            .ok_or_else(malformed)?;
        let checksums = CHECKSUM_NAMES
            .iter()
            .filter_map(|n| {
                tag_values(p, &format!("Checksum{n}"))
                    .first()
                    .map(|v| (n.to_string(), v.trim().to_string()))
            })
            .collect();
        parts.push(CompletePart {
            number,
            etag,
            checksums,
        });
    }
    if parts.is_empty() {
        return Err(malformed());
    }
    Ok(parts)
}

/// XML text → string: the five predefined entities and numeric references (`&#10;`,
/// `&#x1F600;`); a `&` that starts no reference is kept.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let entity = rest[1..].find(';').map(|j| &rest[1..1 + j]);
        let ch = entity.and_then(|e| match e {
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            _ => {
                let n = e.strip_prefix('#')?;
                let code = match n.strip_prefix(['x', 'X']) {
                    Some(h) => u32::from_str_radix(h, 16).ok()?,
                    None => n.parse::<u32>().ok()?,
                };
                char::from_u32(code)
            }
        });
        match (ch, entity) {
            (Some(c), Some(e)) => {
                out.push(c);
                rest = &rest[e.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The CompleteMultipartUpload body sent to the store: part numbers and store ETags only.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for (n, etag) in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag)
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

/// S3's largest part number.
pub const MAX_PARTS: u32 = 10_000;

/// S3's smallest part (all but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// How a completed upload lies in the store (FORMAT.md §13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// On the single-part grid (parts 1..N, every part but the last the same whole number of
    /// chunks, the last no larger): complete with these part numbers as is.
    Grid(Vec<u32>),
    /// Any other numbering or sizes: `(part number, plaintext length)` in order. The store
    /// completes these parts, then Chmura rewrites the object onto the grid.
    Irregular(Vec<(u32, u64)>),
}

impl Layout {
    /// Plaintext length of the completed object.
    pub fn plaintext_len(&self, listed: &[(u32, u64)]) -> u64 {
        match self {
            Layout::Grid(numbers) => numbers
                .iter()
                .filter_map(|n| listed.iter().find(|(p, _)| p == n))
                .filter_map(|(_, size)| layout::plaintext_len(*size).ok())
                .sum(),
            Layout::Irregular(parts) => parts.iter().map(|(_, l)| l).sum(),
        }
    }
}

/// Checks the parts a client completes with: ascending numbers, each uploaded, every part
/// but the last at least 5 MiB. `listed` are the store's (part number, stored size) pairs.
/// A layout on the grid completes as is (an empty last part, a 28-byte sealed empty chunk,
/// is left out: it holds no data and would break the grid); any other is `Irregular`.
pub fn check_layout(client: &[CompletePart], listed: &[(u32, u64)]) -> Result<Layout, S3Error> {
    let size_of = |n: u32| listed.iter().find(|(p, _)| *p == n).map(|(_, s)| *s);
    let mut sizes = Vec::with_capacity(client.len());
    for (i, p) in client.iter().enumerate() {
        if i > 0 && p.number <= client[i - 1].number {
            return Err(S3Error::new(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            ));
        }
        let Some(size) = size_of(p.number) else {
            return Err(S3Error::new(
                "InvalidPart",
                "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
            ));
        };
        let plain = layout::plaintext_len(size).map_err(|_| {
            S3Error::new(
                "InvalidPart",
                "A part's stored size is not a valid encrypted size.",
            )
            .with_detail(format!("integrity: part {} stored size {size}", p.number))
        })?;
        sizes.push(plain);
    }
    let n = client.len();
    for (i, s) in sizes.iter().enumerate() {
        if i + 1 < n && *s < MIN_PART {
            return Err(S3Error::new(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
    }
    let all: Vec<(u32, u64)> = client.iter().map(|p| p.number).zip(sizes).collect();
    let mut grid = all.clone();
    if grid.len() >= 2 && grid[grid.len() - 1].1 == 0 {
        grid.pop();
    }
    let n = grid.len();
    let consecutive = grid
        .iter()
        .enumerate()
        .all(|(i, (num, _))| *num as usize == i + 1);
    let regular = n < 2 || {
        let p = grid[0].1;
        p.is_multiple_of(CHUNK) && grid[..n - 1].iter().all(|(_, s)| *s == p) && grid[n - 1].1 <= p
    };
    Ok(if consecutive && regular {
        Layout::Grid(grid.iter().map(|(n, _)| *n).collect())
    } else {
        Layout::Irregular(all)
    })
}

/// Chunks per part of a multipart object of `total` chunks whose last chunk's nonce says it is
/// chunk `index` of part `part` (§13); `None` when no regular layout fits.
pub fn part_chunks(total: u64, part: u32, index: u64) -> Option<u64> {
    if part == 0 || index >= total {
        return None;
    }
    if part == 1 {
        return (index + 1 == total).then_some(total);
    }
    let before = total - index - 1;
    let p = u64::from(part) - 1;
    if !before.is_multiple_of(p) {
        return None;
    }
    let k = before / p;
    (k > index).then_some(k)
}

/// `(bucket, key, versionId)` of an `x-amz-copy-source` header (`[/]bucket/key[?versionId=v]`,
/// key percent-encoded).
pub fn parse_copy_source(v: &str) -> Option<(String, String, Option<String>)> {
    let v = v.trim();
    let (path, query) = match v.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (v, None),
    };
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = path.split_once('/')?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let (bucket, key) = (decode(bucket)?, decode(key)?);
    if bucket.is_empty() || key.is_empty() {
        return None;
    }
    let version = match query {
        Some(q) => Some(decode(q.strip_prefix("versionId=")?)?),
        None => None,
    };
    Some((bucket, key, version))
}

/// Headers a copy with `x-amz-metadata-directive: COPY` (or a self-copy) takes from its
/// source: user metadata other than Chmura's, and the content headers.
pub fn copied_headers(source: &http::HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    const CONTENT: &[&str] = &[
        "content-type",
        "content-encoding",
        "content-disposition",
        "content-language",
        "cache-control",
        "expires",
        "x-amz-website-redirect-location",
    ];
    source
        .iter()
        .filter(|(n, _)| {
            let name = n.as_str();
            (name.starts_with("x-amz-meta-") && !name.starts_with("x-amz-meta-chmura-"))
                || CONTENT.contains(&name)
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// An `x-amz-tagging` header value (URL query form) for `tags`.
/// The (key, value) pairs of a `Tagging` document (a `Tag` without a `Key` is left out).
pub fn parse_tags(xml: &str) -> Vec<(String, String)> {
    tag_values(xml, "Tag")
        .iter()
        .filter_map(|t| {
            let k = unescape(tag_values(t, "Key").first()?);
            let v = tag_values(t, "Value")
                .first()
                .map(|v| unescape(v))
                .unwrap_or_default();
            Some((k, v))
        })
        .collect()
}

pub fn tagging_header(tags: &[(String, String)]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, SET).to_string();
    tags.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// An `x-amz-copy-source` value naming `bucket`/`key` (and a version).
pub fn copy_source_value(bucket: &str, key: &str, version: Option<&str>) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    let enc = percent_encoding::utf8_percent_encode(key, SET);
    match version {
        Some(v) => format!(
            "/{bucket}/{enc}?versionId={}",
            percent_encoding::utf8_percent_encode(v, SET)
        ),
        None => format!("/{bucket}/{enc}"),
    }
}

/// Byte offset of chunk `g` in the stored object.
pub fn chunk_offset(g: u64) -> u64 {
    g * SEALED_CHUNK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_junk() {
        let t = UploadToken {
            full_object: None,
            upstream_id: "2~abc.DEF_-x".into(),
            key_id: "arn:aws:kms:us-east-1:1:key/x".into(),
            wrapped_key: (0..=255).collect(),
            salt: [7; 32],
            locked: false,
            customer_check: None,
            sidecar_id: None,
            checksum_tag: false,
            composite: None,
        };
        let s = t.encode();
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        assert_eq!(UploadToken::decode(&s), Some(t.clone()));
        assert_eq!(UploadToken::decode("2~abc"), None);
        assert_eq!(UploadToken::decode("c1.AAAA"), None);
        assert_eq!(UploadToken::decode(&format!("{s}A")), None);
        let full = UploadToken {
            full_object: Some(crate::checksum::ChecksumAlgorithm::Crc64Nvme),
            ..t.clone()
        };
        assert_eq!(UploadToken::decode(&full.encode()), Some(full.clone()));
        // Each composite algorithm, alone and with the other flags.
        use crate::checksum::ChecksumAlgorithm as A;
        for alg in [A::Crc32, A::Crc32c, A::Sha1, A::Sha256] {
            let c = UploadToken {
                composite: Some(alg),
                ..t.clone()
            };
            assert_eq!(UploadToken::decode(&c.encode()), Some(c.clone()));
            let all = UploadToken {
                locked: true,
                checksum_tag: true,
                customer_check: Some([1; 32]),
                sidecar_id: Some("s".into()),
                ..c
            };
            assert_eq!(UploadToken::decode(&all.encode()), Some(all));
        }
        // A composite flag whose bits 0–1 would name nothing: bit 3 set is not a token.
        let mut raw = b64url_decode(s.strip_prefix(TOKEN_PREFIX).expect("prefix")).expect("b64");
        raw.push(COMPOSITE | 0x08);
        assert_eq!(
            UploadToken::decode(&format!("{TOKEN_PREFIX}{}", b64url(&raw))),
            None
        );
        // The Object Lock flag, alone and with a full-object CRC; a token from before the flag
        // (one trailing code byte) reads as unlocked.
        for base in [t.clone(), full] {
            let locked = UploadToken {
                locked: true,
                ..base.clone()
            };
            assert_eq!(UploadToken::decode(&locked.encode()), Some(locked.clone()));
            assert_eq!(UploadToken::decode(&base.encode()), Some(base.clone()));
            let tagged = UploadToken {
                checksum_tag: true,
                ..base.clone()
            };
            assert_eq!(UploadToken::decode(&tagged.encode()), Some(tagged));
            let ssec = UploadToken {
                customer_check: Some([9; 32]),
                ..locked
            };
            let enc = ssec.encode();
            assert_eq!(UploadToken::decode(&enc), Some(ssec));
            // The flag without its 32 bytes, or bytes beyond them, is not a token.
            let raw = b64url_decode(enc.strip_prefix(TOKEN_PREFIX).expect("prefix")).expect("b64");
            for cut in [&raw[..raw.len() - 32], &raw[..raw.len() - 1]] {
                assert_eq!(
                    UploadToken::decode(&format!("{TOKEN_PREFIX}{}", b64url(cut))),
                    None
                );
            }
            let mut longer = raw.clone();
            longer.push(1);
            assert_eq!(
                UploadToken::decode(&format!("{TOKEN_PREFIX}{}", b64url(&longer))),
                None
            );
        }
        let mut raw = b64url_decode(s.strip_prefix(TOKEN_PREFIX).expect("prefix")).expect("b64");
        raw.push(0x7f);
        assert_eq!(
            UploadToken::decode(&format!("{TOKEN_PREFIX}{}", b64url(&raw))),
            None
        );
    }

    #[test]
    fn xml_text_unescapes_named_and_numeric_references() {
        assert_eq!(unescape("a&amp;lt;b"), "a&lt;b");
        assert_eq!(unescape("&quot;e&#34;&apos;&lt;&gt;"), "\"e\"'<>");
        assert_eq!(
            unescape("line&#10;feed&#xA;&#x1F600;"),
            "line\nfeed\n\u{1F600}"
        );
        // Not a reference: kept as written.
        assert_eq!(unescape("a & b &bogus; &#xZZ; &"), "a & b &bogus; &#xZZ; &");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn object_parts_list_plaintext_part_sizes_by_page() {
        let mib = 1 << 20;
        let parts = |xml: &str| -> Vec<(String, String)> {
            tag_values(xml, "Part")
                .into_iter()
                .map(|p| {
                    (
                        tag_values(p, "PartNumber")[0].to_string(),
                        tag_values(p, "Size")[0].to_string(),
                    )
                })
                .collect()
        };
        let five = (5 * mib).to_string();
        let all = object_parts_xml(28 * mib, 5 * mib, 6, 1000, 0);
        assert!(all.starts_with("<ObjectParts><PartsCount>6</PartsCount>"));
        assert!(all.contains("<IsTruncated>false</IsTruncated>"));
        let got = parts(&all);
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], ("1".to_string(), five.clone()));
        assert_eq!(got[5], ("6".to_string(), (3 * mib).to_string()));
        let page = object_parts_xml(30 * mib, 5 * mib, 6, 1, 3);
        assert_eq!(parts(&page), vec![("4".to_string(), five.clone())]);
        assert!(page.contains("<PartNumberMarker>3</PartNumberMarker><NextPartNumberMarker>4</NextPartNumberMarker><MaxParts>1</MaxParts><IsTruncated>true</IsTruncated>"));
        let rest = object_parts_xml(30 * mib, 5 * mib, 6, 10, 4);
        assert_eq!(parts(&rest).len(), 2);
        assert!(rest.contains("<IsTruncated>false</IsTruncated>"));
        let past = object_parts_xml(30 * mib, 5 * mib, 6, 10, 6);
        assert!(parts(&past).is_empty() && !past.contains("NextPartNumberMarker"));
    }

    #[test]
    fn sidecars_carry_tokens_through_upload_listings() {
        let t = UploadToken {
            upstream_id: "store-id-1".into(),
            key_id: "k1".into(),
            wrapped_key: vec![1; 60],
            salt: [3; 32],
            full_object: Some(crate::checksum::ChecksumAlgorithm::Crc32),
            locked: true,
            customer_check: Some([5; 32]),
            sidecar_id: None,
            checksum_tag: true,
            composite: None,
        };
        let key = "dir/a file+&<x>.chmura-upload.y";
        let sk = t.sidecar_key(key);
        assert!(sk.starts_with(&sidecar_prefix(key, "store-id-1")));
        assert!(!sk[key.len()..].contains('/'), "{sk}");
        let (k, _, _) = parse_sidecar_key(&sk).expect("sidecar key");
        assert_eq!(k, key);
        let back = sidecar_of(key, "store-id-1", (&sk, "sidecar-id")).expect("token");
        let want = UploadToken {
            sidecar_id: Some("sidecar-id".into()),
            ..t.clone()
        };
        assert_eq!(back, want);
        assert_eq!(UploadToken::decode(&want.encode()), Some(want.clone()));
        // Another upload of the same key, or the same upload id under another key: no match.
        assert!(sidecar_of(key, "store-id-2", (&sk, "s")).is_none());
        assert!(sidecar_of("dir/a file+&<x>", "store-id-1", (&sk, "s")).is_none());
        assert!(parse_sidecar_key("plain/key").is_none());
        assert!(parse_sidecar_key(&format!("x{SIDECAR_SEP}short.c1.AAAA")).is_none());
        // A full token (ids included) in a sidecar's place is not a sidecar.
        let h = &sk[sidecar_prefix(key, "store-id-1").len() - 17..][..16];
        assert!(parse_sidecar_key(&format!("x{SIDECAR_SEP}{h}.{}", t.encode())).is_none());

        let page = |k: &str, side: &str| {
            format!(
                "<ListMultipartUploadsResult><Bucket>b</Bucket><Upload><Key>{}</Key><UploadId>store-id-1</UploadId><Initiated>x</Initiated></Upload><Upload><Key>{}</Key><UploadId>sidecar-id</UploadId></Upload><Upload><Key>other</Key><UploadId>raw&amp;id</UploadId></Upload><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
                k, side
            )
        };
        // S3's URL encoding: a space as `+`, a `+` as `%2B`.
        let url = |k: &str| -> String {
            percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC)
                .collect::<String>()
                .replace("%20", "+")
        };
        for (xml, url_encoded) in [
            (page(&escape(key), &escape(&sk)), false),
            (page(&url(key), &url(&sk)), true),
        ] {
            let listed = listed_uploads(&xml, url_encoded);
            assert_eq!(listed.len(), 3);
            assert_eq!(listed[0].0, key);
            assert_eq!(listed[2].1, "raw&id");
            let token = |k: &str, id: &str| {
                listed
                    .iter()
                    .find_map(|(s, sid)| sidecar_of(k, id, (s, sid)))
                    .map(|t| t.encode())
            };
            let out = rewrite_upload_listing(&xml, url_encoded, None, token);
            assert_eq!(
                listed_uploads(&out, url_encoded),
                vec![
                    (key.to_string(), want.encode()),
                    ("other".to_string(), "raw&id".to_string())
                ]
            );
            assert!(
                out.contains("<Initiated>x</Initiated>")
                    && out.ends_with("</ListMultipartUploadsResult>")
            );
            // Markers: the one the client sent is echoed as sent (the store saw its store id),
            // the next one names the last upload by its token, or stays a sidecar's own.
            let (k_text, sk_text) = if url_encoded {
                (url(key), url(&sk))
            } else {
                (escape(key), escape(&sk))
            };
            for (next_key, next_id, want_next) in [
                (&k_text, "store-id-1", escape(&want.encode())),
                (&sk_text, "sidecar-id", "sidecar-id".to_string()),
            ] {
                let marked = xml.replace(
                    "<IsTruncated>false</IsTruncated>",
                    &format!("<KeyMarker>a</KeyMarker><UploadIdMarker>store-id-0</UploadIdMarker><NextKeyMarker>{next_key}</NextKeyMarker><NextUploadIdMarker>{next_id}</NextUploadIdMarker><IsTruncated>true</IsTruncated>"),
                );
                let out = rewrite_upload_listing(&marked, url_encoded, Some("tok&0"), token);
                assert!(
                    out.contains("<UploadIdMarker>tok&amp;0</UploadIdMarker>"),
                    "{out}"
                );
                assert!(
                    out.contains(&format!(
                        "<NextUploadIdMarker>{want_next}</NextUploadIdMarker>"
                    )),
                    "{out}"
                );
                assert_eq!(listed_uploads(&out, url_encoded).len(), 2);
            }
        }
    }

    #[test]
    fn full_object_crcs_combine_the_part_crcs() {
        use crate::checksum::{b64, ChecksumAlgorithm as A, Hasher};
        let data: Vec<u8> = (0..5_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cuts = [0, 100_000, 100_001, 5_242_880 + 100_001, 5_500_000];
        for alg in [A::Crc32, A::Crc32c, A::Crc64Nvme] {
            let digest = |d: &[u8]| {
                let mut h = Hasher::new(alg);
                h.update(d);
                h.finish()
            };
            let mut parts = Vec::new();
            let mut sizes = Vec::new();
            for (i, w) in cuts.windows(2).enumerate() {
                let n = i as u32 + 1;
                parts.push(CompletePart {
                    number: n,
                    etag: String::new(),
                    checksums: vec![(alg.name().to_string(), b64(&digest(&data[w[0]..w[1]])))],
                });
                sizes.push((n, (w[1] - w[0]) as u64));
            }
            assert_eq!(
                full_object_crc(alg, &parts, &sizes),
                Some(digest(&data)),
                "{alg:?}"
            );
            // A wrong size gives another value; a part without the checksum gives none.
            let mut wrong = sizes.clone();
            wrong[1].1 += 1;
            assert_ne!(full_object_crc(alg, &parts, &wrong), Some(digest(&data)));
            parts[2].checksums.clear();
            assert_eq!(full_object_crc(alg, &parts, &sizes), None);
        }
        assert_eq!(full_object_crc(A::Sha256, &[], &[]), None);
    }

    #[test]
    fn complete_bodies_parse_and_rebuild() {
        let xml = r#"<?xml version="1.0"?><CompleteMultipartUpload xmlns="x"><Part><ETag>&quot;aa-0&quot;</ETag><PartNumber>1</PartNumber><ChecksumCRC32>AAAA</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><ETag>"bb-0"</ETag></Part></CompleteMultipartUpload>"#;
        let p = parse_complete(xml).unwrap();
        assert_eq!(
            p,
            vec![
                CompletePart {
                    number: 1,
                    etag: "\"aa-0\"".into(),
                    checksums: vec![("CRC32".into(), "AAAA".into())],
                },
                CompletePart {
                    number: 2,
                    etag: "\"bb-0\"".into(),
                    checksums: vec![],
                }
            ]
        );
        let body = complete_body(&[(1, "\"aa\"".into())]);
        assert!(body.contains("<Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag></Part>"));
        assert!(parse_complete("<CompleteMultipartUpload></CompleteMultipartUpload>").is_err());
        assert!(parse_complete("<Foo/>").is_err());
        assert_eq!(
            remove_elements(
                "<a><ChecksumCRC32>x</ChecksumCRC32><b/></a>",
                "ChecksumCRC32"
            ),
            "<a><b/></a>"
        );
    }

    fn parts(ns: &[u32]) -> Vec<CompletePart> {
        ns.iter()
            .map(|n| CompletePart {
                number: *n,
                etag: String::new(),
                checksums: vec![],
            })
            .collect()
    }

    #[test]
    fn tagging_header_is_query_encoded() {
        let tags = [
            ("a b".to_string(), "x&y=z".to_string()),
            ("k".to_string(), String::new()),
        ];
        assert_eq!(tagging_header(&tags), "a%20b=x%26y%3Dz&k=");
    }

    #[test]
    fn layouts_on_the_grid_and_off_it() {
        let c = layout::ciphertext_len;
        let mib8 = 8 << 20;
        let ok = [(1, c(mib8)), (2, c(mib8)), (3, c(100))];
        let grid = |v: &[u32]| Some(Layout::Grid(v.to_vec()));
        assert_eq!(check_layout(&parts(&[1, 2, 3]), &ok).ok(), grid(&[1, 2, 3]));
        assert_eq!(check_layout(&parts(&[1]), &[(1, c(7))]).ok(), grid(&[1]));
        // An empty last part is dropped.
        let empty_last = [(1, c(mib8)), (2, c(0))];
        assert_eq!(check_layout(&parts(&[1, 2]), &empty_last).ok(), grid(&[1]));
        let code = |r: Result<Layout, S3Error>| r.unwrap_err().code;
        assert_eq!(code(check_layout(&parts(&[2, 1]), &ok)), "InvalidPartOrder");
        assert_eq!(code(check_layout(&parts(&[1, 4]), &ok)), "InvalidPart");
        assert_eq!(
            code(check_layout(&parts(&[1, 2]), &[(1, c(1 << 20)), (2, c(1))])),
            "EntityTooSmall"
        );
        assert_eq!(
            code(check_layout(&parts(&[1, 2]), &[(1, 5), (2, c(1))])),
            "InvalidPart"
        );
        // Off the grid: gaps in the numbering, unaligned, unequal or a larger last part.
        let irregular = |v: &[(u32, u64)]| Some(Layout::Irregular(v.to_vec()));
        let odd = 5_000_001;
        for (numbers, sizes) in [
            (vec![1, 3], vec![mib8, 1]),
            (vec![1, 2], vec![odd * 2, 1]),
            (vec![1, 2, 3], vec![mib8, 2 * mib8, 1]),
            (vec![1, 2], vec![mib8, mib8 + 1]),
            (vec![2, 3], vec![mib8, mib8]),
        ] {
            let listed: Vec<(u32, u64)> = numbers
                .iter()
                .zip(&sizes)
                .map(|(n, s)| (*n, c(*s)))
                .collect();
            let want: Vec<(u32, u64)> = numbers.iter().copied().zip(sizes.clone()).collect();
            let got = check_layout(&parts(&numbers), &listed).ok();
            assert_eq!(got, irregular(&want), "{numbers:?} {sizes:?}");
            assert_eq!(
                got.unwrap().plaintext_len(&listed),
                sizes.iter().sum::<u64>()
            );
        }
        assert_eq!(
            Layout::Grid(vec![1, 2, 3]).plaintext_len(&ok),
            2 * mib8 + 100
        );
    }

    #[test]
    fn composite_checksums_as_s3_computes_them() {
        use crate::checksum::{b64, ChecksumAlgorithm, Hasher};
        let digest = |d: &[u8]| {
            let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
            h.update(d);
            h.finish()
        };
        let (a, b) = (digest(b"part one"), digest(b"part two"));
        let parts = vec![
            CompletePart {
                number: 1,
                etag: String::new(),
                checksums: vec![("SHA256".into(), b64(&a))],
            },
            CompletePart {
                number: 2,
                etag: String::new(),
                checksums: vec![("SHA256".into(), b64(&b))],
            },
        ];
        let want = format!("{}-2", b64(&digest(&[a.clone(), b.clone()].concat())));
        assert_eq!(
            composite_checksum(&parts, &[1, 2]),
            Some(("ChecksumSHA256".into(), want))
        );
        assert_eq!(
            composite_checksum(&parts, &[1]).map(|c| c.1),
            Some(format!("{}-1", b64(&digest(&a))))
        );
        let mut missing = parts.clone();
        missing[1].checksums.clear();
        assert_eq!(composite_checksum(&missing, &[1, 2]), None);
    }

    #[test]
    fn copy_sources_parse() {
        assert_eq!(
            parse_copy_source("/b1/dir/a%20b.txt?versionId=v%2B1"),
            Some(("b1".into(), "dir/a b.txt".into(), Some("v+1".into())))
        );
        assert_eq!(
            parse_copy_source("b1/k"),
            Some(("b1".into(), "k".into(), None))
        );
        assert_eq!(parse_copy_source("b1"), None);
        assert_eq!(parse_copy_source("/b1/"), None);
        assert_eq!(parse_copy_source("/b1/k?acl"), None);
    }

    #[test]
    fn part_chunks_from_the_last_chunk() {
        // 3 parts of 128 chunks and a last part of 5: the last chunk is (4, 4).
        assert_eq!(part_chunks(3 * 128 + 5, 4, 4), Some(128));
        assert_eq!(part_chunks(7, 1, 6), Some(7));
        assert_eq!(part_chunks(7, 1, 5), None);
        assert_eq!(part_chunks(3 * 128 + 5, 4, 200), None);
        assert_eq!(part_chunks(10, 0, 0), None);
    }
}
