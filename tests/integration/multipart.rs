//! Multipart uploads of encrypted objects (issue 4, FORMAT.md §13): parts sealed as they
//! stream, in any order, on any Chmura instance (no state in Chmura); the completed object
//! reads back whole, by range and by part; tampering with whole parts in the store is refused.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use chmura_crypto::layout::{ciphertext_len, SEALED_CHUNK};
use chmura_tests::{pattern, Env, Proxy, ProxyOptions};

const PART: usize = 5 * 1024 * 1024;

async fn encrypted_env() -> Env {
    Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await
}

use chmura_tests::encrypted_env_on_moto;

/// A second Chmura over the same store with the same keyring.
async fn replica(env: &Env) -> Proxy {
    let ring = std::fs::read_to_string(env.proxy.dir.join("chmura.keyring")).expect("keyring");
    Proxy::start(
        &env.dir.path().join("replica"),
        &env.store.endpoint(),
        ProxyOptions {
            encrypt: true,
            keyring: Some(ring),
            ..Default::default()
        },
    )
    .await
}

async fn upload_part(
    s3: &Client,
    bucket: &str,
    key: &str,
    id: &str,
    n: i32,
    data: &[u8],
) -> String {
    s3.upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload part {n}: {e:?}"))
        .e_tag()
        .expect("part etag")
        .to_string()
}

fn completed(parts: &[(i32, String)]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .iter()
                .map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(e).build())
                .collect(),
        ))
        .build()
}

async fn complete_upload(s3: &Client, bucket: &str, key: &str, id: &str, parts: &[(i32, String)]) {
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(completed(parts))
        .send()
        .await
        .expect("complete");
}

/// The object reads back whole and by each inclusive range.
async fn reads_back(s3: &Client, bucket: &str, key: &str, data: &[u8], ranges: &[(usize, usize)]) {
    assert!(
        get_all(s3, bucket, key).await.expect("get") == data,
        "{key}"
    );
    for (a, b) in ranges {
        let r = get_range(s3, bucket, key, &format!("bytes={a}-{b}"))
            .await
            .expect("range");
        assert!(r == data[*a..=*b], "{key} {a}-{b}");
    }
}

async fn get_range(s3: &Client, bucket: &str, key: &str, range: &str) -> Result<Vec<u8>, String> {
    let r = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(range)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    r.body
        .collect()
        .await
        .map(|b| b.into_bytes().to_vec())
        .map_err(|e| format!("{e:?}"))
}

async fn get_all(s3: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let r = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    r.body
        .collect()
        .await
        .map(|b| b.into_bytes().to_vec())
        .map_err(|e| format!("{e:?}"))
}

/// Creates a multipart upload and returns its UploadId.
async fn create_upload(s3: &Client, bucket: &str, key: &str) -> String {
    s3.create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string()
}

/// Uploads `data` in `PART`-sized parts through `s3` and completes it.
async fn put_multipart(s3: &Client, bucket: &str, key: &str, data: &[u8]) {
    let id = create_upload(s3, bucket, key).await;
    let mut parts = Vec::new();
    for (i, piece) in data.chunks(PART).enumerate() {
        let n = i as i32 + 1;
        parts.push((n, upload_part(s3, bucket, key, &id, n, piece).await));
    }
    complete_upload(s3, bucket, key, &id, &parts).await;
}

#[tokio::test]
async fn parts_in_any_order_on_two_replicas_read_back_whole_by_range_and_by_part() {
    let env = encrypted_env().await;
    let other = replica(&env).await;
    env.make_bucket("mpx");
    let (a, b) = (env.proxy.sdk_client(), other.sdk_client());
    let len = 3 * PART + 1000;
    let data = pattern(len, 4);
    let create = a
        .create_multipart_upload()
        .bucket("mpx")
        .key("big.bin")
        .send()
        .await
        .expect("create");
    assert_eq!(
        create.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    let id = create.upload_id().expect("id").to_string();
    // Parts 4, 2, 3, 1 at once, alternating between the two instances.
    let piece = |n: usize| &data[(n - 1) * PART..(n * PART).min(len)];
    let (e4, e2, e3, e1) = tokio::join!(
        upload_part(&a, "mpx", "big.bin", &id, 4, piece(4)),
        upload_part(&b, "mpx", "big.bin", &id, 2, piece(2)),
        upload_part(&a, "mpx", "big.bin", &id, 3, piece(3)),
        upload_part(&b, "mpx", "big.bin", &id, 1, piece(1)),
    );
    let listed = b
        .list_parts()
        .bucket("mpx")
        .key("big.bin")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(listed.upload_id(), Some(id.as_str()));
    let mut got: Vec<(i32, i64, String)> = listed
        .parts()
        .iter()
        .map(|p| {
            (
                p.part_number().unwrap_or(0),
                p.size().unwrap_or(-1),
                p.e_tag().unwrap_or("").to_string(),
            )
        })
        .collect();
    // s3s-fs lists parts unsorted and without ETags; S3 sorts them and lists ETags.
    got.sort();
    let p = PART as i64;
    let want = [(1, p, &e1), (2, p, &e2), (3, p, &e3), (4, 1000, &e4)];
    assert_eq!(got.len(), 4);
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1), (w.0, w.1));
        assert!(g.2.is_empty() || g.2 == *w.2, "part {} ETag {}", g.0, g.2);
    }
    let all = completed(&[(1, e1), (2, e2), (3, e3), (4, e4)]);
    // x-amz-mp-object-size is the plaintext size: a wrong one is refused.
    let err = b
        .complete_multipart_upload()
        .bucket("mpx")
        .key("big.bin")
        .upload_id(&id)
        .mpu_object_size(len as i64 + 1)
        .multipart_upload(all.clone())
        .send()
        .await
        .expect_err("wrong object size");
    assert!(format!("{err:?}").contains("InvalidRequest"), "{err:?}");
    let done = b
        .complete_multipart_upload()
        .bucket("mpx")
        .key("big.bin")
        .upload_id(&id)
        .mpu_object_size(len as i64)
        .multipart_upload(all)
        .send()
        .await
        .expect("complete");
    let etag = done.e_tag().expect("etag").to_string();
    assert!(etag.ends_with("-4\""), "multipart ETag {etag}");

    // The store holds ciphertext only, on the single-part grid.
    let stored = env.store.stored("mpx", "big.bin").expect("stored");
    assert_eq!(stored.len() as u64, ciphertext_len(len as u64));
    assert!(!stored
        .windows(64)
        .any(|w| w == &data[PART + 100..PART + 164]));

    // Whole, HEAD, listing.
    assert!(get_all(&a, "mpx", "big.bin").await.expect("get") == data);
    let head = b
        .head_object()
        .bucket("mpx")
        .key("big.bin")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(len as i64));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    let list = a
        .list_objects_v2()
        .bucket("mpx")
        .send()
        .await
        .expect("list");
    assert_eq!(list.contents()[0].size(), Some(len as i64));

    // Ranges, including across part boundaries and inside the short last part.
    for (lo, hi) in [
        (0, 0),
        (PART - 10, PART + 10),
        (PART - 1, 2 * PART),
        (2 * PART + 65_530, 2 * PART + 65_540),
        (3 * PART - 70_000, 3 * PART + 999),
        (3 * PART + 10, 3 * PART + 20),
        (0, len - 1),
    ] {
        let got = get_range(&b, "mpx", "big.bin", &format!("bytes={lo}-{hi}"))
            .await
            .expect("range");
        assert!(got == data[lo..=hi], "range {lo}-{hi}");
    }
    let tail = get_range(&a, "mpx", "big.bin", "bytes=-1500")
        .await
        .expect("suffix");
    assert!(tail == data[len - 1500..]);

    // By part number: that part's plaintext, and the part count.
    for n in 1..=4usize {
        let r = a
            .get_object()
            .bucket("mpx")
            .key("big.bin")
            .part_number(n as i32)
            .send()
            .await
            .expect("get part");
        assert_eq!(r.parts_count(), Some(4));
        let body = r.body.collect().await.expect("body").into_bytes();
        assert!(body.as_ref() == piece(n), "part {n}");
    }
    let h = b
        .head_object()
        .bucket("mpx")
        .key("big.bin")
        .part_number(4)
        .send()
        .await
        .expect("head part");
    assert_eq!((h.content_length(), h.parts_count()), (Some(1000), Some(4)));
    let err = a
        .get_object()
        .bucket("mpx")
        .key("big.bin")
        .part_number(5)
        .send()
        .await
        .expect_err("part 5 does not exist");
    assert!(format!("{err:?}").contains("InvalidPartNumber"), "{err:?}");
}

/// Re-arranging whole parts in the store (what UploadPartCopy with the object's metadata could
/// build) is refused on read; dropping trailing whole parts is the documented bound.
#[tokio::test]
async fn whole_part_tampering_in_the_store_is_refused() {
    let env = encrypted_env().await;
    env.make_bucket("mpt");
    let s3 = env.proxy.sdk_client();
    let len = 3 * PART + 777;
    let data = pattern(len, 9);
    put_multipart(&s3, "mpt", "obj", &data).await;
    let path = env.store.root.join("mpt").join("obj");
    let original = std::fs::read(&path).expect("stored");
    let part = (PART as u64 / 65_536 * SEALED_CHUNK) as usize;
    let (p1, p2, p3, p4) = (
        &original[..part],
        &original[part..2 * part],
        &original[2 * part..3 * part],
        &original[3 * part..],
    );
    for (what, bytes, lo) in [
        ("parts 2 and 3 swapped", [p1, p3, p2, p4].concat(), PART + 5),
        (
            "part 2 duplicated over part 3",
            [p1, p2, p2, p4].concat(),
            2 * PART + 5,
        ),
        ("part 2 dropped", [p1, p3, p4].concat(), PART + 5),
        ("part 1 dropped", [p2, p3, p4].concat(), 5),
        ("last part first", [p4, p1, p2, p3].concat(), 5),
    ] {
        std::fs::write(&path, &bytes).expect("tamper");
        assert!(
            get_all(&s3, "mpt", "obj").await.is_err(),
            "whole read: {what}"
        );
        // A range inside the moved region fails too, without reading the rest.
        assert!(
            get_range(&s3, "mpt", "obj", &format!("bytes={lo}-{}", lo + 10))
                .await
                .is_err(),
            "range read: {what}"
        );
    }
    // The bound (FORMAT.md §10): cutting whole trailing parts leaves a shorter valid object.
    std::fs::write(&path, [p1, p2].concat()).expect("truncate");
    assert!(get_all(&s3, "mpt", "obj").await.expect("prefix") == data[..2 * PART]);
    std::fs::write(&path, &original).expect("restore");
    assert!(get_all(&s3, "mpt", "obj").await.expect("restored") == data);
}

#[tokio::test]
async fn layouts_off_the_grid_are_rewritten_at_complete_and_ids_are_checked() {
    let env = encrypted_env().await;
    env.make_bucket("mpl");
    let s3 = env.proxy.sdk_client();
    let create = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            s3.create_multipart_upload()
                .bucket("mpl")
                .key(key)
                .send()
                .await
                .expect("create")
                .upload_id()
                .expect("id")
                .to_string()
        }
    };
    // Parts that are not all one multiple of 64 KiB, a larger last part, an empty last part
    // (numbers with gaps, which s3s-fs refuses, are tested on moto):
    // the store assembles them, then Chmura rewrites the object onto the grid (FORMAT.md §13).
    for (key, numbers, sizes) in [
        ("unequal", vec![1, 2, 3], vec![PART, PART + 65_536, 10]),
        ("unaligned", vec![1, 2, 3], vec![PART + 1, PART + 3, 70_000]),
        ("last-larger", vec![1, 2], vec![PART, PART + 100_000]),
        ("empty-last", vec![1, 2], vec![PART + 11, 0]),
    ] {
        let total: usize = sizes.iter().sum();
        let data = pattern(total, key.len() as u64);
        let id = create(key).await;
        // Uploaded concurrently, last part first.
        let mut at = 0;
        let mut pieces = Vec::new();
        for (n, sz) in numbers.iter().zip(&sizes) {
            pieces.push((*n, data[at..at + sz].to_vec()));
            at += sz;
        }
        let mut uploads = tokio::task::JoinSet::new();
        for (n, piece) in pieces.into_iter().rev() {
            let (s3, id) = (s3.clone(), id.clone());
            uploads.spawn(async move { (n, upload_part(&s3, "mpl", key, &id, n, &piece).await) });
        }
        let mut parts = uploads.join_all().await;
        parts.sort();
        let done = s3
            .complete_multipart_upload()
            .bucket("mpl")
            .key(key)
            .upload_id(&id)
            .multipart_upload(completed(&parts))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let stored = env.store.stored("mpl", key).expect("stored");
        assert_eq!(stored.len() as u64, ciphertext_len(total as u64), "{key}");
        let head = s3
            .head_object()
            .bucket("mpl")
            .key(key)
            .send()
            .await
            .expect("head");
        assert_eq!(head.content_length(), Some(total as i64), "{key}");
        assert_eq!(head.e_tag(), done.e_tag(), "{key}");
        let last = total - 1;
        let ranges = [
            (0, 99),
            (PART - 3, (PART + 70_000).min(last)),
            (total - 5, last),
        ];
        reads_back(&s3, "mpl", key, &data, &ranges).await;
        let listed = s3
            .list_objects_v2()
            .bucket("mpl")
            .prefix(key)
            .send()
            .await
            .expect("list");
        assert_eq!(listed.contents()[0].size(), Some(total as i64), "{key}");
    }
    // Parts too small are the store's EntityTooSmall, and nothing is created.
    let big = pattern(PART + 65_536, 1);
    let id = create("too-small").await;
    let e1 = upload_part(&s3, "mpl", "too-small", &id, 1, &big[..1 << 20]).await;
    let e2 = upload_part(&s3, "mpl", "too-small", &id, 2, &big[..10]).await;
    let err = s3
        .complete_multipart_upload()
        .bucket("mpl")
        .key("too-small")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, e1), (2, e2)]))
        .send()
        .await
        .expect_err("too small");
    assert!(format!("{err:?}").contains("EntityTooSmall"), "{err:?}");
    assert!(env.store.stored("mpl", "too-small").is_none());
    let id = create("gap").await;
    let e1 = upload_part(&s3, "mpl", "gap", &id, 1, &big[..PART]).await;
    let _e3 = upload_part(&s3, "mpl", "gap", &id, 3, &big[..10]).await;
    // Completing with a part that was never uploaded is InvalidPart.
    let err = s3
        .complete_multipart_upload()
        .bucket("mpl")
        .key("gap")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, e1.clone()), (2, e1.clone())]))
        .send()
        .await
        .expect_err("missing part");
    assert!(format!("{err:?}").contains("InvalidPart"), "{err:?}");
    // The token only works for its own key (the data key is bound to bucket and key).
    let err = s3
        .upload_part()
        .bucket("mpl")
        .key("other-key")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("token for another key");
    let _ = err;
    // Ids that are not Chmura's: NoSuchUpload for parts; listing shows the store's ids, which
    // ListParts and Abort accept.
    let err = s3
        .upload_part()
        .bucket("mpl")
        .key("gap")
        .upload_id("not-a-token")
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("bogus id");
    assert!(format!("{err:?}").contains("NoSuchUpload"), "{err:?}");
    // The store's own id (what ListMultipartUploads lists) works for ListParts and Abort.
    let raw = chmura_proxy::multipart::UploadToken::decode(&id)
        .expect("token")
        .upstream_id;
    let parts = s3
        .list_parts()
        .bucket("mpl")
        .key("gap")
        .upload_id(&raw)
        .send()
        .await
        .expect("list parts by raw id");
    assert_eq!(parts.upload_id(), Some(raw.as_str()));
    assert_eq!(parts.parts().len(), 2);
    s3.abort_multipart_upload()
        .bucket("mpl")
        .key("gap")
        .upload_id(&raw)
        .send()
        .await
        .expect("abort by raw id");
    let err = s3
        .upload_part()
        .bucket("mpl")
        .key("gap")
        .upload_id(&id)
        .part_number(2)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("aborted");
    // S3 says NoSuchUpload; s3s-fs says AccessDenied for an upload id it no longer has.
    let text = format!("{err:?}");
    assert!(
        text.contains("NoSuchUpload") || text.contains("AccessDenied"),
        "{text}"
    );
}

