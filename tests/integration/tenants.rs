//! The two-tenant example (`deploy/examples/two-tenants/`) run for real: each tenant reads and
//! writes its own data; every cross-tenant attempt (by name, by key tricks, by copying
//! ciphertext across in the store) fails; a policy-denied action changes nothing; acme's
//! deletes need an MFA code (from pyotp), which cannot be replayed.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::{write_private, Proxy, Store, TestCerts, UPSTREAM_SK};

const ACME: (&str, &str) = ("CHMURAACME0000000001", "acme-secret-key-0000000000000001");
const GLOBEX: (&str, &str) = ("CHMURAGLOBEX00000001", "globex-secret-key-000000000000001");
const TOTP: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BANJ2W24DTEBXXMZLS";

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    store: Store,
    proxy: Proxy,
}

async fn start() -> Setup {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("chmura");
    std::fs::create_dir_all(&dir).expect("dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/two-tenants");
    for f in ["chmura.toml", "acme-policy.json", "globex-policy.json"] {
        std::fs::copy(example.join(f), dir.join(f)).expect("copy example");
    }
    let store = Store::start(&tmp.path().join("store")).await;
    for b in ["shared-store", "globex-archive"] {
        std::fs::create_dir_all(tmp.path().join("store").join(b)).expect("bucket");
    }
    TestCerts::generate(&dir);
    write_private(&dir.join("acme.secret"), ACME.1);
    write_private(&dir.join("globex.secret"), GLOBEX.1);
    write_private(&dir.join("upstream.secret"), UPSTREAM_SK);
    write_private(&dir.join("acme-ops-1.totp"), TOTP);
    write_private(
        &dir.join("chmura.keyring"),
        &format!(
            "chmura-keyring v1\nacme-key {}\nglobex-key {}\n",
            "a1".repeat(32),
            "b2".repeat(32)
        ),
    );
    // The example's upstream is a placeholder: point it at the test store.
    let cfg = dir.join("chmura.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text.replace("http://127.0.0.1:9000", &store.endpoint());
    std::fs::write(&cfg, text.as_bytes()).expect("config");
    // The example is one an operator can copy: check-config has nothing to warn about.
    let loaded = chmura_config::Config::from_toml(&text, &dir).expect("example loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let proxy = Proxy::serve_config(&dir, &cfg).await;
    Setup {
        _dir: tmp,
        dir,
        store,
        proxy,
    }
}

fn err(e: &impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {}", err(&e)));
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let r = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| err(&e))?;
    Ok(r.body
        .collect()
        .await
        .map_err(|e| err(&e))?
        .into_bytes()
        .to_vec())
}

#[tokio::test]
async fn two_tenants_are_isolated_by_name_prefix_key_and_policy() {
    let s = start().await;
    let acme = s.proxy.sdk_client_as(ACME.0, ACME.1);
    let globex = s.proxy.sdk_client_as(GLOBEX.0, GLOBEX.1);
    for (c, body) in [(&acme, "acme's report"), (&globex, "globex's report")] {
        put(c, "data", "reports/q1.txt", body.as_bytes()).await;
    }
    assert_eq!(
        get(&acme, "data", "reports/q1.txt").await.unwrap(),
        b"acme's report"
    );
    assert_eq!(
        get(&globex, "data", "reports/q1.txt").await.unwrap(),
        b"globex's report"
    );
    // In the store: two prefixes, ciphertext only.
    let root = s.store.root.clone();
    let a = std::fs::read(root.join("shared-store/acme/data/reports/q1.txt")).expect("acme stored");
    let g =
        std::fs::read(root.join("shared-store/globex/data/reports/q1.txt")).expect("globex stored");
    assert!(!a.windows(4).any(|w| w == b"acme") && !g.windows(6).any(|w| w == b"globex"));

    // Each sees only its buckets and keys, under its own names.
    let names = |r: aws_sdk_s3::operation::list_buckets::ListBucketsOutput| {
        r.buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(acme.list_buckets().send().await.expect("ls")),
        vec!["data"]
    );
    assert_eq!(
        names(globex.list_buckets().send().await.expect("ls")),
        vec!["data", "archive"]
    );
    let l = acme
        .list_objects_v2()
        .bucket("data")
        .prefix("reports/")
        .delimiter("/")
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = l.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec!["reports/q1.txt"]);
    assert_eq!(l.name(), Some("data"));
    assert_eq!(l.prefix(), Some("reports/"));
    let l = acme
        .list_objects_v2()
        .bucket("data")
        .delimiter("/")
        .send()
        .await
        .expect("list root");
    let prefixes: Vec<&str> = l
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, vec!["reports/"]);
    // Pagination tokens do not reveal the upstream layout and work.
    for i in 0..3 {
        acme.put_object()
            .bucket("data")
            .key(format!("page/{i}"))
            .body(ByteStream::from_static(b"p"))
            .send()
            .await
            .expect("put");
    }
    let p1 = acme
        .list_objects_v2()
        .bucket("data")
        .prefix("page/")
        .max_keys(2)
        .send()
        .await
        .expect("page 1");
    let token = p1.next_continuation_token().expect("truncated").to_string();
    assert!(!token.contains("acme"), "{token}");
    let p2 = acme
        .list_objects_v2()
        .bucket("data")
        .prefix("page/")
        .continuation_token(&token)
        .send()
        .await
        .expect("page 2");
    let mut all: Vec<String> = p1
        .contents()
        .iter()
        .chain(p2.contents())
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    all.sort();
    assert_eq!(all, vec!["page/0", "page/1", "page/2"]);

    // By name: acme has no "archive".
    let e = acme
        .list_objects_v2()
        .bucket("archive")
        .send()
        .await
        .expect_err("other bucket");
    assert!(err(&e).contains("AccessDenied"));
    let e = acme
        .get_object()
        .bucket("globex-archive")
        .key("x")
        .send()
        .await
        .expect_err("upstream name");
    assert!(err(&e).contains("AccessDenied"));
    // By key tricks: nothing leaves the prefix.
    for key in [
        "../../globex/data/reports/q1.txt",
        "../globex/data/reports/q1.txt",
        "reports/../../../globex/data/reports/q1.txt",
        "a//b",
        "./x",
        "\u{FF0E}\u{FF0E}/\u{FF0E}\u{FF0E}/globex/data/reports/q1.txt",
        "..\u{2215}..\u{2215}globex",
        // NFKC makes "‥" (U+2025) and "︰" (U+FE30) into "..".
        "\u{2025}/\u{2025}/globex/data/reports/q1.txt",
        "\u{FE30}/\u{FE30}/globex/data/reports/q1.txt",
    ] {
        let e = acme
            .get_object()
            .bucket("data")
            .key(key)
            .send()
            .await
            .expect_err(key);
        let t = err(&e);
        assert!(
            t.contains("InvalidArgument") || t.contains("AccessDenied"),
            "{key}: {t}"
        );
        let e = acme
            .put_object()
            .bucket("data")
            .key(key)
            .body(ByteStream::from_static(b"escape"))
            .send()
            .await
            .expect_err(key);
        assert!(!err(&e).is_empty());
    }
    // Names that stay names when normalised are keys like any other ("…" reads as "...").
    let ellipsis = "reports/Chapter 1\u{2026}.txt";
    put(&acme, "data", ellipsis, b"an ellipsis").await;
    assert_eq!(get(&acme, "data", ellipsis).await.unwrap(), b"an ellipsis");
    // Listing parameters are key prefixes in the store: held to the same rules.
    for prefix in [
        "../globex/",
        "reports/../../globex/",
        "\u{2025}/\u{2025}/globex/",
    ] {
        let e = acme
            .list_objects_v2()
            .bucket("data")
            .prefix(prefix)
            .send()
            .await
            .expect_err(prefix);
        assert!(err(&e).contains("InvalidArgument"), "{prefix}: {}", err(&e));
        // A marker is only a bound in key order: the listing stays within acme's prefix.
        let listed = acme
            .list_objects()
            .bucket("data")
            .marker(prefix)
            .send()
            .await
            .expect(prefix);
        for o in listed.contents() {
            let key = o.key().unwrap_or("");
            assert!(
                get(&acme, "data", key).await.is_ok(),
                "{prefix}: listed {key}, which is not acme's"
            );
        }
    }
    // Percent-encoded slashes are decoded once: a key holding "%2F" is a literal name in
    // acme's space, never a path into globex's.
    let tricky = "..%2F..%2Fglobex%2Fdata%2Freports%2Fq1.txt";
    let got = get(&acme, "data", tricky).await;
    assert!(
        got.as_deref().map_or(true, |b| b != b"globex's report"),
        "read globex's object"
    );
    acme.put_object()
        .bucket("data")
        .key(tricky)
        .body(ByteStream::from_static(b"overwrite?"))
        .send()
        .await
        .expect("a literal key");
    assert_eq!(
        get(&globex, "data", "reports/q1.txt").await.unwrap(),
        b"globex's report"
    );
    assert_eq!(get(&acme, "data", tricky).await.unwrap(), b"overwrite?");
    // Copying across tenants: acme cannot name globex's buckets as a copy source.
    let e = acme
        .copy_object()
        .bucket("data")
        .key("stolen")
        .copy_source("archive/anything")
        .send()
        .await
        .expect_err("copy from another tenant's bucket");
    assert!(err(&e).contains("AccessDenied"));
    // Copying ciphertext across in the store: globex cannot decrypt acme's object.
    let store = chmura_tests::sdk_client(
        &s.store.endpoint(),
        None,
        chmura_tests::UPSTREAM_AK,
        UPSTREAM_SK,
    );
    store
        .copy_object()
        .bucket("shared-store")
        .key("globex/data/stolen.txt")
        .copy_source("shared-store/acme/data/reports/q1.txt")
        .send()
        .await
        .expect("copy in the store, metadata included");
    let got = get(&globex, "data", "stolen.txt").await;
    assert!(got.is_err(), "globex decrypted acme's ciphertext");
    // Errors do not reveal the upstream layout.
    let e = acme
        .get_object()
        .bucket("data")
        .key("missing")
        .send()
        .await
        .expect_err("missing");
    let t = err(&e);
    assert!(t.contains("NoSuchKey"), "{t}");
    assert!(
        !t.contains("shared-store") && !t.contains("acme/data"),
        "{t}"
    );

    // Multipart and copies work under the tenant's names.
    let part = vec![7u8; 5 * 1024 * 1024];
    let up = acme
        .create_multipart_upload()
        .bucket("data")
        .key("big/file")
        .send()
        .await
        .expect("create");
    assert_eq!((up.bucket(), up.key()), (Some("data"), Some("big/file")));
    let id = up.upload_id().expect("id").to_string();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let body = if n == 1 {
            part.clone()
        } else {
            b"tail".to_vec()
        };
        let e = acme
            .upload_part()
            .bucket("data")
            .key("big/file")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .expect("part");
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(e.e_tag().expect("etag"))
                .build(),
        );
    }
    let lp = acme
        .list_parts()
        .bucket("data")
        .key("big/file")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(lp.key(), Some("big/file"));
    let done = acme
        .complete_multipart_upload()
        .bucket("data")
        .key("big/file")
        .upload_id(&id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    assert_eq!(
        (done.bucket(), done.key()),
        (Some("data"), Some("big/file"))
    );
    assert!(done.location().is_none_or(|l| !l.contains("shared-store")));
    let back = get(&acme, "data", "big/file").await.unwrap();
    assert_eq!(back.len(), part.len() + 4);
    assert!(root.join("shared-store/acme/data/big/file").exists());
    acme.copy_object()
        .bucket("data")
        .key("reports/copy.txt")
        .copy_source("data/reports/q1.txt")
        .send()
        .await
        .expect("copy within acme's bucket");
    assert_eq!(
        get(&acme, "data", "reports/copy.txt").await.unwrap(),
        b"acme's report"
    );

    // A policy-denied action changes nothing: globex may not delete.
    let e = globex
        .delete_object()
        .bucket("data")
        .key("reports/q1.txt")
        .send()
        .await
        .expect_err("globex delete");
    assert!(err(&e).contains("AccessDenied"));
    assert!(root
        .join("shared-store/globex/data/reports/q1.txt")
        .exists());
    // The shared upstream bucket's configuration is not the tenant's to read either.
    let e = acme
        .get_bucket_versioning()
        .bucket("data")
        .send()
        .await
        .expect_err("versioning of a shared bucket");
    assert!(err(&e).contains("AccessDenied"));
    let e = acme
        .get_bucket_policy()
        .bucket("data")
        .send()
        .await
        .expect_err("policy of a shared bucket");
    assert!(err(&e).contains("AccessDenied"));
    // Bucket-level changes on a shared upstream bucket are refused even when granted.
    let e = acme
        .delete_bucket()
        .bucket("data")
        .send()
        .await
        .expect_err("delete shared bucket");
    assert!(err(&e).contains("AccessDenied"));
    assert!(root.join("shared-store").exists());
    let _ = &s.dir;
}

