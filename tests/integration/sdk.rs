//! The Rust aws-sdk-s3 client, default settings, over TLS through Chmura.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use chmura_tests::{pattern, Env, ProxyOptions};

#[tokio::test]
async fn put_get_head_list_delete() {
    let env = Env::start().await;
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("bkt1")
        .send()
        .await
        .expect("create bucket");
    s3.head_bucket()
        .bucket("bkt1")
        .send()
        .await
        .expect("head bucket");
    let data = pattern(300_000, 1);
    let put = s3
        .put_object()
        .bucket("bkt1")
        .key("dir/hello world+é.bin")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    assert!(put.e_tag().is_some());
    // The store holds the decoded body, never aws-chunked framing.
    assert_eq!(
        env.store.stored("bkt1", "dir/hello world+é.bin").as_deref(),
        Some(&data[..])
    );

    let got = s3
        .get_object()
        .bucket("bkt1")
        .key("dir/hello world+é.bin")
        .send()
        .await
        .expect("get");
    assert_eq!(got.content_length(), Some(300_000));
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        &data[..]
    );

    let head = s3
        .head_object()
        .bucket("bkt1")
        .key("dir/hello world+é.bin")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(300_000));

    for i in 0..5 {
        s3.put_object()
            .bucket("bkt1")
            .key(format!("list/{i}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let l = s3
        .list_objects_v2()
        .bucket("bkt1")
        .prefix("list/")
        .max_keys(2)
        .send()
        .await
        .expect("list v2");
    assert_eq!(l.key_count(), Some(2));
    assert_eq!(l.is_truncated(), Some(true));
    let l2 = s3
        .list_objects_v2()
        .bucket("bkt1")
        .prefix("list/")
        .continuation_token(l.next_continuation_token().expect("token"))
        .send()
        .await
        .expect("list v2 page 2");
    assert_eq!(l2.contents().len(), 3);
    let l1 = s3
        .list_objects()
        .bucket("bkt1")
        .delimiter("/")
        .send()
        .await
        .expect("list v1");
    let prefixes: Vec<_> = l1
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, vec!["dir/", "list/"]);
    let buckets = s3.list_buckets().send().await.expect("list buckets");
    assert!(buckets.buckets().iter().any(|b| b.name() == Some("bkt1")));

    s3.delete_object()
        .bucket("bkt1")
        .key("list/0")
        .send()
        .await
        .expect("delete");
    assert!(env.store.stored("bkt1", "list/0").is_none());
    let del = s3
        .delete_objects()
        .bucket("bkt1")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("list/1")
                        .build()
                        .expect("id"),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("list/2")
                        .build()
                        .expect("id"),
                )
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete objects");
    assert_eq!(del.deleted().len(), 2);
    assert!(env.store.stored("bkt1", "list/1").is_none());
    let err = s3
        .get_object()
        .bucket("bkt1")
        .key("list/1")
        .send()
        .await
        .expect_err("gone");
    assert_eq!(err.into_service_error().meta().code(), Some("NoSuchKey"));
}

#[tokio::test]
async fn ranges_and_conditionals() {
    let env = Env::start().await;
    env.make_bucket("rng");
    let s3 = env.proxy.sdk_client();
    let data = pattern(100_000, 2);
    let put = s3
        .put_object()
        .bucket("rng")
        .key("k")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let etag = put.e_tag().expect("etag").to_string();
    for (range, lo, hi) in [
        ("bytes=0-9", 0, 10),
        ("bytes=99990-", 99_990, 100_000),
        ("bytes=-5", 99_995, 100_000),
        ("bytes=500-1499", 500, 1500),
    ] {
        let g = s3
            .get_object()
            .bucket("rng")
            .key("k")
            .range(range)
            .send()
            .await
            .expect("range get");
        assert_eq!(g.content_length(), Some((hi - lo) as i64), "{range}");
        assert!(g.content_range().is_some(), "{range}");
        assert_eq!(
            g.body.collect().await.expect("body").into_bytes().as_ref(),
            &data[lo..hi],
            "{range}"
        );
    }
    // Conditional headers reach the store (s3s-fs evaluates If-Match only on writes; GET
    // conditionals are tested against moto in the clients module).
    let g = s3
        .get_object()
        .bucket("rng")
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .expect("if-match");
    assert_eq!(g.content_length(), Some(100_000));
    let e = s3
        .put_object()
        .bucket("rng")
        .key("k")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .body(ByteStream::from_static(b"new"))
        .send()
        .await
        .expect_err("412");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    assert_eq!(env.store.stored("rng", "k").as_deref(), Some(&data[..]));
}

