//! `chmura-dev-store --dir DIR [--port 9000] [--listen ADDR] [--tls] [--write-config]`: the
//! quickstart's local S3 store on disk.
//!
//! Writes (once) a test CA and server certificate, tenant and upstream secrets, and a
//! `chmura.toml` into DIR, then serves an `s3s-fs` store (which verifies SigV4) from DIR/store
//! on 127.0.0.1:PORT until interrupted. With `--tls` the store speaks HTTPS with the same test
//! certificate (as a real S3 does), and a new `chmura.toml` trusts it through `ca_file`.
//! `--write-config` writes the files and exits (the quickstart then starts moto_server on
//! PORT instead).

use std::path::PathBuf;

use chmura_tests::{
    write_private, Store, TestCerts, TENANT_AK, TENANT_SK, UPSTREAM_AK, UPSTREAM_SK,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let dir = PathBuf::from(get("--dir").unwrap_or_else(|| ".chmura-dev".into()));
    let port: u16 = get("--port").and_then(|p| p.parse().ok()).unwrap_or(9000);
    let listen = get("--listen").unwrap_or_else(|| "127.0.0.1:8443".into());
    let tls = args.iter().any(|a| a == "--tls");
    let upstream = if tls {
        format!("endpoint = \"https://localhost:{port}\"\nca_file = \"ca.pem\"")
    } else {
        format!("endpoint = \"http://127.0.0.1:{port}\"")
    };
    std::fs::create_dir_all(&dir).expect("create dir");
    let config = dir.join("chmura.toml");
    if !config.exists() {
        TestCerts::generate(&dir);
        write_private(&dir.join("tenant.secret"), TENANT_SK);
        write_private(&dir.join("upstream.secret"), UPSTREAM_SK);
        std::fs::write(dir.join("dev-policy.json"), chmura_tests::ALLOW_ALL_POLICY)
            .expect("policy");
        write_private(
            &dir.join("chmura.keyring"),
            &chmura_crypto::envelope::Keyring::generate("main").expect("keyring"),
        );
        std::fs::write(
            &config,
            format!(
                r#"# Written by chmura-dev-store for the quickstart. Not for production: the secrets are fixed.
[server]
listen = "{listen}"
tls_cert_file = "cert.pem"
tls_key_file = "key.pem"
region = "us-east-1"

[kms]
provider = "local"
key_file = "chmura.keyring"

[upstream]
{upstream}
region = "us-east-1"
path_style = true
access_key_id = "{UPSTREAM_AK}"
secret_access_key_file = "upstream.secret"

[[tenants]]
name = "dev"
access_key_id = "{TENANT_AK}"
secret_access_key_file = "tenant.secret"
policy_files = ["dev-policy.json"]
"#
            ),
        )
        .expect("write config");
    } else {
        // A folder from before tenants needed a policy: give the dev tenant its allow-all one
        // (the tenant is the config's last table).
        let text = std::fs::read_to_string(&config).expect("read config");
        let wanted = if tls {
            "endpoint = \"https://"
        } else {
            "endpoint = \"http://"
        };
        if !text.contains(wanted) {
            eprintln!(
                "chmura-dev-store: {} was written for a store {} TLS; its [upstream] endpoint no longer matches (remove the folder to start over)",
                config.display(),
                if tls { "without" } else { "with" }
            );
        }
        if !text.contains("policy_files") {
            std::fs::write(dir.join("dev-policy.json"), chmura_tests::ALLOW_ALL_POLICY)
                .expect("policy");
            std::fs::write(
                &config,
                format!(
                    "{}\npolicy_files = [\"dev-policy.json\"]\n",
                    text.trim_end()
                ),
            )
            .expect("write config");
        }
    }
    if args.iter().any(|a| a == "--write-config") {
        // The quickstart with another store on PORT (moto_server) needs only the files.
        return;
    }
    let store = if tls {
        let certs = chmura_tests::TestCerts::load(&dir);
        Store::start_tls_on(&dir.join("store"), ("127.0.0.1", port), &certs).await
    } else {
        Store::start_on(&dir.join("store"), ("127.0.0.1", port)).await
    };
    eprintln!(
        "chmura-dev-store: s3s-fs serving {} on {}",
        dir.join("store").display(),
        store.endpoint()
    );
    let _ = tokio::signal::ctrl_c().await;
}
