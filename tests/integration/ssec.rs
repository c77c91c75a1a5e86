//! SSE-C on encrypted objects (FORMAT.md §14): the customer's key masks the object's data key
//! in Chmura and never reaches the store; reads, copies and parts need the same key, with
//! S3's answers when it is missing, malformed or wrong.

use aws_sdk_s3::primitives::ByteStream;
use chmura_tests::{pattern, sdk_client, Env, ProxyOptions, TENANT_AK, TENANT_SK};

async fn encrypted_env() -> Env {
    Env::start_with(ProxyOptions {
        encrypt: true,
        ..Default::default()
    })
    .await
}

struct Key {
    raw: [u8; 32],
    b64: String,
    md5: String,
}

fn key(byte: u8) -> Key {
    use base64::Engine;
    use md5::Digest;
    let raw = [byte; 32];
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    Key {
        raw,
        b64: b64(&raw),
        md5: b64(&md5::Md5::digest(raw)),
    }
}

use aws_sdk_s3::operation::{
    complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder,
    copy_object::builders::CopyObjectFluentBuilder,
    create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
    get_object::builders::GetObjectFluentBuilder, head_object::builders::HeadObjectFluentBuilder,
    put_object::builders::PutObjectFluentBuilder, upload_part::builders::UploadPartFluentBuilder,
    upload_part_copy::builders::UploadPartCopyFluentBuilder,
};

/// A trait adding a key's three SSE-C headers (the given setters) to request builders.
macro_rules! key_headers {
    ($tr:ident :: $f:ident ($alg:ident, $key:ident, $md5:ident) for $($t:ty),*) => {
        trait $tr: Sized {
            fn $f(self, k: &Key) -> Self;
        }
        $(impl $tr for $t {
            fn $f(self, k: &Key) -> Self {
                self.$alg("AES256").$key(&k.b64).$md5(&k.md5)
            }
        })*
    };
}

key_headers!(WithKey::ssec(sse_customer_algorithm, sse_customer_key, sse_customer_key_md5) for
    PutObjectFluentBuilder, GetObjectFluentBuilder, HeadObjectFluentBuilder,
    CopyObjectFluentBuilder, CreateMultipartUploadFluentBuilder, UploadPartFluentBuilder,
    UploadPartCopyFluentBuilder, CompleteMultipartUploadFluentBuilder);
key_headers!(WithSourceKey::ssec_source(
    copy_source_sse_customer_algorithm,
    copy_source_sse_customer_key,
    copy_source_sse_customer_key_md5
) for CopyObjectFluentBuilder, UploadPartCopyFluentBuilder);

/// GetObject of `bucket/key` with `k`'s SSE-C headers (or none) and an optional range: the
/// whole body, or the SDK's error.
async fn read(
    s3: &aws_sdk_s3::Client,
    (bucket, key): (&str, &str),
    k: Option<&Key>,
    range: Option<String>,
) -> Result<Vec<u8>, aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>>
{
    let mut req = s3.get_object().bucket(bucket).key(key).set_range(range);
    if let Some(k) = k {
        req = req.ssec(k);
    }
    let got = req.send().await?;
    Ok(got
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec())
}