/// CopyObject of encrypted objects: the store copies the ciphertext, Chmura re-wraps the data
/// key for the destination's bucket and key (so the copy decrypts there, and only there).
#[tokio::test]
async fn copy_object_rewraps_the_data_key_for_the_destination() {
    let env = encrypted_env().await;
    env.make_bucket("cpa");
    env.make_bucket("cpb");
    let s3 = env.proxy.sdk_client();
    let small = pattern(200_000, 21);
    let put = s3
        .put_object()
        .bucket("cpa")
        .key("src")
        .content_type("text/x-chmura")
        .metadata("colour", "blue")
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .expect("put");
    let src_etag = put.e_tag().expect("etag").to_string();
    let big = pattern(2 * PART + 5, 22);
    put_multipart(&s3, "cpa", "big", &big).await;

    // COPY directive: same bucket, metadata and content type come along.
    let out = s3
        .copy_object()
        .bucket("cpa")
        .key("dst")
        .copy_source("cpa/src")
        .send()
        .await
        .expect("copy");
    let etag = out
        .copy_object_result()
        .and_then(|r| r.e_tag())
        .expect("etag");
    assert!(etag.ends_with("-0\""), "presented ETag {etag}");
    assert!(get_all(&s3, "cpa", "dst").await.expect("get copy") == small);
    let h = s3
        .head_object()
        .bucket("cpa")
        .key("dst")
        .send()
        .await
        .expect("head");
    assert_eq!(h.content_type(), Some("text/x-chmura"));
    assert_eq!(
        h.metadata()
            .and_then(|m| m.get("colour"))
            .map(String::as_str),
        Some("blue")
    );
    assert_eq!(h.e_tag(), Some(etag));
    assert_eq!(h.content_length(), Some(small.len() as i64));
    // The wrapped key differs (bound to the new key); the body is the same ciphertext.
    assert_eq!(
        env.store.stored("cpa", "dst"),
        env.store.stored("cpa", "src")
    );

    // REPLACE directive, to another bucket, with a source condition that holds.
    s3.copy_object()
        .bucket("cpb")
        .key("dir/copy")
        .copy_source("cpa/src")
        .copy_source_if_match(&src_etag)
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("colour", "red")
        .send()
        .await
        .expect("copy replace");
    let h = s3
        .head_object()
        .bucket("cpb")
        .key("dir/copy")
        .send()
        .await
        .expect("head");
    assert_eq!(
        h.metadata()
            .and_then(|m| m.get("colour"))
            .map(String::as_str),
        Some("red")
    );
    assert!(get_all(&s3, "cpb", "dir/copy").await.expect("get") == small);

    // A multipart object copies too, and reads back by range across parts.
    s3.copy_object()
        .bucket("cpb")
        .key("big-copy")
        .copy_source("cpa/big")
        .send()
        .await
        .expect("copy multipart");
    assert!(get_all(&s3, "cpb", "big-copy").await.expect("get") == big);
    let r = get_range(
        &s3,
        "cpb",
        "big-copy",
        &format!("bytes={}-{}", PART - 3, PART + 3),
    )
    .await
    .expect("range");
    assert!(r == big[PART - 3..=PART + 3]);

    // Source conditions that fail copy nothing.
    for (what, req) in [
        (
            "if-match",
            s3.copy_object()
                .bucket("cpb")
                .key("nope")
                .copy_source("cpa/src")
                .copy_source_if_match("\"0123456789abcdef0123456789abcdef-0\""),
        ),
        (
            "if-none-match",
            s3.copy_object()
                .bucket("cpb")
                .key("nope")
                .copy_source("cpa/src")
                .copy_source_if_none_match(&src_etag),
        ),
    ] {
        let e = req.send().await.expect_err(what);
        assert!(
            format!("{e:?}").contains("PreconditionFailed"),
            "{what}: {e:?}"
        );
        assert!(env.store.stored("cpb", "nope").is_none(), "{what}");
    }
    // A missing source is NoSuchKey.
    let e = s3
        .copy_object()
        .bucket("cpb")
        .key("nope")
        .copy_source("cpa/missing")
        .send()
        .await
        .expect_err("missing");
    assert!(format!("{e:?}").contains("NoSuchKey"), "{e:?}");
    // A missing source bucket is NoSuchBucket.
    let e = s3
        .copy_object()
        .bucket("cpb")
        .key("nope")
        .copy_source("cpnobucket/src")
        .send()
        .await
        .expect_err("missing bucket");
    assert!(format!("{e:?}").contains("NoSuchBucket"), "{e:?}");
}

/// UploadPartCopy into an upload created with a checksum algorithm answers with the copied
/// plaintext's checksum in that algorithm, as S3 does (a composite upload needs it for every
/// part at Complete): SHA256 composite, CRC32 full-object.
#[tokio::test]
async fn upload_part_copy_states_the_copied_parts_checksum() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
    use base64::Engine;
    use chmura_proxy::checksum::{ChecksumAlgorithm as A, Hasher};
    let sum = |alg: A, d: &[u8]| {
        let mut h = Hasher::new(alg);
        h.update(d);
        base64::engine::general_purpose::STANDARD.encode(h.finish())
    };
    let env = encrypted_env().await;
    env.make_bucket("upck");
    let s3 = env.proxy.sdk_client();
    let src = pattern(PART + 70_000, 33);
    s3.put_object()
        .bucket("upck")
        .key("src")
        .body(ByteStream::from(src.clone()))
        .send()
        .await
        .expect("put");
    let pieces = [&src[10..PART + 10], &src[PART + 10..]];
    let ranges = [
        format!("bytes=10-{}", PART + 9),
        format!("bytes={}-{}", PART + 10, src.len() - 1),
    ];
    for (alg, sdk_alg, full) in [
        (A::Sha256, ChecksumAlgorithm::Sha256, false),
        (A::Crc32, ChecksumAlgorithm::Crc32, true),
    ] {
        let key = format!("joined-{}", alg.name());
        let mut create = s3
            .create_multipart_upload()
            .bucket("upck")
            .key(&key)
            .checksum_algorithm(sdk_alg);
        if full {
            create = create.checksum_type(ChecksumType::FullObject);
        }
        let id = create
            .send()
            .await
            .expect("create")
            .upload_id()
            .expect("id")
            .to_string();
        let mut parts = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            let n = i as i32 + 1;
            let out = s3
                .upload_part_copy()
                .bucket("upck")
                .key(&key)
                .upload_id(&id)
                .part_number(n)
                .copy_source("upck/src")
                .copy_source_range(range)
                .send()
                .await
                .unwrap_or_else(|e| panic!("part copy {n}: {e:?}"));
            let r = out.copy_part_result().expect("result");
            let stated = match alg {
                A::Sha256 => r.checksum_sha256(),
                _ => r.checksum_crc32(),
            };
            let want = sum(alg, pieces[i]);
            assert_eq!(stated, Some(want.as_str()), "{key} part {n}");
            let p = CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().expect("etag"));
            parts.push(
                match alg {
                    A::Sha256 => p.checksum_sha256(want),
                    _ => p.checksum_crc32(want),
                }
                .build(),
            );
        }
        let done = s3
            .complete_multipart_upload()
            .bucket("upck")
            .key(&key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .expect("complete");
        let plain = [pieces[0], pieces[1]].concat();
        if full {
            assert_eq!(done.checksum_crc32(), Some(sum(A::Crc32, &plain).as_str()));
        } else {
            let raw: Vec<u8> = pieces
                .iter()
                .flat_map(|p| {
                    let mut h = Hasher::new(A::Sha256);
                    h.update(p);
                    h.finish()
                })
                .collect();
            let composite = format!("{}-2", sum(A::Sha256, &raw));
            assert_eq!(done.checksum_sha256(), Some(composite.as_str()));
        }
        assert!(get_all(&s3, "upck", &key).await.expect("get") == plain);
    }
}

/// UploadPartCopy into an encrypted upload: the source range is decrypted and sealed again as
/// the part (with and without a source range, from single-part and multipart sources).
#[tokio::test]
async fn upload_part_copy_reencrypts_source_ranges() {
    let env = encrypted_env().await;
    env.make_bucket("upc");
    let s3 = env.proxy.sdk_client();
    let big = pattern(2 * PART + 10, 31);
    put_multipart(&s3, "upc", "big", &big).await;
    let small = pattern(70_000, 32);
    s3.put_object()
        .bucket("upc")
        .key("small")
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .expect("put");
    let id = s3
        .create_multipart_upload()
        .bucket("upc")
        .key("joined")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let mut parts = Vec::new();
    for (n, range) in [
        (1, Some(format!("bytes=100-{}", PART + 99))),
        (2, Some(format!("bytes={}-{}", PART, 2 * PART - 1))),
        (3, None),
    ] {
        let src = if n == 3 { "upc/small" } else { "upc/big" };
        let out = s3
            .upload_part_copy()
            .bucket("upc")
            .key("joined")
            .upload_id(&id)
            .part_number(n)
            .copy_source(src)
            .set_copy_source_range(range)
            .send()
            .await
            .unwrap_or_else(|e| panic!("part copy {n}: {e:?}"));
        let etag = out
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .expect("etag")
            .to_string();
        parts.push((n, etag));
    }
    complete_upload(&s3, "upc", "joined", &id, &parts).await;
    // A source range past the end of the source is refused (not clamped).
    let e = s3
        .upload_part_copy()
        .bucket("upc")
        .key("joined")
        .upload_id(&id)
        .part_number(4)
        .copy_source("upc/small")
        .copy_source_range("bytes=0-70000")
        .send()
        .await
        .expect_err("range past the end");
    // AWS: 400 InvalidArgument "Range specified is not valid for source object of size".
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(400),
        "{e:?}"
    );
    assert_eq!(
        e.into_service_error().meta().code(),
        Some("InvalidArgument")
    );
    let want = [&big[100..PART + 100], &big[PART..2 * PART], &small[..]].concat();
    assert!(get_all(&s3, "upc", "joined").await.expect("get") == want);
    // A source that fails authentication commits no part.
    let path = env.store.root.join("upc").join("small");
    let mut stored = std::fs::read(&path).expect("stored");
    stored[100] ^= 1;
    std::fs::write(&path, &stored).expect("tamper");
    let id = s3
        .create_multipart_upload()
        .bucket("upc")
        .key("bad")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let r = s3
        .upload_part_copy()
        .bucket("upc")
        .key("bad")
        .upload_id(&id)
        .part_number(1)
        .copy_source("upc/small")
        .send()
        .await;
    assert!(r.is_err(), "a tampered source was copied");
    let listed = s3
        .list_parts()
        .bucket("upc")
        .key("bad")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    assert!(
        listed.parts().is_empty(),
        "a part was committed: {listed:?}"
    );
}

