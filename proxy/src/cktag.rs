//! The plaintext checksum of an object whose checksum became known only after its metadata
//! was written: a PutObject's aws-chunked trailer checksum (body over 1 MiB), a multipart
//! upload's composite or full-object checksum at Complete. S3 metadata cannot change after
//! the write, so Chmura keeps it, sealed under the object's content key, in the object tag
//! [`TAG_KEY`] (FORMAT.md §8a). The envelope's `chmura-ckt` says the object may carry that
//! tag; clients never see it: tag listings and counts leave it out, and a client's tag set
//! replaces only the client's tags.

use chmura_crypto::envelope::b64;
use chmura_crypto::keys::ObjectKey;
use http::{HeaderName, HeaderValue};

use crate::checksum::ChecksumAlgorithm;

/// The object tag holding the sealed checksum. Clients may not set a tag of that name.
pub const TAG_KEY: &str = "chmura-ck";

/// S3's limit on an object's tags.
pub const MAX_TAGS: usize = 10;

/// A checksum kept in the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub alg: ChecksumAlgorithm,
    /// `Some(n)`: a multipart upload's composite checksum over its `n` parts (shown as
    /// `<base64>-n`); `None`: a checksum of the whole plaintext (FULL_OBJECT).
    pub parts: Option<u32>,
    pub digest: Vec<u8>,
}

impl Kept {
    /// What the seal authenticates besides the digest: the algorithm, and for a composite
    /// its part count, so neither can be edited.
    fn label(alg: ChecksumAlgorithm, parts: Option<u32>) -> String {
        match parts {
            None => alg.name().to_string(),
            Some(n) => format!("{} COMPOSITE {n}", alg.name()),
        }
    }

    /// The tag value: `<ALGORITHM> FULL_OBJECT <base64 sealed>` or
    /// `<ALGORITHM> COMPOSITE-<n> <base64 sealed>` (characters S3 allows in tag values).
    pub fn seal(&self, okey: &ObjectKey) -> String {
        let kind = match self.parts {
            None => "FULL_OBJECT".to_string(),
            Some(n) => format!("COMPOSITE-{n}"),
        };
        let sealed = okey.seal_value(&Self::label(self.alg, self.parts), &self.digest);
        format!("{} {kind} {}", self.alg.name(), b64::encode(&sealed))
    }

    /// Opens a tag value; `None` for anything that does not open under `okey` (edited, moved
    /// from another object, or left by a copy that re-encrypted the body).
    pub fn open(value: &str, okey: &ObjectKey) -> Option<Kept> {
        let mut f = value.split(' ');
        let (alg, kind, sealed) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() {
            return None;
        }
        let alg = ChecksumAlgorithm::from_name(alg)?;
        let parts = match kind {
            "FULL_OBJECT" => None,
            k => Some(
                k.strip_prefix("COMPOSITE-")?
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=crate::multipart::MAX_PARTS).contains(n))?,
            ),
        };
        let digest = okey
            .open_value(&Self::label(alg, parts), &b64::decode(sealed)?)
            .ok()?;
        (digest.len() == alg.digest_len()).then_some(Kept { alg, parts, digest })
    }

    /// From the checksum Complete states: element name (`ChecksumCRC32`), value (`<b64>` or
    /// `<b64>-n`), type (`FULL_OBJECT` or `COMPOSITE`).
    pub fn from_stated(element: &str, value: &str, kind: &str) -> Option<Kept> {
        let alg = ChecksumAlgorithm::from_name(element.strip_prefix("Checksum")?)?;
        let (v, parts) = match (kind, value.split_once('-')) {
            ("COMPOSITE", Some((v, n))) => (v, Some(n.parse::<u32>().ok()?)),
            ("FULL_OBJECT", None) => (value, None),
            _ => return None,
        };
        let digest = crate::checksum::decode_b64(v, alg.digest_len())?;
        Some(Kept { alg, parts, digest })
    }

    /// S3's checksum type: `COMPOSITE` or `FULL_OBJECT`.
    pub fn kind(&self) -> &'static str {
        if self.parts.is_some() {
            "COMPOSITE"
        } else {
            "FULL_OBJECT"
        }
    }

    /// The response headers S3 sends with `x-amz-checksum-mode: ENABLED`.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 2] {
        let mut v = crate::checksum::b64(&self.digest);
        if let Some(n) = self.parts {
            v.push_str(&format!("-{n}"));
        }
        let kind = self.kind();
        [
            (
                HeaderName::from_static(self.alg.header_name()),
                HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("")),
            ),
            (
                HeaderName::from_static("x-amz-checksum-type"),
                HeaderValue::from_static(kind),
            ),
        ]
    }
}

/// Splits an object's tags into the client's and Chmura's tag value (if any).
pub fn split(tags: Vec<(String, String)>) -> (Vec<(String, String)>, Option<String>) {
    let mut ours = None;
    let theirs = tags
        .into_iter()
        .filter_map(|(k, v)| {
            if k == TAG_KEY {
                ours = Some(v);
                None
            } else {
                Some((k, v))
            }
        })
        .collect();
    (theirs, ours)
}

