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

/// Unwrapped data keys by cache id, bounded in entries and age. Entries are kept in insertion
/// order beside the map, so expiry and eviction take the oldest first in O(1) per entry (a
/// scan of the whole map on every insert once full cost a fifth of Chmura's CPU on reads of
/// many distinct objects).
struct KeyCache {
    map: HashMap<[u8; 32], Cached>,
    order: std::collections::VecDeque<([u8; 32], Instant)>,
    entries: usize,
    ttl: Duration,
}

impl KeyCache {
    fn new(entries: usize, ttl: Duration) -> Self {
        KeyCache {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            entries,
            ttl,
        }
    }

    fn get(&mut self, id: &[u8; 32], now: Instant) -> Option<DataKey> {
        match self.map.get(id) {
            Some(e) if now.saturating_duration_since(e.at) < self.ttl => Some(e.key.clone()),
            Some(_) => {
                self.map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Inserts `key`; returns how many live entries were evicted to make room.
    fn insert(&mut self, id: [u8; 32], key: &DataKey, now: Instant) -> u64 {
        if self.ttl.is_zero() || self.entries == 0 {
            return 0;
        }
        let mut evicted = 0;
        while let Some((old, at)) = self.order.front().copied() {
            let expired = now.saturating_duration_since(at) >= self.ttl;
            // An order entry whose map entry was replaced or removed is stale.
            let current = self.map.get(&old).is_some_and(|e| e.at == at);
            let full = self.map.len() >= self.entries && !self.map.contains_key(&id);
            if current && !expired && !full {
                break;
            }
            self.order.pop_front();
            if current {
                self.map.remove(&old);
                if !expired {
                    evicted += 1;
                }
            }
        }
        self.map.insert(
            id,
            Cached {
                key: key.clone(),
                at: now,
            },
        );
        self.order.push_back((id, now));
        evicted
    }
}

pub struct Kms {
    backend: Backend,
    default_key_id: String,
    pub allow_plaintext_reads: bool,
    cache: Mutex<KeyCache>,
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
            cache: Mutex::new(KeyCache::new(
                cfg.data_key_cache_entries,
                Duration::from_secs(cfg.data_key_cache_ttl_secs),
            )),
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
                "The object's data key does not open for this tenant, bucket and key: the object was written by another tenant, or copied or altered in the store.",
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
        self.cache.lock().ok()?.get(id, Instant::now())
    }

    fn remember(&self, id: [u8; 32], key: &DataKey) {
        let Ok(mut c) = self.cache.lock() else { return };
        let evicted = c.insert(id, key, Instant::now());
        self.stats
            .cache_evictions
            .fetch_add(evicted, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> DataKey {
        Zeroizing::new([b; 32])
    }

    #[test]
    fn key_cache_expires_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = KeyCache::new(3, Duration::from_secs(10));
        for i in 0..3u8 {
            assert_eq!(c.insert([i; 32], &key(i), t0 + s * u32::from(i)), 0);
        }
        assert_eq!(c.get(&[0; 32], t0 + s * 3).as_deref(), Some(&[0u8; 32]));
        // Full: the oldest entry makes room.
        assert_eq!(c.insert([3; 32], &key(3), t0 + s * 3), 1);
        assert!(c.get(&[0; 32], t0 + s * 3).is_none());
        assert!(c.get(&[1; 32], t0 + s * 3).is_some());
        // Replacing an entry evicts nothing; its old place in the order is skipped later.
        assert_eq!(c.insert([1; 32], &key(9), t0 + s * 4), 0);
        assert_eq!(c.get(&[1; 32], t0 + s * 4).as_deref(), Some(&[9u8; 32]));
        assert_eq!(c.insert([4; 32], &key(4), t0 + s * 5), 1, "entry 2 goes");
        assert!(c.get(&[2; 32], t0 + s * 5).is_none());
        assert!(
            c.get(&[1; 32], t0 + s * 5).is_some(),
            "the replaced entry stays"
        );
        // Expired entries are dropped, not counted as evictions.
        assert!(c.get(&[3; 32], t0 + s * 13).is_none());
        assert_eq!(c.insert([5; 32], &key(5), t0 + s * 20), 0);
        assert_eq!(c.map.len(), 1);
        assert!(c.order.len() <= 2);
        // A cache of size zero keeps nothing.
        let mut z = KeyCache::new(0, Duration::from_secs(10));
        z.insert([1; 32], &key(1), t0);
        assert!(z.get(&[1; 32], t0).is_none());
    }

    #[test]
    fn key_cache_stays_bounded_under_many_distinct_keys() {
        let t0 = Instant::now();
        let mut c = KeyCache::new(100, Duration::from_secs(600));
        let mut evicted = 0;
        for i in 0..10_000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            evicted += c.insert(id, &key(1), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(c.map.len(), 100);
        assert_eq!(c.order.len(), 100);
        assert_eq!(evicted, 9_900);
    }
}
