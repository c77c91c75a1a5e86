//! Chmura: an S3-compatible reverse proxy that verifies every client signature, re-signs for the
//! upstream store and streams bodies through verifying (and, from issue 3, encrypting) adapters.
//!
//! Read [`handler::handle`] top to bottom for the request pipeline; ARCHITECTURE.md has the map.

pub mod access;
pub mod audit;
pub mod auth;
pub mod body;
pub mod checksum;
pub mod chunked;
pub mod cktag;
pub mod cors;
pub mod error;
pub mod etag;
pub mod handler;
pub mod kms;
pub mod mapping;
pub mod metrics;
pub mod multipart;
pub mod ops;
pub mod post;
pub mod rekey;
pub mod seal;
pub mod server;
pub mod sigv4;
pub mod ssec;
pub mod upstream;
pub mod validate;

use chmura_config::Config;

pub use server::{serve, Listeners};

/// Everything a request needs, built once from the config.
pub struct State {
    pub config: Config,
    pub tenants: auth::TenantIndex,
    pub upstream: upstream::Upstream,
    /// Key provider; `None` only with `server.insecure_no_encryption`.
    pub kms: Option<kms::Kms>,
    /// MFA codes already used (per process).
    pub mfa: access::MfaReplay,
    /// The audit log, when configured.
    pub audit: Option<audit::Audit>,
    /// Prometheus metrics, in this state's own registry.
    pub metrics: metrics::Metrics,
    pub metrics_token: Option<chmura_config::Secret>,
    /// Buckets' CORS configurations, read from the store (cors.rs).
    pub cors: cors::Cache,
}

impl State {
    /// Builds the state; async because a KMS provider loads its credential chain.
    pub async fn new(config: Config) -> Result<State, String> {
        let kms = match &config.kms {
            Some(k) => {
                let kms = kms::Kms::from_config(k).await?;
                kms.check_tenants(&config.tenants)?;
                Some(kms)
            }
            None => None,
        };
        let audit = match (&config.audit, &kms) {
            (Some(a), Some(k)) => {
                let kid = k.default_key_id().to_string();
                let (dk, wrapped) = k
                    .generate(&kid, &audit::key_context())
                    .await
                    .map_err(|e| format!("audit key: {e}"))?;
                Some(audit::Audit::start(a, &kid, dk, wrapped)?)
            }
            _ => None,
        };
        let config_admin_token = config.admin.as_ref().and_then(|a| a.metrics_token.clone());
        let upstream =
            upstream::Upstream::new(&config.upstream, config.server.worker_threads).await?;
        let metrics =
            metrics::Metrics::new_with(prometheus::Registry::new(), &upstream, kms.as_ref());
        Ok(State {
            tenants: auth::TenantIndex::new(&config.tenants),
            upstream,
            kms,
            config,
            mfa: access::MfaReplay::default(),
            audit,
            metrics,
            metrics_token: config_admin_token,
            cors: cors::Cache::default(),
        })
    }
}

/// Installs the aws-lc-rs provider as rustls's process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