/// `chmura rekey`: data keys re-wrapped under another keyring key, bodies untouched, objects
/// not written by Chmura reported and left alone, resumable, and the old key no longer needed.
#[tokio::test]
async fn rekey_rewraps_under_a_new_key_without_rewriting_bodies() {
    use chmura_proxy::rekey::{run, RekeyOptions};
    let hex = |b: u8| format!("{b:02x}").repeat(32);
    let ring = format!("chmura-keyring v1\nold {}\nnew {}\n", hex(1), hex(2));
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        keyring: Some(ring),
        ..Default::default()
    })
    .await;
    env.make_bucket("rek");
    let s3 = env.proxy.sdk_client();
    let mut objects = Vec::new();
    for (i, len) in [0usize, 10, 100_000].iter().enumerate() {
        let key = format!("p/obj-{i}");
        let data = pattern(*len, i as u64 + 70);
        s3.put_object()
            .bucket("rek")
            .key(&key)
            .metadata("keep", "me")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("put");
        objects.push((key, data));
    }
    let big = pattern(PART + 3, 77);
    put_multipart(&s3, "rek", "p/big", &big).await;
    objects.push(("p/big".into(), big));
    s3.put_object()
        .bucket("rek")
        .key("q/outside")
        .body(ByteStream::from_static(b"outside the prefix"))
        .send()
        .await
        .expect("put");
    // Written straight to the store: not Chmura's.
    let store = chmura_tests::sdk_client(
        &env.store.endpoint(),
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    store
        .put_object()
        .bucket("rek")
        .key("p/plain")
        .body(ByteStream::from_static(b"plaintext"))
        .send()
        .await
        .expect("direct put");
    let before: Vec<Option<Vec<u8>>> = objects
        .iter()
        .map(|(k, _)| env.store.stored("rek", k))
        .collect();
    let kid = |key: &str| {
        let store = store.clone();
        let key = key.to_string();
        async move {
            store
                .head_object()
                .bucket("rek")
                .key(key)
                .send()
                .await
                .expect("head")
                .metadata()
                .and_then(|m| m.get("chmura-kid").cloned())
        }
    };
    assert_eq!(kid("p/obj-1").await.as_deref(), Some("old"));

    let opts = RekeyOptions {
        bucket: "rek".into(),
        prefix: "p/".into(),
        to_key: "new".into(),
        start_after: None,
        max_objects: Some(2),
        // Small enough that p/big is rewritten as a multipart copy of itself in two parts
        // (in production: S3's 5 GiB CopyObject limit).
        copy_limit: PART as u64 + 1,
    };
    let mut log = Vec::new();
    let first = run(&env.proxy.state, &opts, &mut log).await.expect("rekey");
    assert_eq!((first.listed, first.rekeyed), (2, 2), "{first:?}");
    let resume = first.stopped_after.clone().expect("stopped early");
    assert!(String::from_utf8_lossy(&log).contains("--start-after"));
    // Resume where it stopped; then a full rerun finds everything done.
    let rest = run(
        &env.proxy.state,
        &RekeyOptions {
            start_after: Some(resume),
            max_objects: None,
            ..opts.clone()
        },
        &mut log,
    )
    .await
    .expect("resume");
    assert_eq!(rest.rekeyed, 2, "{rest:?}");
    assert_eq!(rest.not_chmura, vec!["p/plain".to_string()]);
    assert!(rest.failed.is_empty(), "{rest:?}");
    let again = run(
        &env.proxy.state,
        &RekeyOptions {
            max_objects: None,
            ..opts.clone()
        },
        &mut log,
    )
    .await
    .expect("rerun");
    assert_eq!((again.rekeyed, again.already), (0, 4), "{again:?}");

    for ((key, data), stored) in objects.iter().zip(before) {
        assert_eq!(kid(key).await.as_deref(), Some("new"), "{key}");
        assert_eq!(
            env.store.stored("rek", key),
            stored,
            "{key}: body rewritten"
        );
        assert!(
            get_all(&s3, "rek", key).await.expect("get") == *data,
            "{key}"
        );
        let h = s3
            .head_object()
            .bucket("rek")
            .key(key)
            .send()
            .await
            .expect("head");
        assert_eq!(
            h.metadata().and_then(|m| m.get("keep")).map(String::as_str),
            if key == "p/big" { None } else { Some("me") }
        );
    }
    assert_eq!(kid("q/outside").await.as_deref(), Some("old"));
    assert_eq!(
        env.store.stored("rek", "p/plain").as_deref(),
        Some(&b"plaintext"[..])
    );
    // A Chmura with only the new key reads the rekeyed objects.
    let only_new = Proxy::start(
        &env.dir.path().join("only-new"),
        &env.store.endpoint(),
        ProxyOptions {
            encrypt: true,
            keyring: Some(format!("chmura-keyring v1\nnew {}\n", hex(2))),
            ..Default::default()
        },
    )
    .await;
    let s3n = only_new.sdk_client();
    for (key, data) in &objects {
        assert!(
            get_all(&s3n, "rek", key).await.expect("get") == *data,
            "{key}"
        );
    }
    assert!(get_all(&s3n, "rek", "q/outside").await.is_err());
}

/// Against moto (a second store, with versioning, ListMultipartUploads and ETag checks at
/// Complete that s3s-fs lacks): encrypted multipart, versions read by versionId with plaintext
/// sizes in ListObjectVersions, tagging passing through.
#[tokio::test]
async fn encrypted_uploads_versions_and_tagging_on_moto() {
    use aws_sdk_s3::types::{BucketVersioningStatus, Tag, Tagging, VersioningConfiguration};
    let Some((_moto, env)) =
        encrypted_env_on_moto("encrypted_uploads_versions_and_tagging_on_moto").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("motomp")
        .send()
        .await
        .expect("bucket");
    s3.put_bucket_versioning()
        .bucket("motomp")
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
        .bucket("motomp")
        .key("obj")
        .body(ByteStream::from_static(b"version one"))
        .send()
        .await
        .expect("put v1")
        .version_id()
        .expect("v1")
        .to_string();

    // The store's own server-side encryption, when it reports one, is what the client sees
    // (here SSE-S3, asked for by the client); otherwise objects show as SSE-KMS.
    use aws_sdk_s3::types::ServerSideEncryption as Sse;
    s3.create_bucket()
        .bucket("motosse")
        .send()
        .await
        .expect("bucket");
    let put = s3
        .put_object()
        .bucket("motosse")
        .key("sse-s3")
        .server_side_encryption(Sse::Aes256)
        .body(ByteStream::from_static(b"sse-s3 on top"))
        .send()
        .await
        .expect("put sse-s3");
    assert_eq!(put.server_side_encryption(), Some(&Sse::Aes256));
    let head = s3
        .head_object()
        .bucket("motosse")
        .key("sse-s3")
        .send()
        .await
        .expect("head sse-s3");
    assert_eq!(head.server_side_encryption(), Some(&Sse::Aes256));
    let head = s3
        .head_object()
        .bucket("motomp")
        .key("obj")
        .version_id(&v1)
        .send()
        .await
        .expect("head v1");
    assert_eq!(head.server_side_encryption(), Some(&Sse::AwsKms));

    let data = pattern(PART + 10, 80);
    let id = s3
        .create_multipart_upload()
        .bucket("motomp")
        .key("obj")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let e2 = upload_part(&s3, "motomp", "obj", &id, 2, &data[PART..]).await;
    let e1 = upload_part(&s3, "motomp", "obj", &id, 1, &data[..PART]).await;
    let listed = s3
        .list_parts()
        .bucket("motomp")
        .key("obj")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    let got: Vec<(i32, i64, String)> = listed
        .parts()
        .iter()
        .map(|p| {
            (
                p.part_number().unwrap_or(0),
                p.size().unwrap_or(-1),
                p.e_tag().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, PART as i64, e1.clone()), (2, 10, e2.clone())]);
    let uploads = s3
        .list_multipart_uploads()
        .bucket("motomp")
        .send()
        .await
        .expect("uploads");
    assert_eq!(uploads.uploads().len(), 1);
    assert_eq!(uploads.uploads()[0].upload_id(), Some(id.as_str()));
    // A wrong part ETag is the store's InvalidPart; nothing is created.
    let err = s3
        .complete_multipart_upload()
        .bucket("motomp")
        .key("obj")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, e2.clone()), (2, e2.clone())]))
        .send()
        .await
        .expect_err("wrong etag");
    assert!(format!("{err:?}").contains("InvalidPart"), "{err:?}");
    let done = s3
        .complete_multipart_upload()
        .bucket("motomp")
        .key("obj")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, e1), (2, e2)]))
        .send()
        .await
        .expect("complete");
    let v2 = done.version_id().expect("v2").to_string();
    assert!(get_all(&s3, "motomp", "obj").await.expect("get") == data);
    let r = get_range(
        &s3,
        "motomp",
        "obj",
        &format!("bytes={}-{}", PART - 2, PART + 2),
    )
    .await
    .expect("range");
    assert!(r == data[PART - 2..=PART + 2]);
    let p2 = s3
        .get_object()
        .bucket("motomp")
        .key("obj")
        .part_number(2)
        .send()
        .await
        .expect("part 2");
    assert_eq!(p2.parts_count(), Some(2));
    assert!(p2.body.collect().await.expect("body").into_bytes().as_ref() == &data[PART..]);

    // GetObjectAttributes: plaintext size, the presented ETag.
    let attrs = s3
        .get_object_attributes()
        .bucket("motomp")
        .key("obj")
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectSize)
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::Etag)
        .send()
        .await
        .expect("attributes");
    assert_eq!(attrs.object_size(), Some(data.len() as i64));
    assert_eq!(
        attrs.e_tag().map(|e| e.trim_matches('"')),
        done.e_tag().map(|e| e.trim_matches('"'))
    );
    // Its parts, in plaintext sizes, by page (moto states none: Chmura reads the layout).
    let object_parts = |max: Option<i32>, marker: Option<&str>| {
        s3.get_object_attributes()
            .bucket("motomp")
            .key("obj")
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectParts)
            .set_max_parts(max)
            .set_part_number_marker(marker.map(str::to_string))
            .send()
    };
    let sizes = |p: &aws_sdk_s3::types::GetObjectAttributesParts| -> Vec<(i32, i64)> {
        p.parts()
            .iter()
            .map(|x| (x.part_number().unwrap_or(0), x.size().unwrap_or(0)))
            .collect()
    };
    let all = object_parts(None, None).await.expect("parts");
    let all = all.object_parts().expect("object parts");
    assert_eq!(all.total_parts_count(), Some(2));
    assert_eq!(all.is_truncated(), Some(false));
    assert_eq!(
        sizes(all),
        vec![(1, PART as i64), (2, (data.len() - PART) as i64)]
    );
    let first = object_parts(Some(1), None).await.expect("page");
    let first = first.object_parts().expect("object parts");
    assert_eq!(sizes(first), vec![(1, PART as i64)]);
    assert_eq!(
        (first.is_truncated(), first.next_part_number_marker()),
        (Some(true), Some("1"))
    );
    let second = object_parts(Some(1), Some("1")).await.expect("page");
    let second = second.object_parts().expect("object parts");
    assert_eq!(sizes(second), vec![(2, (data.len() - PART) as i64)]);
    assert_eq!(second.is_truncated(), Some(false));

    // A checksum sent with PutObject is an attribute too.
    {
        use base64::Engine;
        let body = b"attributes with a checksum";
        let mut h =
            chmura_proxy::checksum::Hasher::new(chmura_proxy::checksum::ChecksumAlgorithm::Sha256);
        h.update(body);
        let digest = base64::engine::general_purpose::STANDARD.encode(h.finish());
        s3.create_bucket()
            .bucket("motock")
            .send()
            .await
            .expect("bucket");
        s3.put_object()
            .bucket("motock")
            .key("ck")
            .checksum_sha256(&digest)
            .body(ByteStream::from_static(body))
            .send()
            .await
            .expect("put with checksum");
        use aws_sdk_s3::types::ObjectAttributes as Attr;
        let attributes_of_ck = |asked: &[Attr]| {
            s3.get_object_attributes()
                .bucket("motock")
                .key("ck")
                .set_object_attributes(Some(asked.to_vec()))
                .send()
        };
        let attrs = attributes_of_ck(&[Attr::Checksum, Attr::ObjectSize])
            .await
            .expect("attributes");
        assert_eq!(attrs.object_size(), Some(body.len() as i64));
        assert_eq!(
            attrs.checksum().and_then(|c| c.checksum_sha256()),
            Some(digest.as_str()),
            "{attrs:?}"
        );
        // A single-part object has no parts to state.
        let single = attributes_of_ck(&[Attr::ObjectParts])
            .await
            .expect("parts of a single-part object");
        assert!(single.object_parts().is_none(), "{single:?}");
        // The checksum alone: the store's answer is an empty document, which still gets it.
        let only = attributes_of_ck(&[Attr::Checksum])
            .await
            .expect("checksum attribute alone");
        assert_eq!(
            only.checksum().and_then(|c| c.checksum_sha256()),
            Some(digest.as_str()),
            "{only:?}"
        );
        // Under a customer key (SSE-C), attributes need that key, whichever are asked for.
        let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let key_md5 = {
            let mut m = chmura_proxy::checksum::Hasher::md5();
            m.update(&[5u8; 32]);
            base64::engine::general_purpose::STANDARD.encode(m.finish())
        };
        s3.put_object()
            .bucket("motock")
            .key("ssec")
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&key)
            .sse_customer_key_md5(&key_md5)
            .body(ByteStream::from_static(body))
            .send()
            .await
            .expect("put under a customer key");
        let e = s3
            .get_object_attributes()
            .bucket("motock")
            .key("ssec")
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectSize)
            .send()
            .await
            .expect_err("attributes without the key");
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
        let attrs = s3
            .get_object_attributes()
            .bucket("motock")
            .key("ssec")
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectSize)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&key)
            .sse_customer_key_md5(&key_md5)
            .send()
            .await
            .expect("attributes with the key");
        assert_eq!(attrs.object_size(), Some(body.len() as i64));
    }

    // Versions: each reads back by versionId; listings show plaintext sizes.
    let old = s3
        .get_object()
        .bucket("motomp")
        .key("obj")
        .version_id(&v1)
        .send()
        .await
        .expect("get v1");
    assert_eq!(old.content_length(), Some(11));
    assert_eq!(
        old.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"version one"
    );
    let h = s3
        .head_object()
        .bucket("motomp")
        .key("obj")
        .version_id(&v2)
        .send()
        .await
        .expect("head v2");
    assert_eq!(h.content_length(), Some(data.len() as i64));
    let versions = s3
        .list_object_versions()
        .bucket("motomp")
        .send()
        .await
        .expect("versions");
    let mut sizes: Vec<(String, i64)> = versions
        .versions()
        .iter()
        .map(|v| {
            (
                v.version_id().unwrap_or("").to_string(),
                v.size().unwrap_or(-1),
            )
        })
        .collect();
    sizes.sort();
    let mut want = vec![(v1.clone(), 11), (v2.clone(), data.len() as i64)];
    want.sort();
    assert_eq!(sizes, want);
    s3.delete_object()
        .bucket("motomp")
        .key("obj")
        .version_id(&v1)
        .send()
        .await
        .expect("delete v1");
    assert!(s3
        .get_object()
        .bucket("motomp")
        .key("obj")
        .version_id(&v1)
        .send()
        .await
        .is_err());

    // Tagging passes through.
    s3.put_object_tagging()
        .bucket("motomp")
        .key("obj")
        .tagging(
            Tagging::builder()
                .tag_set(Tag::builder().key("team").value("a").build().expect("tag"))
                .build()
                .expect("tagging"),
        )
        .send()
        .await
        .expect("put tagging");
    let tags = s3
        .get_object_tagging()
        .bucket("motomp")
        .key("obj")
        .send()
        .await
        .expect("get tagging");
    assert_eq!(tags.tag_set().len(), 1);

    // An upload off the grid on a versioned bucket: rewritten at Complete with its headers,
    // metadata and tags, leaving one version (the rewritten one).
    let data = pattern(PART + 70_000, 81);
    let id = s3
        .create_multipart_upload()
        .bucket("motomp")
        .key("irregular")
        .content_type("text/x-chmura")
        .metadata("colour", "blue")
        .tagging("team=b&stage=two%20words")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let e1 = upload_part(&s3, "motomp", "irregular", &id, 1, &data[..PART + 1]).await;
    let e4 = upload_part(&s3, "motomp", "irregular", &id, 4, &data[PART + 1..]).await;
    let done = s3
        .complete_multipart_upload()
        .bucket("motomp")
        .key("irregular")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, e1), (4, e4)]))
        .send()
        .await
        .expect("complete off the grid");
    assert!(get_all(&s3, "motomp", "irregular").await.expect("get") == data);
    let h = s3
        .head_object()
        .bucket("motomp")
        .key("irregular")
        .send()
        .await
        .expect("head");
    assert_eq!(h.content_length(), Some(data.len() as i64));
    assert_eq!(h.content_type(), Some("text/x-chmura"));
    assert_eq!(
        h.metadata()
            .and_then(|m| m.get("colour"))
            .map(String::as_str),
        Some("blue")
    );
    assert_eq!(h.version_id(), done.version_id());
    let tags = s3
        .get_object_tagging()
        .bucket("motomp")
        .key("irregular")
        .send()
        .await
        .expect("tags");
    let mut got: Vec<(String, String)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("stage".to_string(), "two words".to_string()),
            ("team".to_string(), "b".to_string())
        ]
    );
    let versions = s3
        .list_object_versions()
        .bucket("motomp")
        .prefix("irregular")
        .send()
        .await
        .expect("versions");
    assert_eq!(versions.versions().len(), 1, "{versions:?}");
    assert_eq!(versions.versions()[0].size(), Some(data.len() as i64));

    // An upload listed by its store id can be aborted with that id.
    let id = s3
        .create_multipart_upload()
        .bucket("motomp")
        .key("left")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let raw = chmura_proxy::multipart::UploadToken::decode(&id)
        .expect("token")
        .upstream_id;
    s3.abort_multipart_upload()
        .bucket("motomp")
        .key("left")
        .upload_id(&raw)
        .send()
        .await
        .expect("abort by store id");
    let left = s3
        .list_multipart_uploads()
        .bucket("motomp")
        .send()
        .await
        .expect("uploads");
    assert!(left.uploads().is_empty());
}

