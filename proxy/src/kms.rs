//! Key providers: where per-object data keys come from and how wrapped keys are opened.
//! Today the local keyring (FORMAT.md §7); AWS KMS joins behind the same two calls.

use chmura_config::{KmsConfig, KmsProvider, Tenant};
use chmura_crypto::envelope::{DataKey, EncryptionContext, Keyring};

use crate::error::S3Error;

pub struct Kms {
    keyring: Keyring,
    default_key_id: String,
    pub allow_plaintext_reads: bool,
}

impl Kms {
    pub fn from_config(cfg: &KmsConfig) -> Result<Kms, String> {
        match &cfg.provider {
            KmsProvider::Local { key_file, key_id } => {
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(key_file)
                        .map_err(|e| format!("kms.key_file {}: {e}", key_file.display()))?,
                );
                let keyring = Keyring::parse(&text)
                    .map_err(|e| format!("kms.key_file {}: {e}", key_file.display()))?;
                let default_key_id = key_id
                    .clone()
                    .unwrap_or_else(|| keyring.default_key_id().to_string());
                if !keyring.has_key(&default_key_id) {
                    return Err(format!(
                        "kms.key_id: {default_key_id:?} is not in the keyring"
                    ));
                }
                Ok(Kms {
                    keyring,
                    default_key_id,
                    allow_plaintext_reads: cfg.insecure_allow_plaintext_reads,
                })
            }
        }
    }

    /// Checks that every tenant's key exists (at startup, so a typo fails early).
    pub fn check_tenants(&self, tenants: &[Tenant]) -> Result<(), String> {
        for t in tenants {
            if let Some(id) = &t.kms_key_id {
                if !self.keyring.has_key(id) {
                    return Err(format!(
                        "tenant {:?}: kms_key_id {id:?} is not in the keyring",
                        t.name
                    ));
                }
            }
        }
        Ok(())
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
        self.keyring.generate_data_key(key_id, ctx).map_err(|e| {
            S3Error::new(
                "ServiceUnavailable",
                "The key provider could not issue a data key; nothing was written.",
            )
            .with_detail(format!("keyring generate: {e}"))
        })
    }

    /// Opens a wrapped data key for `ctx`. A failure means the object was moved, copied or
    /// altered in the store (or the key is gone): an integrity failure, never plaintext.
    pub async fn decrypt(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, S3Error> {
        self.keyring.unwrap(wrapped, ctx).map_err(|e| {
            S3Error::new(
                "AccessDenied",
                "The object's data key does not open for this bucket and key; the stored object may have been copied or altered.",
            )
            .with_detail(format!("integrity: keyring unwrap: {e}"))
        })
    }
}

/// The encryption context of an object (FORMAT.md §6).
pub fn context(tenant: &str, upstream_bucket: &str, upstream_key: &str) -> EncryptionContext {
    EncryptionContext::new([
        ("chmura:tenant", tenant),
        ("chmura:bucket", upstream_bucket),
        ("chmura:key", upstream_key),
    ])
}
