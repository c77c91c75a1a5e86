//! Real clients over TLS with default settings: boto3, aws cli, rclone, s3cmd (installed by
//! scripts/install-tools.sh; skipped with a message when missing, failed when
//! CHMURA_REQUIRE_TOOLS=1). Also moto_server as a second upstream, for the operations s3s-fs
//! lacks (ListMultipartUploads, tagging, versioning, GET conditionals, partNumber).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chmura_tests::tools::require;
use chmura_tests::{pattern, Env, ProxyOptions, TENANT_AK, TENANT_SK};

/// A command with an environment that names our CA and credentials explicitly and nothing
/// from the machine's AWS or CA settings.
fn isolated(program: &Path, env: &Env) -> Command {
    let mut c = Command::new(program);
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    // Temporary files (minio-go's and minio-js's suites leave theirs, ~130 MiB a run) go
    // where the test's folder is removed with it.
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    for v in [
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"))
        .env("AWS_ACCESS_KEY_ID", TENANT_AK)
        .env("AWS_SECRET_ACCESS_KEY", TENANT_SK)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null());
    c
}

async fn run(mut c: Command) -> Output {
    let desc = format!("{c:?}");
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("spawn");
    if !out.status.success() {
        panic!(
            "command failed: {desc}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// rclone with an `ch:` remote for the tenant, configured through the environment, trusting
/// the test CA with `--ca-cert` (rclone 1.60 fails when AWS_CA_BUNDLE is set; `isolated`
/// removes it).
fn rclone_cmd(rclone: &Path, env: &Env, args: &[&str]) -> Command {
    let mut c = isolated(rclone, env);
    c.env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_CH_TYPE", "s3")
        .env("RCLONE_CONFIG_CH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_CH_ENDPOINT", env.proxy.endpoint())
        .env("RCLONE_CONFIG_CH_ACCESS_KEY_ID", TENANT_AK)
        .env("RCLONE_CONFIG_CH_SECRET_ACCESS_KEY", TENANT_SK)
        .env("RCLONE_CONFIG_CH_REGION", "us-east-1")
        .arg("--ca-cert")
        .arg(&env.proxy.certs.ca_file)
        .args(["--retries", "1", "--low-level-retries", "1"])
        .args(args);
    c
}

/// An s3cmd config for the tenant (path-style, TLS with the test CA) in `dir`.
fn s3cmd_config(env: &Env, dir: &Path) -> PathBuf {
    let host = format!("localhost:{}", env.proxy.addr.port());
    let cfg = dir.join("s3cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {TENANT_AK}\nsecret_key = {TENANT_SK}\nhost_base = {host}\nhost_bucket = {host}\nuse_https = True\nca_certs_file = {}\ncheck_ssl_certificate = True\nbucket_location = us-east-1\n",
            env.proxy.certs.ca_file.display()
        ),
    )
    .expect("cfg");
    cfg
}

fn write_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let d = pattern(len, seed);
    std::fs::write(path, &d).expect("write");
    d
}

fn suite_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Runs a client suite script and checks it printed `marker` (its last line when every step
/// passed); shows the script's output otherwise.
async fn run_suite(c: Command, marker: &str) {
    let out = run(c).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(marker),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The length moto stores for an object: the ciphertext's, when Chmura encrypted it.
async fn moto_stored_len(moto: &chmura_tests::Moto, bucket: &str, key: &str) -> Option<u64> {
    let store = chmura_tests::sdk_client(
        &moto.endpoint,
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    let head = store
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("stored");
    head.content_length().map(|n| n as u64)
}

#[tokio::test]
async fn boto3_default_settings() {
    let Some(python) = require("python", "boto3_default_settings") else {
        return;
    };
    let env = Env::start().await;
    let work = env.dir.path().join("boto3");
    std::fs::create_dir_all(&work).expect("work");
    let mut c = isolated(&python, &env);
    c.arg(suite_file("boto3_suite.py"))
        .arg(env.proxy.endpoint())
        .arg(&env.proxy.certs.ca_file)
        .arg("boto3-bucket")
        .arg(&work)
        .arg("pass-through");
    let out = run(c).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("boto3 suite OK"));
    // The store holds the objects the suite left.
    assert_eq!(
        env.store
            .stored("boto3-bucket", "big/file.bin")
            .map(|v| v.len()),
        Some(20 * 1024 * 1024 + 123)
    );
}

/// The same suite with encryption on: the store holds ciphertext of every object it left.
#[tokio::test]
async fn boto3_default_settings_encrypted() {
    let Some(python) = require("python", "boto3_default_settings_encrypted") else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let work = env.dir.path().join("boto3");
    std::fs::create_dir_all(&work).expect("work");
    let mut c = isolated(&python, &env);
    c.arg(suite_file("boto3_suite.py"))
        .arg(env.proxy.endpoint())
        .arg(&env.proxy.certs.ca_file)
        .arg("boto3-bucket")
        .arg(&work);
    let out = run(c).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("boto3 suite OK"));
    let stored = env
        .store
        .stored("boto3-bucket", "big/file.bin")
        .expect("stored");
    assert_eq!(
        stored.len() as u64,
        chmura_crypto::layout::ciphertext_len(20 * 1024 * 1024 + 123)
    );
}

/// POST Object: forms whose policies boto3 signed (SigV4 and SigV2), sent as browsers send
/// them, are stored encrypted; forged, oversized, over-broad and expired forms store nothing.
#[tokio::test]
async fn post_object_forms_signed_by_boto3() {
    let Some(python) = require("python", "post_object_forms_signed_by_boto3") else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let mut c = isolated(&python, &env);
    c.arg(suite_file("post_suite.py"))
        .arg(env.proxy.endpoint())
        .arg(&env.proxy.certs.ca_file)
        .arg("post-bucket");
    let out = run(c).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("post suite OK"));
    // The 3 MiB form went through the streamed path; the store holds ciphertext only.
    let stored = env
        .store
        .stored("post-bucket", "post/s3v4/big.bin")
        .expect("stored");
    assert!(stored.len() > 3 * 1024 * 1024 - 32);
    assert!(!stored.windows(22).any(|w| w == b"chmura-post-plaintext."));
}

#[tokio::test]
async fn aws_cli_cp_sync_ls_range() {
    let Some(aws) = require("aws", "aws_cli_cp_sync_ls_range") else {
        return;
    };
    let env = Env::start().await;
    aws_cli_suite(&aws, &env, false).await;
}

/// The aws cli v2 (Debian's package: its own botocore, the CRT transfer manager off by
/// default), on an encrypted bucket: the same commands as v1's.
#[tokio::test]
async fn aws_cli_v2_cp_sync_ls_range_encrypted() {
    let Some(aws) = require("aws2", "aws_cli_v2_cp_sync_ls_range_encrypted") else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let mut version = isolated(&aws, &env);
    version.arg("--version");
    let version = run(version).await;
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("aws-cli/2."),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    aws_cli_suite(&aws, &env, true).await;
}

/// mb, cp of 20 MiB up (multipart) and down (parallel ranged GETs), sync twice (nothing sent
/// the second time), ls, a ranged get-object, rm --recursive.
async fn aws_cli_suite(aws: &Path, env: &Env, encrypted: bool) {
    let work = env.dir.path().join("awscli");
    let dir = work.join("tree");
    std::fs::create_dir_all(dir.join("sub")).expect("work");
    let big = write_file(&work.join("big.bin"), 20 * 1024 * 1024 + 5, 11);
    for i in 0..5 {
        write_file(&dir.join(format!("f{i}.txt")), 1000 + i, i as u64);
    }
    write_file(&dir.join("sub").join("deep.bin"), 70_000, 99);
    let ep = env.proxy.endpoint();
    let ca = env.proxy.certs.ca_file.clone();
    let aws_cmd = |args: &[&str]| {
        let mut c = isolated(aws, env);
        c.arg("--endpoint-url")
            .arg(&ep)
            .arg("--ca-bundle")
            .arg(&ca)
            .args(args);
        c
    };
    run(aws_cmd(&["s3", "mb", "s3://cli-bucket"])).await;
    // 20 MiB: multipart with parallel parts.
    run(aws_cmd(&[
        "s3",
        "cp",
        work.join("big.bin").to_str().expect("path"),
        "s3://cli-bucket/big.bin",
    ]))
    .await;
    let stored = env.store.stored("cli-bucket", "big.bin").expect("stored");
    if encrypted {
        assert_ciphertext(&stored, &big);
    } else {
        assert_eq!(stored, big);
    }
    run(aws_cmd(&[
        "s3",
        "cp",
        "s3://cli-bucket/big.bin",
        work.join("big.out").to_str().expect("path"),
    ]))
    .await;
    assert_eq!(std::fs::read(work.join("big.out")).expect("read"), big);

    let first = run(aws_cmd(&[
        "s3",
        "sync",
        dir.to_str().expect("path"),
        "s3://cli-bucket/tree",
    ]))
    .await;
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .matches("upload:")
            .count()
            == 6,
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let second = run(aws_cmd(&[
        "s3",
        "sync",
        dir.to_str().expect("path"),
        "s3://cli-bucket/tree",
    ]))
    .await;
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("upload:"),
        "second sync transferred again: {}",
        String::from_utf8_lossy(&second.stdout)
    );
    let ls = run(aws_cmd(&[
        "s3",
        "ls",
        "--recursive",
        "s3://cli-bucket/tree/",
    ]))
    .await;
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 6);

    let out = work.join("range.out");
    run(aws_cmd(&[
        "s3api",
        "get-object",
        "--bucket",
        "cli-bucket",
        "--key",
        "big.bin",
        "--range",
        "bytes=1000-1999",
        out.to_str().expect("p"),
    ]))
    .await;
    assert_eq!(std::fs::read(&out).expect("read"), &big[1000..2000]);
    run(aws_cmd(&[
        "s3",
        "rm",
        "--recursive",
        "s3://cli-bucket/tree",
    ]))
    .await;
    assert!(env.store.stored("cli-bucket", "tree/f0.txt").is_none());
}

