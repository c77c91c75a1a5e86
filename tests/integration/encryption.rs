//! Envelope encryption through Chmura (issue 3, single-part objects): the store holds only
//! ciphertext, reads return exactly the plaintext or fail, and every tamper is refused.

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::{pattern, sdk_client, Env, ProxyOptions, UPSTREAM_AK, UPSTREAM_SK};

async fn encrypted_env() -> Env {
    Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn round_trip_sizes_ranges_head_list_and_no_plaintext_in_store() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    for len in [0usize, 1, 65_535, 65_536, 65_537, 300_001] {
        let key = format!("obj-{len}");
        let data = pattern(len, len as u64 + 1);
        let put = s3
            .put_object()
            .bucket("enc")
            .key(&key)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("put");
        assert_eq!(
            put.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms")
        );
        let stored = env.store.stored("enc", &key).expect("stored");
        assert_eq!(
            stored.len() as u64,
            chmura_crypto::layout::ciphertext_len(len as u64),
            "len {len}"
        );
        if len >= 64 {
            assert!(
                !contains(&stored, &data[len / 2 - 32..len / 2 + 32]),
                "plaintext found in the store (len {len})"
            );
        }
        let got = s3
            .get_object()
            .bucket("enc")
            .key(&key)
            .send()
            .await
            .expect("get");
        assert_eq!(got.content_length(), Some(len as i64));
        assert_eq!(
            got.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms")
        );
        let body = got.body.collect().await.expect("body").into_bytes();
        assert!(body.as_ref() == &data[..], "round trip of {len} bytes");
        let head = s3
            .head_object()
            .bucket("enc")
            .key(&key)
            .send()
            .await
            .expect("head");
        assert_eq!(head.content_length(), Some(len as i64));
    }
    let data = pattern(300_001, 300_002);
    for (range, lo, hi) in [
        ("bytes=0-0", 0usize, 1usize),
        ("bytes=65530-65545", 65_530, 65_546),
        ("bytes=131072-196607", 131_072, 196_608),
        ("bytes=299990-", 299_990, 300_001),
        ("bytes=-100", 299_901, 300_001),
        ("bytes=5-999999999", 5, 300_001),
    ] {
        let g = s3
            .get_object()
            .bucket("enc")
            .key("obj-300001")
            .range(range)
            .send()
            .await
            .expect("range");
        assert_eq!(g.content_length(), Some((hi - lo) as i64), "{range}");
        assert_eq!(
            g.content_range(),
            Some(format!("bytes {lo}-{}/300001", hi - 1).as_str()),
            "{range}"
        );
        let body = g.body.collect().await.expect("body").into_bytes();
        assert!(body.as_ref() == &data[lo..hi], "{range}");
    }
    let e = s3
        .get_object()
        .bucket("enc")
        .key("obj-300001")
        .range("bytes=300001-")
        .send()
        .await
        .expect_err("416");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416));

    let list = s3
        .list_objects_v2()
        .bucket("enc")
        .send()
        .await
        .expect("list");
    let sizes: Vec<(String, i64)> = list
        .contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_string(),
                o.size().unwrap_or(-1),
            )
        })
        .collect();
    for (k, size) in &sizes {
        let want: i64 = k.trim_start_matches("obj-").parse().expect("len");
        assert_eq!(*size, want, "listed size of {k}");
    }
    let list1 = s3
        .list_objects()
        .bucket("enc")
        .send()
        .await
        .expect("list v1");
    assert!(list1.contents().iter().all(|o| o.size()
        == o.key()
            .and_then(|k| k.trim_start_matches("obj-").parse().ok())));
}

#[tokio::test]
async fn a_byte_flipped_in_the_store_fails_the_get() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    let data = pattern(200_000, 5);
    s3.put_object()
        .bucket("enc")
        .key("k")
        .body(ByteStream::from(data))
        .send()
        .await
        .expect("put");
    let path = env.store.root.join("enc").join("k");
    let mut stored = std::fs::read(&path).expect("stored");
    stored[100_000] ^= 0x01;
    std::fs::write(&path, &stored).expect("tamper");
    let got = s3.get_object().bucket("enc").key("k").send().await;
    let failed = match got {
        Err(_) => true,
        Ok(o) => o.body.collect().await.is_err(),
    };
    assert!(failed, "a tampered object must not read back cleanly");
    // A range that does not touch the flipped chunk still reads.
    let g = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .range("bytes=0-99")
        .send()
        .await
        .expect("range");
    assert_eq!(
        g.body
            .collect()
            .await
            .expect("clean chunk")
            .into_bytes()
            .len(),
        100
    );
    // A range that does, fails.
    let g = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .range("bytes=99000-99999")
        .send()
        .await;
    let failed = match g {
        Err(_) => true,
        Ok(o) => o.body.collect().await.is_err(),
    };
    assert!(failed);
}