#[tokio::test]
async fn multipart_upload_and_copy() {
    let env = Env::start().await;
    env.make_bucket("mpu");
    let s3 = env.proxy.sdk_client();
    let part = 5 * 1024 * 1024;
    let data = pattern(2 * part + 1234, 3);
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("big")
        .send()
        .await
        .expect("create mpu");
    let id = up.upload_id().expect("upload id");
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(part).enumerate() {
        let n = i as i32 + 1;
        let r = s3
            .upload_part()
            .bucket("mpu")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .expect("upload part");
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().expect("etag"))
                .build(),
        );
    }
    let lp = s3
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(lp.parts().len(), 3);
    s3.complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    let g = s3
        .get_object()
        .bucket("mpu")
        .key("big")
        .send()
        .await
        .expect("get");
    assert_eq!(
        g.body.collect().await.expect("body").into_bytes().as_ref(),
        &data[..]
    );
    let g = s3
        .get_object()
        .bucket("mpu")
        .key("big")
        .range(format!("bytes={}-{}", part - 10, part + 9))
        .send()
        .await
        .expect("range");
    assert_eq!(
        g.body.collect().await.expect("body").into_bytes().as_ref(),
        &data[part - 10..part + 10]
    );

    // Abort leaves nothing behind.
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("aborted")
        .send()
        .await
        .expect("create");
    s3.abort_multipart_upload()
        .bucket("mpu")
        .key("aborted")
        .upload_id(up.upload_id().expect("id"))
        .send()
        .await
        .expect("abort");

    // CopyObject.
    s3.copy_object()
        .bucket("mpu")
        .key("copy")
        .copy_source("mpu/big")
        .send()
        .await
        .expect("copy");
    assert_eq!(
        env.store.stored("mpu", "copy").map(|v| v.len()),
        Some(data.len())
    );
}