/// Uploads `data` to `ssec/<key>` in two parts cut at `cut`, each with `k`'s SSE-C headers
/// (or none): the parts to complete with.
async fn upload_two_parts(
    s3: &aws_sdk_s3::Client,
    (key, id): (&str, &str),
    data: &[u8],
    cut: usize,
    k: Option<&Key>,
) -> aws_sdk_s3::types::CompletedMultipartUpload {
    let mut done = Vec::new();
    for (n, range) in [(1, 0..cut), (2, cut..data.len())] {
        let mut req = s3
            .upload_part()
            .bucket("ssec")
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(data[range].to_vec()));
        if let Some(k) = k {
            req = req.ssec(k);
        }
        let p = req.send().await.expect("part");
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().expect("etag"))
                .build(),
        );
    }
    aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .set_parts(Some(done))
        .build()
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> Option<String> {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_string)
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push(b);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sse_c_objects_open_only_with_their_key_and_the_store_never_sees_it() {
    let env = encrypted_env().await;
    env.make_bucket("ssec");
    let s3 = env.proxy.sdk_client();
    let (a, b) = (key(7), key(9));
    let data = pattern(150_000, 3);
    let put = s3
        .put_object()
        .bucket("ssec")
        .key("k")
        .ssec(&a)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("SSE-C PUT");
    assert_eq!(put.sse_customer_algorithm(), Some("AES256"));
    assert_eq!(put.sse_customer_key_md5(), Some(a.md5.as_str()));
    assert_eq!(put.server_side_encryption(), None);

    // Without the key, with a wrong key, with a key on a plain object: S3's answers.
    let e = read(&s3, ("ssec", "k"), None, None)
        .await
        .expect_err("GET without the key");
    assert_eq!(status(&e), Some(400));
    assert_eq!(code(&e).as_deref(), Some("InvalidRequest"));
    let e = s3
        .head_object()
        .bucket("ssec")
        .key("k")
        .send()
        .await
        .expect_err("HEAD without the key");
    assert_eq!(status(&e), Some(400));
    let e = read(&s3, ("ssec", "k"), Some(&b), None)
        .await
        .expect_err("GET with another key");
    assert_eq!(status(&e), Some(403));
    assert_eq!(code(&e).as_deref(), Some("AccessDenied"));

    // With the key: whole, ranged, HEAD.
    let got = s3
        .get_object()
        .bucket("ssec")
        .key("k")
        .ssec(&a)
        .send()
        .await
        .expect("GET with the key");
    assert_eq!(got.sse_customer_key_md5(), Some(a.md5.as_str()));
    assert_eq!(got.server_side_encryption(), None);
    let body = got.body.collect().await.expect("body").into_bytes();
    assert!(body == data[..], "round trip");
    let body = read(
        &s3,
        ("ssec", "k"),
        Some(&a),
        Some("bytes=65530-70009".into()),
    )
    .await
    .expect("ranged GET with the key");
    assert!(body == data[65530..70010], "range");
    let head = s3
        .head_object()
        .bucket("ssec")
        .key("k")
        .ssec(&a)
        .send()
        .await
        .expect("HEAD with the key");
    assert_eq!(head.content_length(), Some(150_000));
    assert_eq!(head.sse_customer_algorithm(), Some("AES256"));

    // A malformed key changes nothing.
    let e = s3
        .put_object()
        .bucket("ssec")
        .key("bad")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.b64)
        .sse_customer_key_md5(&b.md5)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("key and MD5 disagree");
    assert_eq!(status(&e), Some(400));
    assert_eq!(code(&e).as_deref(), Some("InvalidArgument"));
    assert!(env.store.stored("ssec", "bad").is_none());

    // A plain object refuses a key.
    s3.put_object()
        .bucket("ssec")
        .key("plain")
        .body(ByteStream::from_static(b"plain"))
        .send()
        .await
        .expect("plain PUT");
    let e = read(&s3, ("ssec", "plain"), Some(&a), None)
        .await
        .expect_err("a key for a plain object");
    assert_eq!(status(&e), Some(400));

    // Copies: the source needs its key; the copy is under the destination's key, or none.
    let e = s3
        .copy_object()
        .bucket("ssec")
        .key("copy-b")
        .copy_source("ssec/k")
        .send()
        .await
        .expect_err("copy without the source key");
    assert_eq!(status(&e), Some(400));
    s3.copy_object()
        .bucket("ssec")
        .key("copy-b")
        .copy_source("ssec/k")
        .ssec_source(&a)
        .ssec(&b)
        .send()
        .await
        .expect("copy to key B");
    for (k, ok) in [(&a, false), (&b, true)] {
        match read(&s3, ("ssec", "copy-b"), Some(k), None).await {
            Ok(body) if ok => assert!(body == data[..], "copy under key B"),
            Err(e) if !ok => assert_eq!(status(&e), Some(403)),
            _ => panic!("copy-b read with key {} gave the wrong answer", k.raw[0]),
        }
    }
    s3.copy_object()
        .bucket("ssec")
        .key("copy-plain")
        .copy_source("ssec/k")
        .ssec_source(&a)
        .send()
        .await
        .expect("copy to no customer key");
    let body = s3
        .get_object()
        .bucket("ssec")
        .key("copy-plain")
        .send()
        .await
        .expect("GET of the copy without a key")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(body == data[..]);

    // In place (minio-go's key rotation): a copy onto itself that changes the customer key
    // changes an encryption attribute, as does one that drops the key (decryption in place).
    s3.copy_object()
        .bucket("ssec")
        .key("copy-b")
        .copy_source("ssec/copy-b")
        .ssec_source(&b)
        .ssec(&a)
        .send()
        .await
        .expect("key rotation in place");
    for (k, ok) in [(&b, false), (&a, true)] {
        match read(&s3, ("ssec", "copy-b"), Some(k), None).await {
            Ok(body) if ok => assert!(body == data[..], "rotated to key A"),
            Err(e) if !ok => assert_eq!(status(&e), Some(403)),
            _ => panic!(
                "rotated copy-b read with key {} gave the wrong answer",
                k.raw[0]
            ),
        }
    }
    s3.copy_object()
        .bucket("ssec")
        .key("copy-b")
        .copy_source("ssec/copy-b")
        .ssec_source(&a)
        .send()
        .await
        .expect("decryption in place");
    let body = s3
        .get_object()
        .bucket("ssec")
        .key("copy-b")
        .send()
        .await
        .expect("GET without a key after decryption in place")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(body == data[..]);
    // A plain object copied onto itself unchanged is still refused.
    let e = s3
        .copy_object()
        .bucket("ssec")
        .key("copy-b")
        .copy_source("ssec/copy-b")
        .send()
        .await
        .expect_err("a copy onto itself that changes nothing");
    assert_eq!(status(&e), Some(400));

    // Never over plain HTTP (S3 refuses it too), and nothing stored.
    let http = sdk_client(&env.proxy.http_endpoint(), None, TENANT_AK, TENANT_SK);
    let e = http
        .put_object()
        .bucket("ssec")
        .key("http")
        .ssec(&a)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("SSE-C over HTTP");
    assert_eq!(status(&e), Some(400));
    assert!(env.store.stored("ssec", "http").is_none());

    // The store holds neither the plaintext nor the key, in any form.
    let mut all = Vec::new();
    files(&env.store.root, &mut all);
    assert!(!all.is_empty());
    for f in &all {
        for needle in [
            &data[70_000..70_064],
            &a.raw[..],
            &b.raw[..],
            a.b64.as_bytes(),
            b.b64.as_bytes(),
            a.md5.as_bytes(),
        ] {
            assert!(
                !contains(f, needle),
                "the store holds key or plaintext bytes"
            );
        }
    }
}

