//! Key providers: where per-object data keys come from and how wrapped keys are opened.
//! The local keyring (FORMAT.md §7) or AWS KMS (`aws-sdk-kms`; any KMS-protocol server with
//! `kms.endpoint`). Unwrapped keys are cached for reads (bounded, with a TTL); writes ask the
//! provider for a fresh data key per object. Any provider failure fails the request closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use chmura_config::{KmsConfig, KmsProvider, Tenant};
use chmura_crypto::envelope::{DataKey, EncryptionContext, Keyring};
use zeroize::Zeroizing;

use crate::error::S3Error;

enum Backend {
    Local(Keyring),
    Aws(aws_sdk_kms::Client),
}

/// Calls made to the provider, and cache behaviour (reported by tests and benches; metrics
/// come with issue 6).
#[derive(Default)]
pub struct KmsStats {
    pub generate_calls: AtomicU64,
    pub decrypt_calls: AtomicU64,
    /// Encrypt calls: an existing data key wrapped for a new context (copies, rekey).
    pub wrap_calls: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub failures: AtomicU64,
    /// Provider call latency, by operation (registered by `metrics::Metrics`).
    pub latency: std::sync::OnceLock<prometheus::HistogramVec>,
    /// Unix seconds of the last successful provider call: readiness.
    pub last_ok: std::sync::atomic::AtomicI64,
    /// Failed provider calls, by operation (registered by `metrics::Metrics`).
    pub errors: std::sync::OnceLock<prometheus::IntCounterVec>,
}

struct Cached {
    key: DataKey,
    at: Instant,
}

pub struct Kms {
    backend: Backend,
    default_key_id: String,
    pub allow_plaintext_reads: bool,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    cache_entries: usize,
    cache_ttl: Duration,
    pub stats: KmsStats,
}

fn unavailable(detail: String) -> S3Error {
    S3Error::new(
        "ServiceUnavailable",
        "The key management service is unavailable; nothing was written. Please try again.",
    )
    .with_detail(detail)
}