#[tokio::test]
async fn rclone_copy_check_cat() {
    let Some(rclone) = require("rclone", "rclone_copy_check_cat") else {
        return;
    };
    let env = Env::start().await;
    let work = env.dir.path().join("rclone");
    let dir = work.join("src");
    std::fs::create_dir_all(&dir).expect("work");
    let big = write_file(&dir.join("big.bin"), 12 * 1024 * 1024 + 7, 21);
    write_file(&dir.join("small.txt"), 4096, 22);
    let rc = |args: &[&str]| rclone_cmd(&rclone, &env, args);
    let src = dir.to_str().expect("path");
    run(rc(&["mkdir", "ch:rclone-bucket"])).await;
    run(rc(&["copy", src, "ch:rclone-bucket/data"])).await;
    assert_eq!(
        env.store.stored("rclone-bucket", "data/big.bin").as_deref(),
        Some(&big[..])
    );
    run(rc(&["check", src, "ch:rclone-bucket/data"])).await;
    let cat = run(rc(&[
        "cat",
        "--offset",
        "1000",
        "--count",
        "500",
        "ch:rclone-bucket/data/big.bin",
    ]))
    .await;
    assert_eq!(cat.stdout, &big[1000..1500]);
    // Multipart (cutoff lowered so the test stays small).
    run(rc(&[
        "copyto",
        "--s3-upload-cutoff",
        "5M",
        "--s3-chunk-size",
        "5M",
        &format!("{src}/big.bin"),
        "ch:rclone-bucket/mp/big.bin",
    ]))
    .await;
    assert_eq!(
        env.store.stored("rclone-bucket", "mp/big.bin").as_deref(),
        Some(&big[..])
    );
    let sync2 = run(rc(&["sync", "-v", src, "ch:rclone-bucket/data"])).await;
    let log = String::from_utf8_lossy(&sync2.stderr);
    assert!(
        !log.contains("Copied"),
        "second sync transferred again: {log}"
    );
    // Recursive (rclone's ListR sends an empty `delimiter=`, which Chmura drops: s3s-fs would
    // read it as a delimiter) and per folder.
    let lsr = run(rc(&["lsf", "-R", "--format", "sp", "ch:rclone-bucket"])).await;
    let lsl = run(rc(&[
        "lsf",
        "-R",
        "--disable",
        "ListR",
        "--format",
        "sp",
        "ch:rclone-bucket",
    ]))
    .await;
    let listing = String::from_utf8_lossy(&lsl.stdout);
    let files = |text: &str| {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.ends_with('/'))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        files(&String::from_utf8_lossy(&lsr.stdout)),
        files(&listing)
    );
    assert_eq!(
        listing.lines().filter(|l| !l.ends_with('/')).count(),
        3,
        "{listing}"
    );
    assert!(
        listing.contains(&format!("{};data/big.bin", big.len())),
        "listed size equals the file size: {listing}"
    );
}

#[tokio::test]
async fn s3cmd_put_get_ls_multipart() {
    let Some(s3cmd) = require("s3cmd", "s3cmd_put_get_ls_multipart") else {
        return;
    };
    let env = Env::start().await;
    let work = env.dir.path().join("s3cmd");
    std::fs::create_dir_all(&work).expect("work");
    let cfg = s3cmd_config(&env, &work);
    let big = write_file(&work.join("big.bin"), 40 * 1024 * 1024, 31);
    let cmd = |args: &[&str]| {
        let mut c = isolated(&s3cmd, &env);
        c.arg("-c").arg(&cfg).args(args);
        c
    };
    run(cmd(&["mb", "s3://s3cmd-bucket"])).await;
    let put = run(cmd(&[
        "put",
        work.join("big.bin").to_str().expect("p"),
        "s3://s3cmd-bucket/big.bin",
    ]))
    .await;
    let put_log = format!(
        "{}{}",
        String::from_utf8_lossy(&put.stdout),
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(!put_log.contains("WARNING"), "s3cmd warned: {put_log}");
    assert_eq!(
        env.store.stored("s3cmd-bucket", "big.bin").as_deref(),
        Some(&big[..])
    );
    run(cmd(&[
        "get",
        "--force",
        "s3://s3cmd-bucket/big.bin",
        work.join("big.out").to_str().expect("p"),
    ]))
    .await;
    assert_eq!(std::fs::read(work.join("big.out")).expect("read"), big);
    let ls = run(cmd(&["ls", "s3://s3cmd-bucket"])).await;
    assert!(String::from_utf8_lossy(&ls.stdout).contains("big.bin"));
    run(cmd(&["del", "s3://s3cmd-bucket/big.bin"])).await;
    assert!(env.store.stored("s3cmd-bucket", "big.bin").is_none());
}

#[tokio::test]
async fn moto_upstream_tagging_versioning_uploads_conditionals() {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{BucketVersioningStatus, Tag, Tagging, VersioningConfiguration};
    let Some(moto) = require(
        "moto_server",
        "moto_upstream_tagging_versioning_uploads_conditionals",
    ) else {
        return;
    };
    let moto = chmura_tests::Moto::start(&moto).await;
    let env = Env::start_with(chmura_tests::ProxyOptions {
        upstream_endpoint: Some(moto.endpoint.clone()),
        ..Default::default()
    })
    .await;
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("moto-bucket")
        .send()
        .await
        .expect("create");
    s3.put_bucket_versioning()
        .bucket("moto-bucket")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    let v1 = s3
        .put_object()
        .bucket("moto-bucket")
        .key("k")
        .body(ByteStream::from_static(b"one"))
        .send()
        .await
        .expect("put1");
    let v2 = s3
        .put_object()
        .bucket("moto-bucket")
        .key("k")
        .body(ByteStream::from_static(b"two!"))
        .send()
        .await
        .expect("put2");
    assert_ne!(v1.version_id(), v2.version_id());
    let old = s3
        .get_object()
        .bucket("moto-bucket")
        .key("k")
        .version_id(v1.version_id().expect("v1"))
        .send()
        .await
        .expect("get v1");
    assert_eq!(
        old.body.collect().await.expect("b").into_bytes().as_ref(),
        b"one"
    );
    let versions = s3
        .list_object_versions()
        .bucket("moto-bucket")
        .send()
        .await
        .expect("versions");
    assert_eq!(versions.versions().len(), 2);

    s3.put_object_tagging()
        .bucket("moto-bucket")
        .key("k")
        .tagging(
            Tagging::builder()
                .tag_set(
                    Tag::builder()
                        .key("team")
                        .value("blue")
                        .build()
                        .expect("tag"),
                )
                .build()
                .expect("tagging"),
        )
        .send()
        .await
        .expect("put tagging");
    let tags = s3
        .get_object_tagging()
        .bucket("moto-bucket")
        .key("k")
        .send()
        .await
        .expect("get tagging");
    assert_eq!(tags.tag_set()[0].value(), "blue");

    let etag = v2.e_tag().expect("etag").to_string();
    let e = s3
        .get_object()
        .bucket("moto-bucket")
        .key("k")
        .if_match("\"nope\"")
        .send()
        .await
        .expect_err("412");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    let e = s3
        .get_object()
        .bucket("moto-bucket")
        .key("k")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("304");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304));

    let up = s3
        .create_multipart_upload()
        .bucket("moto-bucket")
        .key("mp")
        .send()
        .await
        .expect("create mpu");
    let ups = s3
        .list_multipart_uploads()
        .bucket("moto-bucket")
        .send()
        .await
        .expect("list uploads");
    assert_eq!(ups.uploads().len(), 1);
    let part = pattern(5 * 1024 * 1024, 8);
    let p1 = s3
        .upload_part()
        .bucket("moto-bucket")
        .key("mp")
        .upload_id(up.upload_id().expect("id"))
        .part_number(1)
        .body(ByteStream::from(part.clone()))
        .send()
        .await
        .expect("part 1");
    let p2 = s3
        .upload_part()
        .bucket("moto-bucket")
        .key("mp")
        .upload_id(up.upload_id().expect("id"))
        .part_number(2)
        .body(ByteStream::from_static(b"tail"))
        .send()
        .await
        .expect("part 2");
    // (ListParts is tested against s3s-fs: moto 5.2.5 answers it with a ListPartsResponse root
    // element the SDK rejects.)
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    s3.complete_multipart_upload()
        .bucket("moto-bucket")
        .key("mp")
        .upload_id(up.upload_id().expect("id"))
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(p1.e_tag().expect("e"))
                        .build(),
                )
                .parts(
                    CompletedPart::builder()
                        .part_number(2)
                        .e_tag(p2.e_tag().expect("e"))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("complete");
    let g = s3
        .get_object()
        .bucket("moto-bucket")
        .key("mp")
        .send()
        .await
        .expect("get completed");
    assert_eq!(g.content_length(), Some(5 * 1024 * 1024 + 4));
    drop(moto);
}

