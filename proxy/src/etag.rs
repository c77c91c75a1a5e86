//! ETags in encrypted mode.
//!
//! The store's ETag of an encrypted object is the MD5 of its ciphertext. Clients that find a
//! 32-hex-digit ETag take it for the MD5 of what they uploaded (rclone, s3cmd) and report
//! corruption. So, with a `[kms]` section, Chmura presents every single-part ETag with a `-0`
//! suffix: `"<store etag>-0"`, the multipart shape clients know is not an MD5, and one that no
//! real multipart ETag has (part counts start at 1). The mapping is a pure function of the
//! store's ETag, so PUT, GET, HEAD and listings agree with no state, and conditional headers
//! are mapped back before they reach the store.

use http::header::{HeaderMap, HeaderValue, ETAG};

const SUFFIX: &str = "-0";

/// Store form → presented form.
pub fn present(v: &str) -> String {
    let (weak, inner) = split(v);
    if inner.is_empty() || inner.contains('-') {
        return v.to_string();
    }
    format!("{weak}\"{inner}{SUFFIX}\"")
}

/// Presented form (one or a comma-separated list, or `*`) → store form.
pub fn to_store(v: &str) -> String {
    v.split(',')
        .map(|item| {
            let item = item.trim();
            let (weak, inner) = split(item);
            match inner.strip_suffix(SUFFIX) {
                Some(base) if !base.is_empty() && !base.contains('-') => {
                    format!("{weak}\"{base}\"")
                }
                _ => item.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn split(v: &str) -> (&str, &str) {
    let v = v.trim();
    let (weak, rest) = match v.strip_prefix("W/") {
        Some(r) => ("W/", r),
        None => ("", v),
    };
    (weak, rest.trim_matches('"'))
}

/// Rewrites the `ETag` response header in place.
pub fn present_header(h: &mut HeaderMap) {
    if let Some(v) = h.get(ETAG).and_then(|v| v.to_str().ok()).map(present) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(ETAG, v);
        }
    }
}

/// Rewrites every `<ETag>…</ETag>` of an XML listing (quotes literal or `&quot;`).
pub fn present_in_xml(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len() + 64);
    let mut rest = xml;
    while let Some(i) = rest.find("<ETag>") {
        out.push_str(&rest[..i + 6]);
        rest = &rest[i + 6..];
        let Some(j) = rest.find("</ETag>") else { break };
        let raw = &rest[..j];
        let unescaped = raw.replace("&quot;", "\"").replace("&#34;", "\"");
        let presented = present(&unescaped);
        if raw.contains("&quot;") || raw.contains("&#34;") {
            out.push_str(&presented.replace('"', "&quot;"));
        } else {
            out.push_str(&presented);
        }
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_multipart_untouched() {
        let s = "\"9e107d9d372bb6826bd81d3542a419d6\"";
        let p = present(s);
        assert_eq!(p, "\"9e107d9d372bb6826bd81d3542a419d6-0\"");
        assert_eq!(to_store(&p), s);
        assert_eq!(present("\"abc-3\""), "\"abc-3\"");
        assert_eq!(to_store("\"abc-3\""), "\"abc-3\"");
        assert_eq!(to_store("*"), "*");
        assert_eq!(to_store("\"a-0\", \"b-0\""), "\"a\", \"b\"");
        assert_eq!(present("W/\"abc\""), "W/\"abc-0\"");
    }

    #[test]
    fn xml_listing_etags_are_presented() {
        assert_eq!(
            present_in_xml("<ETag>&quot;abc&quot;</ETag><ETag>\"def\"</ETag><ETag>\"x-2\"</ETag>"),
            "<ETag>&quot;abc-0&quot;</ETag><ETag>\"def-0\"</ETag><ETag>\"x-2\"</ETag>"
        );
    }
}
