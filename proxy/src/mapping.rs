//! Tenant bucket mapping (issue 5): the bucket a tenant sees → an upstream bucket and key
//! prefix. Requests are rewritten on the way in (bucket, key, listing parameters, copy
//! source); XML answers on the way out (names, keys, prefixes, markers, continuation tokens;
//! store error documents are replaced), so nothing of the upstream layout reaches the client.

use chmura_config::{contained_key, BucketMap, Tenant};
use chmura_crypto::envelope::b64;

use crate::error::S3Error;
use crate::multipart::replace_tag;

/// The mapping of the request's bucket, if the tenant has a bucket table.
#[derive(Debug, Clone)]
pub struct Unmap {
    pub client_bucket: String,
    pub upstream_bucket: String,
    pub prefix: String,
}

fn denied() -> S3Error {
    S3Error::new("AccessDenied", "Access Denied")
}

/// Resolves `bucket` for `tenant`: `Ok(None)` for a tenant without a bucket table; an unmapped
/// bucket is `AccessDenied`.
pub fn resolve(tenant: &Tenant, bucket: &str) -> Result<Option<Unmap>, S3Error> {
    let Some(list) = &tenant.buckets else {
        return Ok(None);
    };
    let m: &BucketMap = list.iter().find(|m| m.name == bucket).ok_or_else(denied)?;
    Ok(Some(Unmap {
        client_bucket: m.name.clone(),
        upstream_bucket: m.upstream_bucket.clone(),
        prefix: m.prefix.clone(),
    }))
}

/// The upstream key of a client key; keys that could leave the prefix are refused.
pub fn upstream_key(u: &Unmap, key: &str) -> Result<String, S3Error> {
    if !contained_key(key) {
        return Err(S3Error::invalid_argument(
            "Object keys here may not contain '.', '..' or empty path segments, backslashes, control characters or look-alikes of '/' and '.'.",
        ));
    }
    Ok(format!("{}{key}", u.prefix))
}

/// An `x-amz-copy-source` value for the upstream (the source bucket mapped for the same
/// tenant).
pub fn copy_source(tenant: &Tenant, value: &str) -> Result<Option<String>, S3Error> {
    if tenant.buckets.is_none() {
        return Ok(None);
    }
    let (b, k, v) = crate::multipart::parse_copy_source(value).ok_or_else(|| {
        S3Error::invalid_request(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
        )
    })?;
    let u = resolve(tenant, &b)?.ok_or_else(denied)?;
    let key = upstream_key(&u, &k)?;
    Ok(Some(crate::multipart::copy_source_value(
        &u.upstream_bucket,
        &key,
        v.as_deref(),
    )))
}

/// Rewrites listing parameters: prefix and markers gain the mapping prefix; continuation
/// tokens are unwrapped.
pub fn map_query(
    u: &Unmap,
    query: &mut Vec<(String, String)>,
    listing: bool,
) -> Result<(), S3Error> {
    if !listing {
        return Ok(());
    }
    let mut has_prefix = false;
    for (k, v) in query.iter_mut() {
        // A listing prefix may be read as a path by a store that lists folders: held to the
        // rules of keys, so none reaches past the tenant's prefix. (Markers are only compared
        // with keys as strings, and the prefix bounds the listing: they pass as they are.)
        if k == "prefix" && !v.is_empty() && !contained_key(v) {
            return Err(S3Error::invalid_argument(format!(
                "The {k} may not contain '.', '..' or empty path segments, backslashes, control characters or look-alikes of '/' and '.'."
            )));
        }
        match k.as_str() {
            "prefix" => {
                has_prefix = true;
                *v = format!("{}{v}", u.prefix);
            }
            "marker" | "start-after" | "key-marker" if !v.is_empty() => {
                *v = format!("{}{v}", u.prefix);
            }
            "continuation-token" => {
                *v = unwrap_token(v).ok_or_else(|| {
                    S3Error::invalid_argument("The continuation token provided is incorrect")
                })?;
            }
            _ => {}
        }
    }
    if !has_prefix && !u.prefix.is_empty() {
        query.push(("prefix".into(), u.prefix.clone()));
    }
    Ok(())
}

