//! The `chmura` binary itself: keygen, check-config, and serve (with upstream credentials from
//! the AWS default chain, SIGTERM → exit 0).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::{
    write_private, Store, TestCerts, TENANT_AK, TENANT_SK, UPSTREAM_AK, UPSTREAM_SK,
};

#[test]
fn keygen_writes_a_private_keyring_once() {
    let bin = chmura_tests::chmura_bin();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("ring");
    let st = Command::new(&bin)
        .args(["keygen", "--output"])
        .arg(&out)
        .args(["--id", "k1"])
        .status()
        .expect("run");
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&out).expect("read");
    assert!(chmura_crypto::envelope::Keyring::parse(&text)
        .expect("parses")
        .has_key("k1"));
    let again = Command::new(&bin)
        .args(["keygen", "--output"])
        .arg(&out)
        .status()
        .expect("run");
    assert!(!again.success(), "keygen must not overwrite a keyring");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), text);
}

fn write_config(
    dir: &std::path::Path,
    listen: &str,
    upstream: &str,
    with_upstream_keys: bool,
) -> PathBuf {
    TestCerts::generate(dir);
    write_private(&dir.join("tenant.secret"), TENANT_SK);
    write_private(&dir.join("upstream.secret"), UPSTREAM_SK);
    write_private(
        &dir.join("chmura.keyring"),
        &chmura_crypto::envelope::Keyring::generate("main").expect("ring"),
    );
    let keys = if with_upstream_keys {
        format!("access_key_id = \"{UPSTREAM_AK}\"\nsecret_access_key_file = \"upstream.secret\"\n")
    } else {
        String::new()
    };
    let cfg = dir.join("chmura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{listen}\"\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\n\n[kms]\nprovider = \"local\"\nkey_file = \"chmura.keyring\"\n\n[upstream]\nendpoint = \"{upstream}\"\n{keys}\n[[tenants]]\nname = \"t\"\naccess_key_id = \"{TENANT_AK}\"\nsecret_access_key_file = \"tenant.secret\"\npolicy_files = [\"policy.json\"]\n"
        ),
    )
    .expect("config");
    std::fs::write(dir.join("policy.json"), chmura_tests::ALLOW_ALL_POLICY).expect("policy");
    cfg
}