#[tokio::test]
async fn presigned_get_and_put_via_sdk() {
    use aws_sdk_s3::presigning::PresigningConfig;
    use std::time::{Duration, SystemTime};
    let env = Env::start().await;
    env.make_bucket("pre");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("pre")
        .key("obj")
        .body(ByteStream::from_static(b"presigned!"))
        .send()
        .await
        .expect("put");
    let pre = s3
        .get_object()
        .bucket("pre")
        .key("obj")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).expect("cfg"))
        .await
        .expect("presign");
    let target = pre
        .uri()
        .split_once(&format!(":{}", env.proxy.addr.port()))
        .expect("uri")
        .1
        .to_string();
    let r = chmura_tests::raw::send(
        env.proxy.addr.port(),
        &env.proxy.certs.ca_pem,
        &chmura_tests::raw::RawRequest::new("GET", &target),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "presigned!"));

    // Tampered: a different key with the same signature.
    let bad = target.replace("/pre/obj", "/p/obk");
    let r = chmura_tests::raw::send(
        env.proxy.addr.port(),
        &env.proxy.certs.ca_pem,
        &chmura_tests::raw::RawRequest::new("GET", &bad),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (403, Some("SignatureDoesNotMatch"))
    );

    // Expired: signed an hour ago, valid for 60 s.
    let old = SystemTime::now() - Duration::from_secs(3600);
    let pre = s3
        .get_object()
        .bucket("pre")
        .key("obj")
        .presigned(
            PresigningConfig::builder()
                .start_time(old)
                .expires_in(Duration::from_secs(60))
                .build()
                .expect("cfg"),
        )
        .await
        .expect("presign");
    let target = pre
        .uri()
        .split_once(&format!(":{}", env.proxy.addr.port()))
        .expect("uri")
        .1
        .to_string();
    let r = chmura_tests::raw::send(
        env.proxy.addr.port(),
        &env.proxy.certs.ca_pem,
        &chmura_tests::raw::RawRequest::new("GET", &target),
    )
    .await;
    assert_eq!((r.status, r.code().as_deref()), (403, Some("AccessDenied")));
    assert!(r.text().contains("Request has expired"), "{}", r.text());

    // Presigned PUT.
    let pre = s3
        .put_object()
        .bucket("pre")
        .key("via-presigned-put")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).expect("cfg"))
        .await
        .expect("presign put");
    let target = pre
        .uri()
        .split_once(&format!(":{}", env.proxy.addr.port()))
        .expect("uri")
        .1
        .to_string();
    let req = chmura_tests::raw::RawRequest::new("PUT", &target).body(b"uploaded".to_vec());
    let r = chmura_tests::raw::send(env.proxy.addr.port(), &env.proxy.certs.ca_pem, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        env.store.stored("pre", "via-presigned-put").as_deref(),
        Some(&b"uploaded"[..])
    );
}

#[tokio::test]
async fn store_errors_pass_through_as_s3_errors() {
    let env = Env::start().await;
    let s3 = env.proxy.sdk_client();
    env.make_bucket("errs");
    let e = s3
        .get_object()
        .bucket("errs")
        .key("missing")
        .send()
        .await
        .expect_err("no key");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchKey"));
    let e = s3
        .head_object()
        .bucket("errs")
        .key("missing")
        .send()
        .await
        .expect_err("no key");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
}

#[tokio::test]
async fn plain_http_listener_works_when_configured() {
    let env = Env::start().await;
    env.make_bucket("http");
    let s3 = chmura_tests::sdk_client(
        &env.proxy.http_endpoint(),
        None,
        chmura_tests::TENANT_AK,
        chmura_tests::TENANT_SK,
    );
    s3.put_object()
        .bucket("http")
        .key("k")
        .body(ByteStream::from_static(b"plain"))
        .send()
        .await
        .expect("put over http");
    assert_eq!(
        env.store.stored("http", "k").as_deref(),
        Some(&b"plain"[..])
    );
}

/// An empty `delimiter=` (minio-py sends one on every recursive listing) means no delimiter
/// in S3: every key is listed, none is folded into a common prefix. s3s-fs reads it as a
/// delimiter; Chmura drops it before the store sees it.
#[tokio::test]
async fn an_empty_delimiter_lists_every_key() {
    let env = Env::start().await;
    env.make_bucket("emptydelim");
    let s3 = env.proxy.sdk_client();
    for key in ["a/b.txt", "a/c/d.txt", "e.txt"] {
        s3.put_object()
            .bucket("emptydelim")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let v2 = s3
        .list_objects_v2()
        .bucket("emptydelim")
        .delimiter("")
        .send()
        .await
        .expect("list v2");
    let keys: Vec<_> = v2.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b.txt", "a/c/d.txt", "e.txt"]);
    assert!(
        v2.common_prefixes().is_empty(),
        "{:?}",
        v2.common_prefixes()
    );
    let v1 = s3
        .list_objects()
        .bucket("emptydelim")
        .delimiter("")
        .send()
        .await
        .expect("list v1");
    let keys: Vec<_> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b.txt", "a/c/d.txt", "e.txt"]);
    // MinIO's `metadata=true` (minio-go's `WithMetadata`), which S3 ignores, is accepted on
    // listings (and dropped before the store), not refused as an unknown operation.
    let v2 = s3
        .list_objects_v2()
        .bucket("emptydelim")
        .customize()
        .mutate_request(|r| {
            let uri = format!("{}&metadata=true", r.uri());
            r.set_uri(uri).expect("uri");
        })
        .send()
        .await
        .expect("list v2 with metadata=true");
    let keys: Vec<_> = v2.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b.txt", "a/c/d.txt", "e.txt"]);
    // On an object it is still an unknown parameter.
    let e = s3
        .get_object()
        .bucket("emptydelim")
        .key("e.txt")
        .customize()
        .mutate_request(|r| {
            let sep = if r.uri().contains('?') { '&' } else { '?' };
            let uri = format!("{}{sep}metadata=true", r.uri());
            r.set_uri(uri).expect("uri");
        })
        .send()
        .await
        .expect_err("metadata=true on an object");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(501));
}