/// A `Tagging` document (PutObjectTagging's body, GetObjectTagging's answer).
pub fn tagging_xml(tags: &[(String, String)]) -> String {
    let esc = crate::error::xml_escape;
    let set: String = tags
        .iter()
        .map(|(k, v)| format!("<Tag><Key>{}</Key><Value>{}</Value></Tag>", esc(k), esc(v)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>{set}</TagSet></Tagging>"
    )
}

/// Tags from an `x-amz-tagging` header (URL query form: `k1=v1&k2=v2`).
pub fn parse_tagging_header(v: &str) -> Vec<(String, String)> {
    crate::sigv4::parse_query(v)
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The tag count a client sees: the store's, less Chmura's tag when the object may carry one;
/// `exact`: the client's tags, when they were read. None where the store states none (S3
/// states no count on HEAD).
pub fn shown_count(store: Option<u32>, flagged: bool, exact: Option<usize>) -> Option<u32> {
    let store = store?;
    let n = match exact {
        Some(n) => n as u32,
        None if flagged => store.saturating_sub(1),
        None => store,
    };
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ObjectKey {
        ObjectKey::derive(&zeroize::Zeroizing::new([b; 32]), &[b; 32])
    }

    #[test]
    fn kept_checksums_open_only_with_their_key_kind_and_count() {
        let k = key(1);
        let full = Kept {
            alg: ChecksumAlgorithm::Crc64Nvme,
            parts: None,
            digest: vec![1, 2, 3, 4, 5, 6, 7, 8],
        };
        let composite = Kept {
            alg: ChecksumAlgorithm::Sha256,
            parts: Some(3),
            digest: vec![9; 32],
        };
        for kept in [&full, &composite] {
            let v = kept.seal(&k);
            assert!(
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " +-=._:/@".contains(c)),
                "{v}"
            );
            assert!(v.len() <= 256, "S3 tag values hold 256 characters");
            assert_eq!(Kept::open(&v, &k).as_ref(), Some(kept));
            assert_eq!(Kept::open(&v, &key(2)), None, "another object's key");
        }
        let v = composite.seal(&k);
        // Part count, kind or algorithm edited: the seal does not open.
        for edited in [
            v.replacen("COMPOSITE-3", "COMPOSITE-4", 1),
            v.replacen("COMPOSITE-3", "FULL_OBJECT", 1),
            v.replacen("SHA256", "SHA1", 1),
            format!("{v} x"),
            v.replacen(' ', "", 1),
        ] {
            assert_eq!(Kept::open(&edited, &k), None, "{edited}");
        }
        let [(name, value), (_, kind)] = composite.headers();
        assert_eq!(name, "x-amz-checksum-sha256");
        assert!(value.to_str().unwrap().ends_with("=-3"));
        assert_eq!(kind, "COMPOSITE");
        assert_eq!(
            Kept::from_stated("ChecksumSHA256", value.to_str().unwrap(), "COMPOSITE"),
            Some(composite)
        );
        let [(_, value), (_, kind)] = full.headers();
        assert_eq!(kind, "FULL_OBJECT");
        assert_eq!(
            Kept::from_stated("ChecksumCRC64NVME", value.to_str().unwrap(), "FULL_OBJECT"),
            Some(full)
        );
        assert_eq!(
            Kept::from_stated("ChecksumMD5", "AAAA", "FULL_OBJECT"),
            None
        );
    }

    #[test]
    fn clients_see_their_own_tags_and_counts() {
        let tags = vec![
            ("a".to_string(), "1".to_string()),
            (TAG_KEY.to_string(), "v".to_string()),
        ];
        let (theirs, ours) = split(tags);
        assert_eq!(theirs, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(ours.as_deref(), Some("v"));
        assert_eq!(shown_count(Some(2), true, None), Some(1));
        assert_eq!(shown_count(Some(1), true, None), None);
        assert_eq!(shown_count(Some(2), false, None), Some(2));
        assert_eq!(shown_count(None, true, None), None);
        assert_eq!(shown_count(Some(3), true, Some(1)), Some(1));
        assert_eq!(shown_count(Some(1), true, Some(0)), None);
        assert_eq!(
            shown_count(None, true, Some(2)),
            None,
            "HEAD on S3 states no count"
        );
        assert_eq!(
            parse_tagging_header("k%20x=a%26b&e=&=z"),
            vec![
                ("k x".to_string(), "a&b".to_string()),
                ("e".to_string(), String::new())
            ]
        );
        let xml = tagging_xml(&[("<k>".to_string(), "v&".to_string())]);
        assert_eq!(
            crate::multipart::parse_tags(&xml),
            vec![("<k>".to_string(), "v&".to_string())]
        );
    }
}