#[tokio::test]
async fn an_object_copied_in_the_store_to_another_key_does_not_decrypt() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("enc")
        .key("original")
        .body(ByteStream::from(pattern(5000, 3)))
        .send()
        .await
        .expect("put");
    // Copy directly in the store (bypassing Chmura), metadata included.
    let direct = sdk_client(&env.store.endpoint(), None, UPSTREAM_AK, UPSTREAM_SK);
    direct
        .copy_object()
        .bucket("enc")
        .key("moved")
        .copy_source("enc/original")
        .send()
        .await
        .expect("direct copy");
    let head = direct
        .head_object()
        .bucket("enc")
        .key("moved")
        .send()
        .await
        .expect("direct head");
    assert!(
        head.metadata()
            .is_some_and(|m| m.contains_key("chmura-key")),
        "the copy kept the envelope"
    );
    let e = s3
        .get_object()
        .bucket("enc")
        .key("moved")
        .send()
        .await
        .expect_err("must not decrypt");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(403));
    // The original still reads.
    let ok = s3
        .get_object()
        .bucket("enc")
        .key("original")
        .send()
        .await
        .expect("original");
    assert_eq!(
        ok.body.collect().await.expect("body").into_bytes().len(),
        5000
    );
}

#[tokio::test]
async fn plaintext_objects_are_refused_unless_insecure_reads_are_allowed() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    std::fs::write(
        env.store.root.join("enc").join("legacy"),
        b"written before chmura",
    )
    .expect("seed");
    let s3 = env.proxy.sdk_client();
    let e = s3
        .get_object()
        .bucket("enc")
        .key("legacy")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert_eq!(
        e.into_service_error().meta().code(),
        Some("InvalidObjectState")
    );

    let env2 = Env::start_with(ProxyOptions {
        encrypt: true,
        extra_kms: "insecure_allow_plaintext_reads = true".into(),
        ..Default::default()
    })
    .await;
    env2.make_bucket("enc");
    std::fs::write(
        env2.store.root.join("enc").join("legacy"),
        b"written before chmura",
    )
    .expect("seed");
    let got = env2
        .proxy
        .sdk_client()
        .get_object()
        .bucket("enc")
        .key("legacy")
        .send()
        .await
        .expect("allowed");
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"written before chmura"
    );
}

#[tokio::test]
async fn body_checks_still_apply_in_encrypted_mode() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("enc")
        .key("src")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("put");
    // A wrong Content-MD5 still stores nothing.
    let e = s3
        .put_object()
        .bucket("enc")
        .key("bad")
        .content_md5("AAAAAAAAAAAAAAAAAAAAAA==")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect_err("bad digest");
    assert_eq!(e.into_service_error().meta().code(), Some("BadDigest"));
    assert!(env.store.stored("enc", "bad").is_none());
}

#[tokio::test]
async fn etags_agree_everywhere_and_conditionals_use_them() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    let put = s3
        .put_object()
        .bucket("enc")
        .key("k")
        .body(ByteStream::from(pattern(100_000, 1)))
        .send()
        .await
        .expect("put");
    let etag = put.e_tag().expect("etag").to_string();
    assert!(etag.ends_with("-0\""), "not presented as an MD5: {etag}");
    let head = s3
        .head_object()
        .bucket("enc")
        .key("k")
        .send()
        .await
        .expect("head");
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    let get = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .send()
        .await
        .expect("get");
    assert_eq!(get.e_tag(), Some(etag.as_str()));
    // s3s-fs lists no ETags; where a store does, they are presented like HEAD's (unit test
    // `etag::xml_listing_etags_are_presented`).
    let list = s3
        .list_objects_v2()
        .bucket("enc")
        .send()
        .await
        .expect("list");
    if let Some(listed) = list.contents()[0].e_tag() {
        assert_eq!(listed, etag);
    }
    // Conditionals with the presented ETag.
    s3.get_object()
        .bucket("enc")
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .expect("if-match holds");
    let e = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("304");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304));
    let r = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .if_match(&etag)
        .range("bytes=10-19")
        .send()
        .await
        .expect("ranged if-match");
    assert_eq!(r.content_length(), Some(10));
    let e = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .if_match("\"0123456789abcdef0123456789abcdef-0\"")
        .range("bytes=10-19")
        .send()
        .await
        .expect_err("412");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    // A conditional overwrite with the presented ETag reaches the store in its form.
    s3.put_object()
        .bucket("enc")
        .key("k")
        .if_match(&etag)
        .body(ByteStream::from_static(b"v2"))
        .send()
        .await
        .expect("conditional put");
    let got = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .send()
        .await
        .expect("get v2");
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"v2"
    );
}