/// `encoding-type=url` (which boto3, aws cli and minio-go always send): keys and prefixes are
/// listed form-encoded, as S3 does, so `a+b`, `foo-%` and `foo bar` come back as themselves
/// once decoded (the embedded store's s3s-fs lists them raw; the test store encodes them).
#[tokio::test]
async fn listings_encode_keys_when_asked() {
    use aws_sdk_s3::types::EncodingType;
    let env = Env::start().await;
    env.make_bucket("urlenc");
    let s3 = env.proxy.sdk_client();
    let keys = ["a+b", "dir x/k", "foo bar", "foo-%", "z\u{e9}"];
    for key in keys {
        s3.put_object()
            .bucket("urlenc")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let v2 = s3
        .list_objects_v2()
        .bucket("urlenc")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .expect("list v2");
    let listed: Vec<_> = v2.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        listed,
        ["a%2Bb", "dir+x/k", "foo+bar", "foo-%25", "z%C3%A9"],
        "encoded keys"
    );
    let v1 = s3
        .list_objects()
        .bucket("urlenc")
        .encoding_type(EncodingType::Url)
        .delimiter("/")
        .send()
        .await
        .expect("list v1");
    let prefixes: Vec<_> = v1
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["dir+x/"]);
    // Without the parameter, keys are listed as they are.
    let plain = s3
        .list_objects_v2()
        .bucket("urlenc")
        .send()
        .await
        .expect("list");
    let listed: Vec<_> = plain.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(listed, keys);
}

/// ListParts names each part's ETag (the one its upload answered), and a Complete naming a
/// part by another ETag is InvalidPart and completes nothing (the embedded store's s3s-fs
/// neither lists part ETags nor checks them; the test store does both).
#[tokio::test]
async fn part_etags_are_listed_and_checked_at_complete() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let env = Env::start().await;
    env.make_bucket("parts");
    let s3 = env.proxy.sdk_client();
    let up = s3
        .create_multipart_upload()
        .bucket("parts")
        .key("m")
        .send()
        .await
        .expect("create");
    let id = up.upload_id().expect("id");
    let mut etags = Vec::new();
    for (n, len) in [(1, 5 * 1024 * 1024), (2, 1000)] {
        let r = s3
            .upload_part()
            .bucket("parts")
            .key("m")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(vec![n as u8; len]))
            .send()
            .await
            .expect("part");
        etags.push(r.e_tag().expect("etag").to_string());
    }
    let listed = s3
        .list_parts()
        .bucket("parts")
        .key("m")
        .upload_id(id)
        .send()
        .await
        .expect("list parts");
    let listed: Vec<_> = listed
        .parts()
        .iter()
        .map(|p| p.e_tag().unwrap_or("").to_string())
        .collect();
    assert_eq!(listed, etags);
    let complete = |etag2: String| {
        CompletedMultipartUpload::builder()
            .parts(
                CompletedPart::builder()
                    .part_number(1)
                    .e_tag(&etags[0])
                    .build(),
            )
            .parts(CompletedPart::builder().part_number(2).e_tag(etag2).build())
            .build()
    };
    let e = s3
        .complete_multipart_upload()
        .bucket("parts")
        .key("m")
        .upload_id(id)
        .multipart_upload(complete("\"0123456789abcdef0123456789abcdef\"".to_string()))
        .send()
        .await
        .expect_err("a part named by another ETag");
    assert_eq!(
        e.as_service_error().and_then(|e| e.meta().code()),
        Some("InvalidPart")
    );
    assert!(
        env.store.stored("parts", "m").is_none(),
        "nothing completed"
    );
    s3.complete_multipart_upload()
        .bucket("parts")
        .key("m")
        .upload_id(id)
        .multipart_upload(complete(etags[1].clone()))
        .send()
        .await
        .expect("complete");
}