#[tokio::test]
async fn sse_c_multipart_parts_need_the_uploads_key() {
    let env = encrypted_env().await;
    env.make_bucket("ssec");
    let s3 = env.proxy.sdk_client();
    let (a, b) = (key(1), key(2));
    // Parts off the 64 KiB grid: Complete rewrites the object, with the key it is given.
    let part_len = 5 * 1024 * 1024 + 1;
    let data = pattern(part_len + 1000, 5);
    let up = s3
        .create_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .ssec(&a)
        .send()
        .await
        .expect("create");
    assert_eq!(up.sse_customer_key_md5(), Some(a.md5.as_str()));
    let id = up.upload_id().expect("id").to_string();
    let e = s3
        .upload_part()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data[..part_len].to_vec()))
        .send()
        .await
        .expect_err("a part without the key");
    assert_eq!(status(&e), Some(400));
    let e = s3
        .upload_part()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .ssec(&b)
        .body(ByteStream::from_static(b"a refused part"))
        .send()
        .await
        .expect_err("a part under another key");
    assert_eq!(status(&e), Some(400));
    let parts = upload_two_parts(&s3, ("mp", &id), &data, part_len, Some(&a)).await;
    let e = s3
        .complete_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(parts.clone())
        .send()
        .await
        .expect_err("an off-grid Complete without the key");
    assert_eq!(status(&e), Some(400));
    s3.complete_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(parts)
        .ssec(&a)
        .send()
        .await
        .expect("complete with the key");
    let e = read(&s3, ("ssec", "mp"), None, None)
        .await
        .expect_err("GET without the key");
    assert_eq!(status(&e), Some(400));
    let body = read(
        &s3,
        ("ssec", "mp"),
        Some(&a),
        Some(format!("bytes={}-{}", part_len - 10, part_len + 10)),
    )
    .await
    .expect("ranged GET across the parts");
    assert!(body == data[part_len - 10..=part_len + 10]);
    let body = read(&s3, ("ssec", "mp"), Some(&a), None)
        .await
        .expect("GET");
    assert!(body == data[..], "multipart round trip");

    // UploadPartCopy: the source opens with its key, the part is sealed under the upload's.
    let up = s3
        .create_multipart_upload()
        .bucket("ssec")
        .key("mp2")
        .ssec(&b)
        .send()
        .await
        .expect("create 2");
    let id2 = up.upload_id().expect("id").to_string();
    let e = s3
        .upload_part_copy()
        .bucket("ssec")
        .key("mp2")
        .upload_id(&id2)
        .part_number(1)
        .copy_source("ssec/mp")
        .copy_source_range("bytes=1000-200999")
        .ssec(&b)
        .send()
        .await
        .expect_err("part copy without the source's key");
    assert_eq!(status(&e), Some(400));
    let copied = s3
        .upload_part_copy()
        .bucket("ssec")
        .key("mp2")
        .upload_id(&id2)
        .part_number(1)
        .copy_source("ssec/mp")
        .copy_source_range("bytes=1000-200999")
        .ssec_source(&a)
        .ssec(&b)
        .send()
        .await
        .expect("part copy");
    let etag = copied
        .copy_part_result()
        .and_then(|r| r.e_tag())
        .expect("etag")
        .to_string();
    s3.complete_multipart_upload()
        .bucket("ssec")
        .key("mp2")
        .upload_id(&id2)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(etag)
                        .build(),
                )
                .build(),
        )
        .ssec(&b)
        .send()
        .await
        .expect("complete 2");
    let body = read(&s3, ("ssec", "mp2"), Some(&b), None)
        .await
        .expect("GET of the part copy");
    assert!(body == data[1000..201_000], "part copy round trip");
}