#[test]
fn check_config_names_the_field_and_fails() {
    let bin = chmura_tests::chmura_bin();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "127.0.0.1:0", "http://127.0.0.1:9", true);
    let ok = Command::new(&bin)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("tenant.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let bad = Command::new(&bin)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("tenants[0].secret_access_key_file") && err.contains("chmod 600"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_with_default_chain_credentials_and_sigterm() {
    let bin = chmura_tests::chmura_bin();
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::start(&dir.path().join("store")).await;
    std::fs::create_dir_all(dir.path().join("store").join("cli-bucket")).expect("bucket");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = write_config(
        &dir.path().join("proxy").tap_mkdir(),
        &format!("127.0.0.1:{port}"),
        &store.endpoint(),
        false,
    );
    // Service logs as JSON lines, to find the request's line by its request id below.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replacen("[server]\n", "[server]\nlog_format = \"json\"\n", 1),
    )
    .expect("config");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    // Upstream credentials only from the environment of the child (the AWS default chain).
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_clear()
        .env("HOME", &home)
        .env("AWS_ACCESS_KEY_ID", UPSTREAM_AK)
        .env("AWS_SECRET_ACCESS_KEY", UPSTREAM_SK)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CHMURA_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        let _ = child.kill();
        panic!("chmura serve did not start");
    }
    let ca = std::fs::read_to_string(dir.path().join("proxy").join("ca.pem")).expect("ca");
    let s3 = chmura_tests::sdk_client(
        &format!("https://localhost:{port}"),
        Some(&ca),
        TENANT_AK,
        TENANT_SK,
    );
    let put = s3
        .put_object()
        .bucket("cli-bucket")
        .key("k")
        .body(ByteStream::from_static(b"via the chain"))
        .send()
        .await;
    // A request refused before its tenant is known (unknown access key), over the same TLS.
    let refused = chmura_tests::sdk_client(
        &format!("https://localhost:{port}"),
        Some(&ca),
        "CHMURAUNKNOWN0000001",
        TENANT_SK,
    )
    .get_object()
    .bucket("cli-bucket")
    .key("k")
    .send()
    .await
    .expect_err("unknown access key refused");
    let refused_id = refused
        .raw_response()
        .and_then(|r| r.headers().get("x-amz-request-id"))
        .expect("x-amz-request-id on the refusal")
        .to_string();
    // SIGTERM: drain and exit 0.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let put =
        put.expect("put signed upstream with chain credentials (s3s-fs checks the signature)");
    assert!(out.status.success(), "exit status {:?}", out.status);
    // The service log line of the request is JSON and carries the id the client saw.
    let request_id = {
        use aws_sdk_s3::operation::RequestId;
        put.request_id().expect("x-amz-request-id").to_string()
    };
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line_of = |id: &str| {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v.pointer("/fields/request_id").and_then(|r| r.as_str()) == Some(id)
                    && v.pointer("/fields/status").is_some()
            })
            .unwrap_or_else(|| panic!("no JSON log line with request_id {id}:\n{logs}"))
    };
    let line = line_of(&request_id);
    assert_eq!(line["fields"]["op"], "PutObject", "{line}");
    assert_eq!(line["fields"]["tls"], true, "{line}");
    // The refused request's line says how it came, too.
    let line = line_of(&refused_id);
    assert_eq!(line["fields"]["op"], "GetObject", "{line}");
    assert_eq!(line["fields"]["status"], 403, "{line}");
    assert_eq!(line["fields"]["tls"], true, "{line}");
    assert_eq!(
        store.stored("cli-bucket", "k").map(|v| v.len() as u64),
        Some(chmura_crypto::layout::ciphertext_len(13))
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

#[test]
fn check_config_reports_policy_errors_and_warnings_and_simulate_explains() {
    let bin = chmura_tests::chmura_bin();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "127.0.0.1:0", "http://127.0.0.1:9", true);
    // A malformed statement: named by file, index and reason.
    std::fs::write(
        dir.path().join("policy.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},{"Effect":"Allow","Action":"s3:GetObject"}]}"#,
    )
    .expect("policy");
    let out = Command::new(&bin)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants[0].policy_files[0]")
            && err.contains("policy.json")
            && err.contains("Statement[1]")
            && err.contains("Resource"),
        "{err}"
    );
    // A policy that grants nothing: accepted with a warning.
    std::fs::write(
        dir.path().join("policy.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*"}]}"#,
    )
    .expect("policy");
    let out = Command::new(&bin)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grants nothing"));
    // simulate: the decision and the statement.
    std::fs::write(
        dir.path().join("policy.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::data/${aws:username}/*"},{"Effect":"Deny","Action":"s3:DeleteObject","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]}"#,
    )
    .expect("policy");
    let sim = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(["policy", "simulate", "--config"])
            .arg(&cfg)
            .args(["--tenant", "t"])
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = sim(&[
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::data/t/x",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ALLOW") && text.contains("Statement[0]"),
        "{text}"
    );
    let (code, text) = sim(&[
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::data/u/x",
    ]);
    assert_eq!(code, Some(1));
    assert!(text.contains("implicit deny"), "{text}");
    let (code, text) = sim(&[
        "--action",
        "s3:DeleteObject",
        "--resource",
        "arn:aws:s3:::data/t/x",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("explicit deny") && text.contains("Statement[1]"),
        "{text}"
    );
    let (code, text) = sim(&[
        "--action",
        "s3:DeleteObject",
        "--resource",
        "arn:aws:s3:::data/t/x",
        "--context",
        "aws:MultiFactorAuthPresent=true",
    ]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn the_quickstarts_config_is_written_without_a_store() {
    // scripts/quickstart.sh runs `chmura-dev-store --write-config` to get Chmura's files, then
    // starts the store it was asked for (moto_server by default) on the same port.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/quickstart.sh");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(script)
        .status()
        .expect("bash");
    assert!(syntax.success(), "quickstart.sh parses");
    let dir = tempfile::tempdir().expect("tmp");
    let run = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chmura-dev-store"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--port", "9", "--write-config"])
            .spawn()
            .expect("run");
        // It must exit by itself, not serve.
        for _ in 0..300 {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("chmura-dev-store --write-config did not exit");
    };
    assert!(run().success());
    let config = dir.path().join("chmura.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("endpoint = \"http://127.0.0.1:9\""), "{text}");
    for f in [
        "ca.pem",
        "cert.pem",
        "key.pem",
        "tenant.secret",
        "chmura.keyring",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    assert!(!dir.path().join("store").exists(), "no store was started");
    let check = Command::new(chmura_tests::chmura_bin())
        .arg("check-config")
        .arg(&config)
        .status()
        .expect("check-config");
    assert!(check.success());
    // A second run keeps what the first wrote (the keyring above all).
    let ring = std::fs::read_to_string(dir.path().join("chmura.keyring")).expect("ring");
    assert!(run().success());
    assert_eq!(std::fs::read_to_string(&config).expect("config"), text);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("chmura.keyring")).expect("ring"),
        ring
    );
}