/// Listings name each object's storage class, and its owner in v1 and in v2 with
/// `fetch-owner`; ListBuckets names the owner (the embedded store's s3s-fs names neither).
#[tokio::test]
async fn listings_name_storage_class_and_owner() {
    let env = Env::start().await;
    env.make_bucket("owned");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("owned")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("put");
    let v1 = s3.list_objects().bucket("owned").send().await.expect("v1");
    let o = &v1.contents()[0];
    assert_eq!(o.storage_class().map(|c| c.as_str()), Some("STANDARD"));
    let owner = o.owner().and_then(|o| o.id()).expect("v1 names the owner");
    assert_eq!(owner.len(), 64);
    let v2 = s3
        .list_objects_v2()
        .bucket("owned")
        .send()
        .await
        .expect("v2");
    assert!(
        v2.contents()[0].owner().is_none(),
        "v2 names no owner unasked"
    );
    assert_eq!(
        v2.contents()[0].storage_class().map(|c| c.as_str()),
        Some("STANDARD")
    );
    let v2 = s3
        .list_objects_v2()
        .bucket("owned")
        .fetch_owner(true)
        .send()
        .await
        .expect("v2 fetch-owner");
    assert_eq!(v2.contents()[0].owner().and_then(|o| o.id()), Some(owner));
    let buckets = s3.list_buckets().send().await.expect("list buckets");
    assert_eq!(buckets.owner().and_then(|o| o.id()), Some(owner));
}