/// ListMultipartUploads shows the UploadIds Chmura handed out (each read back from its
/// upload's sidecar in the store), never the sidecars, across pages and prefixes (moto
/// ignores a delimiter here; a sidecar's key adds no `/` to its upload's, unit-tested);
/// an id from the listing takes parts (a client resuming an upload); Complete and Abort, by
/// token or by store id, leave the store with no upload at all.
#[tokio::test]
async fn upload_listings_show_chmuras_upload_ids_on_moto() {
    use std::collections::BTreeSet;
    let Some((moto, env)) =
        encrypted_env_on_moto("upload_listings_show_chmuras_upload_ids_on_moto").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    let store = chmura_tests::sdk_client(
        &moto.endpoint,
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    s3.create_bucket()
        .bucket("lups")
        .send()
        .await
        .expect("bucket");
    // "k-1" sorts between "k" and k's sidecars; "dir/x" is under a common prefix.
    let mut created = Vec::new();
    for key in ["k", "k", "k-1", "dir/x"] {
        let id = s3
            .create_multipart_upload()
            .bucket("lups")
            .key(key)
            .send()
            .await
            .expect("create")
            .upload_id()
            .expect("id")
            .to_string();
        created.push((key.to_string(), id));
    }
    let want: BTreeSet<(String, String)> = created.iter().cloned().collect();
    let listed = s3
        .list_multipart_uploads()
        .bucket("lups")
        .send()
        .await
        .expect("list");
    let got: BTreeSet<(String, String)> = listed
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or("").to_string(),
                u.upload_id().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // A key in a sidecar's form would hide its upload: refused, and nothing is created.
    let sidecar_form = chmura_proxy::multipart::UploadToken::decode(&created[0].1)
        .expect("token")
        .sidecar_key("k");
    let refused = s3
        .create_multipart_upload()
        .bucket("lups")
        .key(&sidecar_form)
        .send()
        .await
        .expect_err("a sidecar's key");
    assert_eq!(
        refused.raw_response().map(|r| r.status().as_u16()),
        Some(400)
    );
    assert_eq!(
        refused.into_service_error().meta().code(),
        Some("InvalidArgument")
    );
    // One upload a page: every id once, sidecars never. (moto 5 ignores max-uploads and
    // answers one page; the markers of later pages are unit-tested in `multipart`.)
    let mut paged = BTreeSet::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    for _ in 0..40 {
        let page = s3
            .list_multipart_uploads()
            .bucket("lups")
            .max_uploads(1)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .expect("page");
        for u in page.uploads() {
            assert!(paged.insert((
                u.key().unwrap_or("").to_string(),
                u.upload_id().unwrap_or("").to_string(),
            )));
        }
        // The markers name uploads as the client sees them: the one sent comes back as sent,
        // and the next one is the last upload's id as listed (not the store's).
        assert_eq!(
            page.upload_id_marker().filter(|m| !m.is_empty()),
            id_marker.as_deref()
        );
        if let Some(last) = page.uploads().last() {
            if page.next_key_marker() == last.key() {
                assert_eq!(page.next_upload_id_marker(), last.upload_id());
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
    }
    assert_eq!(paged, want);
    let under = s3
        .list_multipart_uploads()
        .bucket("lups")
        .prefix("dir/")
        .send()
        .await
        .expect("prefix");
    assert_eq!(under.uploads().len(), 1);
    assert_eq!(under.uploads()[0].upload_id(), Some(created[3].1.as_str()));

    // A client that finds its upload in the listing continues it with that id.
    let resumed = listed
        .uploads()
        .iter()
        .find(|u| u.key() == Some("k-1"))
        .and_then(|u| u.upload_id())
        .expect("k-1 listed")
        .to_string();
    let data = pattern(300_000, 17);
    let part = s3
        .upload_part()
        .bucket("lups")
        .key("k-1")
        .upload_id(&resumed)
        .part_number(1)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("part with the listed id");
    let done = s3
        .complete_multipart_upload()
        .bucket("lups")
        .key("k-1")
        .upload_id(&resumed)
        .multipart_upload(completed(&[(1, part.e_tag().expect("etag").to_string())]))
        .send()
        .await
        .expect("complete");
    // No version where versioning is off (moto names `null`).
    assert_eq!(done.version_id(), None);
    assert!(get_all(&s3, "lups", "k-1").await.expect("get") == data);
    // Abort by token, and by the store's id.
    s3.abort_multipart_upload()
        .bucket("lups")
        .key("k")
        .upload_id(&created[0].1)
        .send()
        .await
        .expect("abort by token");
    let raw = chmura_proxy::multipart::UploadToken::decode(&created[1].1)
        .expect("token")
        .upstream_id;
    s3.abort_multipart_upload()
        .bucket("lups")
        .key("k")
        .upload_id(&raw)
        .send()
        .await
        .expect("abort by store id");
    let left = s3
        .list_multipart_uploads()
        .bucket("lups")
        .send()
        .await
        .expect("list");
    assert_eq!(left.uploads().len(), 1);
    assert_eq!(left.uploads()[0].upload_id(), Some(created[3].1.as_str()));
    s3.abort_multipart_upload()
        .bucket("lups")
        .key("dir/x")
        .upload_id(&created[3].1)
        .send()
        .await
        .expect("abort");
    // The store itself holds no upload: no sidecar outlived its upload.
    let in_store = store
        .list_multipart_uploads()
        .bucket("lups")
        .send()
        .await
        .expect("store listing");
    assert!(in_store.uploads().is_empty(), "{:?}", in_store.uploads());
    // A new upload's sidecar is in the store, under the key's sidecar prefix.
    let id = s3
        .create_multipart_upload()
        .bucket("lups")
        .key("n")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let t = chmura_proxy::multipart::UploadToken::decode(&id).expect("token");
    let in_store = store
        .list_multipart_uploads()
        .bucket("lups")
        .send()
        .await
        .expect("store listing");
    let keys: Vec<&str> = in_store.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"n"));
    assert!(keys
        .iter()
        .any(|k| k.starts_with(&chmura_proxy::multipart::sidecar_prefix(
            "n",
            &t.upstream_id
        ))));
}

/// Plaintext checksums: each part's verified checksum is echoed, and Complete answers with
/// the composite of the part checksums, as S3 computes it.
#[tokio::test]
async fn part_checksums_are_echoed_and_complete_returns_the_composite() {
    use aws_sdk_s3::types::ChecksumAlgorithm;
    use base64::Engine;
    let sha256 = |d: &[u8]| {
        let mut h =
            chmura_proxy::checksum::Hasher::new(chmura_proxy::checksum::ChecksumAlgorithm::Sha256);
        h.update(d);
        h.finish()
    };
    let env = encrypted_env().await;
    env.make_bucket("cks");
    let s3 = env.proxy.sdk_client();
    let created = s3
        .create_multipart_upload()
        .bucket("cks")
        .key("obj")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("create");
    // The upload's algorithm is named in the answer, as S3 does.
    assert_eq!(
        created.checksum_algorithm(),
        Some(&ChecksumAlgorithm::Sha256)
    );
    let id = created.upload_id().expect("id").to_string();
    // A part without that checksum is refused, in S3's words: with another algorithm (what
    // an SDK sends by default) or with none.
    let e = s3
        .upload_part()
        .bucket("cks")
        .key("obj")
        .upload_id(&id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from(vec![7u8; 1000]))
        .send()
        .await
        .expect_err("a part with another checksum");
    let e = e.into_service_error();
    assert_eq!(e.meta().code(), Some("InvalidRequest"));
    assert_eq!(
        e.meta().message(),
        Some("Checksum Type mismatch occurred, expected checksum Type: sha256, actual checksum Type: crc32")
    );
    {
        use chmura_tests::raw::{self, RawRequest};
        let port = env.proxy.addr.port();
        let host = format!("localhost:{port}");
        let body = vec![7u8; 1000];
        let target = format!(
            "/cks/obj?partNumber=1&uploadId={}",
            chmura_proxy::sigv4::uri_encode_string(id.as_bytes(), false)
        );
        let r = raw::send(
            port,
            &env.proxy.certs.ca_pem,
            &RawRequest::new("PUT", &target).body(body.clone()).sign_v4(
                &host,
                chmura_tests::TENANT_AK,
                chmura_tests::TENANT_SK,
                &raw::sha256_hex(&body),
                std::time::SystemTime::now(),
            ),
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some("InvalidRequest"))
        );
        assert!(
            r.text().contains("actual checksum Type: null"),
            "{}",
            r.text()
        );
    }
    let listed = s3
        .list_parts()
        .bucket("cks")
        .key("obj")
        .upload_id(&id)
        .send()
        .await
        .expect("list");
    assert!(listed.parts().is_empty(), "a refused part was stored");
    let data = pattern(PART + 5, 90);
    let mut parts = Vec::new();
    let mut raw = Vec::new();
    for (i, piece) in data.chunks(PART).enumerate() {
        let n = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket("cks")
            .key("obj")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(piece.to_vec()))
            .send()
            .await
            .expect("part");
        let digest = sha256(piece);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&digest);
        assert_eq!(out.checksum_sha256(), Some(b64.as_str()), "part {n} echo");
        raw.extend_from_slice(&digest);
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().expect("etag"))
                .checksum_sha256(b64)
                .build(),
        );
    }
    let want = format!(
        "{}-2",
        base64::engine::general_purpose::STANDARD.encode(sha256(&raw))
    );
    let complete = |stated: &str| {
        s3.complete_multipart_upload()
            .bucket("cks")
            .key("obj")
            .upload_id(&id)
            .checksum_sha256(stated)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            )
            .send()
    };
    // A stated composite that the parts do not make is refused (S3: BadDigest, "The sha256
    // you specified did not match the calculated checksum."), and nothing is completed.
    for bad in ["bad", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=-2"] {
        let e = complete(bad).await.expect_err("wrong composite");
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
        assert_eq!(e.into_service_error().meta().code(), Some("BadDigest"));
    }
    // The upload was created with SHA256 (COMPOSITE): a Complete stating another checksum
    // type is refused.
    let e = s3
        .complete_multipart_upload()
        .bucket("cks")
        .key("obj")
        .upload_id(&id)
        .checksum_type(aws_sdk_s3::types::ChecksumType::FullObject)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts.clone()))
                .build(),
        )
        .send()
        .await
        .expect_err("another checksum type");
    assert_eq!(e.into_service_error().meta().code(), Some("BadDigest"));
    assert!(get_all(&s3, "cks", "obj").await.is_err());
    // The stated composite may leave out the part count (S3 takes both forms).
    let bare = want.split_once('-').expect("-N").0.to_string();
    let done = complete(&bare).await.expect("complete");
    assert_eq!(done.checksum_sha256(), Some(want.as_str()));
    assert!(get_all(&s3, "cks", "obj").await.expect("get") == data);
    // A Complete that leaves out a part's checksum (a client that resumed the upload from
    // ListParts, where Chmura can state none) completes it without a checksum; S3 would
    // refuse it.
    let id = s3
        .create_multipart_upload()
        .bucket("cks")
        .key("resumed")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let out = s3
        .upload_part()
        .bucket("cks")
        .key("resumed")
        .upload_id(&id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(data[..1000].to_vec()))
        .send()
        .await
        .expect("part");
    let done = s3
        .complete_multipart_upload()
        .bucket("cks")
        .key("resumed")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(out.e_tag().expect("etag"))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("complete without part checksums");
    assert_eq!(done.checksum_sha256(), None);
    assert!(get_all(&s3, "cks", "resumed").await.expect("get") == data[..1000]);
}