impl Kms {
    pub async fn from_config(cfg: &KmsConfig) -> Result<Kms, String> {
        let (backend, default_key_id) = match &cfg.provider {
            KmsProvider::Local { key_file, key_id } => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(key_file)
                        .map_err(|e| format!("kms.key_file {}: {e}", key_file.display()))?,
                );
                let keyring = Keyring::parse(&text)
                    .map_err(|e| format!("kms.key_file {}: {e}", key_file.display()))?;
                let id = key_id
                    .clone()
                    .unwrap_or_else(|| keyring.default_key_id().to_string());
                if !keyring.has_key(&id) {
                    return Err(format!("kms.key_id: {id:?} is not in the keyring"));
                }
                (Backend::Local(keyring), id)
            }
            KmsProvider::Aws {
                key_id,
                endpoint,
                region,
                credentials,
            } => {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(region.clone()));
                if let Some((ak, sk)) = credentials {
                    loader = loader.credentials_provider(aws_sdk_kms::config::Credentials::new(
                        ak.clone(),
                        sk.expose().to_string(),
                        None,
                        None,
                        "chmura-config",
                    ));
                }
                let shared = loader.load().await;
                let mut conf = aws_sdk_kms::config::Builder::from(&shared)
                    .timeout_config(
                        aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                            .operation_timeout(Duration::from_secs(10))
                            .connect_timeout(Duration::from_secs(3))
                            .build(),
                    )
                    .retry_config(
                        aws_sdk_kms::config::retry::RetryConfig::standard().with_max_attempts(2),
                    );
                if let Some(e) = endpoint {
                    conf = conf.endpoint_url(e);
                }
                (
                    Backend::Aws(aws_sdk_kms::Client::from_conf(conf.build())),
                    key_id.clone(),
                )
            }
        };
        Ok(Kms {
            backend,
            default_key_id,
            allow_plaintext_reads: cfg.insecure_allow_plaintext_reads,
            cache: Mutex::new(HashMap::new()),
            cache_entries: cfg.data_key_cache_entries,
            cache_ttl: Duration::from_secs(cfg.data_key_cache_ttl_secs),
            stats: KmsStats::default(),
        })
    }

    /// Checks that every tenant's keyring key exists (at startup, so a typo fails early).
    pub fn check_tenants(&self, tenants: &[Tenant]) -> Result<(), String> {
        if let Backend::Local(keyring) = &self.backend {
            for t in tenants {
                if let Some(id) = &t.kms_key_id {
                    if !keyring.has_key(id) {
                        return Err(format!(
                            "tenant {:?}: kms_key_id {id:?} is not in the keyring",
                            t.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the provider answers (readiness), without counting as a data-key call: a
    /// data key for the context `{chmura:purpose=probe}` is asked for and thrown away.
    pub async fn probe(&self) {
        let ok = match &self.backend {
            Backend::Local(_) => true,
            Backend::Aws(client) => client
                .generate_data_key()
                .key_id(&self.default_key_id)
                .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                .encryption_context("chmura:purpose", "probe")
                .send()
                .await
                .is_ok(),
        };
        if ok {
            self.stats
                .last_ok
                .store(crate::metrics::unix_now(), Ordering::Relaxed);
        }
    }

    /// Calls and cache behaviour so far.
    pub fn stats(&self) -> &KmsStats {
        &self.stats
    }

    /// The provider's default key (new data keys of tenants without their own).
    pub fn default_key_id(&self) -> &str {
        &self.default_key_id
    }

    pub fn key_id_for<'a>(&'a self, tenant: &'a Tenant) -> &'a str {
        tenant.kms_key_id.as_deref().unwrap_or(&self.default_key_id)
    }

    /// A fresh data key and its wrapped form, bound to `ctx`.
    pub async fn generate(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<(DataKey, Vec<u8>), S3Error> {
        self.stats.generate_calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = match &self.backend {
            Backend::Local(k) => k
                .generate_data_key(key_id, ctx)
                .map_err(|e| unavailable(format!("keyring generate: {e}"))),
            Backend::Aws(client) => {
                let out = client
                    .generate_data_key()
                    .key_id(key_id)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .set_encryption_context(Some(ctx.0.clone().into_iter().collect()))
                    .send()
                    .await
                    .map_err(|e| {
                        unavailable(format!(
                            "kms GenerateDataKey: {}",
                            aws_sdk_kms::error::DisplayErrorContext(&e)
                        ))
                    })?;
                let plain = out
                    .plaintext
                    .ok_or_else(|| unavailable("kms GenerateDataKey: no plaintext".into()))?;
                let wrapped = out
                    .ciphertext_blob
                    .ok_or_else(|| unavailable("kms GenerateDataKey: no ciphertext".into()))?;
                let bytes = Zeroizing::new(plain.into_inner());
                if bytes.len() != 32 {
                    return Err(unavailable(format!(
                        "kms GenerateDataKey: {}-byte key",
                        bytes.len()
                    )));
                }
                let mut dk: DataKey = Zeroizing::new([0u8; 32]);
                dk.copy_from_slice(&bytes);
                Ok((dk, wrapped.into_inner()))
            }
        };
        self.observe("GenerateDataKey", started, r.is_ok());
        if r.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Wraps an existing data key under `key_id` for `ctx` (copies: the body stays, the key
    /// is bound to its new bucket and key).
    pub async fn wrap(
        &self,
        key_id: &str,
        dk: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, S3Error> {
        self.stats.wrap_calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = match &self.backend {
            Backend::Local(k) => k
                .wrap(key_id, dk, ctx, chmura_crypto::keys::random::<12>())
                .map_err(|e| unavailable(format!("keyring wrap: {e}"))),
            Backend::Aws(client) => client
                .encrypt()
                .key_id(key_id)
                .plaintext(aws_sdk_kms::primitives::Blob::new(dk.to_vec()))
                .set_encryption_context(Some(ctx.0.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| {
                    unavailable(format!(
                        "kms Encrypt: {}",
                        aws_sdk_kms::error::DisplayErrorContext(&e)
                    ))
                })
                .and_then(|out| {
                    out.ciphertext_blob
                        .map(|b| b.into_inner())
                        .ok_or_else(|| unavailable("kms Encrypt: no ciphertext".into()))
                }),
        };
        self.observe("Encrypt", started, r.is_ok());
        if r.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Opens a wrapped data key for `ctx`. A refusal means the object was moved, copied or
    /// altered in the store (or the key is gone): an integrity failure, never plaintext.
    pub async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, S3Error> {
        let id = cache_id(wrapped, ctx);
        if let Some(k) = self.cached(&id) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(k);
        }
        self.stats.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let integrity = |detail: String| {
            S3Error::new(
                "AccessDenied",
                "The object's data key does not open for this bucket and key; the stored object may have been copied or altered.",
            )
            .with_detail(format!("integrity: {detail}"))
        };
        let r = match &self.backend {
            Backend::Local(k) => k
                .unwrap(wrapped, ctx)
                .map_err(|e| integrity(format!("keyring unwrap: {e}"))),
            Backend::Aws(client) => {
                let res = client
                    .decrypt()
                    .key_id(key_id)
                    .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped.to_vec()))
                    .set_encryption_context(Some(ctx.0.clone().into_iter().collect()))
                    .send()
                    .await;
                match res {
                    Ok(out) => {
                        let bytes = Zeroizing::new(
                            out.plaintext.map(|b| b.into_inner()).unwrap_or_default(),
                        );
                        if bytes.len() != 32 {
                            Err(integrity(format!(
                                "kms Decrypt returned {} bytes",
                                bytes.len()
                            )))
                        } else {
                            let mut dk: DataKey = Zeroizing::new([0u8; 32]);
                            dk.copy_from_slice(&bytes);
                            Ok(dk)
                        }
                    }
                    Err(e) => {
                        let refused = e.as_service_error().is_some_and(|s| {
                            s.is_invalid_ciphertext_exception()
                                || s.is_incorrect_key_exception()
                                || s.is_not_found_exception()
                        });
                        let detail = format!(
                            "kms Decrypt: {}",
                            aws_sdk_kms::error::DisplayErrorContext(&e)
                        );
                        if refused {
                            Err(integrity(detail))
                        } else {
                            Err(S3Error::new(
                                "ServiceUnavailable",
                                "The key management service is unavailable. Please try again.",
                            )
                            .with_detail(detail))
                        }
                    }
                }
            }
        };
        self.observe("Decrypt", started, r.is_ok());
        match &r {
            Ok(k) => self.remember(id, k),
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    fn observe(&self, op: &str, started: Instant, ok: bool) {
        if ok {
            self.stats
                .last_ok
                .store(crate::metrics::unix_now(), Ordering::Relaxed);
        } else if let Some(e) = self.stats.errors.get() {
            e.with_label_values(&[op]).inc();
        }
        if let Some(h) = self.stats.latency.get() {
            h.with_label_values(&[op])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn cached(&self, id: &[u8; 32]) -> Option<DataKey> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        let mut c = self.cache.lock().ok()?;
        match c.get(id) {
            Some(e) if e.at.elapsed() < self.cache_ttl => Some(e.key.clone()),
            Some(_) => {
                c.remove(id);
                None
            }
            None => None,
        }
    }

    fn remember(&self, id: [u8; 32], key: &DataKey) {
        if self.cache_ttl.is_zero() || self.cache_entries == 0 {
            return;
        }
        let Ok(mut c) = self.cache.lock() else { return };
        if c.len() >= self.cache_entries {
            // Drop expired entries, then the oldest one if still full.
            let ttl = self.cache_ttl;
            c.retain(|_, e| e.at.elapsed() < ttl);
            if c.len() >= self.cache_entries {
                if let Some(oldest) = c.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| *k) {
                    c.remove(&oldest);
                    self.stats.cache_evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        c.insert(
            id,
            Cached {
                key: key.clone(),
                at: Instant::now(),
            },
        );
    }
}

/// Cache key: SHA-256 over the wrapped key and the canonical context, so a cached key is only
/// ever returned for the exact (wrapped key, context) pair that the provider accepted.
fn cache_id(wrapped: &[u8], ctx: &EncryptionContext) -> [u8; 32] {
    let mut d = digest::Context::new(&digest::SHA256);
    d.update(&(wrapped.len() as u64).to_be_bytes());
    d.update(wrapped);
    d.update(&ctx.canonical());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}

/// The encryption context of an object (FORMAT.md §6).
pub fn context(tenant: &str, upstream_bucket: &str, upstream_key: &str) -> EncryptionContext {
    EncryptionContext::new([
        ("chmura:tenant", tenant),
        ("chmura:bucket", upstream_bucket),
        ("chmura:key", upstream_key),
    ])
}
