//! CORS: preflight `OPTIONS` requests answered from the bucket's CORS configuration, and the
//! `Access-Control-*` headers added to requests that carry an `Origin`, as S3 does.
//!
//! The configuration lives in the store (PutBucketCors passes through); Chmura reads it with
//! its upstream credentials and keeps it for [`TTL`] (also the absence of one). A change made
//! through this instance takes effect at once; through another replica, within the TTL.
//! Browsers send no credentials with a preflight, so a preflight names a bucket by the name
//! every tenant shares: an upstream bucket under its own name, or a tenant bucket mapped onto
//! a whole upstream bucket (no prefix) when that name means one upstream bucket only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::error::S3Error;
use crate::multipart::{tag_values, unescape};

/// How long a bucket's CORS configuration is kept.
pub const TTL: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    /// Lowercase.
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub max_age: Option<u64>,
}

/// The rules of a `CORSConfiguration` document.
pub fn parse(xml: &str) -> Vec<Rule> {
    let all = |rule: &str, tag: &str| -> Vec<String> {
        tag_values(rule, tag)
            .iter()
            .map(|v| unescape(v).trim().to_string())
            .collect()
    };
    tag_values(xml, "CORSRule")
        .iter()
        .map(|r| Rule {
            origins: all(r, "AllowedOrigin"),
            methods: all(r, "AllowedMethod"),
            headers: all(r, "AllowedHeader")
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose: all(r, "ExposeHeader"),
            max_age: all(r, "MaxAgeSeconds").first().and_then(|v| v.parse().ok()),
        })
        .collect()
}

/// `*` matches any run of characters (S3 allows one per origin or header pattern).
pub fn wildcard(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The first rule allowing this origin, method and request headers (lowercase).
pub fn matching<'a>(
    rules: &'a [Rule],
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<&'a Rule> {
    rules.iter().find(|r| {
        r.origins.iter().any(|o| wildcard(o, origin))
            && r.methods.iter().any(|m| m == method)
            && headers
                .iter()
                .all(|h| r.headers.iter().any(|p| wildcard(p, h)))
    })
}

/// The `Access-Control-*` headers for a request `rule` allows.
pub fn allow_headers(h: &mut HeaderMap, rule: &Rule, origin: &str, request_headers: Option<&str>) {
    let any = rule.origins.iter().any(|o| o == "*");
    let mut set = |name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    set(
        "access-control-allow-origin",
        if any { "*" } else { origin },
    );
    if !any {
        set("access-control-allow-credentials", "true");
    }
    set("access-control-allow-methods", &rule.methods.join(", "));
    if let Some(rh) = request_headers.filter(|v| !v.trim().is_empty()) {
        set("access-control-allow-headers", rh);
    }
    if !rule.expose.is_empty() {
        set("access-control-expose-headers", &rule.expose.join(", "));
    }
    if let Some(age) = rule.max_age {
        set("access-control-max-age", &age.to_string());
    }
    h.append(
        http::header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        ),
    );
}

fn forbidden(message: &str) -> S3Error {
    let mut e = S3Error::new("AccessForbidden", message);
    e.status = StatusCode::FORBIDDEN;
    e
}

/// A preflight names its origin and method, or it is a 400 (checked before the bucket's rules
/// are looked up).
pub fn preflight_request(headers: &HeaderMap) -> Result<(&str, &str), S3Error> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    match (get("origin"), get("access-control-request-method")) {
        (Some(origin), Some(method)) => Ok((origin, method)),
        _ => Err(S3Error::new(
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        )),
    }
}

/// The decision on a preflight: the headers to answer 200 with, or S3's error.
pub fn preflight(rules: Option<&[Rule]>, headers: &HeaderMap) -> Result<HeaderMap, S3Error> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (origin, method) = preflight_request(headers)?;
    let Some(rules) = rules.filter(|r| !r.is_empty()) else {
        return Err(forbidden(
            "CORSResponse: CORS is not enabled for this bucket.",
        ));
    };
    let requested: Vec<String> = get("access-control-request-headers")
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let rule = matching(rules, origin, method.trim(), &requested).ok_or_else(|| {
        forbidden("CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")
    })?;
    let mut out = HeaderMap::new();
    allow_headers(
        &mut out,
        rule,
        origin,
        get("access-control-request-headers"),
    );
    Ok(out)
}

/// Headers for an actual (non-preflight) request from `origin`, when a rule allows it.
pub fn actual(rules: &[Rule], origin: &str, method: &Method) -> Option<HeaderMap> {
    let rule = matching(rules, origin, method.as_str(), &[])?;
    let mut out = HeaderMap::new();
    allow_headers(&mut out, rule, origin, None);
    Some(out)
}

/// A bucket's rules; `None`: it has no CORS configuration.
pub type Rules = Option<Arc<Vec<Rule>>>;

/// Upstream bucket → its rules, with when they were read.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (Instant, Rules)>>,
}

impl Cache {
    pub fn get(&self, bucket: &str) -> Option<Rules> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(bucket)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, r)| r.clone())
    }

    pub fn put(&self, bucket: &str, rules: Rules) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            // Still full (many names within the TTL): the oldest entry makes room, so a flood
            // of names never evicts everything at once.
            if map.len() >= MAX_ENTRIES {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(bucket.to_string(), (Instant::now(), rules));
    }

    pub fn forget(&self, bucket: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bucket);
    }
}