fn pyotp_now(python: &Path, offset: i64) -> String {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(format!(
            "import pyotp, time; print(pyotp.TOTP('{TOTP}').at(int(time.time()) + {}))",
            offset * 30
        ))
        .output()
        .expect("pyotp");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn mfa_protected_delete_with_real_clients() {
    let Some(python) =
        chmura_tests::tools::require("python", "mfa_protected_delete_with_real_clients")
    else {
        return;
    };
    let Some(aws) = chmura_tests::tools::require("aws", "mfa_protected_delete_with_real_clients")
    else {
        return;
    };
    let s = start().await;
    let acme = s.proxy.sdk_client_as(ACME.0, ACME.1);
    // aws cli as acme: put and list with its own names.
    let work = s.dir.join("work");
    std::fs::create_dir_all(&work).expect("work");
    std::fs::write(work.join("doc.txt"), b"important").expect("file");
    let home = s.dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(&aws);
        for v in [
            "AWS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "AWS_PROFILE",
        ] {
            c.env_remove(v);
        }
        c.env("HOME", &home)
            .env("AWS_CONFIG_FILE", home.join("cfg"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("creds"))
            .env("AWS_ACCESS_KEY_ID", ACME.0)
            .env("AWS_SECRET_ACCESS_KEY", ACME.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("--endpoint-url")
            .arg(s.proxy.endpoint())
            .arg("--ca-bundle")
            .arg(&s.proxy.certs.ca_file)
            .args(args);
        // Not on the test's runtime thread: Chmura serves on it.
        async move {
            let out = tokio::task::spawn_blocking(move || c.output())
                .await
                .expect("join")
                .expect("aws");
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let (ok, log) = cli(&[
        "s3",
        "cp",
        work.join("doc.txt").to_str().unwrap(),
        "s3://data/docs/doc.txt",
    ])
    .await;
    assert!(ok, "{log}");
    let (ok, log) = cli(&["s3", "ls", "s3://data/docs/"]).await;
    assert!(
        ok && log.contains("doc.txt") && !log.contains("acme/"),
        "{log}"
    );
    let (ok, log) = cli(&["s3", "ls"]).await;
    assert!(ok && log.contains("data"), "{log}");
    // Delete without MFA: refused by the aws cli too, the object stays.
    let (ok, log) = cli(&["s3", "rm", "s3://data/docs/doc.txt"]).await;
    assert!(!ok || log.contains("AccessDenied"), "{log}");
    assert!(s
        .store
        .root
        .join("shared-store/acme/data/docs/doc.txt")
        .exists());
    // With a code from pyotp: deleted; the same code again: refused.
    let code = pyotp_now(&python, 0);
    acme.delete_object()
        .bucket("data")
        .key("docs/doc.txt")
        .mfa(format!("acme-ops-1 {code}"))
        .send()
        .await
        .expect("delete with MFA");
    assert!(!s
        .store
        .root
        .join("shared-store/acme/data/docs/doc.txt")
        .exists());
    acme.put_object()
        .bucket("data")
        .key("docs/again.txt")
        .body(ByteStream::from_static(b"again"))
        .send()
        .await
        .expect("put");
    let e = acme
        .delete_object()
        .bucket("data")
        .key("docs/again.txt")
        .mfa(format!("acme-ops-1 {code}"))
        .send()
        .await
        .expect_err("replayed code");
    assert!(err(&e).contains("AccessDenied"));
    assert!(s
        .store
        .root
        .join("shared-store/acme/data/docs/again.txt")
        .exists());
}

/// A form POST of a tenant with a bucket table: stored under the tenant's prefix, encrypted;
/// the answers (201 document, 303 redirect) name the tenant's bucket and key, never the
/// upstream ones; a POST carrying an upload id is not a form upload.
#[tokio::test]
async fn post_forms_of_a_mapped_tenant() {
    use base64::Engine;
    use chmura_tests::raw::{self, RawRequest};
    let s = start().await;
    let port = s.proxy.addr.port();
    let ca = s.proxy.certs.ca_pem.clone();
    let host = format!("localhost:{port}");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let form = |extra: &[(&str, &str)], file: &[u8]| {
        let conditions: String = extra
            .iter()
            .map(|(k, v)| format!(r#",{{"{k}":"{v}"}}"#))
            .collect();
        let policy = b64(format!(r#"{{"expiration":"2099-01-01T00:00:00Z","conditions":[{{"bucket":"data"}},["starts-with","$key","forms/"]{conditions}]}}"#).as_bytes());
        let signature = chmura_proxy::sigv4::sigv2_sign(ACME.1, &policy);
        let mut b = Vec::new();
        let mut fields = vec![
            ("key", "forms/${filename}"),
            ("AWSAccessKeyId", ACME.0),
            ("policy", policy.as_str()),
            ("signature", signature.as_str()),
        ];
        fields.extend_from_slice(extra);
        for (k, v) in fields {
            b.extend_from_slice(
                format!(
                    "--B0undary\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        b.extend_from_slice(b"--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.txt\"\r\n\r\n");
        b.extend_from_slice(file);
        b.extend_from_slice(b"\r\n--B0undary--\r\n");
        b
    };
    let post = |target: &str, body: Vec<u8>| {
        RawRequest::new("POST", target)
            .header("host", &host)
            .header("content-type", "multipart/form-data; boundary=B0undary")
            .header("content-length", &body.len().to_string())
            .body(body)
    };
    let r = raw::send(
        port,
        &ca,
        &post(
            "/data",
            form(&[("success_action_status", "201")], b"form body 1"),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let xml = r.text();
    assert!(xml.contains("<Bucket>data</Bucket>"), "{xml}");
    assert!(xml.contains("<Key>forms/r.txt</Key>"), "{xml}");
    assert!(xml.contains("/data/forms/r.txt</Location>"), "{xml}");
    assert!(
        !xml.contains("shared-store") && !xml.contains("acme/"),
        "{xml}"
    );
    let stored =
        std::fs::read(s.store.root.join("shared-store/acme/data/forms/r.txt")).expect("stored");
    assert!(!stored.windows(11).any(|w| w == b"form body 1"));
    let got = get(
        &s.proxy.sdk_client_as(ACME.0, ACME.1),
        "data",
        "forms/r.txt",
    )
    .await;
    assert_eq!(got.as_deref(), Ok(&b"form body 1"[..]));
    let r = raw::send(
        port,
        &ca,
        &post(
            "/data",
            form(
                &[("success_action_redirect", "https://app.example/done")],
                b"2",
            ),
        ),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let loc = r.header("location").unwrap_or("");
    assert!(
        loc.starts_with("https://app.example/done?bucket=data&key=forms%2Fr.txt&etag=%22"),
        "{loc}"
    );
    let r = raw::send(
        port,
        &ca,
        &post("/data?uploadId=x&partNumber=1", form(&[], b"3")),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (501, Some("NotImplemented"))
    );
}

/// Nothing in an answer to a mapped tenant names the store's layout: the upstream bucket, the
/// tenant's prefix or another tenant, in any header or body, on success or error.
#[tokio::test]
async fn answers_to_a_mapped_tenant_never_name_the_store() {
    use chmura_tests::raw::{self, RawRequest};
    let s = start().await;
    let port = s.proxy.addr.port();
    let host = format!("localhost:{port}");
    let signed = |method: &str, target: &str, body: &[u8]| {
        RawRequest::new(method, target)
            .header("content-length", &body.len().to_string())
            .body(body.to_vec())
            .sign_v4(
                &host,
                ACME.0,
                ACME.1,
                "UNSIGNED-PAYLOAD",
                std::time::SystemTime::now(),
            )
    };
    let mut answers = Vec::new();
    for (method, target, body) in [
        ("PUT", "/data/leak/a.txt", &b"hello"[..]),
        ("GET", "/data/leak/a.txt", b""),
        ("HEAD", "/data/leak/a.txt", b""),
        ("GET", "/data/leak/missing.txt", b""),
        ("GET", "/data?list-type=2&prefix=leak/", b""),
        ("GET", "/data?prefix=leak/&delimiter=/", b""),
        ("POST", "/data/leak/mp.bin?uploads", b""),
        ("PUT", "/data/leak/copy.txt", b""),
        ("DELETE", "/data/leak/a.txt", b""),
        ("GET", "/", b""),
    ] {
        let mut req = signed(method, target, body);
        if target == "/data/leak/copy.txt" {
            req = RawRequest::new(method, target)
                .header("content-length", "0")
                .header("x-amz-copy-source", "/data/leak/a.txt")
                .sign_v4(
                    &host,
                    ACME.0,
                    ACME.1,
                    "UNSIGNED-PAYLOAD",
                    std::time::SystemTime::now(),
                );
        }
        let r = raw::send(port, &s.proxy.certs.ca_pem, &req).await;
        assert!(
            r.status < 500,
            "{method} {target}: {} {}",
            r.status,
            r.text()
        );
        answers.push((format!("{method} {target}"), r));
    }
    // The answers did happen (a leak check on error pages alone proves little).
    assert_eq!(answers[0].1.status, 200);
    assert_eq!(answers[1].1.body, b"hello");
    assert_eq!(answers[3].1.status, 404);
    assert!(answers[4].1.text().contains("<Key>leak/a.txt</Key>"));
    assert!(answers[6].1.text().contains("<UploadId>"));
    assert_eq!(answers[7].1.status, 200, "{}", answers[7].1.text());
    for (what, r) in &answers {
        let text = r.text();
        for secret in ["shared-store", "acme/data", "globex", "acme-key"] {
            assert!(
                !text.contains(secret),
                "{what}: body names {secret}: {text}"
            );
            for (n, v) in &r.headers {
                assert!(
                    !v.contains(secret),
                    "{what}: header {n} names {secret}: {v}"
                );
            }
        }
    }
}

/// The tenant's name is in every data key's encryption context: two tenants that share the
/// key provider's key and reach the same upstream bucket (no bucket tables, policies allowing
/// everything) still cannot read each other's objects.
#[tokio::test]
async fn tenants_on_the_same_key_and_bucket_cannot_read_each_other() {
    let other = ("CHMURAOTHER000000001", "other-secret-key-0000000000000001");
    let env = chmura_tests::Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true,
        files: vec![
            ("other.secret".into(), other.1.into()),
            (
                "other-policy.json".into(),
                chmura_tests::ALLOW_ALL_POLICY.into(),
            ),
        ],
        extra_sections: format!(
            "[[tenants]]\nname = \"other\"\naccess_key_id = \"{}\"\nsecret_access_key_file = \"other.secret\"\npolicy_files = [\"other-policy.json\"]\n",
            other.0
        ),
        ..Default::default()
    })
    .await;
    env.make_bucket("common");
    let test = env.proxy.sdk_client();
    let them = env.proxy.sdk_client_as(other.0, other.1);
    put(&test, "common", "mine.txt", b"test's data").await;
    put(&them, "common", "theirs.txt", b"other's data").await;
    assert_eq!(
        get(&test, "common", "mine.txt").await.unwrap(),
        b"test's data"
    );
    assert_eq!(
        get(&them, "common", "theirs.txt").await.unwrap(),
        b"other's data"
    );
    for (client, key) in [(&them, "mine.txt"), (&test, "theirs.txt")] {
        let e = get(client, "common", key).await.expect_err(key);
        assert!(e.contains("AccessDenied"), "{key}: {e}");
        let e = client
            .copy_object()
            .bucket("common")
            .key(format!("copied-{key}"))
            .copy_source(format!("common/{key}"))
            .send()
            .await
            .expect_err("a copy re-wraps the key, which does not open");
        assert!(err(&e).contains("AccessDenied"), "{}", err(&e));
    }
}

/// The store's own answers can name what the operator set up for the shared bucket: here its
/// default encryption key (moto, like S3, sends `x-amz-server-side-encryption-aws-kms-key-id`
/// with every object). A mapped tenant never sees it.
#[tokio::test]
async fn a_mapped_tenant_never_sees_the_shared_buckets_kms_key() {
    let test = "a_mapped_tenant_never_sees_the_shared_buckets_kms_key";
    let Some(program) = chmura_tests::tools::require("moto_server", test) else {
        return;
    };
    let moto = chmura_tests::Moto::start(&program).await;
    let store =
        chmura_tests::sdk_client(&moto.endpoint, None, chmura_tests::UPSTREAM_AK, UPSTREAM_SK);
    store
        .create_bucket()
        .bucket("shared-store")
        .send()
        .await
        .expect("bucket");
    let secret_key_id = "arn:aws:kms:us-east-1:123456789012:key/operator-only-key";
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    store
        .put_bucket_encryption()
        .bucket("shared-store")
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::AwsKms)
                                .kms_master_key_id(secret_key_id)
                                .build()
                                .expect("default"),
                        )
                        .build(),
                )
                .build()
                .expect("config"),
        )
        .send()
        .await
        .expect("default encryption");
    let env = chmura_tests::Env::start_with(chmura_tests::ProxyOptions {
        encrypt: true,
        upstream_endpoint: Some(moto.endpoint.clone()),
        extra_sections: "[[tenants.buckets]]\nname = \"data\"\nupstream_bucket = \"shared-store\"\nprefix = \"test/\"\n".into(),
        ..Default::default()
    })
    .await;
    let s3 = env.proxy.sdk_client();
    let put = s3
        .put_object()
        .bucket("data")
        .key("k.txt")
        .body(ByteStream::from_static(b"mapped"))
        .send()
        .await
        .expect("put");
    let head = s3
        .head_object()
        .bucket("data")
        .key("k.txt")
        .send()
        .await
        .expect("head");
    let get = s3
        .get_object()
        .bucket("data")
        .key("k.txt")
        .send()
        .await
        .expect("get");
    // The store did use the operator's key (so there was something to hide).
    let stored = store
        .head_object()
        .bucket("shared-store")
        .key("test/k.txt")
        .send()
        .await
        .expect("stored");
    assert_eq!(stored.ssekms_key_id(), Some(secret_key_id));
    assert_eq!(put.ssekms_key_id(), None);
    assert_eq!(head.ssekms_key_id(), None);
    assert_eq!(get.ssekms_key_id(), None);
    assert_eq!(
        get.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"mapped"
    );
}