fn wrap_token(t: &str) -> String {
    b64::encode(t.as_bytes())
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn unwrap_token(t: &str) -> Option<String> {
    let mut s = t.replace('-', "+").replace('_', "/");
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    String::from_utf8(b64::decode(&s)?).ok()
}

fn strip(u: &Unmap, v: &str) -> String {
    if u.prefix.is_empty() {
        return v.to_string();
    }
    if let Some(r) = v.strip_prefix(&u.prefix) {
        return r.to_string();
    }
    // encoding-type=url: the prefix appears encoded.
    let enc = percent_encoding::utf8_percent_encode(&u.prefix, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    for p in [enc.clone(), enc.replace("%2F", "/")] {
        if let Some(r) = v.strip_prefix(&p) {
            return r.to_string();
        }
    }
    v.to_string()
}

/// Rewrites an XML answer for the client: upstream bucket → client bucket, keys and prefixes
/// without the mapping prefix, continuation tokens wrapped, `Location` dropped. A store error
/// document is replaced by one naming only its code.
pub fn unmap_xml(u: &Unmap, xml: &str, request_id: &str) -> String {
    if xml.contains("<Error>") && !xml.contains("<DeleteResult") {
        let code = crate::multipart::tag_values(xml, "Code")
            .first()
            .map(|c| crate::error::xml_escape(c))
            .unwrap_or_else(|| "InternalError".into());
        return format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><RequestId>{request_id}</RequestId></Error>",
            generic_message(&code)
        );
    }
    let bucket = |v: &str| {
        if v == u.upstream_bucket {
            u.client_bucket.clone()
        } else {
            v.to_string()
        }
    };
    let mut x = replace_tag(xml, "Name", bucket);
    x = replace_tag(&x, "Bucket", bucket);
    for tag in [
        "Key",
        "Prefix",
        "Marker",
        "NextMarker",
        "StartAfter",
        "KeyMarker",
        "NextKeyMarker",
    ] {
        x = replace_tag(&x, tag, |v| strip(u, v));
    }
    for tag in ["NextContinuationToken", "ContinuationToken"] {
        x = replace_tag(&x, tag, wrap_token);
    }
    // Owners and initiators are the upstream account.
    ["Location", "Owner", "Initiator"]
        .iter()
        .fold(x, |x, t| crate::multipart::remove_elements(&x, t))
}

pub fn generic_message(code: &str) -> &'static str {
    match code {
        "NoSuchKey" => "The specified key does not exist.",
        "NoSuchBucket" => "The specified bucket does not exist.",
        "NoSuchUpload" => "The specified upload does not exist.",
        "NoSuchVersion" => "The specified version does not exist.",
        "AccessDenied" => "Access Denied",
        "PreconditionFailed" => "At least one of the pre-conditions you specified did not hold",
        "InvalidRange" => "The requested range is not satisfiable",
        "InvalidPart" => "One or more of the specified parts could not be found.",
        "InvalidPartOrder" => "The list of parts was not in ascending order.",
        "EntityTooSmall" => "Your proposed upload is smaller than the minimum allowed object size.",
        "BucketNotEmpty" => "The bucket you tried to delete is not empty.",
        "BucketAlreadyOwnedByYou" | "BucketAlreadyExists" => {
            "The requested bucket name is not available."
        }
        _ => "The request could not be completed.",
    }
}