/// A plaintext checksum sent as a header with PutObject is kept sealed with the object and
/// returned by GET and HEAD with `x-amz-checksum-mode: ENABLED` (the SDK then validates the
/// body against it); it survives CopyObject; without the mode nothing is returned.
#[tokio::test]
async fn put_checksums_are_returned_by_get_and_head_when_asked() {
    use aws_sdk_s3::types::ChecksumMode;
    use base64::Engine;
    let env = encrypted_env().await;
    env.make_bucket("ckm");
    let s3 = env.proxy.sdk_client();
    let data = pattern(200_000, 91);
    let digest = {
        let mut h =
            chmura_proxy::checksum::Hasher::new(chmura_proxy::checksum::ChecksumAlgorithm::Sha256);
        h.update(&data);
        base64::engine::general_purpose::STANDARD.encode(h.finish())
    };
    let put = s3
        .put_object()
        .bucket("ckm")
        .key("obj")
        .checksum_sha256(&digest)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    assert_eq!(put.checksum_sha256(), Some(digest.as_str()));
    // The store holds it sealed, never in the clear.
    let raw = env.store.stored("ckm", "obj").expect("stored");
    assert_eq!(raw.len() as u64, ciphertext_len(data.len() as u64));
    let head = s3
        .head_object()
        .bucket("ckm")
        .key("obj")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("head");
    assert_eq!(head.checksum_sha256(), Some(digest.as_str()));
    let plain_head = s3
        .head_object()
        .bucket("ckm")
        .key("obj")
        .send()
        .await
        .expect("head");
    assert_eq!(plain_head.checksum_sha256(), None);
    let get = s3
        .get_object()
        .bucket("ckm")
        .key("obj")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("get");
    assert_eq!(get.checksum_sha256(), Some(digest.as_str()));
    let body = get
        .body
        .collect()
        .await
        .expect("validated body")
        .into_bytes();
    assert!(body.as_ref() == data.as_slice());
    // CopyObject keeps the sealed checksum (same salt, same content key) and states it.
    let copied = s3
        .copy_object()
        .bucket("ckm")
        .key("copy")
        .copy_source("ckm/obj")
        .send()
        .await
        .expect("copy");
    let result = copied.copy_object_result().expect("result");
    assert_eq!(result.checksum_sha256(), Some(digest.as_str()));
    assert_eq!(
        result.checksum_type(),
        Some(&aws_sdk_s3::types::ChecksumType::FullObject)
    );
    let head = s3
        .head_object()
        .bucket("ckm")
        .key("copy")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("head copy");
    assert_eq!(head.checksum_sha256(), Some(digest.as_str()));
    // A copy asked for another algorithm gets that checksum of the plaintext, as S3 computes
    // it: a single-part source, and a multipart one that had none (read whole, decrypted).
    let sum = |alg, bytes: &[u8]| {
        let mut h = chmura_proxy::checksum::Hasher::new(alg);
        h.update(bytes);
        base64::engine::general_purpose::STANDARD.encode(h.finish())
    };
    let big = pattern(2 * PART + 12_345, 92);
    put_multipart(&s3, "ckm", "mp", &big).await;
    use chmura_proxy::checksum::ChecksumAlgorithm as A;
    for (src, dst, bytes) in [("obj", "c32c", &data), ("mp", "mp-c32c", &big)] {
        let copied = s3
            .copy_object()
            .bucket("ckm")
            .key(dst)
            .copy_source(format!("ckm/{src}"))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .expect("copy with a new algorithm");
        let want = sum(A::Crc32c, bytes);
        let result = copied.copy_object_result().expect("result");
        assert_eq!(result.checksum_crc32_c(), Some(want.as_str()), "{src}");
        assert_eq!(result.checksum_sha256(), None, "{src}");
        let head = s3
            .head_object()
            .bucket("ckm")
            .key(dst)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .expect("head");
        assert_eq!(head.checksum_crc32_c(), Some(want.as_str()), "{src}");
        assert_eq!(head.checksum_sha256(), None, "{src}");
        assert!(get_all(&s3, "ckm", dst).await.expect("get") == *bytes);
    }
    // A wrong header checksum is refused and nothing is stored.
    let err = s3
        .put_object()
        .bucket("ckm")
        .key("bad")
        .checksum_sha256(&digest)
        .body(ByteStream::from(data[1..].to_vec()))
        .send()
        .await
        .expect_err("bad checksum");
    assert!(format!("{err:?}").contains("BadDigest"), "{err:?}");
    assert!(env.store.stored("ckm", "bad").is_none());
}

/// Object Lock and ACL operations pass through to the store (metadata only, no body):
/// retention and legal hold set and read back, a locked version refuses deletion until the
/// governance bypass, which needs its own IAM action.
#[tokio::test]
async fn object_lock_and_acl_operations_pass_through_on_moto() {
    use aws_sdk_s3::types::{
        ObjectCannedAcl, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention,
        ObjectLockRetentionMode,
    };
    let Some((_moto, env)) =
        encrypted_env_on_moto("object_lock_and_acl_operations_pass_through_on_moto").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("locked")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("bucket with object lock");
    let conf = s3
        .get_object_lock_configuration()
        .bucket("locked")
        .send()
        .await
        .expect("lock configuration");
    assert!(conf.object_lock_configuration().is_some());
    let v = s3
        .put_object()
        .bucket("locked")
        .key("doc")
        .body(ByteStream::from_static(b"kept for a while"))
        .send()
        .await
        .expect("put")
        .version_id()
        .expect("version")
        .to_string();
    let until = aws_sdk_s3::primitives::DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
            + 3600,
    );
    s3.put_object_retention()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(until)
                .build(),
        )
        .send()
        .await
        .expect("put retention");
    let h = s3
        .head_object()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .send()
        .await
        .expect("head");
    assert_eq!(
        h.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Governance)
    );
    // moto 5.2.5 answers GET ?retention with the object itself; Chmura refuses to pass that
    // off as the result (it would hand out ciphertext and the envelope).
    let err = s3
        .get_object_retention()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .send()
        .await
        .expect_err("store without GetObjectRetention");
    assert!(format!("{err:?}").contains("NotImplemented"), "{err:?}");
    s3.put_object_legal_hold()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::Off)
                .build(),
        )
        .send()
        .await
        .expect("put legal hold");
    let h = s3
        .get_object_legal_hold()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .send()
        .await
        .expect("get legal hold");
    assert_eq!(
        h.legal_hold().and_then(|h| h.status()),
        Some(&ObjectLockLegalHoldStatus::Off)
    );
    // The store keeps the locked version.
    let err = s3
        .delete_object()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .send()
        .await
        .expect_err("locked version");
    assert!(format!("{err:?}").contains("AccessDenied"), "{err:?}");
    s3.delete_object()
        .bucket("locked")
        .key("doc")
        .version_id(&v)
        .bypass_governance_retention(true)
        .send()
        .await
        .expect("delete with governance bypass");
    // A PutObject with Object Lock headers: S3 wants a checksum with it, and the client's
    // (Content-MD5 here, as boto3 sends) describes the plaintext. The store gets a CRC32 of the
    // ciphertext as a trailer instead (moto checks that one is announced; s3s-fs checks the
    // value in `object_lock_uploads_carry_a_ciphertext_crc_the_store_verifies`).
    let body = b"locked from the start";
    let put = s3
        .put_object()
        .bucket("locked")
        .key("born-locked")
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
        .object_lock_retain_until_date(until)
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .content_md5(b64_md5(body))
        .body(ByteStream::from_static(body))
        .send()
        .await
        .expect("put with object lock headers");
    let v = put.version_id().expect("version").to_string();
    let h = s3
        .head_object()
        .bucket("locked")
        .key("born-locked")
        .version_id(&v)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .expect("head");
    assert_eq!(
        h.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Governance)
    );
    assert_eq!(
        h.object_lock_legal_hold_status(),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    assert_eq!(h.content_length(), Some(body.len() as i64));
    // The SDK sent the plaintext's CRC32 with the upload; that is the one shown, never the
    // ciphertext's that the store verified.
    if let Some(crc) = h.checksum_crc32() {
        use base64::Engine;
        let c = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, body) as u32;
        let expected = base64::engine::general_purpose::STANDARD.encode(c.to_be_bytes());
        assert_eq!(
            crc, expected,
            "a CRC other than the plaintext's reached the client"
        );
    }
    assert_eq!(
        get_all(&s3, "locked", "born-locked").await.expect("get"),
        body
    );
    // Object ACLs pass through.
    s3.put_object()
        .bucket("locked")
        .key("acl")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("put");
    s3.put_object_acl()
        .bucket("locked")
        .key("acl")
        .acl(ObjectCannedAcl::Private)
        .send()
        .await
        .expect("put object acl");
    let acl = s3
        .get_object_acl()
        .bucket("locked")
        .key("acl")
        .send()
        .await
        .expect("get object acl");
    assert!(!acl.grants().is_empty());
}

/// S3 details Chmura enforces itself because it rewrites the request: a copy of an encrypted
/// object onto itself that changes nothing is refused (Chmura's new envelope would otherwise
/// let the store accept it), user metadata is limited to 2 KB, and DeleteObjects in quiet mode
/// lists only errors (s3s-fs and moto list every key).
#[tokio::test]
async fn self_copy_without_change_is_refused_and_quiet_delete_lists_only_errors() {
    use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
    let env = encrypted_env().await;
    env.make_bucket("sem");
    let s3 = env.proxy.sdk_client();
    s3.put_object()
        .bucket("sem")
        .key("self")
        .metadata("v", "1")
        .body(ByteStream::from_static(b"same body"))
        .send()
        .await
        .expect("put");
    let err = s3
        .copy_object()
        .bucket("sem")
        .key("self")
        .copy_source("sem/self")
        .send()
        .await
        .expect_err("copy onto itself without a change");
    assert!(format!("{err:?}").contains("InvalidRequest"), "{err:?}");
    s3.copy_object()
        .bucket("sem")
        .key("self")
        .copy_source("sem/self")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("v", "2")
        .send()
        .await
        .expect("copy onto itself with new metadata");
    let h = s3
        .head_object()
        .bucket("sem")
        .key("self")
        .send()
        .await
        .expect("head");
    assert_eq!(
        h.metadata().and_then(|m| m.get("v")).map(String::as_str),
        Some("2")
    );
    assert!(get_all(&s3, "sem", "self").await.expect("get") == b"same body");

    // S3's 2 KB limit on user metadata, Chmura's envelope not counted.
    let err = s3
        .put_object()
        .bucket("sem")
        .key("meta")
        .metadata("big", "x".repeat(2_046))
        .body(ByteStream::from_static(b"m"))
        .send()
        .await
        .expect_err("metadata over 2 KB");
    assert!(format!("{err:?}").contains("MetadataTooLarge"), "{err:?}");
    assert!(env.store.stored("sem", "meta").is_none());
    s3.put_object()
        .bucket("sem")
        .key("meta")
        .metadata("big", "x".repeat(2_045))
        .body(ByteStream::from_static(b"m"))
        .send()
        .await
        .expect("metadata of exactly 2 KB");
    let ids = |keys: &[&str]| {
        Delete::builder()
            .set_objects(Some(
                keys.iter()
                    .map(|k| ObjectIdentifier::builder().key(*k).build().expect("id"))
                    .collect(),
            ))
            .quiet(true)
            .build()
            .expect("delete")
    };
    let r = s3
        .delete_objects()
        .bucket("sem")
        .delete(ids(&["self", "never-existed"]))
        .send()
        .await
        .expect("quiet delete");
    assert!(r.deleted().is_empty(), "{:?}", r.deleted());
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    assert!(env.store.stored("sem", "self").is_none());
}