/// Every client, default settings, against Chmura with encryption on (small files; the
/// multipart paths are `encrypted_mode_multipart_all_clients`).
#[tokio::test]
async fn encrypted_mode_small_files_all_clients() {
    let (Some(aws), Some(s3cmd), Some(rclone)) = (
        require("aws", "encrypted_mode_small_files_all_clients"),
        require("s3cmd", "encrypted_mode_small_files_all_clients"),
        require("rclone", "encrypted_mode_small_files_all_clients"),
    ) else {
        return;
    };
    let env = Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("enc-clients");
    let work = env.dir.path().join("enc");
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("work");
    let mut files = Vec::new();
    for (i, len) in [0usize, 1, 65_536, 1_000_000, 5 * 1024 * 1024]
        .iter()
        .enumerate()
    {
        let name = format!("f{i}.bin");
        files.push((
            name.clone(),
            write_file(&tree.join(&name), *len, 40 + i as u64),
        ));
    }
    write_file(&tree.join("sub").join("deep.txt"), 777, 50);
    let ep = env.proxy.endpoint();
    let ca = env.proxy.certs.ca_file.clone();

    // aws cli: sync twice (the second transfers nothing), cp down, compare.
    let aws_cmd = |args: &[&str]| {
        let mut c = isolated(&aws, &env);
        c.arg("--endpoint-url")
            .arg(&ep)
            .arg("--ca-bundle")
            .arg(&ca)
            .args(args);
        c
    };
    let t = tree.to_str().expect("path");
    let first = run(aws_cmd(&["s3", "sync", t, "s3://enc-clients/cli"])).await;
    assert_eq!(
        String::from_utf8_lossy(&first.stdout)
            .matches("upload:")
            .count(),
        6,
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let second = run(aws_cmd(&["s3", "sync", t, "s3://enc-clients/cli"])).await;
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("upload:"),
        "second sync re-uploaded: {}",
        String::from_utf8_lossy(&second.stdout)
    );
    let down = work.join("down");
    run(aws_cmd(&[
        "s3",
        "sync",
        "s3://enc-clients/cli",
        down.to_str().expect("p"),
    ]))
    .await;
    for (name, data) in &files {
        assert!(
            std::fs::read(down.join(name)).expect("downloaded") == *data,
            "aws cli round trip of {name}"
        );
        let stored = env
            .store
            .stored("enc-clients", &format!("cli/{name}"))
            .expect("stored");
        assert_eq!(
            stored.len() as u64,
            chmura_crypto::layout::ciphertext_len(data.len() as u64)
        );
    }
    let range_out = work.join("range.out");
    run(aws_cmd(&[
        "s3api",
        "get-object",
        "--bucket",
        "enc-clients",
        "--key",
        "cli/f3.bin",
        "--range",
        "bytes=70000-70999",
        range_out.to_str().expect("p"),
    ]))
    .await;
    assert!(std::fs::read(&range_out).expect("range") == files[3].1[70_000..71_000]);

    // s3cmd: put and get with its MD5 checks on, no warning.
    let cfg = s3cmd_config(&env, &work);
    let s3c = |args: &[&str]| {
        let mut c = isolated(&s3cmd, &env);
        c.arg("-c").arg(&cfg).args(args);
        c
    };
    let put = run(s3c(&[
        "put",
        tree.join("f3.bin").to_str().expect("p"),
        "s3://enc-clients/s3cmd/f3.bin",
    ]))
    .await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&put.stdout),
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(!log.contains("WARNING"), "s3cmd warned: {log}");
    let out = work.join("s3cmd.out");
    let get = run(s3c(&[
        "get",
        "--force",
        "s3://enc-clients/s3cmd/f3.bin",
        out.to_str().expect("p"),
    ]))
    .await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&get.stdout),
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(!log.contains("WARNING"), "s3cmd warned: {log}");
    assert!(std::fs::read(&out).expect("read") == files[3].1);

    // rclone: copy, check, sync twice.
    let rc = |args: &[&str]| rclone_cmd(&rclone, &env, args);
    run(rc(&["copy", t, "ch:enc-clients/rclone"])).await;
    run(rc(&["check", t, "ch:enc-clients/rclone"])).await;
    let again = run(rc(&["sync", "-v", t, "ch:enc-clients/rclone"])).await;
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        !log.contains("Copied"),
        "second rclone sync transferred again: {log}"
    );
}

/// Every client's multipart path, default settings, with encryption on (issue 4): aws cli
/// 100 MiB cp up and down (parallel parts, parallel ranged GETs) and sync twice; boto3 with
/// ten concurrent transfers; rclone 300 MiB copy, check, sync twice; s3cmd 40 MiB with its MD5
/// checks.
#[tokio::test]
async fn encrypted_mode_multipart_all_clients() {
    let name = "encrypted_mode_multipart_all_clients";
    let (Some(aws), Some(s3cmd), Some(rclone), Some(python)) = (
        require("aws", name),
        require("s3cmd", name),
        require("rclone", name),
        require("python", name),
    ) else {
        return;
    };
    let env = Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("enc-mp");
    let work = env.dir.path().join("encmp");
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).expect("work");
    let mib = 1024 * 1024;
    let big = write_file(&tree.join("big.bin"), 100 * mib + 12_345, 61);
    let ep = env.proxy.endpoint();
    let ca = env.proxy.certs.ca_file.clone();
    let stored_len = |key: &str| env.store.stored("enc-mp", key).map(|v| v.len() as u64);

    // aws cli: sync (multipart up), sync again (nothing), cp down (parallel ranged GETs).
    let aws_cmd = |args: &[&str]| {
        let mut c = isolated(&aws, &env);
        c.arg("--endpoint-url")
            .arg(&ep)
            .arg("--ca-bundle")
            .arg(&ca)
            .args(args);
        c
    };
    let t = tree.to_str().expect("path");
    let first = run(aws_cmd(&["s3", "sync", t, "s3://enc-mp/cli"])).await;
    assert!(String::from_utf8_lossy(&first.stdout).contains("upload:"));
    assert_eq!(
        stored_len("cli/big.bin"),
        Some(chmura_crypto::layout::ciphertext_len(big.len() as u64))
    );
    let second = run(aws_cmd(&["s3", "sync", t, "s3://enc-mp/cli"])).await;
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("upload:"),
        "second sync re-uploaded: {}",
        String::from_utf8_lossy(&second.stdout)
    );
    let down = work.join("cli-down.bin");
    run(aws_cmd(&[
        "s3",
        "cp",
        "s3://enc-mp/cli/big.bin",
        down.to_str().expect("p"),
    ]))
    .await;
    assert!(
        std::fs::read(&down).expect("down") == big,
        "aws cli round trip"
    );
    let sdk = env.proxy.sdk_client();
    let parts_of = |key: &'static str| {
        let sdk = sdk.clone();
        async move {
            let h = sdk
                .head_object()
                .bucket("enc-mp")
                .key(key)
                .send()
                .await
                .expect("head");
            let etag = h.e_tag().unwrap_or("").trim_matches('"').to_string();
            etag.rsplit('-')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        }
    };
    assert_eq!(
        parts_of("cli/big.bin").await,
        13,
        "aws cli used 8 MiB parts"
    );
    std::fs::remove_file(&down).expect("rm");

    // boto3: upload_file / download_file with max_concurrency=10.
    let mut c = isolated(&python, &env);
    c.arg(suite_file("boto3_multipart.py"))
        .arg(&ep)
        .arg(&ca)
        .arg("enc-mp")
        .arg(&work);
    let out = run(c).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("boto3 multipart OK"));

    // s3cmd: 40 MiB put (15 MiB parts) and get, MD5 checks on, no warning.
    let s3c_file = work.join("s3cmd.bin");
    let s3c_data = write_file(&s3c_file, 40 * mib + 7, 62);
    let cfg = s3cmd_config(&env, &work);
    let s3c = |args: &[&str]| {
        let mut c = isolated(&s3cmd, &env);
        c.arg("-c").arg(&cfg).args(args);
        c
    };
    for args in [
        vec![
            "put",
            s3c_file.to_str().expect("p"),
            "s3://enc-mp/s3cmd/f.bin",
        ],
        vec![
            "get",
            "--force",
            "s3://enc-mp/s3cmd/f.bin",
            work.join("s3cmd.out").to_str().expect("p"),
        ],
    ] {
        let out = run(s3c(&args)).await;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!log.contains("WARNING"), "s3cmd warned: {log}");
    }
    assert!(std::fs::read(work.join("s3cmd.out")).expect("read") == s3c_data);

    // rclone: a 300 MiB file is a multipart upload (cutoff 200 MiB); check; sync twice.
    let rtree = work.join("rtree");
    std::fs::create_dir_all(&rtree).expect("rtree");
    write_file(&rtree.join("huge.bin"), 300 * mib + 99, 63);
    let r = rtree.to_str().expect("p");
    let rc = |args: &[&str]| rclone_cmd(&rclone, &env, args);
    run(rc(&["copy", r, "ch:enc-mp/rclone"])).await;
    assert_eq!(
        stored_len("rclone/huge.bin"),
        Some(chmura_crypto::layout::ciphertext_len(300 * mib as u64 + 99))
    );
    assert!(
        parts_of("rclone/huge.bin").await > 1,
        "rclone used multipart"
    );
    run(rc(&["check", "--download", r, "ch:enc-mp/rclone"])).await;
    let again = run(rc(&["sync", "-v", r, "ch:enc-mp/rclone"])).await;
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        !log.contains("Copied"),
        "second rclone sync transferred again: {log}"
    );
}