#[tokio::test]
async fn empty_objects_are_authenticated_too() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("enc")
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket("enc")
        .key("empty")
        .send()
        .await
        .expect("get");
    assert_eq!(
        got.body.collect().await.expect("body").into_bytes().len(),
        0
    );
    let path = env.store.root.join("enc").join("empty");
    let mut stored = std::fs::read(&path).expect("stored");
    assert_eq!(stored.len(), 28);
    stored[20] ^= 1;
    std::fs::write(&path, &stored).expect("tamper");
    let e = s3
        .get_object()
        .bucket("enc")
        .key("empty")
        .send()
        .await
        .expect_err("tampered empty object");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(500));
}

#[tokio::test]
async fn if_range_and_part_number_on_encrypted_objects() {
    let env = encrypted_env().await;
    env.make_bucket("enc");
    let s3 = env.proxy.sdk_client();
    let data = pattern(200_000, 9);
    let put = s3
        .put_object()
        .bucket("enc")
        .key("k")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let etag = put.e_tag().expect("etag").to_string();
    // If-Range (raw: the SDK has no setter for it).
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let ranged = |if_range: &str| {
        chmura_tests::raw::RawRequest::new("GET", "/enc/k")
            .header("range", "bytes=100000-100009")
            .header("if-range", if_range)
            .sign_v4(
                &host,
                chmura_tests::TENANT_AK,
                chmura_tests::TENANT_SK,
                "UNSIGNED-PAYLOAD",
                std::time::SystemTime::now(),
            )
    };
    let r = chmura_tests::raw::send(port, &env.proxy.certs.ca_pem, &ranged(&etag)).await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert!(r.body == data[100_000..100_010]);
    let r = chmura_tests::raw::send(
        port,
        &env.proxy.certs.ca_pem,
        &ranged("\"0123456789abcdef0123456789abcdef-0\""),
    )
    .await;
    assert_eq!(r.status, 200, "a stale If-Range gets the whole object");
    assert!(r.body == data);
    let r = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .part_number(1)
        .send()
        .await
        .expect("part 1 is the object");
    assert!(r.body.collect().await.expect("body").into_bytes().as_ref() == &data[..]);
    // Range and partNumber together: 400 InvalidRequest, on GET and HEAD.
    let e = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .part_number(1)
        .range("bytes=0-1")
        .send()
        .await
        .expect_err("range and partNumber");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert!(format!("{e:?}").contains("InvalidRequest"), "{e:?}");
    let e = s3
        .head_object()
        .bucket("enc")
        .key("k")
        .part_number(1)
        .range("bytes=0-1")
        .send()
        .await
        .expect_err("range and partNumber on HEAD");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    let e = s3
        .get_object()
        .bucket("enc")
        .key("k")
        .part_number(2)
        .send()
        .await
        .expect_err("no part 2");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416));
    // A ranged HEAD reports that range of the plaintext (S3: only the length changes, and
    // Content-Range says which bytes).
    let h = s3
        .head_object()
        .bucket("enc")
        .key("k")
        .range("bytes=0-9")
        .send()
        .await
        .expect("head");
    assert_eq!(h.content_length(), Some(10));
    assert_eq!(h.content_range(), Some("bytes 0-9/200000"));
}