/// Full-object CRCs (CRC64NVME, the SDKs' default, exists only as full-object): Complete
/// combines the part CRCs over the plaintext and answers with the whole object's CRC; a
/// full-object value the client states that does not match is BadDigest and nothing is
/// completed.
#[tokio::test]
async fn full_object_crc64nvme_at_complete() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
    use base64::Engine;
    let crc = |d: &[u8]| {
        let mut h = chmura_proxy::checksum::Hasher::new(
            chmura_proxy::checksum::ChecksumAlgorithm::Crc64Nvme,
        );
        h.update(d);
        base64::engine::general_purpose::STANDARD.encode(h.finish())
    };
    let env = encrypted_env().await;
    env.make_bucket("fob");
    let s3 = env.proxy.sdk_client();
    let data = pattern(PART + 77_777, 93);
    for (key, stated_ok) in [("good", true), ("bad", false)] {
        let id = s3
            .create_multipart_upload()
            .bucket("fob")
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .expect("create")
            .upload_id()
            .expect("id")
            .to_string();
        let mut parts = Vec::new();
        for (i, piece) in data.chunks(PART).enumerate() {
            let n = i as i32 + 1;
            let out = s3
                .upload_part()
                .bucket("fob")
                .key(key)
                .upload_id(&id)
                .part_number(n)
                .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                .body(ByteStream::from(piece.to_vec()))
                .send()
                .await
                .expect("part");
            assert_eq!(out.checksum_crc64_nvme(), Some(crc(piece).as_str()));
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(out.e_tag().expect("etag"))
                    .checksum_crc64_nvme(crc(piece))
                    .build(),
            );
        }
        let stated = if stated_ok {
            crc(&data)
        } else {
            crc(&data[1..])
        };
        let done = s3
            .complete_multipart_upload()
            .bucket("fob")
            .key(key)
            .upload_id(&id)
            .checksum_crc64_nvme(stated)
            .checksum_type(ChecksumType::FullObject)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        if stated_ok {
            let done = done.expect("complete");
            assert_eq!(done.checksum_crc64_nvme(), Some(crc(&data).as_str()));
            assert_eq!(done.checksum_type(), Some(&ChecksumType::FullObject));
            assert!(get_all(&s3, "fob", key).await.expect("get") == data);
        } else {
            let err = done.expect_err("wrong full-object CRC");
            assert!(format!("{err:?}").contains("BadDigest"), "{err:?}");
            assert!(env.store.stored("fob", key).is_none());
        }
    }
}

/// An upload off the grid larger than the store takes in one PUT (`upstream.max_put_bytes`,
/// 5 GiB on S3; lowered here) is rewritten as a multipart upload of whole chunks, one part
/// after the other from one decrypting stream.
#[tokio::test]
async fn large_uploads_off_the_grid_are_rewritten_as_multipart() {
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        extra_upstream: "max_put_bytes = 6291456\n".into(),
        ..Default::default()
    })
    .await;
    env.make_bucket("big");
    let s3 = env.proxy.sdk_client();
    let sizes = [PART + 1, PART + 3, 70_000];
    let total: usize = sizes.iter().sum();
    let data = pattern(total, 94);
    let id = s3
        .create_multipart_upload()
        .bucket("big")
        .key("obj")
        .metadata("kept", "yes")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let mut parts = Vec::new();
    let mut at = 0;
    for (i, sz) in sizes.iter().enumerate() {
        let n = i as i32 + 1;
        parts.push((
            n,
            upload_part(&s3, "big", "obj", &id, n, &data[at..at + sz]).await,
        ));
        at += sz;
    }
    // Over one PUT's size the answer starts at once and whitespace keeps the connection alive
    // while the rewrite runs (as S3 does); the SDK reads the result that follows.
    let done = s3
        .complete_multipart_upload()
        .bucket("big")
        .key("obj")
        .upload_id(&id)
        .multipart_upload(completed(&parts))
        .send()
        .await
        .expect("complete");
    let stored = env.store.stored("big", "obj").expect("stored");
    assert_eq!(stored.len() as u64, ciphertext_len(total as u64));
    let ranges = [(0, 10), (6_225_900, 6_226_000), (total - 3, total - 1)];
    reads_back(&s3, "big", "obj", &data, &ranges).await;
    let h = s3
        .head_object()
        .bucket("big")
        .key("obj")
        .send()
        .await
        .expect("head");
    assert_eq!(h.content_length(), Some(total as i64));
    assert_eq!(h.e_tag(), done.e_tag());
    assert_eq!(
        h.metadata().and_then(|m| m.get("kept")).map(String::as_str),
        Some("yes")
    );
    // Chmura's own parts: 95 chunks each (what fits in 6 MiB), on the grid.
    let p2 = s3
        .get_object()
        .bucket("big")
        .key("obj")
        .part_number(2)
        .send()
        .await
        .expect("part 2");
    assert_eq!(p2.parts_count(), Some(2));
    let body = p2.body.collect().await.expect("body").into_bytes();
    assert!(body.as_ref() == &data[95 * 65_536..]);
}

/// A `bytes=a-b` GET of an encrypted object costs one upstream request (the ciphertext range
/// follows from a and b; the answer's Content-Range gives the length): counted with Chmura's
/// upstream request histogram. Ranges past the end and suffix ranges still answer as S3 does.
#[tokio::test]
async fn explicit_ranges_cost_one_upstream_request() {
    let env = encrypted_env().await;
    env.make_bucket("one");
    let s3 = env.proxy.sdk_client();
    let data = pattern(300_000, 95);
    s3.put_object()
        .bucket("one")
        .key("obj")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let upstream_requests = || {
        env.proxy
            .state
            .metrics
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "chmura_upstream_request_duration_seconds")
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_histogram().get_sample_count())
            .sum::<u64>()
    };
    for (a, b) in [(0usize, 0usize), (65_530, 140_000), (299_990, 299_999)] {
        let before = upstream_requests();
        let r = get_range(&s3, "one", "obj", &format!("bytes={a}-{b}"))
            .await
            .expect("range");
        assert!(r == data[a..=b], "{a}-{b}");
        assert_eq!(upstream_requests() - before, 1, "{a}-{b}");
    }
    // Past the end: clamped like S3; wholly past it: InvalidRange; suffix: the HEAD path.
    let r = get_range(&s3, "one", "obj", "bytes=299000-999999")
        .await
        .expect("clamped");
    assert!(r == data[299_000..]);
    let e = get_range(&s3, "one", "obj", "bytes=300000-300010")
        .await
        .expect_err("past the end");
    assert!(e.contains("InvalidRange"), "{e}");
    let r = get_range(&s3, "one", "obj", "bytes=-7")
        .await
        .expect("suffix");
    assert!(r == data[data.len() - 7..]);
}

/// CORS on a store that keeps no CORS configurations (s3s-fs answers GetBucketCors with 501):
/// a preflight gets S3's answer for a bucket without CORS (403), not a 503 that clients
/// retry; one without Origin or Access-Control-Request-Method is a 400 before any lookup.
#[tokio::test]
async fn cors_preflights_on_a_store_without_cors_support() {
    use chmura_tests::raw::{self, RawRequest};
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await;
    env.make_bucket("web");
    let port = env.proxy.addr.port();
    let ca = env.proxy.certs.ca_pem.clone();
    let host = format!("localhost:{port}");
    let r = raw::send(
        port,
        &ca,
        &RawRequest::new("OPTIONS", "/web/page.txt")
            .header("host", &host)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET"),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (403, Some("AccessForbidden")),
        "{}",
        r.text()
    );
    for (origin, method) in [
        (None, Some("GET")),
        (Some("https://app.example"), None),
        (None, None),
    ] {
        let mut req = RawRequest::new("OPTIONS", "/web/page.txt").header("host", &host);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(m) = method {
            req = req.header("access-control-request-method", m);
        }
        let r = raw::send(port, &ca, &req).await;
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some("BadRequest")),
            "{origin:?} {method:?}: {}",
            r.text()
        );
    }
}

/// CORS: the bucket's rules (PutBucketCors through Chmura, kept by the store) answer
/// preflights without credentials and add Access-Control-* headers to signed requests from an
/// allowed origin; a changed configuration applies at once.
#[tokio::test]
async fn cors_preflights_and_origin_headers_follow_the_buckets_rules() {
    use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
    use chmura_tests::raw::{self, RawRequest};
    use std::time::SystemTime;
    let Some((_moto, env)) =
        encrypted_env_on_moto("cors_preflights_and_origin_headers_follow_the_buckets_rules").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("web")
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket("web")
        .key("page.txt")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("put");
    let port = env.proxy.addr.port();
    let ca = env.proxy.certs.ca_pem.clone();
    let host = format!("localhost:{port}");
    let preflight = |origin: &str, method: &str, headers: Option<&str>| {
        let mut r = RawRequest::new("OPTIONS", "/web/page.txt")
            .header("host", &host)
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            r = r.header("access-control-request-headers", h);
        }
        r
    };
    // No configuration yet: refused.
    let r = raw::send(port, &ca, &preflight("https://app.example", "GET", None)).await;
    assert_eq!(
        (r.status, r.code().as_deref()),
        (403, Some("AccessForbidden"))
    );
    let rule = |origin: &str, methods: &[&str]| {
        let mut b = CorsRule::builder()
            .allowed_origins(origin)
            .allowed_headers("x-amz-meta-*")
            .expose_headers("ETag")
            .max_age_seconds(600);
        for m in methods {
            b = b.allowed_methods(*m);
        }
        b.build().expect("rule")
    };
    s3.put_bucket_cors()
        .bucket("web")
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(rule("https://*.example", &["GET", "PUT"]))
                .build()
                .expect("cors"),
        )
        .send()
        .await
        .expect("put cors");
    let r = raw::send(
        port,
        &ca,
        &preflight("https://app.example", "PUT", Some("X-Amz-Meta-A")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("X-Amz-Meta-A")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    for (origin, method, headers) in [
        ("https://app.other", "GET", None),
        ("https://app.example", "DELETE", None),
        ("https://app.example", "PUT", Some("content-type")),
    ] {
        let r = raw::send(port, &ca, &preflight(origin, method, headers)).await;
        assert_eq!(
            (r.status, r.code().as_deref()),
            (403, Some("AccessForbidden")),
            "{origin} {method}"
        );
    }
    let r = raw::send(
        port,
        &ca,
        &RawRequest::new("OPTIONS", "/web/page.txt").header("host", &host),
    )
    .await;
    assert_eq!(r.status, 400);
    // A signed GET from an allowed origin gets the headers; from another origin, none.
    let get = |origin: &str| {
        RawRequest::new("GET", "/web/page.txt")
            .header("origin", origin)
            .sign_v4(
                &host,
                chmura_tests::TENANT_AK,
                chmura_tests::TENANT_SK,
                "UNSIGNED-PAYLOAD",
                SystemTime::now(),
            )
    };
    let r = raw::send(port, &ca, &get("https://app.example")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some("ETag"));
    let r = raw::send(port, &ca, &get("https://app.other")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Changed through Chmura: the next preflight sees it.
    s3.delete_bucket_cors()
        .bucket("web")
        .send()
        .await
        .expect("delete cors");
    let r = raw::send(port, &ca, &preflight("https://app.example", "GET", None)).await;
    assert_eq!(r.status, 403);
}

/// Folder markers (an empty object under a key ending in "/", what s3fs's mkdir, consoles and
/// rclone write): stored empty (stores such as MinIO and s3s-fs take such keys only empty),
/// served empty, listed at size 0, and their metadata can be replaced by a copy onto
/// themselves (s3fs's chmod); a marker cannot be copied to a data key.
#[tokio::test]
async fn folder_markers_are_stored_empty() {
    let Some((moto, env)) = encrypted_env_on_moto("folder_markers_are_stored_empty").await else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("fsm")
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket("fsm")
        .key("dir/")
        .content_type("application/x-directory")
        .metadata("mode", "493")
        .send()
        .await
        .expect("put marker");
    let store = chmura_tests::sdk_client(
        &moto.endpoint,
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    let stored = store
        .head_object()
        .bucket("fsm")
        .key("dir/")
        .send()
        .await
        .expect("stored");
    assert_eq!(stored.content_length(), Some(0));
    let head = s3
        .head_object()
        .bucket("fsm")
        .key("dir/")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(0));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("mode"))
            .map(String::as_str),
        Some("493")
    );
    let got = s3
        .get_object()
        .bucket("fsm")
        .key("dir/")
        .send()
        .await
        .expect("get");
    assert!(got
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .is_empty());
    s3.copy_object()
        .bucket("fsm")
        .key("dir/")
        .copy_source("fsm/dir/")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("mode", "448")
        .send()
        .await
        .expect("chmod-style copy");
    let head = s3
        .head_object()
        .bucket("fsm")
        .key("dir/")
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("mode"))
            .map(String::as_str),
        Some("448")
    );
    let e = s3
        .copy_object()
        .bucket("fsm")
        .key("data.bin")
        .copy_source("fsm/dir/")
        .send()
        .await
        .expect_err("a marker copied to a data key");
    assert!(format!("{e:?}").contains("InvalidRequest"), "{e:?}");
    // A non-empty object under such a key is encrypted as any other.
    s3.put_object()
        .bucket("fsm")
        .key("odd/")
        .body(ByteStream::from_static(b"not empty"))
        .send()
        .await
        .expect("put");
    let stored = store
        .head_object()
        .bucket("fsm")
        .key("odd/")
        .send()
        .await
        .expect("stored");
    assert_eq!(stored.content_length(), Some(ciphertext_len(9) as i64));
    let listed = s3
        .list_objects_v2()
        .bucket("fsm")
        .send()
        .await
        .expect("list");
    let sizes: Vec<(String, i64)> = listed
        .contents()
        .iter()
        .map(|o| (o.key().unwrap_or("").to_string(), o.size().unwrap_or(-1)))
        .collect();
    assert!(sizes.contains(&("dir/".to_string(), 0)), "{sizes:?}");
    assert!(sizes.contains(&("odd/".to_string(), 9)), "{sizes:?}");
}