/// node and the `node_modules` folder holding `package` (scripts/install-tools.sh puts them in
/// `.tools/node`), or `None` (after saying why) when the test is skipped.
fn node_with(package: &str, test: &str) -> Option<(PathBuf, PathBuf)> {
    let node = require("node", test)?;
    let modules = chmura_tests::tools::tools_dir()
        .join("node")
        .join("node_modules");
    if !modules.join(package).exists() {
        if std::env::var("CHMURA_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{package} is required (CHMURA_REQUIRE_TOOLS=1): run scripts/install-tools.sh");
        }
        eprintln!("SKIPPED {test}: {package} not installed (run scripts/install-tools.sh)");
        return None;
    }
    Some((node, modules))
}

async fn js_suite(env: &Env, endpoint: &str, bucket: &str, multipart: bool) {
    let Some((node, modules)) = node_with("@aws-sdk/lib-storage", "js_sdk_v3") else {
        return;
    };
    let mut c = isolated(&node, env);
    c.env("NODE_EXTRA_CA_CERTS", &env.proxy.certs.ca_file)
        .env("CHMURA_JS_MODULES", &modules)
        .arg(suite_file("js_suite.mjs"))
        .arg(endpoint)
        .arg(bucket)
        .arg(if multipart { "yes" } else { "no" });
    let out = run(c).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("js suite OK"));
}

#[tokio::test]
async fn js_sdk_v3_over_tls_and_plain_http() {
    let env = Env::start().await;
    env.make_bucket("js-bucket");
    js_suite(&env, &env.proxy.endpoint(), "js-bucket", true).await;
    // Over plain HTTP the SDK still sends 64 KiB aws-chunked bodies.
    env.make_bucket("js-http");
    js_suite(&env, &env.proxy.http_endpoint(), "js-http", false).await;
    if chmura_tests::tools::find("node").is_some() {
        let stored = env
            .store
            .stored("js-http", "js/stream.bin")
            .expect("stored");
        assert_eq!(stored.len(), 300_000, "the store holds the decoded body");
        let big = env
            .store
            .stored("js-bucket", "js/big.bin")
            .expect("multipart object stored");
        assert_eq!(big.len(), 12 * 1024 * 1024 + 3);
    }
}

#[tokio::test]
async fn js_sdk_v3_encrypted_mode() {
    let env = Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("js-enc");
    js_suite(&env, &env.proxy.endpoint(), "js-enc", true).await;
    if chmura_tests::tools::find("node").is_some() {
        let stored = env.store.stored("js-enc", "js/stream.bin").expect("stored");
        assert_eq!(
            stored.len() as u64,
            chmura_crypto::layout::ciphertext_len(300_000)
        );
        let big = env.store.stored("js-enc", "js/big.bin").expect("stored");
        assert_eq!(
            big.len() as u64,
            chmura_crypto::layout::ciphertext_len(12 * 1024 * 1024 + 3)
        );
    }
}

/// MinIO's JavaScript client (npm `minio` 8, its own signing and multipart code) with
/// encryption on, in front of moto (minio-js lists the key's unfinished uploads before a
/// multipart upload; s3s-fs has no ListMultipartUploads): makeBucket, put with metadata, stat,
/// whole and partial gets, a 70 MiB fPutObject (multipart, 64 MiB parts) read back whole and
/// across the part boundary, a stream of unknown length, copy, listings v1/v2 in plaintext
/// sizes, tagging, presigned GET and PUT, removal.
#[tokio::test]
async fn minio_js_suite_encrypted_on_moto() {
    let test = "minio_js_suite_encrypted_on_moto";
    let Some((node, modules)) = node_with("minio", test) else {
        return;
    };
    let Some((moto, env)) = chmura_tests::encrypted_env_on_moto(test).await else {
        return;
    };
    let mut c = isolated(&node, &env);
    c.env("NODE_EXTRA_CA_CERTS", &env.proxy.certs.ca_file)
        .env("CHMURA_JS_MODULES", &modules)
        .arg(suite_file("minio_js_suite.mjs"))
        .arg(env.proxy.endpoint())
        .arg("minio-js-bucket");
    run_suite(c, "minio-js suite OK").await;
    assert_eq!(
        moto_stored_len(&moto, "minio-js-bucket", "small").await,
        Some(chmura_crypto::layout::ciphertext_len(1000)),
        "the store holds ciphertext"
    );
}