/// Folder markers (`dir/`, an empty object) are listed as S3 lists them: as keys, or rolled
/// into their common prefix under a delimiter, empty folders included, in key order across
/// pages; deleted markers (one by one or in a batch) are not. (The embedded default store's
/// s3s-fs keeps a marker as a folder; the test store lists it.) A write into a bucket that
/// does not exist is NoSuchBucket and makes no bucket; a bucket with objects is not deleted
/// (s3s-fs deletes it with them); creating one's own bucket again is BucketAlreadyOwnedByYou.
#[tokio::test]
async fn folder_markers_are_listed_as_keys_and_writes_need_a_bucket() {
    let env = Env::start().await;
    env.make_bucket("markers");
    let s3 = env.proxy.sdk_client();
    for key in [
        "foo/",
        "foo/bar",
        "foo/baz/xyzzy",
        "quux/thud",
        "asdf",
        "empty/",
        "gone/",
    ] {
        let body: &'static [u8] = if key.ends_with('/') { b"" } else { b"xx" };
        s3.put_object()
            .bucket("markers")
            .key(key)
            .body(ByteStream::from_static(body))
            .send()
            .await
            .expect("put");
    }
    s3.delete_objects()
        .bucket("markers")
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("gone/")
                        .build()
                        .expect("id"),
                )
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete_objects");
    let list = |prefix: Option<&'static str>, delimiter: Option<&'static str>| {
        let s3 = s3.clone();
        async move {
            let mut keys = Vec::new();
            let mut prefixes = Vec::new();
            let mut token = None;
            loop {
                let page = s3
                    .list_objects_v2()
                    .bucket("markers")
                    .set_prefix(prefix.map(str::to_string))
                    .set_delimiter(delimiter.map(str::to_string))
                    .max_keys(2)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .expect("list");
                assert!(page.key_count().unwrap_or(0) <= 2, "a page over max-keys");
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
                prefixes.extend(
                    page.common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix().map(str::to_string)),
                );
                token = page.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            (keys, prefixes)
        }
    };
    let (keys, prefixes) = list(None, None).await;
    assert_eq!(
        keys,
        [
            "asdf",
            "empty/",
            "foo/",
            "foo/bar",
            "foo/baz/xyzzy",
            "quux/thud"
        ]
    );
    assert!(prefixes.is_empty());
    let (keys, prefixes) = list(None, Some("/")).await;
    assert_eq!(
        (keys, prefixes),
        (
            vec!["asdf".to_string()],
            vec!["empty/".to_string(), "foo/".into(), "quux/".into()]
        )
    );
    let (keys, prefixes) = list(Some("foo/"), Some("/")).await;
    assert_eq!(
        (keys, prefixes),
        (
            vec!["foo/".to_string(), "foo/bar".into()],
            vec!["foo/baz/".to_string()]
        )
    );
    let v1 = s3
        .list_objects()
        .bucket("markers")
        .prefix("e")
        .send()
        .await
        .expect("list v1");
    let sizes: Vec<_> = v1
        .contents()
        .iter()
        .map(|o| (o.key().unwrap_or(""), o.size()))
        .collect();
    assert_eq!(sizes, [("empty/", Some(0))]);

    // No bucket, no write, and no bucket made.
    let e = s3
        .put_object()
        .bucket("no-such-bucket")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("a PUT into a missing bucket");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    let e = s3
        .create_multipart_upload()
        .bucket("no-such-bucket")
        .key("k")
        .send()
        .await
        .expect_err("an upload into a missing bucket");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert!(!env.store.root.join("no-such-bucket").exists());
    let e = s3
        .get_object()
        .bucket("no-such-bucket")
        .key("k")
        .send()
        .await
        .expect_err("a GET in a missing bucket");
    assert_eq!(
        e.as_service_error().and_then(|e| e.meta().code()),
        Some("NoSuchBucket")
    );

    // The bucket again: already ours. Deleting it while it holds objects (a marker is one)
    // is refused and changes nothing; once empty, it goes.
    let e = s3
        .create_bucket()
        .bucket("markers")
        .send()
        .await
        .expect_err("create again");
    assert_eq!(
        e.as_service_error().and_then(|e| e.meta().code()),
        Some("BucketAlreadyOwnedByYou")
    );
    let e = s3
        .delete_bucket()
        .bucket("markers")
        .send()
        .await
        .expect_err("delete a bucket with objects");
    assert_eq!(
        e.as_service_error().and_then(|e| e.meta().code()),
        Some("BucketNotEmpty")
    );
    for key in ["foo/bar", "foo/baz/xyzzy", "quux/thud", "asdf", "foo/"] {
        s3.delete_object()
            .bucket("markers")
            .key(key)
            .send()
            .await
            .expect("delete");
    }
    let e = s3
        .delete_bucket()
        .bucket("markers")
        .send()
        .await
        .expect_err("a marker is still there");
    assert_eq!(
        e.as_service_error().and_then(|e| e.meta().code()),
        Some("BucketNotEmpty")
    );
    s3.delete_object()
        .bucket("markers")
        .key("empty/")
        .send()
        .await
        .expect("delete the marker");
    s3.delete_bucket()
        .bucket("markers")
        .send()
        .await
        .expect("delete the empty bucket");
}