#[tokio::test]
async fn error_documents_carry_this_requests_id() {
    // The store's error document and Chmura's own (an unsatisfiable range) both name the
    // request id of the x-amz-request-id header, the one in Chmura's logs.
    let env = encrypted_env().await;
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("rid")
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket("rid")
        .key("k")
        .body(ByteStream::from_static(b"0123456789"))
        .send()
        .await
        .expect("put");
    let missing = s3
        .get_object()
        .bucket("rid")
        .key("missing")
        .send()
        .await
        .expect_err("missing key");
    let past_end = s3
        .get_object()
        .bucket("rid")
        .key("k")
        .range("bytes=20-30")
        .send()
        .await
        .expect_err("range past the end");
    for (what, status, e) in [
        (
            "store's NoSuchKey",
            404,
            missing.raw_response().expect("raw"),
        ),
        (
            "Chmura's InvalidRange",
            416,
            past_end.raw_response().expect("raw"),
        ),
    ] {
        assert_eq!(e.status().as_u16(), status, "{what}");
        let id = e.headers().get("x-amz-request-id").expect("request id");
        let body = std::str::from_utf8(e.body().bytes().expect("body")).expect("utf8");
        assert!(
            body.contains(&format!("<RequestId>{id}</RequestId>")),
            "{what}: {body}"
        );
    }
    // S3's InvalidRange names the range and the object's (plaintext) size.
    let body = past_end
        .raw_response()
        .expect("raw")
        .body()
        .bytes()
        .expect("body");
    let body = std::str::from_utf8(body).expect("utf8");
    assert!(
        body.contains("<RangeRequested>bytes=20-30</RangeRequested>")
            && body.contains("<ActualObjectSize>10</ActualObjectSize>"),
        "{body}"
    );
}

