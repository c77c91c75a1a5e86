//! The AWS KMS provider against moto_server (which speaks the real KMS protocol): data keys
//! bound to the encryption context, the read cache, and failing closed when KMS is down.

use std::sync::atomic::Ordering;

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::tools::require;
use chmura_tests::{
    pattern, sdk_client, write_private, Env, Moto, ProxyOptions, UPSTREAM_AK, UPSTREAM_SK,
};

async fn kms_key(moto: &Moto) -> String {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "kmstest",
            "kmstestsecret",
            None,
            None,
            "test",
        ))
        .build();
    let kms = aws_sdk_kms::Client::from_conf(conf);
    let key = kms
        .create_key()
        .description("chmura test")
        .send()
        .await
        .expect("create key");
    key.key_metadata().expect("metadata").key_id().to_string()
}

fn kms_section(endpoint: &str, key_id: &str) -> String {
    format!(
        "[kms]\nprovider = \"aws\"\nkey_id = \"{key_id}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"kmstest\"\nsecret_access_key_file = \"kms.secret\"\n"
    )
}

async fn env_with_kms(endpoint: &str, key_id: &str) -> Env {
    // The secret file must exist before the proxy loads its config.
    let dir = tempfile::tempdir().expect("tmp");
    let proxy_dir = dir.path().join("proxy");
    std::fs::create_dir_all(&proxy_dir).expect("dir");
    write_private(&proxy_dir.join("kms.secret"), "kmstestsecret");
    let store = chmura_tests::Store::start(&dir.path().join("store")).await;
    let proxy = chmura_tests::Proxy::start(
        &proxy_dir,
        &store.endpoint(),
        ProxyOptions {
            encrypt: true,
            kms_section: Some(kms_section(endpoint, key_id)),
            ..Default::default()
        },
    )
    .await;
    Env { dir, store, proxy }
}

#[tokio::test]
async fn aws_kms_round_trip_context_binding_and_cache() {
    let Some(program) = require(
        "moto_server",
        "aws_kms_round_trip_context_binding_and_cache",
    ) else {
        return;
    };
    let moto = Moto::start(&program).await;
    let key_id = kms_key(&moto).await;
    let env = env_with_kms(&moto.endpoint, &key_id).await;
    env.make_bucket("kms-bucket");
    let s3 = env.proxy.sdk_client();
    let stats = &env.proxy.state.kms.as_ref().expect("kms").stats;
    let n = 20;
    for i in 0..n {
        let data = pattern(10_000 + i, i as u64);
        s3.put_object()
            .bucket("kms-bucket")
            .key(format!("k{i}"))
            .body(ByteStream::from(data))
            .send()
            .await
            .expect("put");
    }
    assert_eq!(
        stats.generate_calls.load(Ordering::Relaxed),
        n as u64,
        "one GenerateDataKey per PUT"
    );
    for round in 0..3 {
        for i in 0..n {
            let got = s3
                .get_object()
                .bucket("kms-bucket")
                .key(format!("k{i}"))
                .send()
                .await
                .expect("get");
            let body = got.body.collect().await.expect("body").into_bytes();
            assert!(
                body.as_ref() == pattern(10_000 + i, i as u64).as_slice(),
                "round {round} object {i}"
            );
        }
    }
    // First read of each object asks KMS; the next reads come from the cache.
    assert_eq!(stats.decrypt_calls.load(Ordering::Relaxed), n as u64);
    assert_eq!(stats.cache_hits.load(Ordering::Relaxed), 2 * n as u64);
    let stored = env.store.stored("kms-bucket", "k3").expect("stored");
    assert!(
        !stored
            .windows(64)
            .any(|w| w == &pattern(10_003, 3)[5000..5064]),
        "plaintext in the store"
    );

    // The data keys are KMS's: the envelope names the KMS key.
    let direct = sdk_client(&env.store.endpoint(), None, UPSTREAM_AK, UPSTREAM_SK);
    let head = direct
        .head_object()
        .bucket("kms-bucket")
        .key("k1")
        .send()
        .await
        .expect("direct head");
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("chmura-kid"))
            .map(String::as_str),
        Some(key_id.as_str())
    );

    // Copied in the store to another key: KMS refuses the other context.
    direct
        .copy_object()
        .bucket("kms-bucket")
        .key("moved")
        .copy_source("kms-bucket/k1")
        .send()
        .await
        .expect("direct copy");
    let e = s3
        .get_object()
        .bucket("kms-bucket")
        .key("moved")
        .send()
        .await
        .expect_err("must not decrypt");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(403));
}

#[tokio::test]
async fn kms_down_fails_closed_and_cached_reads_keep_working() {
    let Some(program) = require(
        "moto_server",
        "kms_down_fails_closed_and_cached_reads_keep_working",
    ) else {
        return;
    };
    let moto = Moto::start(&program).await;
    let key_id = kms_key(&moto).await;
    let env = env_with_kms(&moto.endpoint, &key_id).await;
    env.make_bucket("kms-down");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("kms-down")
        .key("before")
        .body(ByteStream::from_static(b"written while KMS was up"))
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket("kms-down")
        .key("before")
        .send()
        .await
        .expect("get");
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"written while KMS was up"
    );
    // A multipart upload started while KMS is up (the data key was generated, not cached).
    let upload = s3
        .create_multipart_upload()
        .bucket("kms-down")
        .key("parts")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    drop(moto); // KMS is gone.
    let e = s3
        .upload_part()
        .bucket("kms-down")
        .key("parts")
        .upload_id(&upload)
        .part_number(1)
        .body(ByteStream::from_static(b"must not be stored either"))
        .send()
        .await
        .expect_err("no data key, no part");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(503));
    let e = s3
        .create_multipart_upload()
        .bucket("kms-down")
        .key("parts2")
        .send()
        .await
        .expect_err("no data key, no upload");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(503));
    let e = s3
        .put_object()
        .bucket("kms-down")
        .key("after")
        .body(ByteStream::from_static(b"must not be stored"))
        .send()
        .await
        .expect_err("no data key, no write");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert!(
        env.store.stored("kms-down", "after").is_none(),
        "nothing written while KMS is down"
    );
    // Readiness: once the provider's last answer is older than the window, a probe of the
    // dead provider does not renew it, and /readyz says why.
    {
        use chmura_proxy::metrics::{probe, ready, unix_now, READY_WINDOW_SECS};
        let state = &env.proxy.state;
        let stats = state.kms.as_ref().expect("kms").stats();
        stats.last_ok.store(
            unix_now() - READY_WINDOW_SECS - 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        probe(state).await;
        let why = ready(state).expect_err("not ready without the key provider");
        assert!(why.contains("key provider"), "{why}");
    }
    let parts = s3
        .list_parts()
        .bucket("kms-down")
        .key("parts")
        .upload_id(&upload)
        .send()
        .await
        .expect("list parts");
    assert!(
        parts.parts().is_empty(),
        "a part was stored while KMS was down"
    );
    let got = s3
        .get_object()
        .bucket("kms-down")
        .key("before")
        .send()
        .await
        .expect("cached key still reads");
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"written while KMS was up"
    );
}