/// `chmura rekey` moves an SSE-C object's masked key to the new provider key as it is: it
/// needs no customer key, and the object still opens with (only) that key afterwards.
#[tokio::test]
async fn rekey_moves_sse_c_objects_without_their_key() {
    use chmura_proxy::rekey::{run, RekeyOptions};
    let hex = |b: u8| format!("{b:02x}").repeat(32);
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        keyring: Some(format!(
            "chmura-keyring v1\nold {}\nnew {}\n",
            hex(1),
            hex(2)
        )),
        ..Default::default()
    })
    .await;
    env.make_bucket("rek");
    let s3 = env.proxy.sdk_client();
    let a = key(5);
    let data = pattern(70_000, 8);
    s3.put_object()
        .bucket("rek")
        .key("k")
        .ssec(&a)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let before = env.store.stored("rek", "k");
    let opts = RekeyOptions {
        bucket: "rek".into(),
        prefix: String::new(),
        to_key: "new".into(),
        start_after: None,
        max_objects: None,
        copy_limit: 5 << 30,
    };
    let mut log = Vec::new();
    let done = run(&env.proxy.state, &opts, &mut log).await.expect("rekey");
    assert_eq!(done.rekeyed, 1, "{done:?}");
    assert!(done.failed.is_empty(), "{done:?}");
    assert_eq!(env.store.stored("rek", "k"), before, "body rewritten");
    let only_new = chmura_tests::Proxy::start(
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
    let body = read(&s3n, ("rek", "k"), Some(&a), None)
        .await
        .expect("GET after rekey");
    assert!(body == data[..]);
    let e = read(&s3n, ("rek", "k"), None, None)
        .await
        .expect_err("still needs the customer key");
    assert_eq!(status(&e), Some(400));
}