/// HEAD answers that are not 200 (304, 412) and ranged HEADs show the client's view of the
/// object only: no envelope metadata, no ciphertext length. A ranged GET's 304 has its ETag;
/// a suffix range of an empty object reads it whole (200), as S3 does.
#[tokio::test]
async fn heads_and_ranges_show_only_the_plaintext_view() {
    let Some((_moto, env)) =
        encrypted_env_on_moto("heads_and_ranges_show_only_the_plaintext_view").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("hvw")
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket("hvw")
        .key("obj")
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .expect("put");
    let etag = s3
        .head_object()
        .bucket("hvw")
        .key("obj")
        .send()
        .await
        .expect("head")
        .e_tag()
        .expect("etag")
        .to_string();
    let no_envelope = |h: &aws_smithy_runtime_api::http::Headers, what: &str| {
        for (n, _) in h.iter() {
            assert!(
                !n.to_ascii_lowercase().starts_with("x-amz-meta-chmura-"),
                "{what}: envelope header {n} reached the client"
            );
        }
        for (n, _) in h.iter() {
            assert!(
                !n.to_ascii_lowercase().starts_with("x-amz-checksum-"),
                "{what}: the ciphertext's checksum {n} reached the client"
            );
        }
        // 11 bytes of plaintext; the ciphertext is longer.
        if let Some(len) = h.get("content-length") {
            assert!(
                len.parse::<u64>().is_ok_and(|l| l <= 11 || l > 1000),
                "{what}: content-length {len}"
            );
        }
    };
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_102_444_800); // 2100
    let past = aws_sdk_s3::primitives::DateTime::from_secs(946_684_800); // 2000
    let cases: Vec<(&str, u16, _)> = vec![
        ("if-none-match", 304, s3.head_object().if_none_match(&etag)),
        (
            "if-modified-since",
            304,
            s3.head_object().if_modified_since(future),
        ),
        (
            "if-match",
            412,
            s3.head_object()
                .if_match("\"0123456789abcdef0123456789abcdef-0\""),
        ),
        (
            "if-unmodified-since",
            412,
            s3.head_object().if_unmodified_since(past),
        ),
    ];
    for (what, status, req) in cases {
        let e = req.bucket("hvw").key("obj").send().await.expect_err(what);
        let raw = e.raw_response().expect("raw response");
        assert_eq!(raw.status().as_u16(), status, "{what}");
        no_envelope(raw.headers(), what);
        if status == 304 {
            assert_eq!(
                raw.headers().get("etag"),
                Some(etag.as_str()),
                "{what}: etag"
            );
        }
    }
    // An error from moto names Chmura's request id only: in the body and in the headers
    // (moto's own `x-amzn-requestid`, which SDKs read first, is not passed on).
    let e = s3
        .get_object()
        .bucket("hvw")
        .key("missing")
        .send()
        .await
        .expect_err("missing key");
    let raw = e.raw_response().expect("raw");
    assert_eq!(raw.headers().get("x-amzn-requestid"), None);
    let id = raw.headers().get("x-amz-request-id").expect("request id");
    let body = std::str::from_utf8(raw.body().bytes().expect("body")).expect("utf8");
    assert!(
        body.contains(&format!("<RequestId>{id}</RequestId>")),
        "{body}"
    );
    // Ranged HEAD: the length and Content-Range of that range of the plaintext.
    let h = s3
        .head_object()
        .bucket("hvw")
        .key("obj")
        .range("bytes=0-3")
        .send()
        .await
        .expect("ranged head");
    assert_eq!(h.content_length(), Some(4));
    assert_eq!(h.content_range(), Some("bytes 0-3/11"));
    let e = s3
        .head_object()
        .bucket("hvw")
        .key("obj")
        .range("bytes=20-")
        .send()
        .await
        .expect_err("unsatisfiable ranged head");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416));
    // A ranged HEAD with If-Range: the range while the validator holds, the whole object
    // once it does not.
    for (validator, len) in [
        (etag.clone(), 4),
        ("\"0123456789abcdef0123456789abcdef\"".to_string(), 11),
    ] {
        let h = s3
            .head_object()
            .bucket("hvw")
            .key("obj")
            .range("bytes=0-3")
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("if-range", validator.clone());
            })
            .send()
            .await
            .expect("ranged head with if-range");
        assert_eq!(h.content_length(), Some(len), "if-range");
        assert_eq!(
            h.content_range().is_some(),
            len == 4,
            "if-range content-range"
        );
    }
    // A whole GET's 304: the same view.
    let e = s3
        .get_object()
        .bucket("hvw")
        .key("obj")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("whole 304");
    let raw = e.raw_response().expect("raw");
    assert_eq!(raw.status().as_u16(), 304);
    assert_eq!(raw.headers().get("etag"), Some(etag.as_str()));
    no_envelope(raw.headers(), "whole GET 304");
    // A ranged GET's 304 carries the ETag, as the whole GET's does.
    let e = s3
        .get_object()
        .bucket("hvw")
        .key("obj")
        .if_none_match(&etag)
        .range("bytes=0-3")
        .send()
        .await
        .expect_err("ranged 304");
    let raw = e.raw_response().expect("raw");
    assert_eq!(raw.status().as_u16(), 304);
    assert_eq!(raw.headers().get("etag"), Some(etag.as_str()));
    no_envelope(raw.headers(), "ranged GET 304");
    // Empty object: a suffix range reads it whole; an explicit range is unsatisfiable.
    s3.put_object()
        .bucket("hvw")
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .expect("put empty");
    let r = s3
        .get_object()
        .bucket("hvw")
        .key("empty")
        .range("bytes=-5")
        .send()
        .await
        .expect("suffix range of an empty object");
    assert_eq!(r.content_length(), Some(0));
    assert!(r.content_range().is_none());
    let e = s3
        .get_object()
        .bucket("hvw")
        .key("empty")
        .range("bytes=0-0")
        .send()
        .await
        .expect_err("explicit range of an empty object");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416));
}

#[tokio::test]
async fn a_part_sent_again_keeps_its_etag() {
    // S3's part ETag is the MD5 of the part, so a client that sends a part again (a retry,
    // or s3-tests' test_multipart_upload_resend_part) may complete with the ETag of either
    // answer. A part's chunk nonces are a function of the upload's key, the chunk's place and
    // its plaintext (FORMAT.md §13), so the store gets the same ciphertext and the same ETag.
    let env = encrypted_env().await;
    let s3 = env.proxy.sdk_client();
    s3.create_bucket()
        .bucket("resend")
        .send()
        .await
        .expect("bucket");
    let id = create_upload(&s3, "resend", "k").await;
    let one = pattern(PART, 31);
    let e1 = upload_part(&s3, "resend", "k", &id, 1, &one).await;
    assert_eq!(upload_part(&s3, "resend", "k", &id, 1, &one).await, e1);
    // Another part number with the same bytes, or other bytes: another ETag.
    let two = pattern(100_000, 32);
    let e2 = upload_part(&s3, "resend", "k", &id, 2, &two).await;
    let mut two_b = two.clone();
    two_b[70_000] ^= 1;
    let e2b = upload_part(&s3, "resend", "k", &id, 2, &two_b).await;
    assert_ne!(e2, e2b);
    let e3 = upload_part(&s3, "resend", "k", &id, 3, &one[..100_000]).await;
    assert_ne!(
        e3,
        upload_part(&s3, "resend", "k", &id, 1, &one[..100_000]).await
    );
    s3.abort_multipart_upload()
        .bucket("resend")
        .key("k")
        .upload_id(&id)
        .send()
        .await
        .expect("abort");
    // A fresh upload of the same bytes gets a fresh data key: other ETags.
    let id2 = create_upload(&s3, "resend", "k").await;
    let f1 = upload_part(&s3, "resend", "k", &id2, 1, &one).await;
    assert_ne!(f1, e1);
    let f2 = upload_part(&s3, "resend", "k", &id2, 2, &two).await;
    let f2b = upload_part(&s3, "resend", "k", &id2, 2, &two_b).await;
    // The part now in the store is the changed one: completing with the first ETag is
    // refused, as S3 refuses it, and leaves nothing.
    let e = s3
        .complete_multipart_upload()
        .bucket("resend")
        .key("k")
        .upload_id(&id2)
        .multipart_upload(completed(&[(1, f1.clone()), (2, f2)]))
        .send()
        .await
        .expect_err("stale part ETag");
    assert_eq!(
        e.as_service_error().and_then(|e| e.meta().code()),
        Some("InvalidPart"),
        "{e:?}"
    );
    assert!(
        get_all(&s3, "resend", "k").await.is_err(),
        "an object appeared"
    );
    // Sending part 1 again and completing with the ETag of its first sending works.
    assert_eq!(upload_part(&s3, "resend", "k", &id2, 1, &one).await, f1);
    complete_upload(&s3, "resend", "k", &id2, &[(1, f1), (2, f2b)]).await;
    let whole = [one.clone(), two_b].concat();
    reads_back(
        &s3,
        "resend",
        "k",
        &whole,
        &[(PART - 10, PART + 10), (0, 0)],
    )
    .await;
}

#[tokio::test]
async fn a_completed_upload_completes_again_with_the_same_answer() {
    // S3 answers a repeated CompleteMultipartUpload of an upload it completed with the same
    // result (s3-tests' test_multipart_upload does this). The store no longer has the upload's
    // parts; Chmura answers from the object the upload became, found by its envelope.
    let Some((_moto, env)) =
        encrypted_env_on_moto("a_completed_upload_completes_again_with_the_same_answer").await
    else {
        return;
    };
    let data = chmura_tests::pattern(100_000, 7);
    complete_twice(&env.proxy.sdk_client(), &data).await;
    // s3s-fs still lists a completed upload (with no parts) where S3 answers NoSuchUpload:
    // the repeat is answered from the object all the same.
    let env = encrypted_env().await;
    let s3 = env.proxy.sdk_client();
    complete_twice(&s3, &data).await;
    let parts = vec![(1, "\"unused\"".to_string())];
    // An aborted upload stays refused (on s3s-fs: moto answers a Complete of an aborted
    // upload with an HTML 500 page).
    let e = s3
        .complete_multipart_upload()
        .bucket("again")
        .key("aborted")
        .upload_id(multipart_token_for_missing_upload(&s3, "again", "aborted").await)
        .multipart_upload(completed(&parts))
        .send()
        .await
        .expect_err("aborted upload");
    // s3s-fs answers InvalidPart (S3: NoSuchUpload); either way nothing is committed.
    let status = e.raw_response().expect("raw").status().as_u16();
    assert!(status == 404 || status == 400, "{e:?}");
    assert!(
        get_all(&s3, "again", "aborted").await.is_err(),
        "an object appeared"
    );
}

/// Creates bucket "again", uploads `data` as one part of "k", completes the upload twice and
/// checks both answers agree and the object reads back.
async fn complete_twice(s3: &Client, data: &[u8]) {
    s3.create_bucket()
        .bucket("again")
        .send()
        .await
        .expect("bucket");
    let id = s3
        .create_multipart_upload()
        .bucket("again")
        .key("k")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let parts = vec![(1, upload_part(s3, "again", "k", &id, 1, data).await)];
    let complete = || {
        s3.complete_multipart_upload()
            .bucket("again")
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(&parts))
            .send()
    };
    let first = complete().await.expect("complete");
    let second = complete().await.expect("complete again");
    assert_eq!(first.e_tag(), second.e_tag());
    assert_eq!(first.bucket(), second.bucket());
    assert_eq!(first.key(), second.key());
    assert_eq!(get_all(s3, "again", "k").await.expect("get"), data);
}

/// A Chmura UploadId whose store upload has been aborted.
async fn multipart_token_for_missing_upload(s3: &Client, bucket: &str, key: &str) -> String {
    let id = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    s3.abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .expect("abort");
    id
}

fn b64_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