/// Deleting a key that is only a folder's name ("dir", for "dir/a"), as fsspec's recursive
/// `rm` does, succeeds and changes nothing, as in S3; the rest of the batch is deleted. (On
/// the embedded default store, s3s-fs answered both with a 500.)
#[tokio::test]
async fn deleting_a_folders_name_succeeds_and_changes_nothing() {
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("delfolder");
    let s3 = env.proxy.sdk_client();
    for key in ["dir/a", "dir/sub/b", "dir/c", "other"] {
        s3.put_object()
            .bucket("delfolder")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let ids = |keys: &[&str], quiet: bool| {
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(*k).build().expect("id"))
            .collect::<Vec<_>>();
        Delete::builder()
            .set_objects(Some(objects))
            .quiet(quiet)
            .build()
            .expect("delete")
    };
    let out = s3
        .delete_objects()
        .bucket("delfolder")
        .delete(ids(&["dir/a", "dir", "dir/sub", "gone"], false))
        .send()
        .await
        .expect("DeleteObjects naming folders");
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    let mut deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort();
    assert_eq!(deleted, ["dir", "dir/a", "dir/sub", "gone"]);
    s3.delete_object()
        .bucket("delfolder")
        .key("dir")
        .send()
        .await
        .expect("DeleteObject of a folder's name");
    let listed = s3
        .list_objects_v2()
        .bucket("delfolder")
        .send()
        .await
        .expect("list");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        ["dir/c", "dir/sub/b", "other"],
        "only dir/a was deleted"
    );
    let quiet = s3
        .delete_objects()
        .bucket("delfolder")
        .delete(ids(&["dir", "dir/c"], true))
        .send()
        .await
        .expect("quiet DeleteObjects");
    assert!(quiet.errors().is_empty() && quiet.deleted().is_empty());
    assert_eq!(env.store.stored("delfolder", "dir/c"), None);
}

/// S3's argument checks, made by Chmura whatever the store checks (validate.rs): a new
/// bucket's name, list numbers, and encryption headers on reads and writes. Nothing reaches
/// the store.
#[tokio::test]
async fn s3s_argument_checks_are_made_before_the_store() {
    use chmura_tests::raw::{self, RawRequest};
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("argcheck");
    let port = env.proxy.addr.port();
    let host = format!("localhost:{port}");
    let send = |method: &str, target: &str, headers: &[(&str, &str)]| {
        let mut r = RawRequest::new(method, target).header("content-length", "0");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let r = r.sign_v4(
            &host,
            chmura_tests::TENANT_AK,
            chmura_tests::TENANT_SK,
            "UNSIGNED-PAYLOAD",
            std::time::SystemTime::now(),
        );
        let ca = env.proxy.certs.ca_pem.clone();
        async move { raw::send(port, &ca, &r).await }
    };
    for name in ["foo_bar", "192.168.5.123", "foo-", "a-.b"] {
        let r = send("PUT", &format!("/{name}"), &[]).await;
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some("InvalidBucketName")),
            "{name}"
        );
        assert!(!env.store.root.join(name).exists(), "{name} created");
    }
    let r = send("GET", "/argcheck?max-keys=blah", &[]).await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("InvalidArgument"))
    );
    let r = send(
        "PUT",
        "/argcheck/k",
        &[
            ("x-amz-server-side-encryption", "AES256"),
            ("x-amz-server-side-encryption-aws-kms-key-id", "some-key"),
        ],
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("InvalidArgument"))
    );
    assert!(env.store.stored("argcheck", "k").is_none());
    let r = send(
        "PUT",
        "/argcheck/k",
        &[("x-amz-server-side-encryption", "AES256")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        "GET",
        "/argcheck/k",
        &[("x-amz-server-side-encryption", "AES256")],
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("InvalidArgument"))
    );
    assert_eq!(send("GET", "/argcheck/k", &[]).await.status, 200);
    // Refused after authentication: the tenant's error, not an authentication failure.
    let metrics = &env.proxy.state.metrics;
    for code in ["InvalidBucketName", "InvalidArgument"] {
        assert_eq!(metrics.auth_failures.with_label_values(&[code]).get(), 0);
    }
    assert!(
        metrics
            .requests
            .with_label_values(&["test", "CreateBucket", "4xx"])
            .get()
            >= 4
    );
}
