//! Chmura's configuration.
//!
//! A TOML file is read into [`RawConfig`] (serde, unknown fields refused) and turned into a
//! validated [`Config`] by [`Config::load`]: paths resolved against the config file's folder,
//! secret files read (and refused when group or others can read them), addresses parsed.
//! Every error names the field path it is about ("tenants[1].secret_access_key_file: …").
//!
//! This crate does no network I/O and starts no runtime.

pub mod policy;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// A configuration error: the field path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `tenants[0].access_key_id`.
    pub path: String,
    /// Human-readable reason.
    pub reason: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A secret held in memory: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }
    /// The secret value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (serde) form: field names are the user-facing contract.
// ---------------------------------------------------------------------------------------------

/// The TOML document as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub kms: Option<RawKms>,
    pub audit: Option<RawAudit>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub metrics_bearer_token_file: Option<PathBuf>,
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz` (plain HTTP; bind it privately).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub metrics_token: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub file: Option<PathBuf>,
    pub stdout: Option<bool>,
    pub checkpoint_every: Option<u64>,
    pub queue: Option<usize>,
    /// "backpressure" (default: a request waits for room) or "fail_closed" (it is refused).
    pub on_full: Option<String>,
    /// Rotate the file after this many bytes (renamed to `<file>.1`, `<file>.2`, …).
    pub max_file_bytes: Option<u64>,
}

/// The audit log (issue 6).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub file: Option<PathBuf>,
    pub stdout: bool,
    /// A checkpoint line (HMAC under a key from the key provider) after this many records.
    pub checkpoint_every: u64,
    /// Records waiting for the writer before `on_full` applies.
    pub queue: usize,
    pub fail_closed: bool,
    pub max_file_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKms {
    pub provider: String,
    pub key_file: Option<PathBuf>,
    pub key_id: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub data_key_cache_entries: Option<usize>,
    pub data_key_cache_ttl_secs: Option<u64>,
    pub insecure_allow_plaintext_reads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub min_tls_version: Option<String>,
    pub insecure_http_listen: Option<String>,
    pub region: Option<String>,
    pub virtual_host_domain: Option<String>,
    pub max_clock_skew_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub body_idle_timeout_secs: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub worker_threads: Option<usize>,
    pub log_format: Option<String>,
    pub insecure_no_encryption: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub endpoint: String,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
    pub max_put_bytes: Option<u64>,
    pub checksum_uploads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key_file: PathBuf,
    pub kms_key_id: Option<String>,
    /// AWS IAM policy JSON documents; a tenant without any is denied everything.
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
    #[serde(default)]
    pub mfa_devices: Vec<RawMfaDevice>,
    /// The buckets this tenant sees, mapped onto upstream buckets and prefixes. Absent: the
    /// tenant works on upstream buckets under their own names.
    pub buckets: Option<Vec<RawBucketMap>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucketMap {
    pub name: String,
    pub upstream_bucket: String,
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMfaDevice {
    pub serial: String,
    /// Base32 TOTP secret (RFC 6238), permission-checked like every secret.
    pub secret_file: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Validated form.
// ---------------------------------------------------------------------------------------------

/// Lowest TLS version the listener accepts. Nothing older than 1.2 can be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub min_tls_version: TlsVersion,
    pub insecure_http_listen: Option<SocketAddr>,
    pub region: String,
    pub virtual_host_domain: Option<String>,
    pub max_clock_skew_secs: u64,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub body_idle_timeout_secs: u64,
    pub max_header_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub max_connections: usize,
    /// Threads that accept and serve connections, each with its own runtime and its own pool
    /// of store connections (a connection stays on the thread that accepted it).
    pub worker_threads: usize,
    pub log_format: LogFormat,
}

/// How Chmura authenticates to the upstream store.
#[derive(Debug, Clone)]
pub enum UpstreamCredentials {
    Static {
        access_key_id: String,
        secret_access_key: Secret,
    },
    /// The AWS default chain (environment variables today; see README).
    DefaultChain,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub endpoint: String,
    pub scheme: String,
    /// `host[:port]` of the endpoint.
    pub authority: String,
    /// Path prefix of the endpoint (without trailing slash), usually empty.
    pub base_path: String,
    pub region: String,
    pub path_style: bool,
    pub credentials: UpstreamCredentials,
    pub ca_file: Option<PathBuf>,
    pub timeout_secs: u64,
    /// Largest body Chmura itself writes to the store in one PUT (S3: 5 GiB); larger ones
    /// (uploads rewritten onto the grid) go up as multipart uploads.
    pub max_put_bytes: u64,
    /// Every encrypted PutObject and UploadPart carries a CRC32 of its ciphertext (an
    /// aws-chunked trailer): what AWS requires in buckets with a default Object Lock
    /// retention. Without it, only uploads with Object Lock headers carry one.
    pub checksum_uploads: bool,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Key id for this tenant's data keys (overrides the KMS default).
    pub kms_key_id: Option<String>,
    /// The tenant's IAM policies (none: everything is denied).
    pub policies: Vec<policy::Policy>,
    /// TOTP devices accepted in `x-amz-mfa`.
    pub mfa_devices: Vec<MfaDevice>,
    /// The buckets the tenant sees; `None`: upstream buckets under their own names.
    pub buckets: Option<Vec<BucketMap>>,
}

/// One bucket a tenant sees: where it lives upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketMap {
    pub name: String,
    pub upstream_bucket: String,
    /// Key prefix in the upstream bucket ("" or ending in `/`).
    pub prefix: String,
}

/// S3's bucket naming rules (the lowercase, DNS-compatible ones).
pub fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

/// What a store that normalises names (NFKC or NFKD) could make of a character, for the
/// characters whose normal form holds `.`, `/` or `\\` (38 code points: every one with
/// `any(x in unicodedata.normalize(f, c) for f in ("NFC", "NFD", "NFKC", "NFKD") for x in "./\\")`
/// in Python's `unicodedata`, Unicode 14; NFKC and NFKD agree on all of them), and for the
/// slashes and full stops that only look like one (U+2215, U+2044, U+29F8, U+3002, U+FF61).
const PATH_FORMS: &[(char, &str)] = &[
    ('\u{2024}', "."),
    ('\u{2025}', ".."),
    ('\u{2026}', "..."),
    ('\u{2100}', "a/c"),
    ('\u{2101}', "a/s"),
    ('\u{2105}', "c/o"),
    ('\u{2106}', "c/u"),
    ('\u{2488}', "1."),
    ('\u{2489}', "2."),
    ('\u{248A}', "3."),
    ('\u{248B}', "4."),
    ('\u{248C}', "5."),
    ('\u{248D}', "6."),
    ('\u{248E}', "7."),
    ('\u{248F}', "8."),
    ('\u{2490}', "9."),
    ('\u{2491}', "10."),
    ('\u{2492}', "11."),
    ('\u{2493}', "12."),
    ('\u{2494}', "13."),
    ('\u{2495}', "14."),
    ('\u{2496}', "15."),
    ('\u{2497}', "16."),
    ('\u{2498}', "17."),
    ('\u{2499}', "18."),
    ('\u{249A}', "19."),
    ('\u{249B}', "20."),
    ('\u{33C2}', "a.m."),
    ('\u{33C7}', "Co."),
    ('\u{33D8}', "p.m."),
    ('\u{FE19}', "..."),
    ('\u{FE30}', ".."),
    ('\u{FE52}', "."),
    ('\u{FE68}', "\\"),
    ('\u{FF0E}', "."),
    ('\u{FF0F}', "/"),
    ('\u{FF3C}', "\\"),
    ('\u{1F100}', "0."),
    // Look-alikes only.
    ('\u{2215}', "/"),
    ('\u{2044}', "/"),
    ('\u{29F8}', "/"),
    ('\u{3002}', "."),
    ('\u{FF61}', "."),
];

/// A key as a store that normalises names could read it (see [`PATH_FORMS`]).
fn path_form(k: &str) -> std::borrow::Cow<'_, str> {
    if !k.chars().any(|c| PATH_FORMS.iter().any(|(p, _)| *p == c)) {
        return std::borrow::Cow::Borrowed(k);
    }
    let mut out = String::with_capacity(k.len() + 8);
    for c in k.chars() {
        match PATH_FORMS.iter().find(|(p, _)| *p == c) {
            Some((_, form)) => out.push_str(form),
            None => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether a key (or key prefix) stays where it is put, as written and as a store that
/// normalises names could read it ([`path_form`]): no `.`/`..` or empty segments, no leading
/// `/`, no backslashes or control characters. ("…" stays allowed: it reads as "...", a name.)
pub fn contained_key(k: &str) -> bool {
    let plain = |k: &str| {
        !k.starts_with('/')
            && !k.contains('\\')
            && !k.chars().any(char::is_control)
            && k.split('/').enumerate().all(|(i, seg)| {
                seg != "." && seg != ".." && (!seg.is_empty() || i == k.split('/').count() - 1)
            })
    };
    plain(k) && plain(&path_form(k))
}

/// A TOTP device: its serial and decoded secret.
#[derive(Debug, Clone)]
pub struct MfaDevice {
    pub serial: String,
    pub secret: SecretBytes,
}

/// Secret bytes: zeroized on drop, never printed.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn from_bytes(b: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(b))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// RFC 4648 base32 (padding and spaces ignored, case-insensitive).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u64, 0u32);
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Where data keys come from.
#[derive(Debug, Clone)]
pub enum KmsProvider {
    /// A local keyring file (FORMAT.md §7); `key_id` defaults to its first key.
    Local {
        key_file: PathBuf,
        key_id: Option<String>,
    },
    /// AWS KMS (or a KMS-protocol server at `endpoint`).
    Aws {
        key_id: String,
        endpoint: Option<String>,
        region: String,
        /// Static credentials; `None`: the AWS default credential chain.
        credentials: Option<(String, Secret)>,
    },
}

#[derive(Debug, Clone)]
pub struct KmsConfig {
    pub provider: KmsProvider,
    /// Unwrapped data keys kept for reads: at most this many …
    pub data_key_cache_entries: usize,
    /// … for at most this long (0 disables the cache).
    pub data_key_cache_ttl_secs: u64,
    /// Objects without Chmura's envelope are returned as stored instead of refused.
    pub insecure_allow_plaintext_reads: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub tenants: Vec<Tenant>,
    /// Encryption of object bodies; `None` only with `server.insecure_no_encryption = true`.
    pub kms: Option<KmsConfig>,
    /// Where audit records go (`None`: no audit log).
    pub audit: Option<AuditConfig>,
    pub admin: Option<AdminConfig>,
    /// Folder of the config file; relative paths were resolved against it.
    pub base_dir: PathBuf,
    /// Problems that are not errors (check-config prints them).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::from_toml(&text, &base_dir)
    }

    /// Parses and validates TOML text; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_string();
            let path = e
                .span()
                .map(|s| format!("line {}", text[..s.start].lines().count().max(1)))
                .unwrap_or_else(|| "config".to_string());
            ConfigError::new(path, reason)
        })?;
        Config::validate(raw, base_dir)
    }

    fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let s = raw.server;
        let listen = parse_addr(
            "server.listen",
            s.listen.as_deref().unwrap_or("127.0.0.1:8443"),
        )?;
        let tls_cert_file = resolve(
            s.tls_cert_file
                .as_deref()
                .ok_or_else(|| ConfigError::new("server.tls_cert_file", "is required"))?,
        );
        let tls_key_file = resolve(
            s.tls_key_file
                .as_deref()
                .ok_or_else(|| ConfigError::new("server.tls_key_file", "is required"))?,
        );
        require_file("server.tls_cert_file", &tls_cert_file)?;
        require_file("server.tls_key_file", &tls_key_file)?;
        check_private("server.tls_key_file", &tls_key_file)?;
        let min_tls_version = match s.min_tls_version.as_deref().unwrap_or("1.2") {
            "1.2" => TlsVersion::V1_2,
            "1.3" => TlsVersion::V1_3,
            other => {
                return Err(ConfigError::new(
                    "server.min_tls_version",
                    format!(
                    "must be \"1.2\" or \"1.3\", not {other:?} (older versions are not supported)"
                ),
                ))
            }
        };
        let insecure_http_listen = s
            .insecure_http_listen
            .as_deref()
            .map(|a| parse_addr("server.insecure_http_listen", a))
            .transpose()?;
        let region = s.region.unwrap_or_else(|| "us-east-1".to_string());
        if region.is_empty() {
            return Err(ConfigError::new("server.region", "must not be empty"));
        }
        let virtual_host_domain = match s.virtual_host_domain {
            Some(d) if d.is_empty() || d.contains('/') || d.contains(':') => {
                return Err(ConfigError::new(
                    "server.virtual_host_domain",
                    "must be a bare domain name such as s3.example.com",
                ))
            }
            Some(d) => Some(d.to_ascii_lowercase()),
            None => None,
        };
        let log_format = match s.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "server.log_format",
                    format!("must be \"text\" or \"json\", not {other:?}"),
                ))
            }
        };
        let insecure_no_encryption = s.insecure_no_encryption.unwrap_or(false);
        let server = ServerConfig {
            listen,
            tls_cert_file,
            tls_key_file,
            min_tls_version,
            insecure_http_listen,
            region,
            virtual_host_domain,
            max_clock_skew_secs: s.max_clock_skew_secs.unwrap_or(900),
            header_read_timeout_secs: positive(
                "server.header_read_timeout_secs",
                s.header_read_timeout_secs,
                30,
            )?,
            idle_timeout_secs: positive("server.idle_timeout_secs", s.idle_timeout_secs, 60)?,
            body_idle_timeout_secs: positive(
                "server.body_idle_timeout_secs",
                s.body_idle_timeout_secs,
                60,
            )?,
            max_header_bytes: s.max_header_bytes.unwrap_or(64 * 1024).max(8 * 1024),
            shutdown_grace_secs: s.shutdown_grace_secs.unwrap_or(30),
            max_connections: s.max_connections.unwrap_or(4096).max(1),
            // Default: one per CPU.
            worker_threads: match positive(
                "server.worker_threads",
                s.worker_threads.map(|n| n as u64),
                std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            )? {
                n if n > 1024 => {
                    return Err(ConfigError::new(
                        "server.worker_threads",
                        "must be at most 1024",
                    ))
                }
                n => n as usize,
            },
            log_format,
        };

        let u = raw.upstream;
        let (scheme, rest) = u.endpoint.split_once("://").ok_or_else(|| {
            ConfigError::new(
                "upstream.endpoint",
                "must be a URL such as http://127.0.0.1:9000",
            )
        })?;
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::new(
                "upstream.endpoint",
                "scheme must be http or https",
            ));
        }
        let (authority, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || authority.contains('?') {
            return Err(ConfigError::new("upstream.endpoint", "has no valid host"));
        }
        let credentials = match (u.access_key_id, u.secret_access_key_file) {
            (Some(ak), Some(file)) => {
                let file = resolve(&file);
                UpstreamCredentials::Static {
                    access_key_id: non_empty("upstream.access_key_id", ak)?,
                    secret_access_key: read_secret("upstream.secret_access_key_file", &file)?,
                }
            }
            (None, None) => UpstreamCredentials::DefaultChain,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "upstream.secret_access_key_file",
                    "is required when upstream.access_key_id is set (omit both for the AWS default chain)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "upstream.access_key_id",
                    "is required when upstream.secret_access_key_file is set",
                ))
            }
        };
        let ca_file = u.ca_file.as_deref().map(resolve);
        if let Some(ca) = &ca_file {
            require_file("upstream.ca_file", ca)?;
        }
        let upstream = UpstreamConfig {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            base_path: base_path.to_string(),
            endpoint: u.endpoint.clone(),
            region: u.region.unwrap_or_else(|| "us-east-1".to_string()),
            path_style: u.path_style.unwrap_or(true),
            credentials,
            ca_file,
            timeout_secs: positive("upstream.timeout_secs", u.timeout_secs, 300)?,
            max_put_bytes: match u.max_put_bytes {
                Some(v) if v < 1 << 20 => {
                    return Err(ConfigError::new(
                        "upstream.max_put_bytes",
                        "must be at least 1048576 (1 MiB)",
                    ))
                }
                Some(v) => v,
                None => 5 << 30,
            },
            checksum_uploads: u.checksum_uploads.unwrap_or(false),
        };

        if raw.tenants.is_empty() {
            return Err(ConfigError::new(
                "tenants",
                "at least one [[tenants]] entry is required",
            ));
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        let mut warnings = Vec::new();
        let mut tenants = Vec::with_capacity(raw.tenants.len());
        for (i, t) in raw.tenants.into_iter().enumerate() {
            let p = |f: &str| format!("tenants[{i}].{f}");
            let name = non_empty(&p("name"), t.name)?;
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(
                    p("name"),
                    format!("duplicate tenant name {name:?}"),
                ));
            }
            let ak = non_empty(&p("access_key_id"), t.access_key_id)?;
            if !ak.bytes().all(|b| b.is_ascii_alphanumeric()) || ak.len() < 16 || ak.len() > 128 {
                return Err(ConfigError::new(
                    p("access_key_id"),
                    "must be 16 to 128 ASCII letters or digits",
                ));
            }
            if !keys.insert(ak.clone()) {
                return Err(ConfigError::new(
                    p("access_key_id"),
                    "is used by another tenant",
                ));
            }
            let secret = read_secret(
                &p("secret_access_key_file"),
                &resolve(&t.secret_access_key_file),
            )?;
            if secret.expose().len() < 16 {
                return Err(ConfigError::new(
                    p("secret_access_key_file"),
                    "the secret must be at least 16 characters",
                ));
            }
            let mut policies = Vec::new();
            for (j, f) in t.policy_files.iter().enumerate() {
                let path = p(&format!("policy_files[{j}]"));
                let file = resolve(f);
                require_file(&path, &file)?;
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| ConfigError::new(&path, format!("{}: {e}", file.display())))?;
                let parsed = policy::Policy::parse(&f.display().to_string(), &text)
                    .map_err(|e| ConfigError::new(&path, e.to_string()))?;
                warnings.extend(
                    parsed
                        .warnings()
                        .into_iter()
                        .map(|w| format!("{path}: {w}")),
                );
                policies.push(parsed);
            }
            if policies.is_empty() {
                warnings.push(format!(
                    "{}: no policy_files: tenant {name:?} is denied every request",
                    p("policy_files")
                ));
            }
            let mut mfa_devices = Vec::new();
            for (j, d) in t.mfa_devices.into_iter().enumerate() {
                let path = p(&format!("mfa_devices[{j}]"));
                let serial = non_empty(&format!("{path}.serial"), d.serial)?;
                if serial.contains(char::is_whitespace)
                    || mfa_devices.iter().any(|m: &MfaDevice| m.serial == serial)
                {
                    return Err(ConfigError::new(
                        format!("{path}.serial"),
                        "must be unique within the tenant and contain no spaces",
                    ));
                }
                let text = read_secret(&format!("{path}.secret_file"), &resolve(&d.secret_file))?;
                let bytes = base32_decode(text.expose())
                    .filter(|b| b.len() >= 10)
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{path}.secret_file"),
                            "must hold a base32 TOTP secret of at least 80 bits",
                        )
                    })?;
                mfa_devices.push(MfaDevice {
                    serial,
                    secret: SecretBytes(Zeroizing::new(bytes)),
                });
            }
            let buckets = match t.buckets {
                None => None,
                Some(list) => {
                    let mut out: Vec<BucketMap> = Vec::new();
                    for (j, b) in list.into_iter().enumerate() {
                        let path = p(&format!("buckets[{j}]"));
                        if !valid_bucket_name(&b.name) || out.iter().any(|o| o.name == b.name) {
                            return Err(ConfigError::new(
                                format!("{path}.name"),
                                "must be a valid S3 bucket name, unique within the tenant",
                            ));
                        }
                        if !valid_bucket_name(&b.upstream_bucket) {
                            return Err(ConfigError::new(
                                format!("{path}.upstream_bucket"),
                                "must be a valid S3 bucket name",
                            ));
                        }
                        let prefix = b.prefix.unwrap_or_default();
                        if !prefix.is_empty()
                            && (!prefix.ends_with('/')
                                || !contained_key(&prefix)
                                || !prefix.bytes().all(|c| {
                                    c.is_ascii_alphanumeric()
                                        || matches!(c, b'/' | b'-' | b'_' | b'.')
                                }))
                        {
                            return Err(ConfigError::new(
                                format!("{path}.prefix"),
                                "must end with '/', use only letters, digits, '/', '-', '_', '.', and contain no '.', '..' or empty segments",
                            ));
                        }
                        out.push(BucketMap {
                            name: b.name,
                            upstream_bucket: b.upstream_bucket,
                            prefix,
                        });
                    }
                    Some(out)
                }
            };
            tenants.push(Tenant {
                name,
                access_key_id: ak,
                secret_access_key: secret,
                kms_key_id: t.kms_key_id,
                policies,
                mfa_devices,
                buckets,
            });
        }
        let admin = match raw.admin {
            None => None,
            Some(a) => Some(AdminConfig {
                listen: a.listen.parse().map_err(|_| {
                    ConfigError::new("admin.listen", "must be an address like 127.0.0.1:9090")
                })?,
                metrics_token: match a.metrics_bearer_token_file {
                    Some(f) => Some(read_secret(
                        "admin.metrics_bearer_token_file",
                        &resolve(&f),
                    )?),
                    None => None,
                },
            }),
        };
        let audit = match raw.audit {
            None => None,
            Some(a) => {
                let fail_closed = match a.on_full.as_deref() {
                    None | Some("backpressure") => false,
                    Some("fail_closed") => true,
                    Some(_) => {
                        return Err(ConfigError::new(
                            "audit.on_full",
                            "must be \"backpressure\" or \"fail_closed\"",
                        ))
                    }
                };
                if a.file.is_none() && a.stdout != Some(true) {
                    return Err(ConfigError::new(
                        "audit",
                        "needs file = \"...\" and/or stdout = true",
                    ));
                }
                if raw.kms.is_none() {
                    return Err(ConfigError::new(
                        "audit",
                        "needs a [kms] section: checkpoints are signed with a key from the key provider",
                    ));
                }
                Some(AuditConfig {
                    file: a.file.map(|f| resolve(&f)),
                    stdout: a.stdout.unwrap_or(false),
                    checkpoint_every: a.checkpoint_every.unwrap_or(1000).max(1),
                    queue: a.queue.unwrap_or(65_536).max(1),
                    fail_closed,
                    max_file_bytes: a.max_file_bytes.map(|b| b.max(4096)),
                })
            }
        };
        // No two tenants may share upstream space: one's prefix must not contain the other's.
        for (i, a) in tenants.iter().enumerate() {
            for b in tenants.iter().skip(i + 1) {
                for (bi, ma) in a.buckets.iter().flatten().enumerate() {
                    for mb in b.buckets.iter().flatten() {
                        if ma.upstream_bucket == mb.upstream_bucket
                            && (ma.prefix.starts_with(&mb.prefix)
                                || mb.prefix.starts_with(&ma.prefix))
                        {
                            return Err(ConfigError::new(
                                format!("tenants[{i}].buckets[{bi}].prefix"),
                                format!(
                                    "overlaps tenant {:?}'s space in upstream bucket {:?}",
                                    b.name, mb.upstream_bucket
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for (i, t) in tenants.iter().enumerate() {
            let Some(list) = &t.buckets else { continue };
            let seen: Vec<&str> = list.iter().map(|b| b.name.as_str()).collect();
            for (j, pol) in t.policies.iter().enumerate() {
                for k in pol.allows_outside(&seen) {
                    warnings.push(format!(
                        "tenants[{i}].policy_files[{j}]: {}: Statement[{k}] allows nothing: its resources name none of the buckets {:?} sees ({}); policies name the buckets a tenant sees, not the upstream ones",
                        pol.source,
                        t.name,
                        seen.join(", ")
                    ));
                }
            }
        }
        if tenants.iter().any(|t| t.buckets.is_some()) {
            for (i, t) in tenants.iter().enumerate() {
                if t.buckets.is_none() {
                    warnings.push(format!(
                        "tenants[{i}]: {:?} has no buckets table while other tenants map buckets: it reaches any upstream bucket its policy allows, theirs included",
                        t.name
                    ));
                }
            }
        }
        let kms = match (raw.kms, insecure_no_encryption) {
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "server.insecure_no_encryption",
                    "cannot be set together with a [kms] section",
                ))
            }
            (None, true) => None,
            (None, false) => {
                return Err(ConfigError::new(
                    "kms",
                    "a [kms] section is required (provider = \"local\" with key_file from `chmura keygen`); \
                     server.insecure_no_encryption = true stores bodies unencrypted",
                ))
            }
            (Some(k), false) => {
                let provider = match k.provider.as_str() {
                    "local" => {
                        let file = resolve(
                            k.key_file
                                .as_deref()
                                .ok_or_else(|| ConfigError::new("kms.key_file", "is required for provider = \"local\""))?,
                        );
                        require_file("kms.key_file", &file)?;
                        check_private("kms.key_file", &file)?;
                        KmsProvider::Local { key_file: file, key_id: k.key_id }
                    }
                    "aws" => {
                        let key_id = k
                            .key_id
                            .clone()
                            .filter(|s| !s.trim().is_empty())
                            .ok_or_else(|| ConfigError::new("kms.key_id", "is required for provider = \"aws\""))?;
                        if let Some(e) = &k.endpoint {
                            if !(e.starts_with("http://") || e.starts_with("https://")) {
                                return Err(ConfigError::new("kms.endpoint", "must be an http:// or https:// URL"));
                            }
                        }
                        let credentials = match (k.access_key_id.clone(), k.secret_access_key_file.as_deref()) {
                            (Some(ak), Some(f)) => Some((
                                non_empty("kms.access_key_id", ak)?,
                                read_secret("kms.secret_access_key_file", &resolve(f))?,
                            )),
                            (None, None) => None,
                            _ => {
                                return Err(ConfigError::new(
                                    "kms.secret_access_key_file",
                                    "kms.access_key_id and kms.secret_access_key_file go together (omit both for the AWS default chain)",
                                ))
                            }
                        };
                        KmsProvider::Aws {
                            key_id,
                            endpoint: k.endpoint.clone(),
                            region: k.region.clone().unwrap_or_else(|| "us-east-1".to_string()),
                            credentials,
                        }
                    }
                    other => {
                        return Err(ConfigError::new(
                            "kms.provider",
                            format!("must be \"local\" or \"aws\", not {other:?}"),
                        ))
                    }
                };
                Some(KmsConfig {
                    provider,
                    data_key_cache_entries: k.data_key_cache_entries.unwrap_or(10_000),
                    data_key_cache_ttl_secs: k.data_key_cache_ttl_secs.unwrap_or(300),
                    insecure_allow_plaintext_reads: k.insecure_allow_plaintext_reads.unwrap_or(false),
                })
            }
        };
        Ok(Config {
            server,
            upstream,
            tenants,
            kms,
            audit,
            admin,
            base_dir: base_dir.to_path_buf(),
            warnings,
        })
    }
}

fn parse_addr(path: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            path,
            format!("{value:?} is not an address such as 127.0.0.1:8443"),
        )
    })
}

fn positive(path: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::new(path, "must be greater than 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn non_empty(path: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::new(path, "must not be empty"))
    } else {
        Ok(value)
    }
}

fn require_file(path: &str, file: &Path) -> Result<(), ConfigError> {
    if file.is_file() {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("file {} does not exist", file.display()),
        ))
    }
}

/// Refuses a file that group or others may read (or write).
fn check_private(path: &str, file: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(file)
            .map_err(|e| ConfigError::new(path, format!("{}: {e}", file.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::new(
                path,
                format!(
                    "{} is accessible by group or others (mode {mode:03o}); run chmod 600 on it",
                    file.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a secret file (permission-checked); surrounding whitespace is trimmed.
pub fn read_secret(path: &str, file: &Path) -> Result<Secret, ConfigError> {
    require_file(path, file)?;
    check_private(path, file)?;
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .map_err(|e| ConfigError::new(path, format!("{}: {e}", file.display())))?,
    );
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            path,
            format!("{} is empty", file.display()),
        ));
    }
    Ok(Secret::new(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "cert.pem", "x", 0o644);
        write(d.path(), "key.pem", "x", 0o600);
        write(d.path(), "up.secret", "upstreamsecret\n", 0o600);
        write(d.path(), "acme.secret", "0123456789abcdefXYZ\n", 0o600);
        write(d.path(), "ring", "keyring", 0o600);
        d
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert_file = "cert.pem"
tls_key_file = "key.pem"
region = "us-east-1"

[kms]
provider = "local"
key_file = "ring"

[upstream]
endpoint = "http://127.0.0.1:9000"
access_key_id = "minio"
secret_access_key_file = "up.secret"

[[tenants]]
name = "acme"
access_key_id = "CHMURAACME0000000001"
secret_access_key_file = "acme.secret"
"#;

    #[test]
    fn bucket_tables_are_validated_and_tenants_cannot_overlap() {
        let d = fixture();
        let two = |p1: &str, p2: &str| {
            format!(
                "{}[[tenants.buckets]]\nname = \"data\"\nupstream_bucket = \"shared\"\nprefix = \"{p1}\"\n\n[[tenants]]\nname = \"globex\"\naccess_key_id = \"CHMURAGLOBEX00000001\"\nsecret_access_key_file = \"acme.secret\"\n[[tenants.buckets]]\nname = \"data\"\nupstream_bucket = \"shared\"\nprefix = \"{p2}\"\n",
                GOOD
            )
        };
        let c = Config::from_toml(&two("acme/", "globex/"), d.path()).unwrap();
        assert_eq!(c.tenants[1].buckets.as_ref().unwrap()[0].prefix, "globex/");
        for (p1, p2) in [("acme/", "acme/sub/"), ("", "globex/"), ("x/", "x/")] {
            let e = Config::from_toml(&two(p1, p2), d.path()).unwrap_err();
            assert_eq!(e.path, "tenants[0].buckets[0].prefix", "{p1} {p2}: {e}");
        }
        let e = Config::from_toml(&two("acme", "globex/"), d.path()).unwrap_err();
        assert_eq!(e.path, "tenants[0].buckets[0].prefix");
        let e = Config::from_toml(&two("../acme/", "globex/"), d.path()).unwrap_err();
        assert_eq!(e.path, "tenants[0].buckets[0].prefix");
        // A policy naming the upstream bucket instead of the tenant's allows nothing: warned.
        std::fs::write(
            d.path().join("upstream-named.json"),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::shared/acme/*"}]}"#,
        )
        .unwrap();
        let text = two("acme/", "globex/").replacen(
            "[[tenants.buckets]]",
            "policy_files = [\"upstream-named.json\"]\n[[tenants.buckets]]",
            1,
        );
        let c = Config::from_toml(&text, d.path()).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("tenants[0].policy_files[")
                    && w.contains("Statement[0] allows nothing")
                    && w.contains("(data)")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn good_config_loads_with_relative_paths() {
        let d = fixture();
        let c = Config::from_toml(GOOD, d.path()).unwrap();
        assert_eq!(c.server.tls_cert_file, d.path().join("cert.pem"));
        assert_eq!(c.server.min_tls_version, TlsVersion::V1_2);
        assert_eq!(c.upstream.authority, "127.0.0.1:9000");
        assert_eq!(c.upstream.max_put_bytes, 5 << 30);
        let small = GOOD.replacen("[upstream]\n", "[upstream]\nmax_put_bytes = 1000\n", 1);
        assert_eq!(
            Config::from_toml(&small, d.path()).unwrap_err().path,
            "upstream.max_put_bytes"
        );
        assert_eq!(
            c.tenants[0].secret_access_key.expose(),
            "0123456789abcdefXYZ"
        );
        assert!(
            !format!("{c:?}").contains("0123456789abcdefXYZ"),
            "secrets must not print"
        );
    }

    #[test]
    fn worker_threads_default_to_the_cpus_and_refuse_zero() {
        let d = fixture();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let c = Config::from_toml(GOOD, d.path()).unwrap();
        assert_eq!(c.server.worker_threads, cpus);
        let with = |n: &str| {
            GOOD.replacen(
                "region = \"us-east-1\"\n",
                &format!("region = \"us-east-1\"\nworker_threads = {n}\n"),
                1,
            )
        };
        let c = Config::from_toml(&with("3"), d.path()).unwrap();
        assert_eq!(c.server.worker_threads, 3);
        for bad in ["0", "1025"] {
            let e = Config::from_toml(&with(bad), d.path()).unwrap_err();
            assert_eq!(e.path, "server.worker_threads", "{bad}: {e}");
        }
    }

    #[test]
    fn world_readable_secret_is_refused_with_field_path() {
        let d = fixture();
        write(d.path(), "acme.secret", "0123456789abcdefXYZ", 0o644);
        let e = Config::from_toml(GOOD, d.path()).unwrap_err();
        assert_eq!(e.path, "tenants[0].secret_access_key_file");
        assert!(e.reason.contains("chmod 600"), "{e}");
    }

    #[test]
    fn old_tls_versions_cannot_be_configured() {
        let d = fixture();
        let text = GOOD.replace(
            "tls_key_file = \"key.pem\"\n",
            "tls_key_file = \"key.pem\"\nmin_tls_version = \"1.1\"\n",
        );
        let e = Config::from_toml(&text, d.path()).unwrap_err();
        assert_eq!(e.path, "server.min_tls_version");
        let text = GOOD.replace(
            "tls_key_file = \"key.pem\"\n",
            "tls_key_file = \"key.pem\"\nmin_tls_version = \"1.3\"\n",
        );
        assert_eq!(
            Config::from_toml(&text, d.path())
                .unwrap()
                .server
                .min_tls_version,
            TlsVersion::V1_3
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let d = fixture();
        let text = GOOD.replace("[upstream]", "bogus = 1\n[upstream]");
        let e = Config::from_toml(&text, d.path()).unwrap_err();
        assert!(e.reason.contains("bogus"), "{e}");
    }

    #[test]
    fn duplicate_access_keys_are_refused() {
        let d = fixture();
        let text = format!(
            "{GOOD}\n[[tenants]]\nname = \"other\"\naccess_key_id = \"CHMURAACME0000000001\"\nsecret_access_key_file = \"acme.secret\"\n"
        );
        let e = Config::from_toml(&text, d.path()).unwrap_err();
        assert_eq!(e.path, "tenants[1].access_key_id");
    }

    #[test]
    fn half_upstream_credentials_are_refused() {
        let d = fixture();
        let text = GOOD.replace("secret_access_key_file = \"up.secret\"\n", "");
        let e = Config::from_toml(&text, d.path()).unwrap_err();
        assert_eq!(e.path, "upstream.secret_access_key_file");
        let text = GOOD
            .replace("secret_access_key_file = \"up.secret\"\n", "")
            .replace("access_key_id = \"minio\"\n", "");
        let c = Config::from_toml(&text, d.path()).unwrap();
        assert!(matches!(
            c.upstream.credentials,
            UpstreamCredentials::DefaultChain
        ));
    }

    #[test]
    fn encryption_is_required_unless_explicitly_insecure() {
        let d = fixture();
        let no_kms = GOOD.replace("[kms]\nprovider = \"local\"\nkey_file = \"ring\"\n", "");
        assert_eq!(
            Config::from_toml(&no_kms, d.path()).unwrap_err().path,
            "kms"
        );
        let text = no_kms.replace(
            "region = \"us-east-1\"\n",
            "region = \"us-east-1\"\ninsecure_no_encryption = true\n",
        );
        assert!(Config::from_toml(&text, d.path()).unwrap().kms.is_none());
        write(d.path(), "ring", "keyring", 0o644);
        assert_eq!(
            Config::from_toml(GOOD, d.path()).unwrap_err().path,
            "kms.key_file"
        );
    }

    #[test]
    fn endpoint_must_be_url() {
        let d = fixture();
        let text = GOOD.replace("http://127.0.0.1:9000", "127.0.0.1:9000");
        assert_eq!(
            Config::from_toml(&text, d.path()).unwrap_err().path,
            "upstream.endpoint"
        );
    }
}

#[cfg(test)]
mod mapping_tests {
    use super::*;

    #[test]
    fn keys_that_could_leave_their_prefix_are_refused() {
        for ok in ["a", "a/b", "dir/", "a.b/c..d", "ü/日本", "a b/c"] {
            assert!(contained_key(ok), "{ok:?}");
        }
        for bad in [
            "../x",
            "a/../b",
            "a/./b",
            "/a",
            "a//b",
            "..",
            ".",
            "a\\b",
            "a\u{FF0F}..",
            "..\u{2215}..\u{2215}b",
            "a/\u{FF0E}\u{FF0E}/b",
            "a\u{0}b",
            "a\nb",
            // Normalised: "../../globex", "../x", "x/./y", "a//b", "/x", "a\\b".
            "\u{2025}/\u{2025}/globex",
            "\u{FE30}/x",
            "x/\u{FE52}/y",
            "a\u{2100}/\u{FF0F}b",
            "\u{FF0F}x",
            "a\u{FE68}b",
        ] {
            assert!(!contained_key(bad), "{bad:?}");
        }
        // Names that stay names when normalised: "…" is "...", "⒈" is "1.", "℀" is "a/c".
        for ok in [
            "a/Chapter 1\u{2026}.txt",
            "\u{2026}",
            "list/\u{2488} first",
            "notes \u{33C2}.txt",
            "x/\u{2100}",
            "\u{2105}/y",
            "a\u{2215}b",
        ] {
            assert!(contained_key(ok), "{ok:?}");
        }
        assert_eq!(PATH_FORMS.len(), 38 + 5);
    }

    #[test]
    fn bucket_names() {
        assert!(valid_bucket_name("acme-data"));
        assert!(valid_bucket_name("a.b-c"));
        for bad in ["ab", "Acme", "-ab", "ab-", "a..b", "a_b", &"a".repeat(64)] {
            assert!(!valid_bucket_name(bad), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod deploy_examples {
    /// The shipped examples use the contract's field names (files they name are not on this machine).
    #[test]
    fn deploy_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chmura.example.toml");
        let text = std::fs::read_to_string(path).expect("example exists");
        let raw: super::RawConfig = toml::from_str(&text).expect("example parses");
        assert_eq!(raw.tenants.len(), 1);
        assert_eq!(raw.server.min_tls_version.as_deref(), Some("1.2"));
        assert_eq!(raw.tenants[0].policy_files.len(), 1);
        assert_eq!(raw.tenants[0].mfa_devices.len(), 1);
    }

    #[test]
    fn example_policy_parses_without_warnings() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policies/acme.json");
        let text = std::fs::read_to_string(path).expect("example policy");
        let p = crate::policy::Policy::parse("acme.json", &text).expect("parses");
        assert_eq!(p.statements.len(), 4);
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    }
}