/// The ListBuckets answer of a tenant with a bucket table: its buckets, nothing else.
pub fn list_buckets_xml(tenant: &Tenant) -> String {
    let buckets: String = tenant
        .buckets
        .iter()
        .flatten()
        .map(|b| {
            format!(
                "<Bucket><Name>{}</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate></Bucket>",
                crate::error::xml_escape(&b.name)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Owner><ID>{0}</ID><DisplayName>{0}</DisplayName></Owner><Buckets>{buckets}</Buckets></ListAllMyBucketsResult>",
        crate::error::xml_escape(&tenant.name)
    )
}

/// The ListBuckets arguments Chmura applies itself to the whole list (stores differ: moto
/// and s3s-fs ignore them); they are not forwarded.
pub const BUCKET_LIST_ARGS: &[&str] = &["max-buckets", "continuation-token", "prefix"];

/// A ListBuckets answer paged as S3 pages it: the buckets under `prefix`, in name order, at
/// most `max-buckets` after the `continuation-token`, a `ContinuationToken` when more
/// remain, and the `Prefix` asked for stated back. Unchanged when none of these was asked.
pub fn page_buckets(xml: &str, query: &[(String, String)]) -> Result<String, S3Error> {
    use base64::Engine as _;
    let arg = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (max, token, prefix) = (arg("max-buckets"), arg("continuation-token"), arg("prefix"));
    if max.is_none() && token.is_none() && prefix.is_none() {
        return Ok(xml.to_string());
    }
    let max = match max {
        None => usize::MAX,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(S3Error::invalid_argument(
                    "max-buckets must be an integer from 1 to 10000.",
                )
                .with_element("ArgumentName", "max-buckets")
                .with_element("ArgumentValue", v.chars().take(32).collect::<String>()))
            }
        },
    };
    let after = match token.filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    S3Error::invalid_argument("The continuation token provided is incorrect.")
                        .with_element("ArgumentName", "continuation-token")
                })?,
        ),
    };
    let (Some(open), Some(close)) = (xml.find("<Buckets>"), xml.find("</Buckets>")) else {
        // `<Buckets/>`: nothing to page.
        return Ok(xml.to_string());
    };
    let mut buckets: Vec<(String, &str)> =
        crate::multipart::tag_values(&xml[open..close + "</Buckets>".len()], "Bucket")
            .into_iter()
            .filter_map(|b| {
                let name =
                    crate::multipart::unescape(crate::multipart::tag_values(b, "Name").first()?);
                Some((name, b))
            })
            .filter(|(name, _)| prefix.is_none_or(|p| name.starts_with(p)))
            .filter(|(name, _)| after.as_deref().is_none_or(|a| name.as_str() > a))
            .collect();
    buckets.sort_by(|a, b| a.0.cmp(&b.0));
    let more = buckets.len() > max;
    buckets.truncate(max);
    let mut out = String::with_capacity(xml.len());
    out.push_str(&xml[..open]);
    out.push_str("<Buckets>");
    for (_, b) in &buckets {
        out.push_str("<Bucket>");
        out.push_str(b);
        out.push_str("</Bucket>");
    }
    out.push_str("</Buckets>");
    if let (true, Some((last, _))) = (more, buckets.last()) {
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes());
        out.push_str(&format!("<ContinuationToken>{t}</ContinuationToken>"));
    }
    if let Some(p) = prefix {
        out.push_str(&format!("<Prefix>{}</Prefix>", crate::error::xml_escape(p)));
    }
    let rest = &xml[close + "</Buckets>".len()..];
    // What the store stated of its own paging is replaced.
    let rest = crate::multipart::remove_elements(rest, "ContinuationToken");
    let rest = crate::multipart::remove_elements(&rest, "Prefix");
    out.push_str(&rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u() -> Unmap {
        Unmap {
            client_bucket: "data".into(),
            upstream_bucket: "shared-store".into(),
            prefix: "acme/data/".into(),
        }
    }

    #[test]
    fn bucket_lists_page_as_s3_pages_them() {
        let xml = "<ListAllMyBucketsResult><Owner><ID>o</ID></Owner><Buckets><Bucket><Name>b2</Name><CreationDate>d2</CreationDate></Bucket><Bucket><Name>a&amp;1</Name><CreationDate>d1</CreationDate></Bucket><Bucket><Name>b1</Name><CreationDate>d3</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>";
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let names = |x: &str| -> Vec<String> {
            crate::multipart::tag_values(x, "Name")
                .into_iter()
                .map(crate::multipart::unescape)
                .collect()
        };
        assert_eq!(page_buckets(xml, &[]).unwrap(), xml);
        // One a page, in name order, each page naming the next.
        let (mut seen, mut token) = (Vec::new(), None::<String>);
        for _ in 0..5 {
            let mut args = vec![("max-buckets", "1")];
            if let Some(t) = token.as_deref() {
                args.push(("continuation-token", t));
            }
            let page = page_buckets(xml, &q(&args)).unwrap();
            assert!(page.contains("<CreationDate>"), "{page}");
            seen.extend(names(&page));
            token = crate::multipart::tag_values(&page, "ContinuationToken")
                .first()
                .map(|t| t.to_string());
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen, ["a&1", "b1", "b2"]);
        let page = page_buckets(xml, &q(&[("prefix", "b"), ("max-buckets", "5")])).unwrap();
        assert_eq!(names(&page), ["b1", "b2"]);
        assert!(page.contains("<Prefix>b</Prefix>") && !page.contains("ContinuationToken"));
        assert!(page.ends_with("</ListAllMyBucketsResult>"));
        for bad in ["0", "10001", "x", "-1"] {
            let e = page_buckets(xml, &q(&[("max-buckets", bad)])).unwrap_err();
            assert_eq!(e.code, "InvalidArgument");
        }
        let e = page_buckets(xml, &q(&[("continuation-token", "%%%")])).unwrap_err();
        assert_eq!(e.code, "InvalidArgument");
        let empty = "<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>";
        let page = page_buckets(empty, &q(&[("max-buckets", "1")])).unwrap();
        assert!(names(&page).is_empty() && !page.contains("ContinuationToken"));
    }

    #[test]
    fn listings_lose_the_upstream_layout() {
        let xml = r#"<ListBucketResult><Name>shared-store</Name><Owner><ID>upstream-account</ID></Owner><Prefix>acme/data/r/</Prefix><Contents><Key>acme/data/r/a.txt</Key></Contents><CommonPrefixes><Prefix>acme/data/r/sub/</Prefix></CommonPrefixes><NextContinuationToken>acme/data/r/a.txt</NextContinuationToken></ListBucketResult>"#;
        let out = unmap_xml(&u(), xml, "RID");
        assert!(
            !out.contains("acme") && !out.contains("shared-store"),
            "{out}"
        );
        assert!(!out.contains("upstream-account"), "{out}");
        assert!(out.contains("<Name>data</Name>") && out.contains("<Key>r/a.txt</Key>"));
        assert!(out.contains("<Prefix>r/sub/</Prefix>"));
        let token = crate::multipart::tag_values(&out, "NextContinuationToken")[0].to_string();
        let mut q = vec![("continuation-token".to_string(), token)];
        map_query(&u(), &mut q, true).unwrap();
        assert!(q.contains(&("continuation-token".into(), "acme/data/r/a.txt".into())));
        assert!(q.contains(&("prefix".into(), "acme/data/".into())));
    }

    #[test]
    fn listing_parameters_cannot_reach_past_the_prefix() {
        for (k, v) in [
            ("prefix", "../globex/"),
            ("prefix", "r/../../globex/"),
            ("prefix", "\u{2025}/globex"),
            ("prefix", "a//b"),
            ("prefix", "r\\..\\x"),
        ] {
            let mut q = vec![(k.to_string(), v.to_string())];
            let e = map_query(&u(), &mut q, true).expect_err(v);
            assert_eq!(e.code, "InvalidArgument", "{k}={v}");
        }
        let mut q = vec![
            ("prefix".to_string(), "r/".to_string()),
            ("start-after".to_string(), "r/a.txt".to_string()),
            ("delimiter".to_string(), "/".to_string()),
        ];
        map_query(&u(), &mut q, true).unwrap();
        assert!(q.contains(&("prefix".into(), "acme/data/r/".into())));
        assert!(q.contains(&("start-after".into(), "acme/data/r/a.txt".into())));
        // A marker is a bound in key order, under the prefix the listing always has.
        let mut q = vec![("marker".to_string(), "../globex/a".to_string())];
        map_query(&u(), &mut q, true).unwrap();
        assert!(q.contains(&("marker".into(), "acme/data/../globex/a".into())));
        assert!(q.contains(&("prefix".into(), "acme/data/".into())));
    }

    #[test]
    fn store_errors_name_only_their_code() {
        let xml = "<Error><Code>NoSuchKey</Code><Message>no key acme/data/x in shared-store</Message><Key>acme/data/x</Key><BucketName>shared-store</BucketName></Error>";
        let out = unmap_xml(&u(), xml, "RID");
        assert!(out.contains("<Code>NoSuchKey</Code>"));
        assert!(
            !out.contains("acme") && !out.contains("shared-store"),
            "{out}"
        );
    }
}
