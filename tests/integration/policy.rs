//! Per-tenant IAM policies and MFA (issue 5) enforced on real requests: a denied request gets
//! AccessDenied and changes nothing; MFA codes come from an independent TOTP implementation
//! (pyotp).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use chmura_tests::{sdk_client, Env, ProxyOptions, TENANT_AK, TENANT_SK};

fn code(e: &impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

async fn env_with(policy: &str) -> Env {
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        policy: Some(policy.to_string()),
        ..Default::default()
    })
    .await;
    env.make_bucket("pol");
    env.make_bucket("other");
    env
}

#[tokio::test]
async fn least_privilege_policy_is_enforced_and_denials_change_nothing() {
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::pol/home/${aws:username}/*"},
        {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::pol","Condition":{"StringLike":{"s3:prefix":"home/${aws:username}/*"}}},
        {"Effect":"Allow","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::pol/home/${aws:username}/tmp/*"}
    ]}"#;
    let env = env_with(policy).await;
    let s3 = env.proxy.sdk_client();
    let put = |key: &'static str| {
        s3.put_object()
            .bucket("pol")
            .key(key)
            .body(ByteStream::from_static(b"data"))
            .send()
    };
    put("home/test/a.txt").await.expect("own home");
    put("home/test/tmp/b.txt").await.expect("own tmp");
    let e = put("home/other/a.txt").await.expect_err("other home");
    assert!(code(&e).contains("AccessDenied"), "{e:?}");
    assert!(env.store.stored("pol", "home/other/a.txt").is_none());
    let e = s3
        .put_object()
        .bucket("other")
        .key("home/test/a.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("other bucket");
    assert!(code(&e).contains("AccessDenied"));
    // Listing only under the tenant's prefix.
    let l = s3
        .list_objects_v2()
        .bucket("pol")
        .prefix("home/test/")
        .send()
        .await
        .expect("list own prefix");
    assert_eq!(l.key_count(), Some(2));
    let e = s3
        .list_objects_v2()
        .bucket("pol")
        .send()
        .await
        .expect_err("list without prefix");
    assert!(code(&e).contains("AccessDenied"));
    // Deletes: only under tmp/; the denied one leaves the object in place.
    let e = s3
        .delete_object()
        .bucket("pol")
        .key("home/test/a.txt")
        .send()
        .await
        .expect_err("delete outside tmp");
    assert!(code(&e).contains("AccessDenied"));
    assert!(env.store.stored("pol", "home/test/a.txt").is_some());
    // DeleteObjects: per key; the denied key is reported and stays.
    let del = s3
        .delete_objects()
        .bucket("pol")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("home/test/tmp/b.txt")
                        .build()
                        .expect("id"),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("home/test/a.txt")
                        .build()
                        .expect("id"),
                )
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete objects");
    let deleted: Vec<&str> = del.deleted().iter().filter_map(|d| d.key()).collect();
    assert_eq!(deleted, vec!["home/test/tmp/b.txt"]);
    let errors: Vec<(&str, &str)> = del
        .errors()
        .iter()
        .map(|e| (e.key().unwrap_or(""), e.code().unwrap_or("")))
        .collect();
    assert_eq!(errors, vec![("home/test/a.txt", "AccessDenied")]);
    assert!(env.store.stored("pol", "home/test/tmp/b.txt").is_none());
    assert!(env.store.stored("pol", "home/test/a.txt").is_some());
    // Bucket-level operations are not granted.
    let e = s3
        .create_bucket()
        .bucket("newbucket")
        .send()
        .await
        .expect_err("create bucket");
    assert!(code(&e).contains("AccessDenied"));
    let e = s3.list_buckets().send().await.expect_err("list buckets");
    assert!(code(&e).contains("AccessDenied"));
    // Copy needs GetObject on the source as well as PutObject on the destination.
    let e = s3
        .copy_object()
        .bucket("pol")
        .key("home/test/copy")
        .copy_source("other/secret")
        .send()
        .await
        .expect_err("copy from a source not granted");
    assert!(code(&e).contains("AccessDenied"));
    s3.copy_object()
        .bucket("pol")
        .key("home/test/copy")
        .copy_source("pol/home/test/a.txt")
        .send()
        .await
        .expect("copy within the home folder");
}

#[tokio::test]
async fn a_tenant_without_policy_is_denied_everything() {
    let env = env_with("").await;
    let s3 = env.proxy.sdk_client();
    let e = s3
        .put_object()
        .bucket("pol")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("no policy");
    assert!(code(&e).contains("AccessDenied"));
    assert!(env.store.stored("pol", "k").is_none());
    let e = s3
        .list_objects_v2()
        .bucket("pol")
        .send()
        .await
        .expect_err("list");
    assert!(code(&e).contains("AccessDenied"));
}

#[tokio::test]
async fn conditions_on_transport_source_ip_and_existing_tags() {
    // moto keeps object tags (s3s-fs does not), so ExistingObjectTag is exercised for real.
    let Some(moto) = chmura_tests::tools::require("moto_server", "conditions_on_transport") else {
        return;
    };
    let moto = chmura_tests::Moto::start(&moto).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["s3:PutObject","s3:PutObjectTagging","s3:GetObjectTagging","s3:CreateBucket"],"Resource":"*"},
        {"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"StringEquals":{"s3:ExistingObjectTag/class":"public"},"IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}},
        {"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}
    ]}"#;
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        upstream_endpoint: Some(moto.endpoint.clone()),
        policy: Some(policy.into()),
        ..Default::default()
    })
    .await;
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("pol")
        .send()
        .await
        .expect("bucket");
    for (key, class) in [("pub", "public"), ("priv", "secret")] {
        s3.put_object()
            .bucket("pol")
            .key(key)
            .tagging(format!("class={class}"))
            .body(ByteStream::from_static(b"tagged"))
            .send()
            .await
            .expect("put tagged");
    }
    let got = s3
        .get_object()
        .bucket("pol")
        .key("pub")
        .send()
        .await
        .expect("public object");
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"tagged"
    );
    let e = s3
        .get_object()
        .bucket("pol")
        .key("priv")
        .send()
        .await
        .expect_err("secret object");
    assert!(code(&e).contains("AccessDenied"));
    // Plain HTTP: the Deny on aws:SecureTransport=false applies, nothing is written.
    let plain = sdk_client(&env.proxy.http_endpoint(), None, TENANT_AK, TENANT_SK);
    let e = plain
        .put_object()
        .bucket("pol")
        .key("over-http")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("plain http denied");
    assert!(code(&e).contains("AccessDenied"));
    let t = s3
        .get_object_tagging()
        .bucket("pol")
        .key("over-http")
        .send()
        .await;
    assert!(t.is_err(), "the object was written over plain HTTP");
}

fn pyotp_now(python: &std::path::Path, secret: &str, offset_steps: i64) -> String {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(format!(
            "import pyotp, time; print(pyotp.TOTP('{secret}').at(int(time.time()) + {}))",
            offset_steps * 30
        ))
        .output()
        .expect("pyotp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn mfa_protects_deletes_and_codes_cannot_be_replayed() {
    let Some(python) = chmura_tests::tools::require("python", "mfa_protects_deletes") else {
        return;
    };
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"s3:*","Resource":"*"},
        {"Effect":"Deny","Action":["s3:DeleteObject","s3:DeleteObjectVersion","s3:PutBucketVersioning"],"Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}
    ]}"#;
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        policy: Some(policy.into()),
        mfa_secret: Some(secret.into()),
        ..Default::default()
    })
    .await;
    env.make_bucket("mfa");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("mfa")
        .key("k")
        .body(ByteStream::from_static(b"keep me"))
        .send()
        .await
        .expect("put");
    let e = s3
        .delete_object()
        .bucket("mfa")
        .key("k")
        .send()
        .await
        .expect_err("delete without MFA");
    assert!(code(&e).contains("AccessDenied"));
    assert!(env.store.stored("mfa", "k").is_some());
    let e = s3
        .delete_object()
        .bucket("mfa")
        .key("k")
        .mfa("test-mfa 000000")
        .send()
        .await
        .expect_err("wrong code");
    assert!(code(&e).contains("AccessDenied"));
    assert!(env.store.stored("mfa", "k").is_some());
    // Over plain HTTP an MFA code is refused outright.
    let plain = sdk_client(&env.proxy.http_endpoint(), None, TENANT_AK, TENANT_SK);
    let now = pyotp_now(&python, secret, 0);
    let e = plain
        .delete_object()
        .bucket("mfa")
        .key("k")
        .mfa(format!("test-mfa {now}"))
        .send()
        .await
        .expect_err("MFA over HTTP");
    assert!(code(&e).contains("InvalidRequest"), "{e:?}");
    assert!(env.store.stored("mfa", "k").is_some());
    // A valid code deletes; the same code again is refused.
    s3.delete_object()
        .bucket("mfa")
        .key("k")
        .mfa(format!("test-mfa {now}"))
        .send()
        .await
        .expect("delete with MFA");
    assert!(env.store.stored("mfa", "k").is_none());
    s3.put_object()
        .bucket("mfa")
        .key("k2")
        .body(ByteStream::from_static(b"again"))
        .send()
        .await
        .expect("put");
    let e = s3
        .delete_object()
        .bucket("mfa")
        .key("k2")
        .mfa(format!("test-mfa {now}"))
        .send()
        .await
        .expect_err("replayed code");
    assert!(code(&e).contains("AccessDenied"));
    assert!(env.store.stored("mfa", "k2").is_some());
    // The next step's code (clock skew tolerance) works once.
    let next = pyotp_now(&python, secret, 1);
    if next != now {
        s3.delete_object()
            .bucket("mfa")
            .key("k2")
            .mfa(format!("test-mfa {next}"))
            .send()
            .await
            .expect("next step's code");
        assert!(env.store.stored("mfa", "k2").is_none());
    }
}