/// The upstream bucket a preflight for `bucket` concerns (see the module comment).
pub fn upstream_bucket(tenants: &[chmura_config::Tenant], bucket: &str) -> Option<String> {
    let mut found: Option<&str> = None;
    let mut unmapped = false;
    for t in tenants {
        match &t.buckets {
            None => unmapped = true,
            Some(maps) => {
                for m in maps.iter().filter(|m| m.name == bucket) {
                    if !m.prefix.is_empty() {
                        return None;
                    }
                    match found {
                        Some(f) if f != m.upstream_bucket => return None,
                        _ => found = Some(&m.upstream_bucket),
                    }
                }
            }
        }
    }
    match found {
        Some(f) if unmapped && f != bucket => None,
        Some(f) => Some(f.to_string()),
        None if unmapped => Some(bucket.to_string()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*suffix</AllowedOrigin></CORSRule>\
        <CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>start*end</AllowedOrigin></CORSRule>\
        <CORSRule><AllowedMethod>PUT</AllowedMethod><AllowedMethod>DELETE</AllowedMethod><AllowedOrigin>prefix*</AllowedOrigin><AllowedHeader>x-amz-meta-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>300</MaxAgeSeconds></CORSRule>\
        <CORSRule><AllowedMethod>HEAD</AllowedMethod><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>";

    fn pre(
        origin: Option<&str>,
        method: Option<&str>,
        hdrs: Option<&str>,
    ) -> Result<HeaderMap, S3Error> {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert("origin", HeaderValue::from_str(o).unwrap());
        }
        if let Some(m) = method {
            h.insert(
                "access-control-request-method",
                HeaderValue::from_str(m).unwrap(),
            );
        }
        if let Some(x) = hdrs {
            h.insert(
                "access-control-request-headers",
                HeaderValue::from_str(x).unwrap(),
            );
        }
        preflight(Some(&parse(CONFIG)), &h)
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", ""));
        assert!(wildcard("*suffix", "foo.suffix"));
        assert!(!wildcard("*suffix", "foo.suffi"));
        assert!(wildcard("start*end", "startend"));
        assert!(wildcard("start*end", "start.middle.end"));
        assert!(!wildcard("start*end", "startend.x"));
        assert!(wildcard("prefix*", "prefix"));
        assert!(!wildcard("a*a", "a"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
    }

    #[test]
    fn preflights_follow_the_rules() {
        let ok = pre(Some("foo.suffix"), Some("GET"), None).unwrap();
        assert_eq!(ok["access-control-allow-origin"], "foo.suffix");
        assert_eq!(ok["access-control-allow-methods"], "GET");
        let ok = pre(Some("start.x.end"), Some("GET"), None).unwrap();
        assert_eq!(ok["access-control-allow-origin"], "start.x.end");
        let ok = pre(
            Some("prefix.x"),
            Some("PUT"),
            Some("X-Amz-Meta-A, x-amz-meta-b"),
        )
        .unwrap();
        assert_eq!(ok["access-control-allow-methods"], "PUT, DELETE");
        assert_eq!(
            ok["access-control-allow-headers"],
            "X-Amz-Meta-A, x-amz-meta-b"
        );
        assert_eq!(ok["access-control-expose-headers"], "ETag");
        assert_eq!(ok["access-control-max-age"], "300");
        let any = pre(Some("anything"), Some("HEAD"), None).unwrap();
        assert_eq!(any["access-control-allow-origin"], "*");
        assert!(any.get("access-control-allow-credentials").is_none());
        for (o, m, h) in [
            ("foo.bar", "GET", None),
            ("foo.suffix", "PUT", None),
            ("prefix.x", "PUT", Some("content-type")),
            ("start.x", "GET", None),
        ] {
            let e = pre(Some(o), Some(m), h).unwrap_err();
            assert_eq!(
                (e.code, e.status.as_u16()),
                ("AccessForbidden", 403),
                "{o} {m}"
            );
        }
        assert_eq!(pre(Some("foo.suffix"), None, None).unwrap_err().status, 400);
        assert_eq!(pre(None, Some("GET"), None).unwrap_err().status, 400);
        let e = preflight(None, &pre_headers()).unwrap_err();
        assert_eq!(e.status, 403);
    }

    fn pre_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_static("o"));
        h.insert(
            "access-control-request-method",
            HeaderValue::from_static("GET"),
        );
        h
    }

    #[test]
    fn actual_requests_get_headers_only_when_allowed() {
        let rules = parse(CONFIG);
        let h = actual(&rules, "foo.suffix", &Method::GET).unwrap();
        assert_eq!(h["access-control-allow-origin"], "foo.suffix");
        assert!(actual(&rules, "foo.suffix", &Method::PUT).is_none());
        assert!(actual(&rules, "elsewhere", &Method::GET).is_none());
    }

    #[test]
    fn cache_keeps_absence_and_forgets() {
        let c = Cache::default();
        assert!(c.get("b").is_none());
        c.put("b", None);
        assert_eq!(c.get("b"), Some(None));
        c.forget("b");
        assert!(c.get("b").is_none());
    }
}