/// s3fs-fuse mounted on a bucket through Chmura, in the foreground as a child process;
/// unmounted (and the process stopped) on drop.
struct S3fsMount {
    child: std::process::Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl S3fsMount {
    /// Mounts `bucket` at `mnt` and waits (at most 20 s) for the mount to appear. TLS
    /// without certificate checks: s3fs 1.90 (libcurl-gnutls) takes `CURL_CA_BUNDLE` for some
    /// connections and not others; certificate trust is what the other clients' tests cover.
    async fn mount(s3fs: &Path, env: &Env, bucket: &str, mnt: &Path, tag: &str) -> S3fsMount {
        std::fs::create_dir_all(mnt).expect("mount point");
        let passwd = env.dir.path().join("s3fs.passwd");
        chmura_tests::write_private(&passwd, &format!("{TENANT_AK}:{TENANT_SK}\n"));
        let log = env.dir.path().join(format!("s3fs-{tag}.log"));
        let child = isolated(s3fs, env)
            .arg(bucket)
            .arg(mnt)
            .arg("-f")
            .args(["-o", &format!("passwd_file={}", passwd.display())])
            .args(["-o", &format!("url={}", env.proxy.endpoint())])
            .args(["-o", "use_path_request_style,endpoint=us-east-1"])
            .args(["-o", "no_check_certificate,retries=2,multipart_size=5"])
            .args(["-o", &format!("dbglevel=warn,logfile={}", log.display())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3fs starts");
        let mut m = S3fsMount {
            child,
            mnt: mnt.to_path_buf(),
            log,
        };
        for _ in 0..200 {
            if m.mounted() {
                return m;
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("s3fs exited ({status}) before mounting: {}", m.log_text());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("s3fs did not mount in 20 s: {}", m.log_text());
    }

    fn mounted(&self) -> bool {
        let want = self.mnt.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(want.as_str()) && l.contains("fuse.s3fs"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and waits (at most 20 s) for s3fs to finish uploading and exit.
    async fn unmount(mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.mnt).status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("s3fs did not exit after unmounting: {}", self.log_text());
    }
}

impl Drop for S3fsMount {
    fn drop(&mut self) {
        if self.mounted() {
            let _ = Command::new("fusermount")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// s3fs-fuse (the Debian package), a file system on a bucket through Chmura with encryption
/// on: files, folders, renames (CopyObject), chmod (a metadata-only copy), appends and
/// truncation (rewrites), a 12 MiB file uploaded in parts and patched in the middle
/// (UploadPartCopy of the unchanged ranges), then everything read back through a fresh mount.
/// Returns the plaintext `dir/big.bin` should hold.
async fn s3fs_suite(s3fs: &Path, env: &Env, bucket: &str) -> Vec<u8> {
    let mnt = env.dir.path().join(format!("mnt-{bucket}"));
    let big = pattern(12 * 1024 * 1024 + 5, 31);
    let mut expected = big.clone();
    expected[7 * 1024 * 1024..7 * 1024 * 1024 + 5].copy_from_slice(b"PATCH");
    expected.extend_from_slice(b"tail");

    let m = S3fsMount::mount(s3fs, env, bucket, &mnt, "first").await;
    let root = mnt.clone();
    let ops = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::unix::fs::PermissionsExt;
        let r = |p: &str| root.join(p);
        std::fs::write(r("a.txt"), b"hello\n")?;
        assert_eq!(std::fs::read(r("a.txt"))?, b"hello\n");
        std::fs::create_dir(r("dir"))?;
        std::fs::set_permissions(r("dir"), std::fs::Permissions::from_mode(0o750))?;
        std::fs::write(r("dir/b"), b"x\n")?;
        std::fs::rename(r("a.txt"), r("dir/a2.txt"))?;
        assert!(!r("a.txt").exists(), "renamed away");
        std::fs::set_permissions(r("dir/a2.txt"), std::fs::Permissions::from_mode(0o600))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(r("dir/a2.txt"))?
            .write_all(b"more\n")?;
        std::fs::write(r("dir/trunc.txt"), b"truncate me")?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(r("dir/trunc.txt"))?
            .set_len(3)?;
        std::fs::write(r("big.bin"), &big)?;
        let mut f = std::fs::OpenOptions::new().write(true).open(r("big.bin"))?;
        f.seek(SeekFrom::Start(7 * 1024 * 1024))?;
        f.write_all(b"PATCH")?;
        f.seek(SeekFrom::End(0))?;
        f.write_all(b"tail")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(r("big.bin"), r("dir/big.bin"))?;
        std::fs::write(r("gone.txt"), b"delete me")?;
        std::fs::remove_file(r("gone.txt"))?;
        std::fs::create_dir(r("empty-dir"))?;
        std::fs::remove_dir(r("empty-dir"))?;
        Ok(())
    })
    .await
    .expect("join");
    if let Err(e) = ops {
        panic!("file operations through s3fs: {e}\n{}", m.log_text());
    }
    m.unmount().await;

    // A fresh mount reads everything back from Chmura, not from the first mount's caches.
    let m = S3fsMount::mount(s3fs, env, bucket, &mnt, "second").await;
    let (root, want) = (mnt.clone(), expected.clone());
    let check = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let r = |p: &str| root.join(p);
        let names = |dir: &Path| -> std::io::Result<Vec<String>> {
            let mut v: Vec<String> = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            v.sort();
            Ok(v)
        };
        assert_eq!(
            names(&root)?,
            ["dir"],
            "the root after the first mount's changes"
        );
        assert_eq!(names(&r("dir"))?, ["a2.txt", "b", "big.bin", "trunc.txt"]);
        let mode = |p: &str| -> std::io::Result<u32> {
            Ok(std::fs::metadata(r(p))?.permissions().mode() & 0o777)
        };
        assert_eq!(
            mode("dir")?,
            0o750,
            "a folder's mode, kept in its marker's metadata"
        );
        assert_eq!(
            mode("dir/a2.txt")?,
            0o600,
            "chmod kept (a metadata-only copy)"
        );
        assert_eq!(std::fs::read(r("dir/a2.txt"))?, b"hello\nmore\n");
        assert_eq!(std::fs::read(r("dir/trunc.txt"))?, b"tru");
        assert_eq!(
            std::fs::metadata(r("dir/big.bin"))?.len(),
            want.len() as u64
        );
        let got = std::fs::read(r("dir/big.bin"))?;
        assert!(got == want, "big.bin read back differs");
        Ok(())
    })
    .await
    .expect("join");
    if let Err(e) = check {
        panic!("reading back through s3fs: {e}\n{}", m.log_text());
    }
    m.unmount().await;
    expected
}

/// s3fs when FUSE works here, `None` (after saying why) when the test is skipped.
fn s3fs_or_skip(test: &str) -> Option<PathBuf> {
    let s3fs = require("s3fs", test)?;
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED {test}: this machine has no /dev/fuse");
        return None;
    }
    Some(s3fs)
}

/// The ciphertext check on what the store holds for the suite's large file.
fn assert_ciphertext(stored: &[u8], plaintext: &[u8]) {
    assert_eq!(
        stored.len() as u64,
        chmura_crypto::layout::ciphertext_len(plaintext.len() as u64),
        "the store holds ciphertext"
    );
    assert!(stored.windows(64).all(|w| w != &plaintext[..64]));
}

/// On the embedded default store (s3s-fs, the quickstart's).
#[tokio::test]
async fn s3fs_fuse_file_system_on_encrypted_bucket() {
    let Some(s3fs) = s3fs_or_skip("s3fs_fuse_file_system_on_encrypted_bucket") else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("fuse-bucket");
    let expected = s3fs_suite(&s3fs, &env, "fuse-bucket").await;
    let stored = env
        .store
        .stored("fuse-bucket", "dir/big.bin")
        .expect("stored");
    assert_ciphertext(&stored, &expected);
}

/// On moto, which keeps folder markers as S3 does (objects with metadata).
#[tokio::test]
async fn s3fs_fuse_file_system_on_moto() {
    let test = "s3fs_fuse_file_system_on_moto";
    let Some(s3fs) = s3fs_or_skip(test) else {
        return;
    };
    let Some((moto, env)) = chmura_tests::encrypted_env_on_moto(test).await else {
        return;
    };
    env.proxy
        .sdk_client()
        .create_bucket()
        .bucket("fuse-moto")
        .send()
        .await
        .expect("bucket");
    let expected = s3fs_suite(&s3fs, &env, "fuse-moto").await;
    let store = chmura_tests::sdk_client(
        &moto.endpoint,
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    let stored = store
        .get_object()
        .bucket("fuse-moto")
        .key("dir/big.bin")
        .send()
        .await
        .expect("stored")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_ciphertext(&stored, &expected);
}

/// obstore, the Python face of the Rust `object_store` crate (polars, DataFusion), with
/// encryption on, on the signature-checking store: ranged and multi-range reads, a streamed
/// multipart upload, listings in plaintext sizes, conditional create (If-None-Match: *) and
/// update (If-Match) refusing stale writes, conditional reads, copy, rename, batch delete.
#[tokio::test]
async fn obstore_suite_encrypted() {
    python_suite_encrypted("obstore", "mp", 12 * 1024 * 1024 + 777).await;
}

/// Apache OpenDAL (its Python binding; the Rust data-access layer with its own S3 signer) with
/// encryption on, on the signature-checking store: writes, a streamed 13 MiB write (a
/// multipart upload) read whole and by seeks across parts, folder markers (`create_dir`),
/// one-level and recursive listings in plaintext sizes, copy, delete, `remove_all`.
#[tokio::test]
async fn opendal_suite_encrypted() {
    python_suite_encrypted("opendal", "big", 13 * 1024 * 1024 + 11).await;
}

/// pyarrow's S3 file system (the AWS SDK for C++ underneath) with encryption on, on the
/// signature-checking store: a small object, a large one written 1 MiB at a time (a multipart
/// upload) and read at random offsets, a Parquet table written and read back by column
/// (footer and column-chunk ranges), listings in plaintext sizes, copy, move, deletes.
#[tokio::test]
async fn pyarrow_suite_encrypted() {
    python_suite_encrypted("pyarrow", "big.bin", 23 * 1024 * 1024 + 4321).await;
}

/// DuckDB's httpfs extension (its own S3 client; SQL over Parquet and CSV on S3) with
/// encryption on, on the signature-checking store: COPY to Parquet and CSV, aggregates and a
/// filtered column read back through ranged GETs, glob listing, a missing object.
#[tokio::test]
async fn duckdb_suite_encrypted() {
    // The CSV holds 0..100000, one number per line.
    let csv_len = (0..100_000u64)
        .map(|i| i.to_string().len() as u64 + 1)
        .sum();
    python_suite_encrypted("duckdb", "n.csv", csv_len).await;
}

/// Runs `tests/clients/<name>_suite.py ENDPOINT BUCKET` from the fsspec venv against Chmura
/// with encryption on, over the signature-checking store, with the test CA in `SSL_CERT_FILE`
/// (object_store's rustls-native-certs honours it; the pyarrow suite hands it to the SDK);
/// then checks that the store holds `key` as ciphertext of a `plain_len`-byte object.
async fn python_suite_encrypted(name: &str, key: &str, plain_len: u64) {
    let test = format!("{name}_suite_encrypted");
    let Some(python) = require("fsspec-python", &test) else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let bucket = format!("{name}-bucket");
    env.make_bucket(&bucket);
    let mut c = isolated(&python, &env);
    c.env("SSL_CERT_FILE", &env.proxy.certs.ca_file)
        .arg(suite_file(&format!("{name}_suite.py")))
        .arg(env.proxy.endpoint())
        .arg(&bucket);
    run_suite(c, &format!("{name} suite OK")).await;
    let stored = env.store.stored(&bucket, key).expect("stored");
    assert_eq!(
        stored.len() as u64,
        chmura_crypto::layout::ciphertext_len(plain_len),
        "the store holds ciphertext"
    );
}

/// fsspec's s3fs (pandas, dask and xarray read S3 through it) with encryption on: a multipart
/// upload from `open("wb")`, ranged reads across parts, listings and `du` in plaintext sizes,
/// pseudo-directories, copy, metadata replace, tags, recursive delete.
#[tokio::test]
async fn fsspec_s3fs_suite_encrypted_on_moto() {
    let test = "fsspec_s3fs_suite_encrypted_on_moto";
    let Some(python) = require("fsspec-python", test) else {
        return;
    };
    let Some((moto, env)) = chmura_tests::encrypted_env_on_moto(test).await else {
        return;
    };
    let work = env.dir.path().join("fsspec");
    std::fs::create_dir_all(&work).expect("work");
    let mut c = isolated(&python, &env);
    c.arg(suite_file("fsspec_suite.py"))
        .arg(env.proxy.endpoint())
        .arg(&env.proxy.certs.ca_file)
        .arg("fsspec-bucket")
        .arg(&work);
    run_suite(c, "fsspec suite OK").await;
    assert_eq!(
        moto_stored_len(&moto, "fsspec-bucket", "big.bin").await,
        Some(chmura_crypto::layout::ciphertext_len(
            12 * 1024 * 1024 + 12345
        )),
        "the store holds ciphertext"
    );
}

/// minio-py (PyPI `minio`), default settings, with encryption on, in front of moto (which
/// has the versioning and tagging s3s-fs lacks): put with metadata, get, ranges, stat,
/// multipart uploads of unknown length, fput/fget, copy (COPY, REPLACE), compose
/// (UploadPartCopy), listings v1/v2 recursive and by folder, tags, presigned GET/PUT/POST,
/// removal, versions.
#[tokio::test]
async fn minio_py_suite_encrypted_on_moto() {
    let test = "minio_py_suite_encrypted_on_moto";
    let Some(python) = require("python", test) else {
        return;
    };
    let Some((moto, env)) = chmura_tests::encrypted_env_on_moto(test).await else {
        return;
    };
    let work = env.dir.path().join("minio");
    std::fs::create_dir_all(&work).expect("work");
    let mut c = isolated(&python, &env);
    c.arg(suite_file("minio_suite.py"))
        .arg(format!("localhost:{}", env.proxy.addr.port()))
        .arg(&env.proxy.certs.ca_file)
        .arg("minio-bucket")
        .arg(&work);
    run_suite(c, "minio suite OK").await;
    assert_eq!(
        moto_stored_len(&moto, "minio-bucket", "small.bin").await,
        Some(chmura_crypto::layout::ciphertext_len(3 * 1024 * 1024 + 7)),
        "the store holds ciphertext"
    );
}

/// The AWS SDK for Go v1 (aws-sdk-go 1.44, Debian's source package, built here with Debian's
/// Go) with encryption on, on the signature-checking store: signed payloads (and a body swapped
/// after signing, refused with nothing stored), ranges, s3manager's parallel multipart upload
/// and parallel ranged download, parts out of order, paged listings, copies, presigned URLs,
/// errors, DeleteObjects.
#[tokio::test]
async fn go_sdk_v1_suite_encrypted() {
    go_suite(
        "go_sdk_v1_suite_encrypted",
        "go_v1_suite.go",
        "aws-sdk-go/service/s3",
    )
    .await;
}

/// The AWS SDK for Go v2 (service/s3 1.29, Debian's source package) with encryption on, on the
/// signature-checking store: SDK checksums (CRC32, SHA256) and GETs with ChecksumMode, ranges,
/// the feature/s3/manager Uploader and Downloader, parts out of order and a GET by part
/// number, a paginator, copies with conditional GETs, presigned URLs, errors, DeleteObjects.
#[tokio::test]
async fn go_sdk_v2_suite_encrypted() {
    go_suite(
        "go_sdk_v2_suite_encrypted",
        "go_v2_suite.go",
        "aws-sdk-go-v2/service/s3",
    )
    .await;
}

/// Builds `source` (tests/clients) with Debian's Go against Debian's Go sources (GOPATH mode)
/// and runs it against an encrypting Chmura on s3s-fs; it ends with "go v1/v2 suite OK".
async fn go_suite(test: &str, source: &str, sdk: &str) {
    let Some(go) = require("go", test) else {
        return;
    };
    let sdk = Path::new("/usr/share/gocode/src/github.com/aws").join(sdk);
    if !sdk.exists() {
        assert!(
            std::env::var("CHMURA_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: {} is required; run scripts/install-tools.sh",
            sdk.display()
        );
        eprintln!("SKIPPED {test}: {} not installed", sdk.display());
        return;
    }
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let bin = env.dir.path().join("go_suite");
    let mut build = isolated(&go, &env);
    build
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .env(
            "GOCACHE",
            chmura_tests::tools::tools_dir().join("go").join("cache"),
        )
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(suite_file(source));
    run(build).await;
    let mut c = isolated(&bin, &env);
    c.env("SSL_CERT_FILE", &env.proxy.certs.ca_file)
        .arg(env.proxy.endpoint())
        .arg("go-bucket");
    let marker = if source.contains("v2") {
        "go v2 suite OK"
    } else {
        "go v1 suite OK"
    };
    run_suite(c, marker).await;
    let stored = env.store.stored("go-bucket", "small").expect("stored");
    assert_eq!(
        stored.len() as u64,
        chmura_crypto::layout::ciphertext_len(70_001),
        "the store holds ciphertext"
    );
}

/// The AWS SDK for Ruby (aws-sdk-s3 1.117, Debian's package) with encryption on, on the
/// signature-checking store: puts with metadata and SDK checksums, ranges and a streamed GET,
/// `upload_file` in parts (threads) and `download_file` both by part number (HEAD
/// `partNumber=1`, then a GET per part) and by ranges, a multipart upload by hand with parts
/// out of order, paged listings, copies, presigned URLs, errors, batch delete.
#[tokio::test]
async fn ruby_sdk_suite_encrypted() {
    let test = "ruby_sdk_suite_encrypted";
    let Some(ruby) = require("ruby", test) else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let work = env.dir.path().join("ruby");
    std::fs::create_dir_all(&work).expect("work");
    let mut c = isolated(&ruby, &env);
    c.arg(suite_file("ruby_suite.rb"))
        .arg(env.proxy.endpoint())
        .arg(&env.proxy.certs.ca_file)
        .arg("ruby-bucket")
        .arg(&work);
    run_suite(c, "ruby suite OK").await;
    let stored = env.store.stored("ruby-bucket", "kept").expect("stored");
    assert_eq!(
        stored.len() as u64,
        chmura_crypto::layout::ciphertext_len(70_001),
        "the store holds ciphertext"
    );
}

/// minio-go's functional test suite (`functional_tests.go`, the suite MinIO's Mint runs for
/// minio-go; v7.0.46 from Debian's source package, in full mode with SSE-C and SSE-S3 tests)
/// through Chmura, encryption on, moto upstream. Every test must pass, except the few below
/// whose expectations fail on moto or on a one-region endpoint; each of those may pass too.
#[tokio::test]
async fn minio_go_functional_suite_encrypted_on_moto() {
    let test = "minio_go_functional_suite_encrypted_on_moto";
    let Some(suite) = require("minio-go-functional", test) else {
        return;
    };
    let Some((_moto, env)) = chmura_tests::encrypted_env_on_moto(test).await else {
        return;
    };
    let known = [
        MAKE_BUCKET_ERROR,
        MAKE_BUCKET_REGIONS,
        (
            "minio-go: testRemoveMultipleObjectsWithResult",
            "moto's DeleteObjects errors carry no VersionId",
        ),
        (
            "minio-go: testGetObjectACLContext",
            "expects a store other than AWS to ignore canned ACLs; moto keeps them",
        ),
        (
            "minio-go: testRemoveObjectWithVersioning",
            "moto lists delete markers after every version, not newest first per key",
        ),
    ];
    minio_go_functional(&suite, &env, &known, 100).await;
}

/// The same suite on the embedded default store (s3s-fs, which checks the signatures of
/// Chmura's re-signed requests; it has no versioning, tagging, ACLs or Object Lock, so the
/// tests that need them answer NA).
#[tokio::test]
async fn minio_go_functional_suite_encrypted() {
    let test = "minio_go_functional_suite_encrypted";
    let Some(suite) = require("minio-go-functional", test) else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let known = [
        MAKE_BUCKET_ERROR,
        MAKE_BUCKET_REGIONS,
        (
            "minio-go: testRemoveMultipleObjectsWithResult",
            "needs Object Lock, which s3s-fs lacks",
        ),
    ];
    minio_go_functional(&suite, &env, &known, 90).await;
}

/// minio-py's functional test suite (`tests/functional/tests.py` of minio 7.2.20's sdist, the
/// suite MinIO's Mint runs for minio-py; full mode, SSE-C on) through Chmura, encryption on,
/// moto upstream: every test passes or answers NA, but for the few below (MinIO extensions
/// and moto's versioning), each of which may pass too.
#[tokio::test]
async fn minio_py_functional_suite_encrypted_on_moto() {
    let test = "minio_py_functional_suite_encrypted_on_moto";
    let Some((_moto, env)) = chmura_tests::encrypted_env_on_moto(test).await else {
        return;
    };
    let known = [
        SNOWBALL,
        SNOWBALL_STAGING,
        (
            "minio-py:test_stat_object",
            "moto answers a Complete on an unversioned bucket with version id `null`, then refuses `versionId=null`",
        ),
        (
            "minio-py:test_stat_object_SSEC",
            "moto answers a Complete on an unversioned bucket with version id `null`, then refuses `versionId=null`",
        ),
        (
            "minio-py:test_set_get_bucket_versioning",
            "MinIO's ExcludeFolders versioning extension",
        ),
    ];
    minio_py_functional(test, &env, &known, 50).await;
}

/// The same suite on the embedded default store (s3s-fs: no versioning or bucket policies, so
/// those tests answer NA).
#[tokio::test]
async fn minio_py_functional_suite_encrypted() {
    let test = "minio_py_functional_suite_encrypted";
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let known = [
        SNOWBALL,
        SNOWBALL_STAGING,
        (
            "minio-py:test_negative_put_object_with_path_segment",
            "s3s-fs answers a key starting with `/` with a 500",
        ),
    ];
    minio_py_functional(test, &env, &known, 38).await;
}

const SNOWBALL: (&str, &str) = (
    "minio-py:test_upload_snowball_objects",
    "MinIO extracts an uploaded tar archive into objects (`X-Amz-Meta-Snowball-Auto-Extract`); S3 stores the archive",
);
const SNOWBALL_STAGING: (&str, &str) = (
    "minio-py:test_upload_snowball_objects_with_staging",
    "MinIO extracts an uploaded tar archive into objects; S3 stores the archive",
);

/// Runs minio-py's functional suite against `env`'s Chmura to its end: every result is PASS
/// or NA, but for the `known` tests (name, why), and at least `min_passed` pass.
async fn minio_py_functional(test: &str, env: &Env, known: &[(&str, &str)], min_passed: usize) {
    let Some(python) = require("python", test) else {
        return;
    };
    let suite = chmura_tests::tools::tools_dir()
        .join("minio-py-functional")
        .join("tests.py");
    if !suite.exists() {
        assert!(
            std::env::var("CHMURA_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: {} is required; run scripts/install-tools.sh",
            suite.display()
        );
        eprintln!("SKIPPED {test}: {} not installed", suite.display());
        return;
    }
    let work = env.dir.path().join("minio-py-functional");
    std::fs::create_dir_all(&work).expect("work");
    let mut c = isolated(&python, env);
    c.env(
        "SERVER_ENDPOINT",
        format!("localhost:{}", env.proxy.addr.port()),
    )
    .env("ACCESS_KEY", TENANT_AK)
    .env("SECRET_KEY", TENANT_SK)
    .env("ENABLE_HTTPS", "1")
    .env("MINT_MODE", "full")
    .env("DATA_DIR", work.join("no-mint-data"))
    .env("SSL_CERT_FILE", &env.proxy.certs.ca_file)
    .arg(suite_file("minio_py_functional.py"))
    .arg(&suite)
    .arg(&work);
    let out = run(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("minio-py functional suite ran to the end"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_mint_results(&stdout, known, min_passed);
}

const MAKE_BUCKET_ERROR: (&str, &str) = (
    "minio-go: testMakeBucketError",
    "signs CreateBucket for eu-central-1; Chmura serves one region and names it, as S3 does",
);
const MAKE_BUCKET_REGIONS: (&str, &str) = (
    "minio-go: testMakeBucketRegions",
    "signs CreateBucket for eu-central-1; Chmura serves one region and names it, as S3 does",
);

/// Runs minio-go's functional suite against `env`'s Chmura: every result is PASS or NA, but
/// for the `known` tests (name, why), and at least `min_passed` pass.
async fn minio_go_functional(suite: &Path, env: &Env, known: &[(&str, &str)], min_passed: usize) {
    let mut c = isolated(suite, env);
    // The suite writes (and leaves) data files in its working folder.
    let work = env.dir.path().join("minio-go-functional");
    std::fs::create_dir_all(&work).expect("work");
    c.current_dir(&work);
    c.env(
        "SERVER_ENDPOINT",
        format!("localhost:{}", env.proxy.addr.port()),
    )
    .env("ACCESS_KEY", TENANT_AK)
    .env("SECRET_KEY", TENANT_SK)
    .env("ENABLE_HTTPS", "1")
    .env("ENABLE_KMS", "1")
    .env("MINT_MODE", "full")
    .env("RUN_ON_FAIL", "1")
    .env("SSL_CERT_FILE", &env.proxy.certs.ca_file);
    let out = run(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The full suite has over 100 results; fewer means it did not run (or stopped early).
    check_mint_results(&stdout, known, min_passed);
}

/// Checks the JSON result lines a Mint suite prints (`name`, `status` PASS/FAIL/NA, and
/// `function`, `error` or `message` on failures): every result is PASS or NA but for the
/// `known` tests (name, why), and at least `min_passed` passed.
fn check_mint_results(stdout: &str, known: &[(&str, &str)], min_passed: usize) {
    let (mut passed, mut failed) = (0, Vec::new());
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON result line");
        let name = v["name"].as_str().unwrap_or("?");
        match v["status"].as_str() {
            Some("PASS") => passed += 1,
            Some("NA") => {}
            _ if known.iter().any(|(n, _)| *n == name) => {}
            _ => failed.push(format!(
                "{name} {}: {}",
                v["function"].as_str().unwrap_or(""),
                v["error"].as_str().or(v["message"].as_str()).unwrap_or("")
            )),
        }
    }
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
    assert!(
        passed >= min_passed,
        "only {passed} passed (want {min_passed}):\n{stdout}"
    );
}

/// s3cmd as `s3cmd --configure` leaves it: `bucket_location = US`, so it signs for region
/// "US" until the AuthorizationHeaderMalformed error names the right one in `<Region>` (as
/// S3's does). Then the everyday commands, encryption on: mb, put, info, modify (a copy onto
/// itself), cp, mv, sync twice (the second sends nothing), du, ls -r, get, del -r.
#[tokio::test]
async fn s3cmd_with_its_default_region_and_everyday_commands() {
    let Some(s3cmd) = require(
        "s3cmd",
        "s3cmd_with_its_default_region_and_everyday_commands",
    ) else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    let work = env.dir.path().join("s3cmd-us");
    std::fs::create_dir_all(work.join("tree")).expect("work");
    let cfg = work.join("s3cfg");
    let host = format!("localhost:{}", env.proxy.addr.port());
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {TENANT_AK}\nsecret_key = {TENANT_SK}\nhost_base = {host}\nhost_bucket = {host}\nuse_https = True\nca_certs_file = {}\ncheck_ssl_certificate = True\n",
            env.proxy.certs.ca_file.display()
        ),
    )
    .expect("cfg");
    let one = write_file(&work.join("one.bin"), 2_000_003, 41);
    for i in 0..3 {
        write_file(&work.join(format!("tree/f{i}")), 10_000 + i, 50 + i as u64);
    }
    let cmd = |args: &[&str]| {
        let mut c = isolated(&s3cmd, &env);
        c.arg("-c").arg(&cfg).args(args);
        c
    };
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let p = |name: &str| work.join(name).display().to_string();
    run(cmd(&["mb", "s3://s3cmd-us"])).await;
    let put = run(cmd(&["put", &p("one.bin"), "s3://s3cmd-us/one.bin"])).await;
    assert!(!text(&put).contains("WARNING"), "{}", text(&put));
    let info = run(cmd(&["info", "s3://s3cmd-us/one.bin"])).await;
    assert!(text(&info).contains("2000003"), "{}", text(&info));
    run(cmd(&[
        "modify",
        "--add-header=x-amz-meta-colour:blue",
        "s3://s3cmd-us/one.bin",
    ]))
    .await;
    let info = run(cmd(&["info", "s3://s3cmd-us/one.bin"])).await;
    assert!(text(&info).contains("blue"), "{}", text(&info));
    run(cmd(&[
        "cp",
        "s3://s3cmd-us/one.bin",
        "s3://s3cmd-us/two.bin",
    ]))
    .await;
    run(cmd(&[
        "mv",
        "s3://s3cmd-us/two.bin",
        "s3://s3cmd-us/three.bin",
    ]))
    .await;
    let tree = format!("{}/", p("tree"));
    run(cmd(&["sync", &tree, "s3://s3cmd-us/tree/"])).await;
    let again = run(cmd(&["sync", &tree, "s3://s3cmd-us/tree/"])).await;
    assert!(
        !text(&again).contains("upload:"),
        "the second sync sent files again: {}",
        text(&again)
    );
    let du = run(cmd(&["du", "s3://s3cmd-us"])).await;
    let total = 2 * 2_000_003 + 10_000 + 10_001 + 10_002;
    assert!(
        text(&du).contains(&total.to_string()),
        "du counts plaintext sizes ({total}): {}",
        text(&du)
    );
    let ls = run(cmd(&["ls", "-r", "s3://s3cmd-us"])).await;
    assert_eq!(text(&ls).lines().count(), 5, "{}", text(&ls));
    run(cmd(&[
        "get",
        "--force",
        "s3://s3cmd-us/three.bin",
        &p("back.bin"),
    ]))
    .await;
    assert!(std::fs::read(work.join("back.bin")).expect("back") == one);
    run(cmd(&["del", "--recursive", "--force", "s3://s3cmd-us/"])).await;
    let ls = run(cmd(&["ls", "-r", "s3://s3cmd-us"])).await;
    assert_eq!(text(&ls).trim(), "", "everything deleted");
}

/// Bucket configuration sub-resources s3cmd's `accesslog`, `ws-info` and `payer` (and the
/// SDKs) use pass through to the store, each under its IAM action: logging, website,
/// requestPayment, notification, accelerate.
#[tokio::test]
async fn bucket_configuration_passes_through_on_moto() {
    use aws_sdk_s3::types::{
        AccelerateConfiguration, BucketAccelerateStatus, BucketLoggingStatus, IndexDocument,
        LoggingEnabled, NotificationConfiguration, Payer, RequestPaymentConfiguration,
        WebsiteConfiguration,
    };
    let Some((_moto, env)) =
        chmura_tests::encrypted_env_on_moto("bucket_configuration_passes_through_on_moto").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    for b in ["conf-bucket", "conf-logs"] {
        s3.create_bucket().bucket(b).send().await.expect("bucket");
    }
    s3.put_bucket_website()
        .bucket("conf-bucket")
        .website_configuration(
            WebsiteConfiguration::builder()
                .index_document(
                    IndexDocument::builder()
                        .suffix("index.html")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("put website");
    let w = s3
        .get_bucket_website()
        .bucket("conf-bucket")
        .send()
        .await
        .expect("get website");
    assert_eq!(w.index_document().map(|i| i.suffix()), Some("index.html"));
    s3.delete_bucket_website()
        .bucket("conf-bucket")
        .send()
        .await
        .expect("delete website");
    s3.put_bucket_request_payment()
        .bucket("conf-bucket")
        .request_payment_configuration(
            RequestPaymentConfiguration::builder()
                .payer(Payer::Requester)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put payment");
    // (moto 5.2.5 answers GET ?requestPayment with the bucket's listing.)
    s3.put_bucket_accelerate_configuration()
        .bucket("conf-bucket")
        .accelerate_configuration(
            AccelerateConfiguration::builder()
                .status(BucketAccelerateStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("put accelerate");
    // moto 5.2.5 names the answer's root element wrongly, which the SDK refuses to parse:
    // the bytes the store sent are checked.
    match s3
        .get_bucket_accelerate_configuration()
        .bucket("conf-bucket")
        .send()
        .await
    {
        Ok(a) => assert_eq!(a.status(), Some(&BucketAccelerateStatus::Enabled)),
        Err(e) => {
            let raw = e.raw_response().expect("a response");
            let body = std::str::from_utf8(raw.body().bytes().expect("body")).expect("utf8");
            assert!(
                raw.status().as_u16() == 200 && body.contains("<Status>Enabled</Status>"),
                "{body}"
            );
        }
    }
    s3.put_bucket_notification_configuration()
        .bucket("conf-bucket")
        .notification_configuration(NotificationConfiguration::builder().build())
        .send()
        .await
        .expect("put notification");
    // (moto 5.2.5 answers with a wrongly named root element here too.)
    if let Err(e) = s3
        .get_bucket_notification_configuration()
        .bucket("conf-bucket")
        .send()
        .await
    {
        let raw = e.raw_response().expect("a response");
        assert_eq!(raw.status().as_u16(), 200, "{e:?}");
    }
    let logging = s3
        .put_bucket_logging()
        .bucket("conf-bucket")
        .bucket_logging_status(
            BucketLoggingStatus::builder()
                .logging_enabled(
                    LoggingEnabled::builder()
                        .target_bucket("conf-logs")
                        .target_prefix("conf/")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    // moto wants log-delivery permissions on the target first; either way the store, not
    // Chmura, answered (Chmura's refusal would be NotImplemented).
    if let Err(e) = &logging {
        let code = e.as_service_error().and_then(|s| s.meta().code());
        assert_ne!(code, Some("NotImplemented"), "{e:?}");
    }
    s3.get_bucket_logging()
        .bucket("conf-bucket")
        .send()
        .await
        .expect("get logging");
}

/// SSE-C from real clients, encryption on: aws cli `--sse-c` up (multipart), down (parallel
/// ranged GETs after a HEAD, all with the key), a copy to another key (UploadPartCopy with
/// `--sse-c-copy-source`), and a download without the key refused; rclone with
/// `sse_customer_key` (it computes the MD5) copies a file up and reads it back.
#[tokio::test]
async fn sse_c_with_aws_cli_and_rclone() {
    let (Some(aws), Some(rclone)) = (
        require("aws", "sse_c_with_aws_cli_and_rclone"),
        require("rclone", "sse_c_with_aws_cli_and_rclone"),
    ) else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("ssec-cli");
    let work = env.dir.path().join("ssec");
    std::fs::create_dir_all(&work).expect("work");
    let key_a = work.join("a.key");
    let key_b = work.join("b.key");
    std::fs::write(&key_a, [0x11u8; 32]).expect("key");
    std::fs::write(&key_b, [0x22u8; 32]).expect("key");
    let big = write_file(&work.join("big.bin"), 20 * 1024 * 1024 + 5, 61);
    let ep = env.proxy.endpoint();
    let ca = env.proxy.certs.ca_file.clone();
    let aws_cmd = |args: &[&str]| {
        let mut c = isolated(&aws, &env);
        c.arg("--endpoint-url")
            .arg(&ep)
            .arg("--ca-bundle")
            .arg(&ca)
            .args(args);
        c
    };
    let fileb = |p: &Path| format!("fileb://{}", p.display());
    let (ka, kb) = (fileb(&key_a), fileb(&key_b));
    let path = |name: &str| work.join(name).to_str().expect("path").to_string();
    // `aws s3 cp FROM TO` with the destination's (or the object's) customer key, and the
    // copy source's.
    let cp = |from: &str, to: &str, key: Option<&str>, source_key: Option<&str>| {
        let mut args = vec!["s3".to_string(), "cp".into(), from.into(), to.into()];
        for (flag, k) in [("--sse-c", key), ("--sse-c-copy-source", source_key)] {
            if let Some(k) = k {
                args.extend([
                    flag.into(),
                    "AES256".into(),
                    format!("{flag}-key"),
                    k.into(),
                ]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        aws_cmd(&args)
    };
    run(cp(&path("big.bin"), "s3://ssec-cli/big", Some(&ka), None)).await;
    run(cp("s3://ssec-cli/big", &path("down.bin"), Some(&ka), None)).await;
    assert!(
        std::fs::read(path("down.bin")).expect("down") == big,
        "aws cli SSE-C round trip"
    );
    let refused = tokio::task::spawn_blocking({
        let mut c = cp("s3://ssec-cli/big", &path("nokey.bin"), None, None);
        move || c.output()
    })
    .await
    .expect("join")
    .expect("spawn");
    assert!(
        !refused.status.success(),
        "a download without the key worked"
    );
    run(cp(
        "s3://ssec-cli/big",
        "s3://ssec-cli/big-b",
        Some(&kb),
        Some(&ka),
    ))
    .await;
    run(cp(
        "s3://ssec-cli/big-b",
        &path("down-b.bin"),
        Some(&kb),
        None,
    ))
    .await;
    assert!(
        std::fs::read(path("down-b.bin")).expect("down") == big,
        "copy under key B"
    );

    // rclone: the key as 32 characters; rclone sends its MD5 itself.
    let small = write_file(&work.join("small.bin"), 300_000, 62);
    let rc = |args: &[&str]| {
        let mut c = rclone_cmd(&rclone, &env, args);
        c.env("RCLONE_CONFIG_CH_SSE_CUSTOMER_ALGORITHM", "AES256")
            .env(
                "RCLONE_CONFIG_CH_SSE_CUSTOMER_KEY",
                "rclone-test-key-of-32-characters",
            );
        c
    };
    run(rc(&[
        "copyto",
        work.join("small.bin").to_str().expect("path"),
        "ch:ssec-cli/rclone.bin",
    ]))
    .await;
    let cat = run(rc(&["cat", "ch:ssec-cli/rclone.bin"])).await;
    assert!(cat.stdout == small, "rclone SSE-C round trip");
    let refused = tokio::task::spawn_blocking({
        let mut c = rclone_cmd(&rclone, &env, &["cat", "ch:ssec-cli/rclone.bin"]);
        move || c.output()
    })
    .await
    .expect("join")
    .expect("spawn");
    assert!(
        !refused.status.success() || refused.stdout != small,
        "rclone read the object without its key"
    );
}

/// restic (Debian's package; Go, through minio-go, a client family none of the others share):
/// a repository on an encrypted bucket of the embedded default store, two backups, a check
/// that reads every pack back, a restore compared byte for byte, and a prune (which rewrites
/// and deletes packs), checked again.
#[tokio::test]
async fn restic_backup_check_restore_prune_encrypted() {
    let test = "restic_backup_check_restore_prune_encrypted";
    let Some(restic) = require("restic", test) else {
        return;
    };
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("restic-bucket");
    let work = env.dir.path().join("restic");
    let src = work.join("data");
    std::fs::create_dir_all(src.join("sub")).expect("work");
    write_file(&src.join("big.bin"), 20 * 1024 * 1024 + 11, 61);
    for i in 0..40u64 {
        write_file(
            &src.join("sub").join(format!("f{i}")),
            1000 * i as usize,
            62 + i,
        );
    }
    let repo = format!(
        "s3:https://localhost:{}/restic-bucket/repo",
        env.proxy.addr.port()
    );
    let restic_cmd = |args: &[&str]| {
        let mut c = isolated(&restic, &env);
        c.env("RESTIC_PASSWORD", "correct horse battery staple")
            .env("RESTIC_CACHE_DIR", work.join("cache"))
            .arg("--cacert")
            .arg(&env.proxy.certs.ca_file)
            .args(["-r", &repo])
            .args(args);
        c
    };
    let src_arg = src.to_str().expect("path");
    run(restic_cmd(&["init"])).await;
    run(restic_cmd(&["backup", src_arg])).await;
    write_file(&src.join("sub").join("f3"), 5000, 99);
    std::fs::remove_file(src.join("sub").join("f4")).expect("rm");
    run(restic_cmd(&["backup", src_arg])).await;
    let check = run(restic_cmd(&["check", "--read-data"])).await;
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("no errors were found"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let target = work.join("restore");
    run(restic_cmd(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("path"),
    ]))
    .await;
    // restic restores under the full source path.
    let restored = target.join(src.strip_prefix("/").expect("absolute"));
    let mut compared = 0;
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).expect("inside");
        assert_eq!(
            std::fs::read(restored.join(rel)).ok(),
            std::fs::read(&entry).ok(),
            "{} restored as backed up",
            rel.display()
        );
        compared += 1;
    }
    assert_eq!(compared, 40, "every file compared");
    assert!(!restored.join("sub").join("f4").exists());
    run(restic_cmd(&["forget", "--keep-last", "1", "--prune"])).await;
    let snapshots = run(restic_cmd(&["snapshots", "--json"])).await;
    assert_eq!(
        String::from_utf8_lossy(&snapshots.stdout)
            .matches("\"short_id\"")
            .count(),
        1,
        "one snapshot left after the prune"
    );
    let check = run(restic_cmd(&["check", "--read-data"])).await;
    assert!(String::from_utf8_lossy(&check.stdout).contains("no errors were found"));
    // restic keeps its key files as JSON; the store holds them sealed.
    let keys = env
        .store
        .root
        .join("restic-bucket")
        .join("repo")
        .join("keys");
    let key_file = std::fs::read_dir(&keys)
        .expect("keys folder in the store")
        .next()
        .expect("a key file")
        .expect("entry")
        .path();
    let stored = std::fs::read(&key_file).expect("stored key file");
    assert!(!stored.starts_with(b"{"), "the store holds ciphertext");
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