#[tokio::test]
async fn object_lock_uploads_carry_a_ciphertext_crc_the_store_verifies() {
    // s3s-fs verifies an aws-chunked upload's CRC trailer and its STREAMING-UNSIGNED-PAYLOAD-
    // TRAILER signature, and stores the object: Chmura's framing and CRC are right.
    let env = encrypted_env().await;
    env.make_bucket("lockcrc");
    // As boto3 sends it: Content-MD5, no checksum of the SDK's own.
    let s3 = aws_sdk_s3::Client::from_conf(
        env.proxy
            .sdk_client()
            .config()
            .to_builder()
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build(),
    );
    let direct = chmura_tests::sdk_client(
        &env.store.endpoint(),
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    for (key, len) in [
        ("empty", 0usize),
        ("small", 1000),
        ("chunks", 3 * 65536 + 17),
    ] {
        let data = chmura_tests::pattern(len, 5);
        let put = s3
            .put_object()
            .bucket("lockcrc")
            .key(key)
            .object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
            .content_md5(b64_md5(&data))
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        // The store echoed the CRC32 of the ciphertext; the client sent none of its own.
        assert_eq!(put.checksum_crc32(), None, "{key}: the ciphertext's CRC");
        // The upload went out as aws-chunked (s3s-fs keeps that encoding, which shows the
        // trailer path ran); Chmura never shows it.
        let stored_head = direct
            .head_object()
            .bucket("lockcrc")
            .key(key)
            .send()
            .await
            .expect("direct head");
        assert_eq!(stored_head.content_encoding(), Some("aws-chunked"), "{key}");
        let head = s3
            .head_object()
            .bucket("lockcrc")
            .key(key)
            .send()
            .await
            .expect("head");
        assert_eq!(head.content_encoding(), None, "{key}");
        assert_eq!(
            get_all(&s3, "lockcrc", key).await.expect("get"),
            data,
            "{key}"
        );
        let stored = env.store.stored("lockcrc", key).expect("stored");
        assert_eq!(
            stored.len() as u64,
            chmura_crypto::layout::ciphertext_len(len as u64),
            "{key}: the store holds the decoded ciphertext, not the framing"
        );
    }
}

#[tokio::test]
async fn delete_objects_takes_at_most_a_thousand_keys() {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let env = encrypted_env().await;
    env.make_bucket("many");
    let s3 = env.proxy.sdk_client();
    let delete = |n: usize| {
        Delete::builder()
            .set_objects(Some(
                (0..n)
                    .map(|i| {
                        ObjectIdentifier::builder()
                            .key(format!("k{i}"))
                            .build()
                            .expect("id")
                    })
                    .collect(),
            ))
            .build()
            .expect("delete")
    };
    let e = s3
        .delete_objects()
        .bucket("many")
        .delete(delete(1001))
        .send()
        .await
        .expect_err("1001 keys");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(e.into_service_error().meta().code(), Some("MalformedXML"));
    let ok = s3
        .delete_objects()
        .bucket("many")
        .delete(delete(1000))
        .send()
        .await
        .expect("1000 keys");
    assert_eq!(ok.deleted().len(), 1000);
}

#[tokio::test]
async fn locked_uploads_parts_and_checksum_uploads_carry_the_trailer() {
    // Parts of an upload created with Object Lock headers go up as aws-chunked with a CRC32
    // trailer (the UploadId remembers the lock); s3s-fs decodes the framing and checks the
    // streaming signature, so the object reads back only if both are right.
    let env = encrypted_env().await;
    env.make_bucket("lockmp");
    let s3 = env.proxy.sdk_client();
    let id = s3
        .create_multipart_upload()
        .bucket("lockmp")
        .key("big")
        .object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    assert!(
        chmura_proxy::multipart::UploadToken::decode(&id).is_some_and(|t| t.locked),
        "the token remembers the lock"
    );
    let data = pattern(PART + 4321, 17);
    let mut parts = Vec::new();
    for (i, piece) in data.chunks(PART).enumerate() {
        let n = i as i32 + 1;
        parts.push((n, upload_part(&s3, "lockmp", "big", &id, n, piece).await));
    }
    complete_upload(&s3, "lockmp", "big", &id, &parts).await;
    reads_back(
        &s3,
        "lockmp",
        "big",
        &data,
        &[(0, 10), (PART - 5, PART + 5)],
    )
    .await;

    // upstream.checksum_uploads: every encrypted upload carries the trailer (a bucket with a
    // default retention on AWS needs it); s3s-fs verifies the CRC and keeps the encoding.
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        extra_upstream: "checksum_uploads = true\n".into(),
        ..Default::default()
    })
    .await;
    env.make_bucket("always");
    let s3 = env.proxy.sdk_client();
    let body = pattern(70_000, 9);
    s3.put_object()
        .bucket("always")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("put");
    let direct = chmura_tests::sdk_client(
        &env.store.endpoint(),
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    let stored = direct
        .head_object()
        .bucket("always")
        .key("k")
        .send()
        .await
        .expect("direct head");
    assert_eq!(stored.content_encoding(), Some("aws-chunked"));
    assert_eq!(get_all(&s3, "always", "k").await.expect("get"), body);
}

/// Checksums that become known after the object's metadata left (a PutObject's aws-chunked
/// trailer on a body over 1 MiB; a multipart upload's composite at Complete) are kept sealed
/// in the object tag `chmura-ck` (FORMAT.md §8a) and returned by HEAD and GET with
/// `x-amz-checksum-mode: ENABLED`. Clients never see the tag: tag listings and counts leave
/// it out, their tag sets replace only their tags, and they may not set it.
#[tokio::test]
async fn late_checksums_are_kept_in_a_tag_on_moto() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, Tag, Tagging};
    use base64::Engine;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let sha256 = |d: &[u8]| {
        let mut h =
            chmura_proxy::checksum::Hasher::new(chmura_proxy::checksum::ChecksumAlgorithm::Sha256);
        h.update(d);
        h.finish()
    };
    let Some((moto, env)) = encrypted_env_on_moto("late_checksums_are_kept_in_a_tag_on_moto").await
    else {
        return;
    };
    let s3 = env.proxy.sdk_client();
    let store = chmura_tests::sdk_client(
        &moto.endpoint,
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    s3.create_bucket()
        .bucket("late")
        .send()
        .await
        .expect("bucket");
    // An object's tags as `client` (the store itself, or a tenant through Chmura) sees them.
    let tags_seen_by = |client: &Client, key: &'static str| {
        let client = client.clone();
        async move {
            let out = client
                .get_object_tagging()
                .bucket("late")
                .key(key)
                .send()
                .await
                .expect("tags");
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect::<Vec<_>>()
        }
    };
    let store_tags = |key: &'static str| tags_seen_by(&store, key);
    let client_tags = |key: &'static str| tags_seen_by(&s3, key);
    let head_sha = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let h = s3
                .head_object()
                .bucket("late")
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .expect("head");
            h.checksum_sha256().map(str::to_string)
        }
    };

    // Uploads `data` as parts of `size` with their SHA-256; the parts for Complete and the
    // composite S3 computes from them.
    let upload_parts = |id: &str, key: &'static str, data: &[u8], size: usize| {
        let (s3, id, data) = (s3.clone(), id.to_string(), data.to_vec());
        async move {
            let (mut parts, mut digests) = (Vec::new(), Vec::new());
            for (i, piece) in data.chunks(size).enumerate() {
                let n = i as i32 + 1;
                let d = sha256(piece);
                let out = s3
                    .upload_part()
                    .bucket("late")
                    .key(key)
                    .upload_id(&id)
                    .part_number(n)
                    .checksum_sha256(b64(&d))
                    .body(ByteStream::from(piece.to_vec()))
                    .send()
                    .await
                    .expect("part");
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .e_tag(out.e_tag().expect("etag"))
                        .checksum_sha256(b64(&d))
                        .build(),
                );
                digests.extend_from_slice(&d);
            }
            let composite = format!("{}-{}", b64(&sha256(&digests)), parts.len());
            (parts, composite)
        }
    };
    // A 3 MiB PutObject from a file: the SDK streams it with its checksum as an aws-chunked
    // trailer. With a tag of the client's.
    let data = pattern(3 << 20, 17);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("big");
    std::fs::write(&path, &data).expect("write");
    let put = s3
        .put_object()
        .bucket("late")
        .key("big")
        .tagging("mine=1")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_path(&path).await.expect("file"))
        .send()
        .await
        .expect("put");
    let want = b64(&sha256(&data));
    assert_eq!(put.checksum_sha256(), Some(want.as_str()));
    let raw = store_tags("big").await;
    assert_eq!(raw.len(), 2, "{raw:?}");
    let sealed = raw
        .iter()
        .find(|(k, _)| k == "chmura-ck")
        .map(|(_, v)| v.clone())
        .expect("the store holds the sealed checksum");
    assert!(
        sealed.starts_with("SHA256 FULL_OBJECT ") && !sealed.contains(&want),
        "{sealed}"
    );
    assert_eq!(head_sha("big").await.as_deref(), Some(want.as_str()));
    let get = s3
        .get_object()
        .bucket("late")
        .key("big")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("get");
    assert_eq!(get.checksum_sha256(), Some(want.as_str()));
    assert_eq!(get.tag_count(), Some(1), "the client's tags only");
    let body = get
        .body
        .collect()
        .await
        .expect("validated body")
        .into_bytes();
    assert!(body.as_ref() == data.as_slice());
    let plain = s3
        .get_object()
        .bucket("late")
        .key("big")
        .send()
        .await
        .expect("get");
    assert_eq!(plain.tag_count(), Some(1));
    assert_eq!(client_tags("big").await, vec![("mine".into(), "1".into())]);

    // The client's tag sets replace the client's tags; Chmura's stays. Tags list sorted by
    // key, however they were sent.
    let set = |pairs: &[(&str, &str)]| {
        Tagging::builder()
            .set_tag_set(Some(
                pairs
                    .iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build().expect("tag"))
                    .collect(),
            ))
            .build()
            .expect("tagging")
    };
    s3.put_object_tagging()
        .bucket("late")
        .key("big")
        .tagging(set(&[("b", "y"), ("a", "x")]))
        .send()
        .await
        .expect("put tags");
    assert_eq!(
        client_tags("big").await,
        vec![("a".into(), "x".into()), ("b".into(), "y".into())]
    );
    assert_eq!(store_tags("big").await.len(), 3);
    assert_eq!(head_sha("big").await.as_deref(), Some(want.as_str()));
    let e = s3
        .put_object_tagging()
        .bucket("late")
        .key("big")
        .tagging(set(&[("chmura-ck", "SHA256 FULL_OBJECT AAAA")]))
        .send()
        .await
        .expect_err("reserved tag");
    assert_eq!(e.into_service_error().meta().code(), Some("InvalidTag"));
    s3.delete_object_tagging()
        .bucket("late")
        .key("big")
        .send()
        .await
        .expect("delete tags");
    assert!(client_tags("big").await.is_empty());
    assert_eq!(head_sha("big").await.as_deref(), Some(want.as_str()));
    let plain = s3
        .get_object()
        .bucket("late")
        .key("big")
        .send()
        .await
        .expect("get");
    assert_eq!(plain.tag_count(), None);
    drop(plain);

    // Ten tags of the client's leave no room for Chmura's: set on the object afterwards
    // (Chmura's tag goes), or with the upload (none is written). Counts stay the client's.
    let ten: Vec<(String, String)> = (0..10).map(|i| (format!("t{i}"), "v".into())).collect();
    let ten_ref: Vec<(&str, &str)> = ten.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    s3.put_object_tagging()
        .bucket("late")
        .key("big")
        .tagging(set(&ten_ref))
        .send()
        .await
        .expect("ten tags");
    let query: String = ten
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    s3.put_object()
        .bucket("late")
        .key("big10")
        .tagging(&query)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_path(&path).await.expect("file"))
        .send()
        .await
        .expect("put with ten tags");
    for key in ["big", "big10"] {
        assert_eq!(client_tags(key).await, ten, "{key}");
        let whole = s3
            .get_object()
            .bucket("late")
            .key(key)
            .send()
            .await
            .expect("get");
        assert_eq!(whole.tag_count(), Some(10), "{key}: a whole GET");
        drop(whole);
        let ranged = s3
            .get_object()
            .bucket("late")
            .key(key)
            .range("bytes=5-100000")
            .send()
            .await
            .expect("ranged get");
        assert_eq!(ranged.tag_count(), Some(10), "{key}: a ranged GET");
    }
    s3.delete_object_tagging()
        .bucket("late")
        .key("big")
        .send()
        .await
        .expect("delete tags");

    // A tag edited in the store does not open: no checksum is stated, the body still reads.
    let mut edited = sealed.clone();
    edited.replace_range(edited.len() - 8..edited.len() - 4, "AAAA");
    store
        .put_object_tagging()
        .bucket("late")
        .key("big")
        .tagging(set(&[("chmura-ck", edited.as_str())]))
        .send()
        .await
        .expect("store tags");
    assert_eq!(head_sha("big").await, None);
    assert!(get_all(&s3, "late", "big").await.expect("get") == data);

    // A multipart upload created with a checksum algorithm: Complete's composite is kept.
    let created = s3
        .create_multipart_upload()
        .bucket("late")
        .key("mp")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("create");
    let id = created.upload_id().expect("id").to_string();
    let data = pattern(PART + 1000, 18);
    let (parts, want) = upload_parts(&id, "mp", &data, PART).await;
    let done = s3
        .complete_multipart_upload()
        .bucket("late")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    assert_eq!(done.checksum_sha256(), Some(want.as_str()));
    let head = s3
        .head_object()
        .bucket("late")
        .key("mp")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("head");
    assert_eq!(head.checksum_sha256(), Some(want.as_str()));
    assert_eq!(
        head.checksum_type(),
        Some(&aws_sdk_s3::types::ChecksumType::Composite)
    );
    assert!(client_tags("mp").await.is_empty());
    assert_eq!(store_tags("mp").await.len(), 1);
    let attrs = s3
        .get_object_attributes()
        .bucket("late")
        .key("mp")
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::Checksum)
        .send()
        .await
        .expect("attributes");
    let ck = attrs.checksum().expect("checksum attribute");
    assert_eq!(ck.checksum_sha256(), Some(want.as_str()));
    assert_eq!(
        ck.checksum_type(),
        Some(&aws_sdk_s3::types::ChecksumType::Composite)
    );
    // Parts off the 64 KiB grid: the object is rewritten at Complete, its tags with it.
    let created = s3
        .create_multipart_upload()
        .bucket("late")
        .key("odd")
        .tagging("o=1")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("create");
    let id = created.upload_id().expect("id").to_string();
    let odd = pattern(PART + 1000 + 500, 19);
    let (parts, odd_want) = upload_parts(&id, "odd", &odd, PART + 1000).await;
    s3.complete_multipart_upload()
        .bucket("late")
        .key("odd")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    assert_eq!(head_sha("odd").await.as_deref(), Some(odd_want.as_str()));
    assert_eq!(client_tags("odd").await, vec![("o".into(), "1".into())]);
    assert!(get_all(&s3, "late", "odd").await.expect("get") == odd);

    // A copy keeps it (same salt); a copy with new tags has none, and shows only those.
    s3.copy_object()
        .bucket("late")
        .key("mp-copy")
        .copy_source("late/mp")
        .send()
        .await
        .expect("copy");
    assert_eq!(head_sha("mp-copy").await.as_deref(), Some(want.as_str()));
    s3.copy_object()
        .bucket("late")
        .key("mp-retagged")
        .copy_source("late/mp")
        .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
        .tagging("t=1")
        .send()
        .await
        .expect("copy with tags");
    assert_eq!(head_sha("mp-retagged").await, None);
    let get = s3
        .get_object()
        .bucket("late")
        .key("mp-retagged")
        .send()
        .await
        .expect("get");
    assert_eq!(get.tag_count(), Some(1));
    assert!(
        get.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref()
            == data.as_slice()
    );
}