/// FORMAT.md §10: the check value removed or replaced in the store. The object then opens
/// under the wrong data key, which its key commitment refuses: never plaintext, with or
/// without a key.
#[tokio::test]
async fn a_check_value_edited_in_the_store_opens_nothing() {
    use aws_sdk_s3::types::MetadataDirective;
    let env = encrypted_env().await;
    env.make_bucket("ssec");
    let s3 = env.proxy.sdk_client();
    let (a, b) = (key(3), key(4));
    s3.put_object()
        .bucket("ssec")
        .key("k")
        .ssec(&a)
        .body(ByteStream::from(pattern(1000, 9)))
        .send()
        .await
        .expect("put");
    let store = sdk_client(
        &env.store.endpoint(),
        None,
        chmura_tests::UPSTREAM_AK,
        chmura_tests::UPSTREAM_SK,
    );
    let meta = store
        .head_object()
        .bucket("ssec")
        .key("k")
        .send()
        .await
        .expect("store head")
        .metadata()
        .cloned()
        .unwrap_or_default();
    assert!(meta.contains_key("chmura-ssec"), "{meta:?}");
    // Key B's check value for this object's salt, as an attacker holding key B would write it.
    let salt: [u8; 32] = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&meta["chmura-salt"])
            .expect("salt")
            .try_into()
            .expect("32 bytes")
    };
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(chmura_crypto::keys::CustomerKey::new(b.raw).check_value(&salt))
    };
    for (edit, reader) in [(None, None), (Some(forged), Some(&b))] {
        let mut m = meta.clone();
        m.remove("chmura-ssec");
        if let Some(v) = edit {
            m.insert("chmura-ssec".into(), v);
        }
        store
            .copy_object()
            .bucket("ssec")
            .key("k")
            .copy_source("ssec/k")
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(m))
            .send()
            .await
            .expect("edit in the store");
        let r = read(&s3, ("ssec", "k"), reader, None).await;
        let e = r.expect_err("an edited check value opened");
        assert_eq!(status(&e), Some(403), "{e:?}");
        assert_eq!(code(&e).as_deref(), Some("InvalidObjectState"));
    }
}

/// The edges: a customer key in a query string (it must not travel to the store), for an object
/// stored without an envelope (a folder marker), on the Complete of an upload without one
/// (off the grid, so the store would assemble it before the rewrite found out), and SSE-C over
/// plain HTTP without `[kms]` as well.
#[tokio::test]
async fn sse_c_edges_are_refused_and_change_nothing() {
    use chmura_tests::raw::{self, RawRequest};
    let env = encrypted_env().await;
    env.make_bucket("ssec");
    let s3 = env.proxy.sdk_client();
    let a = key(6);
    s3.put_object()
        .bucket("ssec")
        .key("plain")
        .body(ByteStream::from_static(b"plain"))
        .send()
        .await
        .expect("put");
    let host = format!("localhost:{}", env.proxy.addr.port());
    let req = RawRequest::new(
        "GET",
        &format!(
            "/ssec/plain?x-amz-server-side-encryption-customer-algorithm=AES256&x-amz-server-side-encryption-customer-key={}",
            a.b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
        ),
    )
    .sign_v4(
        &host,
        TENANT_AK,
        TENANT_SK,
        "UNSIGNED-PAYLOAD",
        std::time::SystemTime::now(),
    );
    let r = raw::send(env.proxy.addr.port(), &env.proxy.certs.ca_pem, &req).await;
    // Refused as an unknown parameter, so it never travels to the store with the query.
    assert_eq!(
        (r.status, r.code().as_deref()),
        (501, Some("NotImplemented"))
    );

    // A folder marker has no envelope: a key for it is refused, as for any plain object.
    s3.put_object()
        .bucket("ssec")
        .key("dir/")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .expect("folder marker");
    let e = read(&s3, ("ssec", "dir/"), Some(&a), None)
        .await
        .expect_err("a key for a folder marker");
    assert_eq!(status(&e), Some(400));

    // An upload without a customer key, off the grid, completed with one: refused before the
    // store assembles it; the upload is still there and completes without the key.
    let part_len = 5 * 1024 * 1024 + 1;
    let data = pattern(part_len + 10, 12);
    let id = s3
        .create_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let parts = upload_two_parts(&s3, ("mp", &id), &data, part_len, None).await;
    let e = s3
        .complete_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(parts.clone())
        .ssec(&a)
        .send()
        .await
        .expect_err("a key on the Complete of an upload without one");
    assert_eq!(status(&e), Some(400));
    assert!(env.store.stored("ssec", "mp").is_none(), "assembled anyway");
    s3.complete_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(parts)
        .send()
        .await
        .expect("complete without the key");
    let body = read(&s3, ("ssec", "mp"), None, None).await.expect("get");
    assert!(body == data);

    // Pass-through (no [kms]): the store would get the key, so plain HTTP is refused too.
    let pass = Env::start().await;
    pass.make_bucket("pt");
    let http = sdk_client(&pass.proxy.http_endpoint(), None, TENANT_AK, TENANT_SK);
    let e = http
        .put_object()
        .bucket("pt")
        .key("k")
        .ssec(&a)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("SSE-C over HTTP, pass-through");
    assert_eq!(status(&e), Some(400));
    assert!(pass.store.stored("pt", "k").is_none());
}