#[tokio::test]
async fn listing_pages_state_their_markers_on_moto() {
    // S3 states a ListObjects page's Marker (empty when none was asked) and a ListObjectsV2
    // page's ContinuationToken and StartAfter when asked, and reads an empty continuation
    // token as none; moto 5.2.5 states none of them and refuses the empty token. Chmura adds
    // what the store left out (ceph s3-tests' test_bucket_list_marker_* and
    // test_bucket_listv2_continuationtoken*).
    let Some((_moto, env)) =
        chmura_tests::encrypted_env_on_moto("listing_pages_state_their_markers_on_moto").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("marks")
        .send()
        .await
        .expect("bucket");
    for k in ["bar", "baz", "foo", "quxx"] {
        s3.put_object()
            .bucket("marks")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let keys = |c: &[aws_sdk_s3::types::Object]| -> Vec<String> {
        c.iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    };
    let r = s3
        .list_objects()
        .bucket("marks")
        .send()
        .await
        .expect("list");
    assert_eq!(r.marker(), Some(""));
    let r = s3
        .list_objects()
        .bucket("marks")
        .marker("baz")
        .send()
        .await
        .expect("list");
    assert_eq!(r.marker(), Some("baz"));
    assert_eq!(keys(r.contents()), ["foo", "quxx"]);
    assert_eq!(r.contents()[0].size(), Some(1), "plaintext sizes still");

    let first = s3
        .list_objects_v2()
        .bucket("marks")
        .start_after("bar")
        .max_keys(1)
        .send()
        .await
        .expect("list v2");
    assert_eq!(first.continuation_token(), None);
    assert_eq!(first.start_after(), Some("bar"));
    let token = first.next_continuation_token().expect("token").to_string();
    let next = s3
        .list_objects_v2()
        .bucket("marks")
        .start_after("bar")
        .continuation_token(&token)
        .send()
        .await
        .expect("list v2 page 2");
    assert_eq!(next.continuation_token(), Some(token.as_str()));
    assert_eq!(next.start_after(), Some("bar"));
    assert_eq!(keys(next.contents()), ["foo", "quxx"]);
    let empty = s3
        .list_objects_v2()
        .bucket("marks")
        .continuation_token("")
        .send()
        .await
        .expect("an empty token is none");
    assert_eq!(empty.continuation_token(), Some(""));
    assert_eq!(keys(empty.contents()), ["bar", "baz", "foo", "quxx"]);
    // A V2 page names owners only when asked to (test_bucket_listv2_fetchowner_*).
    assert!(empty.contents().iter().all(|o| o.owner().is_none()));
    let owned = s3
        .list_objects_v2()
        .bucket("marks")
        .fetch_owner(true)
        .send()
        .await
        .expect("fetch-owner");
    assert!(owned.contents().iter().all(|o| o.owner().is_some()));
    // Names under encoding-type=url: `listing_names_decode_to_the_stored_names_on_any_store`.
}

/// Conditional writes as S3 answers them (s3-tests' test_put_object_if_match and
/// test_put_*_current_*): checked by Chmura against the current object, whatever the store
/// checks itself.
async fn conditional_writes(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("bucket");
    let status = |e: &aws_sdk_s3::error::SdkError<_>| {
        e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let put = |body: &'static [u8]| {
        s3.put_object()
            .bucket(bucket)
            .key("k")
            .body(ByteStream::from_static(body))
    };
    let etag = put(b"one")
        .if_none_match("*")
        .send()
        .await
        .expect("new key")
        .e_tag()
        .expect("etag")
        .to_string();
    let e = put(b"two")
        .if_none_match("*")
        .send()
        .await
        .expect_err("exists");
    assert_eq!(status(&e), 412, "{e:?}");
    let e = put(b"two")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("same etag");
    assert_eq!(status(&e), 412, "{e:?}");
    put(b"two")
        .if_none_match("\"badetag\"")
        .send()
        .await
        .expect("other etag");
    let body = |r: aws_sdk_s3::operation::get_object::GetObjectOutput| async move {
        r.body.collect().await.expect("body").into_bytes().to_vec()
    };
    let get = || s3.get_object().bucket(bucket).key("k").send();
    assert_eq!(body(get().await.expect("get")).await, b"two");
    let e = put(b"three")
        .if_match(&etag)
        .send()
        .await
        .expect_err("stale etag");
    assert_eq!(status(&e), 412, "{e:?}");
    let current = s3
        .head_object()
        .bucket(bucket)
        .key("k")
        .send()
        .await
        .expect("head")
        .e_tag()
        .expect("etag")
        .to_string();
    put(b"three")
        .if_match(&current)
        .send()
        .await
        .expect("current etag");
    put(b"four").if_match("*").send().await.expect("any object");
    assert_eq!(body(get().await.expect("get")).await, b"four");
    s3.delete_object()
        .bucket(bucket)
        .key("k")
        .send()
        .await
        .expect("delete");
    for cond in ["*", "\"badetag\""] {
        let e = put(b"five")
            .if_match(cond)
            .send()
            .await
            .expect_err("no object");
        assert_eq!(status(&e), 404, "{e:?}");
        assert_eq!(
            e.as_service_error().and_then(|e| e.meta().code()),
            Some("NoSuchKey")
        );
    }
    assert!(get().await.is_err(), "nothing was written");
    put(b"six")
        .if_match("*")
        .send()
        .await
        .expect_err("still no object");
    put(b"six")
        .if_none_match(&etag)
        .send()
        .await
        .expect("no object to match");
}

#[tokio::test]
async fn conditional_writes_hold_on_any_store() {
    let env = encrypted_env().await;
    conditional_writes(&env.proxy.sdk_client(), "cond").await;
    let Some((_moto, env)) =
        chmura_tests::encrypted_env_on_moto("conditional_writes_hold_on_any_store").await
    else {
        return;
    };
    conditional_writes(&env.proxy.sdk_client(), "cond").await;
}

/// ListBuckets pages as S3 pages it (`max-buckets`, `continuation-token`, `prefix`), on a
/// store that pages it too or not at all: Chmura pages the store's whole list itself.
async fn bucket_pages(s3: &aws_sdk_s3::Client) {
    for b in ["pg-c", "pg-a", "pg-b", "other-x"] {
        s3.create_bucket().bucket(b).send().await.expect("bucket");
    }
    let (mut seen, mut token) = (Vec::new(), None::<String>);
    for _ in 0..10 {
        let page = s3
            .list_buckets()
            .max_buckets(1)
            .prefix("pg-")
            .set_continuation_token(token.clone())
            .send()
            .await
            .expect("page");
        assert!(page.buckets().len() <= 1);
        assert_eq!(page.prefix(), Some("pg-"));
        seen.extend(
            page.buckets()
                .iter()
                .filter_map(|b| b.name())
                .map(str::to_string),
        );
        token = page.continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["pg-a", "pg-b", "pg-c"]);
    let all = s3.list_buckets().send().await.expect("all");
    assert!(all.buckets().len() >= 4 && all.continuation_token().is_none());
    let e = s3
        .list_buckets()
        .max_buckets(0)
        .send()
        .await
        .expect_err("max-buckets 0");
    assert_eq!(
        e.into_service_error().meta().code(),
        Some("InvalidArgument")
    );
}

/// Names in a listing under `encoding-type=url`, as a client decodes them (botocore's
/// `unquote_plus`: `%20` and `+` are both a space).
fn url_decoded(v: &str) -> String {
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8()
        .expect("utf-8")
        .into_owned()
}

/// Common prefixes and the echoed prefix under `encoding-type=url` decode to the names stored,
/// whether the store encoded them (the test store over s3s-fs: `b c/` as `b+c/`) or left
/// them raw (moto).
async fn encoded_names(s3: &aws_sdk_s3::Client) {
    s3.create_bucket()
        .bucket("enc-names")
        .send()
        .await
        .expect("bucket");
    for k in ["b c/x", "p+1/a", "plain/c", "b+/d"] {
        s3.put_object()
            .bucket("enc-names")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let url = aws_sdk_s3::types::EncodingType::Url;
    let v1 = s3
        .list_objects()
        .bucket("enc-names")
        .delimiter("/")
        .encoding_type(url.clone())
        .send()
        .await
        .expect("list v1, url");
    let v2 = s3
        .list_objects_v2()
        .bucket("enc-names")
        .delimiter("/")
        .encoding_type(url.clone())
        .send()
        .await
        .expect("list v2, url");
    for prefixes in [v1.common_prefixes(), v2.common_prefixes()] {
        let got: Vec<String> = prefixes
            .iter()
            .filter_map(|p| p.prefix())
            .map(url_decoded)
            .collect();
        assert_eq!(got, ["b c/", "b+/", "p+1/", "plain/"], "{prefixes:?}");
        // As S3 encodes them (ceph's s3-tests), whichever way the store did.
        let sent: Vec<&str> = prefixes.iter().filter_map(|p| p.prefix()).collect();
        assert_eq!(sent, ["b%20c/", "b%2B/", "p%2B1/", "plain/"]);
    }
    let listed = s3
        .list_objects_v2()
        .bucket("enc-names")
        .encoding_type(url.clone())
        .send()
        .await
        .expect("list v2 keys, url");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["b%20c/x", "b%2B/d", "p%2B1/a", "plain/c"]);
    // Only the prefixes with a space or a `+`: nothing tells `+` apart on this page but the
    // store's own encoding.
    for p in ["b", "p"] {
        let page = s3
            .list_objects_v2()
            .bucket("enc-names")
            .prefix(p)
            .delimiter("/")
            .encoding_type(url.clone())
            .send()
            .await
            .expect("list v2, prefix");
        let got: Vec<String> = page
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .map(url_decoded)
            .collect();
        let want: &[&str] = if p == "b" {
            &["b c/", "b+/"]
        } else {
            &["p+1/", "plain/"]
        };
        assert_eq!(got, want, "{page:?}");
    }
    let v2 = s3
        .list_objects_v2()
        .bucket("enc-names")
        .prefix("b c/")
        .encoding_type(url)
        .send()
        .await
        .expect("v2, prefix");
    assert_eq!(v2.prefix().map(url_decoded).as_deref(), Some("b c/"));
    // A version listing names its keys so that a client decoding only what the page says
    // it encoded gets the stored names (moto ignores encoding-type there; s3s-fs has no
    // version listings).
    if let Ok(versions) = s3
        .list_object_versions()
        .bucket("enc-names")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
    {
        let encoded = versions.encoding_type().is_some();
        let mut keys: Vec<String> = versions
            .versions()
            .iter()
            .filter_map(|v| v.key())
            .map(|k| {
                if encoded {
                    url_decoded(k)
                } else {
                    k.to_string()
                }
            })
            .collect();
        keys.sort();
        assert_eq!(keys, ["b c/x", "b+/d", "p+1/a", "plain/c"], "{versions:?}");
    }
    // V1 echoes its prefix as sent (botocore does not decode it).
    let v1 = s3
        .list_objects()
        .bucket("enc-names")
        .prefix("b c/")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .expect("v1, prefix");
    assert_eq!(v1.prefix(), Some("b c/"));
}

#[tokio::test]
async fn listing_names_decode_to_the_stored_names_on_any_store() {
    let env = encrypted_env().await;
    encoded_names(&env.proxy.sdk_client()).await;
    let Some((_moto, env)) =
        chmura_tests::encrypted_env_on_moto("listing_names_decode_on_any_store").await
    else {
        return;
    };
    encoded_names(&env.proxy.sdk_client()).await;
}

#[tokio::test]
async fn bucket_lists_page_on_any_store() {
    let env = encrypted_env().await;
    bucket_pages(&env.proxy.sdk_client()).await;
    let Some((_moto, env)) =
        chmura_tests::encrypted_env_on_moto("bucket_lists_page_on_any_store").await
    else {
        return;
    };
    bucket_pages(&env.proxy.sdk_client()).await;
}
