//! Test harness shared by the integration tests and the load driver: a real S3 store
//! (`s3s-fs`, verifying SigV4) in process on 127.0.0.1:0, a test CA and server certificate,
//! Chmura itself on 127.0.0.1:0, an `aws-sdk-s3` client that trusts the test CA, and a raw
//! request sender for malformed and edge-case requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod raw;
pub mod throttle;
pub mod tools;

pub const TENANT_AK: &str = "CHMURATEST0000000001";
pub const TENANT_SK: &str = "chmura-test-secret-key-0000000001";
pub const UPSTREAM_AK: &str = "UPSTREAMAK0000000001";
pub const UPSTREAM_SK: &str = "upstream-secret-key-000000000001";
pub const REGION: &str = "us-east-1";

/// A CA and a server certificate for `localhost` and `127.0.0.1`, written as PEM files.
pub struct TestCerts {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCerts {
    pub fn generate(dir: &Path) -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Chmura test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let ca_file = dir.join("ca.pem");
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write ca");
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        write_private(&key_file, &key.serialize_pem());
        TestCerts {
            ca_pem: ca_cert.pem(),
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// The files `generate` wrote into `dir`.
    pub fn load(dir: &Path) -> TestCerts {
        let ca_file = dir.join("ca.pem");
        TestCerts {
            ca_pem: std::fs::read_to_string(&ca_file).expect("ca.pem"),
            ca_file,
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        }
    }
}

/// Writes a file with mode 0600.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A running in-process `s3s-fs` store that checks SigV4 with the upstream credentials.
pub struct Store {
    pub addr: SocketAddr,
    pub root: PathBuf,
    /// Served over TLS (`start_tls`).
    pub tls: bool,
    _stop: oneshot::Sender<()>,
}

/// A response body sent in frames of `target` bytes (the last one shorter): it waits for the
/// inner body to fill each frame, and stops at the response's Content-Length (s3s-fs's ranged
/// body goes on reading to the end of the file, relying on the connection to stop polling).
/// For the test store only (it adds latency to a trickling body, which a proxy must not).
struct FillBody<B> {
    inner: std::pin::Pin<Box<B>>,
    buf: bytes::BytesMut,
    trailers: Option<hyper::body::Frame<bytes::Bytes>>,
    target: usize,
    /// Bytes still to take from the inner body (its Content-Length), when known.
    left: Option<u64>,
    done: bool,
}

impl<B> FillBody<B> {
    fn new(inner: B, target: usize, len: Option<u64>) -> Self {
        FillBody {
            inner: Box::pin(inner),
            buf: bytes::BytesMut::new(),
            trailers: None,
            target,
            left: len,
            done: len == Some(0),
        }
    }
}

impl<B> hyper::body::Body for FillBody<B>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, B::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        while !this.done && this.buf.len() < this.target {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(mut d) => {
                        if let Some(left) = this.left.as_mut() {
                            d.truncate((*left).min(d.len() as u64) as usize);
                            *left -= d.len() as u64;
                            this.done = *left == 0;
                        }
                        if this.buf.is_empty() && d.len() >= this.target {
                            return Poll::Ready(Some(Ok(hyper::body::Frame::data(d))));
                        }
                        this.buf.extend_from_slice(&d);
                    }
                    // Trailers end the data: send what is held first, then them.
                    Err(f) => {
                        this.trailers = Some(f);
                        this.done = true;
                    }
                },
            }
        }
        if this.buf.is_empty() {
            return Poll::Ready(this.trailers.take().map(Ok));
        }
        let n = this.buf.len().min(this.target);
        Poll::Ready(Some(Ok(hyper::body::Frame::data(
            this.buf.split_to(n).freeze(),
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.buf.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let held = self.buf.len() as u64;
        let mut h = hyper::body::SizeHint::new();
        h.set_lower(inner.lower() + held);
        if let Some(u) = inner.upper() {
            h.set_upper(u + held);
        }
        h
    }
}

/// The `chmura` binary of this build (`target/<profile>/chmura`). `cargo test --workspace`
/// builds it with everything else (the proxy package has integration tests of its own), with
/// the same features. When it is missing, or older than a source file of the crates it is
/// made of (`cargo test -p chmura-tests` after an edit), it is built here first, once per
/// test process; a build that fails fails the calling test.
pub fn chmura_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("no target folder")?
                .to_path_buf();
            let bin = profile_dir.join("chmura");
            let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
            let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
            let current = built.is_some_and(|b| {
                [
                    "proxy/src",
                    "config/src",
                    "crypto/src",
                    "Cargo.lock",
                    "proxy/Cargo.toml",
                ]
                .iter()
                .all(|d| newest_file(&root.join(d)).is_none_or(|t| t <= b))
            });
            if current {
                return Ok(bin);
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut c = std::process::Command::new(cargo);
            c.current_dir(root)
                .args(["build", "--quiet", "-p", "chmura-proxy", "--bin", "chmura"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                c.arg("--release");
            }
            if let Some(target) = profile_dir.parent() {
                c.env("CARGO_TARGET_DIR", target);
            }
            let out = c.output().map_err(|e| format!("cargo build: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build --bin chmura failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if bin.exists() {
                Ok(bin)
            } else {
                Err(format!("{} not built", bin.display()))
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The latest modification time of the files under `dir` (or of `dir`, a file).
fn newest_file(dir: &Path) -> Option<std::time::SystemTime> {
    if dir.is_file() {
        return dir.metadata().and_then(|m| m.modified()).ok();
    }
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// s3s-fs keeps a folder marker ("dir/", an empty object) as a bare folder on its disk: it
/// drops the marker's Content-Type and user metadata, answers a HEAD or GET of it (or of
/// "dir") with a 500, and cannot copy it. S3 keeps markers as objects, and s3fs-fuse keeps a
/// directory's mode, owner and times in them. The test store keeps those headers in a file
/// per marker beside its root (`<root>.folder-markers/`), and answers for markers as S3 does.
struct FolderMarkers {
    root: PathBuf,
}

/// A PutObject, CopyObject or DeleteObject of a folder marker, seen before s3s-fs answers it.
struct MarkerWrite {
    /// Where the marker's headers are kept.
    file: PathBuf,
    /// The folder on the store's disk.
    folder: PathBuf,
    kind: MarkerOp,
}

enum MarkerOp {
    /// PutObject, or CopyObject with `x-amz-metadata-directive: REPLACE`: these headers.
    Put(Vec<(String, String)>),
    /// CopyObject keeping the source marker's headers (kept in this file).
    Copy(PathBuf),
    Delete,
}

impl FolderMarkers {
    fn file(&self, bucket: &str, key: &str) -> PathBuf {
        let mut dir = self.root.clone().into_os_string();
        dir.push(".folder-markers");
        PathBuf::from(dir).join(hex::encode(format!("{bucket}/{key}")))
    }

    fn bucket_key(path: &str) -> Option<(String, String)> {
        let path = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .ok()?;
        let (bucket, key) = path.trim_start_matches('/').split_once('/')?;
        if key.is_empty() || key.split('/').any(|s| s == ".." || s == ".") {
            return None;
        }
        Some((bucket.to_string(), key.to_string()))
    }

    fn write_of<B>(&self, req: &http::Request<B>) -> Option<MarkerWrite> {
        if req.uri().query().is_some() {
            return None;
        }
        let (bucket, key) = Self::bucket_key(req.uri().path())?;
        if !key.ends_with('/') {
            return None;
        }
        let (file, folder) = (self.file(&bucket, &key), self.root.join(&bucket).join(&key));
        let h = req.headers();
        let kind = match *req.method() {
            http::Method::DELETE => MarkerOp::Delete,
            http::Method::PUT => {
                let keep = || {
                    h.iter()
                        .filter(|(n, _)| {
                            n.as_str() == "content-type" || n.as_str().starts_with("x-amz-meta-")
                        })
                        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                        .collect()
                };
                match h.get("x-amz-copy-source").and_then(|v| v.to_str().ok()) {
                    None => MarkerOp::Put(keep()),
                    Some(src) => {
                        let (sb, sk) = Self::bucket_key(src)?;
                        if !sk.ends_with('/') || !self.root.join(&sb).join(&sk).is_dir() {
                            return None;
                        }
                        let replace = h
                            .get("x-amz-metadata-directive")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"REPLACE"));
                        if replace {
                            MarkerOp::Put(keep())
                        } else {
                            MarkerOp::Copy(self.file(&sb, &sk))
                        }
                    }
                }
            }
            _ => return None,
        };
        Some(MarkerWrite { file, folder, kind })
    }

    /// The store's answer, completed or corrected for a folder marker.
    fn after(
        w: MarkerWrite,
        copy: bool,
        resp: http::Response<s3s::Body>,
    ) -> http::Response<s3s::Body> {
        let status = resp.status();
        let save = |headers: &[(String, String)]| {
            if let Some(dir) = w.file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(&w.file, serde_json::to_vec(headers).unwrap_or_default());
        };
        match w.kind {
            MarkerOp::Delete if status.is_success() => {
                let _ = std::fs::remove_file(&w.file);
                resp
            }
            MarkerOp::Put(headers) if !copy && status.is_success() => {
                save(&headers);
                resp
            }
            // s3s-fs cannot copy a folder (it answers 500; a refused signature stays refused).
            kind @ (MarkerOp::Put(_) | MarkerOp::Copy(_)) if copy && status == 500 => {
                let headers = match kind {
                    MarkerOp::Put(h) => h,
                    MarkerOp::Copy(src) => read_marker_headers(&src).unwrap_or_default(),
                    MarkerOp::Delete => Vec::new(),
                };
                if std::fs::create_dir_all(&w.folder).is_err() {
                    return resp;
                }
                save(&headers);
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult><LastModified>{}</LastModified><ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag></CopyObjectResult>",
                    iso8601_now()
                );
                let mut r = http::Response::new(s3s::Body::from(body));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/xml"),
                );
                r
            }
            _ => resp,
        }
    }
}

/// s3s-fs answers a DeleteObject or DeleteObjects naming a key that is a folder on its disk
/// ("dir", holding "dir/a") with a 500 (it removes the folder as a file), and stops a
/// DeleteObjects there. In S3 no object has that key, so deleting it succeeds and changes
/// nothing. The hooks below give such a key a stand-in that names nothing on the disk
/// ([`NOT_AN_OBJECT`] + hex of the key); the answer of a DeleteObjects gets the key back.
struct FolderKeysAccess {
    root: PathBuf,
}

const NOT_AN_OBJECT: &str = ".chmura-not-an-object/";

impl FolderKeysAccess {
    fn stand_in(&self, bucket: &str, key: &str) -> Option<String> {
        let folder = !key.ends_with('/')
            && !key.split('/').any(|s| s == ".." || s == ".")
            && self.root.join(bucket).join(key).is_dir();
        folder.then(|| format!("{NOT_AN_OBJECT}{}", hex::encode(key)))
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for FolderKeysAccess {
    async fn delete_object(
        &self,
        req: &mut s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<()> {
        if let Some(k) = self.stand_in(&req.input.bucket, &req.input.key) {
            req.input.key = k;
        }
        Ok(())
    }

    async fn delete_objects(
        &self,
        req: &mut s3s::S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> s3s::S3Result<()> {
        let bucket = req.input.bucket.clone();
        let markers = FolderMarkers {
            root: self.root.clone(),
        };
        for o in &mut req.input.delete.objects {
            if let Some(k) = self.stand_in(&bucket, &o.key) {
                o.key = k;
            }
            // A folder marker deleted in a batch is no longer listed.
            if o.key.ends_with('/') {
                let _ = std::fs::remove_file(markers.file(&bucket, &o.key));
            }
        }
        Ok(())
    }
}

/// A DeleteObjects request (`POST /bucket?delete`).
fn delete_objects_request<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|p| p == "delete" || p == "delete=")
}

/// A store answer whose (small, XML) body `fix` rewrites, with its Content-Length set again.
async fn rewrite_xml(
    resp: http::Response<s3s::Body>,
    fix: impl FnOnce(&str) -> String,
) -> http::Response<s3s::Body> {
    use http_body_util::BodyExt;
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return http::Response::from_parts(parts, s3s::Body::empty());
    };
    let out = fix(&String::from_utf8_lossy(&collected.to_bytes()));
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(out.len()),
    );
    http::Response::from_parts(parts, s3s::Body::from(out))
}

/// A DeleteObjects answer with each stand-in key of [`FolderKeysAccess`] named as the client
/// named it.
fn with_folder_keys_restored(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    let open = format!("<Key>{NOT_AN_OBJECT}");
    while let Some(i) = rest.find(&open) {
        out.push_str(&rest[..i]);
        let after = &rest[i + open.len()..];
        let end = after.find("</Key>").unwrap_or(after.len());
        let key = hex::decode(&after[..end])
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        out.push_str("<Key>");
        out.push_str(&chmura_proxy::error::xml_escape(&key));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A write of an object (PutObject, UploadPart, CreateMultipartUpload, a copy) into a bucket
/// that is not on the store's disk: s3s-fs would make the bucket (S3 answers NoSuchBucket).
fn write_to_missing_bucket<B>(root: &Path, req: &http::Request<B>) -> bool {
    let write = req.method() == http::Method::PUT || req.method() == http::Method::POST;
    let Some((bucket, _key)) = FolderMarkers::bucket_key(req.uri().path()) else {
        return false;
    };
    write
        && bucket != "."
        && bucket != ".."
        && !bucket.contains('\\')
        && !root.join(&bucket).is_dir()
}

/// The bucket of a bucket-level request (`/bucket` or `/bucket/`, no key) with no query.
fn bare_bucket<B>(req: &http::Request<B>) -> Option<String> {
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return None;
    }
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8()
        .ok()?;
    let bucket = path.trim_start_matches('/').trim_end_matches('/');
    (!bucket.is_empty() && !bucket.contains('/') && bucket != "." && bucket != "..")
        .then(|| bucket.to_string())
}

/// Whether a bucket on the store's disk holds an object: a file anywhere under its folder
/// (s3s-fs leaves empty folders behind) or a kept folder marker.
fn bucket_holds_objects(markers: &FolderMarkers, bucket: &str) -> bool {
    fn any_file(dir: &Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| match e.file_type() {
                Ok(t) if t.is_dir() => any_file(&e.path()),
                Ok(_) => true,
                Err(_) => false,
            })
        })
    }
    any_file(&markers.root.join(bucket)) || !markers.markers_of(bucket).is_empty()
}

/// Corrections made before s3s-fs sees a request: it makes a missing bucket for a write
/// into it, deletes a bucket with objects in it, and answers a read of an object in a
/// missing bucket with NoSuchKey.
fn refused_before_the_store<B>(
    markers: &FolderMarkers,
    req: &http::Request<B>,
) -> Option<S3Answer> {
    if write_to_missing_bucket(&markers.root, req) {
        return Some(S3Answer::NoSuchBucket);
    }
    if req.method() == http::Method::DELETE {
        if let Some(b) = bare_bucket(req) {
            if bucket_holds_objects(markers, &b) {
                return Some(S3Answer::BucketNotEmpty);
            }
        }
    }
    if object_read(req) {
        let bucket = FolderMarkers::bucket_key(req.uri().path()).map(|(b, _)| b)?;
        if !markers.root.join(&bucket).is_dir() {
            return Some(if req.method() == http::Method::HEAD {
                S3Answer::NotFoundHead
            } else {
                S3Answer::NoSuchBucket
            });
        }
    }
    None
}

/// s3s-fs neither lists a part's ETag nor checks the ETags a CompleteMultipartUpload names
/// (S3 answers InvalidPart for one that is not the part's). The test store keeps the ETag
/// each UploadPart answered, beside the store's root (`<root>.part-etags/`).
struct PartEtags {
    dir: PathBuf,
}

impl PartEtags {
    fn new(root: &Path) -> PartEtags {
        let mut dir = root.to_path_buf().into_os_string();
        dir.push(".part-etags");
        PartEtags {
            dir: PathBuf::from(dir),
        }
    }

    fn file(&self, upload_id: &str, part: u32) -> Option<PathBuf> {
        (!upload_id.contains(['/', '\\', '.']))
            .then(|| self.dir.join(format!("{upload_id}.{part}")))
    }

    fn get(&self, upload_id: &str, part: u32) -> Option<String> {
        std::fs::read_to_string(self.file(upload_id, part)?).ok()
    }

    fn forget(&self, upload_id: &str, part: u32) {
        if let Some(f) = self.file(upload_id, part) {
            let _ = std::fs::remove_file(f);
        }
    }

    fn put(&self, upload_id: &str, part: u32, etag: &str) {
        if let Some(f) = self.file(upload_id, part) {
            let _ = std::fs::create_dir_all(&self.dir);
            let _ = std::fs::write(f, etag);
        }
    }
}

/// The upload id and part number of an UploadPart or UploadPartCopy, and whether a copy.
fn upload_part_of<B>(req: &http::Request<B>) -> Option<(String, u32, bool)> {
    if req.method() != http::Method::PUT {
        return None;
    }
    let q = chmura_proxy::sigv4::parse_query(req.uri().query()?);
    let arg = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    Some((
        arg("uploadId")?,
        arg("partNumber")?.parse().ok()?,
        req.headers().contains_key("x-amz-copy-source"),
    ))
}

/// The upload id of a CompleteMultipartUpload.
fn complete_of<B>(req: &http::Request<B>) -> Option<String> {
    if req.method() != http::Method::POST {
        return None;
    }
    let q = chmura_proxy::sigv4::parse_query(req.uri().query()?);
    q.into_iter().find(|(k, _)| k == "uploadId").map(|(_, v)| v)
}

/// Whether a Complete names a part by an ETag other than the one its upload answered.
fn names_a_wrong_etag(etags: &PartEtags, upload_id: &str, body: &[u8]) -> bool {
    let norm = |e: &str| e.trim().trim_matches('"').to_ascii_lowercase();
    chmura_proxy::multipart::parse_complete(&String::from_utf8_lossy(body))
        .map(|parts| {
            parts.iter().any(|p| {
                etags
                    .get(upload_id, p.number)
                    .is_some_and(|kept| norm(&kept) != norm(&p.etag))
            })
        })
        .unwrap_or(false)
}

/// An S3 error the test store gives in s3s-fs's place.
enum S3Answer {
    NoSuchBucket,
    NotFoundHead,
    BucketNotEmpty,
    BucketAlreadyOwnedByYou,
    InvalidPart,
    NoSuchUpload,
}

impl S3Answer {
    fn response(self) -> http::Response<s3s::Body> {
        let (status, code, message) = match self {
            S3Answer::NoSuchBucket | S3Answer::NotFoundHead => (
                http::StatusCode::NOT_FOUND,
                "NoSuchBucket",
                "The specified bucket does not exist",
            ),
            S3Answer::BucketNotEmpty => (
                http::StatusCode::CONFLICT,
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty",
            ),
            S3Answer::BucketAlreadyOwnedByYou => (
                http::StatusCode::CONFLICT,
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
            ),
            S3Answer::NoSuchUpload => (
                http::StatusCode::NOT_FOUND,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
            ),
            S3Answer::InvalidPart => (
                http::StatusCode::BAD_REQUEST,
                "InvalidPart",
                "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
            ),
        };
        let body = match self {
            S3Answer::NotFoundHead => String::new(),
            _ => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            ),
        };
        let mut resp = http::Response::new(s3s::Body::from(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml"),
        );
        resp
    }
}

/// A GetObject or HeadObject request: a GET or HEAD of a key with no sub-resource.
fn object_read<B>(req: &http::Request<B>) -> bool {
    (req.method() == http::Method::GET || req.method() == http::Method::HEAD)
        && req.uri().path().trim_matches('/').contains('/')
        && !req.uri().query().unwrap_or("").split('&').any(|p| {
            let name = p.split('=').next().unwrap_or("");
            name == "uploadId" || chmura_proxy::ops::is_subresource(name)
        })
}

/// A ListParts request (a GET of an object with an `uploadId`): its upload id.
fn parts_listing<B>(req: &http::Request<B>) -> Option<String> {
    if req.method() != http::Method::GET || !req.uri().path().trim_matches('/').contains('/') {
        return None;
    }
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("uploadId="))
        .map(|id| {
            percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// s3s-fs 0.14.1 lists parts of any upload id, aborted, completed or never created, as an
/// empty list; S3 answers NoSuchUpload. s3s-fs keeps `.upload-<id>.json` in its root while an
/// upload is open.
fn upload_is_open(root: &Path, upload_id: &str) -> bool {
    !upload_id.contains(['/', '\\']) && root.join(format!(".upload-{upload_id}.json")).exists()
}

/// s3s-fs 0.14.1 lists an upload's parts in the order they arrived and without their ETags;
/// S3 lists them by part number, with ETags. Sorts them (the test store's uploads fit in one
/// page) and adds the ETags kept from their uploads.
fn with_parts_in_order(xml: &str, etags: &PartEtags, upload_id: &str) -> String {
    let (Some(first), Some(last)) = (xml.find("<Part>"), xml.rfind("</Part>")) else {
        return xml.to_string();
    };
    let end = last + "</Part>".len();
    let mut entries: Vec<&str> = Vec::new();
    let mut rest = &xml[first..end];
    while let Some(i) = rest.find("</Part>") {
        let j = i + "</Part>".len();
        entries.push(&rest[..j]);
        rest = &rest[j..];
    }
    let number = |e: &str| {
        chmura_proxy::multipart::tag_values(e, "PartNumber")
            .first()
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    entries.sort_by_key(|e| number(e));
    let esc = chmura_proxy::error::xml_escape;
    let entries: Vec<String> = entries
        .into_iter()
        .map(|e| match etags.get(upload_id, number(e)) {
            Some(etag) if !e.contains("<ETag>") => e.replacen(
                "</PartNumber>",
                &format!("</PartNumber><ETag>{}</ETag>", esc(&etag)),
                1,
            ),
            _ => e.to_string(),
        })
        .collect();
    format!("{}{}{}", &xml[..first], entries.concat(), &xml[end..])
}

/// A ListObjects (v1 or v2) request: a GET of a bucket with no sub-resource.
fn object_listing<B>(req: &http::Request<B>) -> bool {
    let bucket_only = !req.uri().path().trim_matches('/').contains('/');
    req.method() == http::Method::GET
        && bucket_only
        && req.uri().path() != "/"
        && !req.uri().query().unwrap_or("").split('&').any(|p| {
            let name = p.split('=').next().unwrap_or("");
            chmura_proxy::ops::is_subresource(name)
        })
}

/// s3s-fs 0.14.1 answers `encoding-type=url` with `<EncodingType>url</EncodingType>` but its
/// keys and prefixes as stored: a client then decodes `foo-%` (minio-go fails on it) or
/// `a%2Bb` into something else. Encodes them as S3 does (form encoding: a space is `+`; `/`
/// and `-_.~` stay).
fn url_encoded_listing(xml: &str) -> String {
    use chmura_proxy::multipart::{replace_tag, unescape};
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/')
        .remove(b' ');
    let encode = |v: &str| {
        let raw = unescape(v);
        let enc: String = percent_encoding::utf8_percent_encode(&raw, KEEP).collect();
        chmura_proxy::error::xml_escape(&enc.replace(' ', "+"))
    };
    let mut out = xml.to_string();
    for tag in [
        "Key",
        "Prefix",
        "Delimiter",
        "Marker",
        "NextMarker",
        "StartAfter",
    ] {
        out = replace_tag(&out, tag, encode);
    }
    out
}

/// The store's one owner, as listings name it (S3's canonical user ids are 64 hex digits).
fn store_owner_xml() -> String {
    format!(
        "<Owner><ID>{}</ID><DisplayName>chmura-dev-store</DisplayName></Owner>",
        raw::sha256_hex(UPSTREAM_AK.as_bytes())
    )
}

/// s3s-fs answers ListBuckets without the owner, which S3 names.
fn with_buckets_owner(xml: &str) -> String {
    let mut xml = xml.to_string();
    if !xml.contains("<Owner>") {
        if let Some(i) = xml
            .find("<ListAllMyBucketsResult")
            .and_then(|i| xml[i..].find('>').map(|j| i + j + 1))
        {
            xml.insert_str(i, &store_owner_xml());
        }
    }
    xml
}

/// s3s-fs lists objects without their storage class and owner; S3 lists `STANDARD` (the test
/// store's only class) and, in ListObjects v1 and a v2 listing with `fetch-owner=true`, the
/// owner.
fn with_storage_class_and_owner(xml: &str, owner: bool) -> String {
    let mut out = String::with_capacity(xml.len() + 64);
    let mut rest = xml;
    while let Some(i) = rest.find("</Contents>") {
        let entry = &rest[..i];
        let start = entry.rfind("<Contents>").unwrap_or(0);
        out.push_str(entry);
        let this = &entry[start..];
        if !this.contains("<StorageClass>") {
            out.push_str("<StorageClass>STANDARD</StorageClass>");
        }
        if owner && !this.contains("<Owner>") {
            out.push_str(&store_owner_xml());
        }
        out.push_str("</Contents>");
        rest = &rest[i + "</Contents>".len()..];
    }
    out.push_str(rest);
    out
}

/// A listing's entry: a key (`<Contents>`) or a common prefix, with its XML.
struct ListEntry {
    name: String,
    xml: String,
}

impl FolderMarkers {
    /// The folder markers of `bucket` that exist: a kept marker whose folder is on the disk.
    fn markers_of(&self, bucket: &str) -> Vec<(String, std::time::SystemTime)> {
        let mut dir = self.root.clone().into_os_string();
        dir.push(".folder-markers");
        let Ok(rd) = std::fs::read_dir(PathBuf::from(dir)) else {
            return Vec::new();
        };
        let want = format!("{bucket}/");
        rd.flatten()
            .filter_map(|e| {
                let name = String::from_utf8(hex::decode(e.file_name().to_str()?).ok()?).ok()?;
                let key = name.strip_prefix(&want)?.to_string();
                let mtime = e.metadata().ok()?.modified().ok()?;
                self.root
                    .join(bucket)
                    .join(&key)
                    .is_dir()
                    .then_some((key, mtime))
            })
            .collect()
    }

    /// s3s-fs keeps a folder marker as a folder, which its listings leave out (or show as a
    /// common prefix only while something is in it); S3 lists the marker as a key. Adds the
    /// kept markers to the page as S3 would: as keys, or rolled into their common prefix
    /// under a delimiter, in key order, within the page's window (after its start, up to its
    /// last entry when truncated), keeping `max-keys` (a page cut short ends with a
    /// continuation at its new last key, s3s-fs's own form of the token).
    fn with_markers_listed(&self, xml: &str, bucket: &str, query: &str) -> String {
        use chmura_proxy::multipart::{tag_values, unescape};
        let markers = self.markers_of(bucket);
        if markers.is_empty() {
            return xml.to_string();
        }
        let q: Vec<(String, String)> = chmura_proxy::sigv4::parse_query(query);
        let arg = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let v2 = arg("list-type").as_deref() == Some("2");
        let prefix = arg("prefix").unwrap_or_default();
        let delimiter = arg("delimiter").filter(|d| !d.is_empty());
        let max_keys: usize = arg("max-keys").and_then(|m| m.parse().ok()).unwrap_or(1000);
        let after = if v2 {
            std::cmp::max(arg("start-after"), arg("continuation-token")).unwrap_or_default()
        } else {
            arg("marker").unwrap_or_default()
        };
        // Pull the page's entries out of the answer.
        let mut entries: Vec<ListEntry> = Vec::new();
        let mut rest_xml = String::with_capacity(xml.len());
        let mut rest = xml;
        // Where the entries go back (the place of the first one).
        const SLOT: &str = "\u{0}entries\u{0}";
        let mut slot = false;
        loop {
            let c = rest.find("<Contents>");
            let p = rest.find("<CommonPrefixes>");
            let (i, close, tag) = match (c, p) {
                (Some(c), Some(p)) if p < c => (p, "</CommonPrefixes>", "Prefix"),
                (Some(c), _) => (c, "</Contents>", "Key"),
                (None, Some(p)) => (p, "</CommonPrefixes>", "Prefix"),
                (None, None) => break,
            };
            let end = rest[i..]
                .find(close)
                .map_or(rest.len(), |e| i + e + close.len());
            rest_xml.push_str(&rest[..i]);
            if !slot {
                rest_xml.push_str(SLOT);
                slot = true;
            }
            let entry = &rest[i..end];
            let name = tag_values(entry, tag)
                .first()
                .map(|n| unescape(n))
                .unwrap_or_default();
            entries.push(ListEntry {
                name,
                xml: entry.to_string(),
            });
            rest = &rest[end..];
        }
        rest_xml.push_str(rest);
        let truncated = xml.contains("<IsTruncated>true</IsTruncated>");
        let upto = truncated
            .then(|| entries.iter().map(|e| e.name.clone()).max())
            .flatten();
        let esc = chmura_proxy::error::xml_escape;
        for (key, mtime) in markers {
            let Some(tail) = key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let rolled = delimiter
                .as_deref()
                .and_then(|d| tail.find(d).map(|i| (d, i)));
            let name = match rolled {
                Some((d, i)) => key[..prefix.len() + i + d.len()].to_string(),
                None => key.clone(),
            };
            let in_window =
                name.as_str() > after.as_str() && upto.as_ref().is_none_or(|u| &name <= u);
            if !in_window || entries.iter().any(|e| e.name == name) {
                continue;
            }
            let xml = if rolled.is_none() {
                format!(
                    "<Contents><Key>{}</Key><ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><LastModified>{}</LastModified><Size>0</Size></Contents>",
                    esc(&key),
                    iso8601(mtime)
                )
            } else {
                format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    esc(&name)
                )
            };
            entries.push(ListEntry { name, xml });
        }
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut out = rest_xml;
        if entries.len() > max_keys {
            entries.truncate(max_keys);
            let last = entries.last().map(|e| e.name.clone()).unwrap_or_default();
            out = out.replace(
                "<IsTruncated>false</IsTruncated>",
                "<IsTruncated>true</IsTruncated>",
            );
            let (tag, have) = if v2 {
                (
                    "NextContinuationToken",
                    out.contains("<NextContinuationToken>"),
                )
            } else {
                ("NextMarker", out.contains("<NextMarker>"))
            };
            if have {
                out = chmura_proxy::multipart::replace_tag(&out, tag, |_| esc(&last));
            } else if let Some(i) = out.find("</IsTruncated>") {
                out.insert_str(
                    i + "</IsTruncated>".len(),
                    &format!("<{tag}>{}</{tag}>", esc(&last)),
                );
            }
        }
        if v2 {
            out = chmura_proxy::multipart::replace_tag(&out, "KeyCount", |_| {
                entries.len().to_string()
            });
        }
        let block: String = entries.iter().map(|e| e.xml.as_str()).collect();
        if !slot {
            let at = ["<Delimiter>", "<EncodingType>", "</ListBucketResult>"]
                .iter()
                .find_map(|t| out.find(t))
                .unwrap_or(out.len());
            out.insert_str(at, SLOT);
        }
        out.replace(SLOT, &block)
    }

    /// An object listing as S3 gives it. s3s-fs 0.14.1 lists objects without their ETags (S3
    /// always lists them; s3cmd's sync compares them): adds each one, the ETag s3s-fs saved
    /// with the object, else the MD5 of its file (an empty object's for a folder). Then the
    /// folder markers, storage classes and owners, and the `encoding-type=url` encoding.
    fn listing_fixed(&self, xml: &str, query: &str) -> String {
        use chmura_proxy::multipart::{tag_values, unescape};
        let bucket = tag_values(xml, "Name")
            .first()
            .map(|b| unescape(b))
            .unwrap_or_default();
        let url_encoded = xml.contains("<EncodingType>url</EncodingType>");
        let mut out = String::with_capacity(xml.len() + 64);
        let mut rest = xml;
        while let Some(i) = rest.find("<Contents>") {
            let end = rest[i..].find("</Contents>").map_or(rest.len(), |e| i + e);
            let entry = &rest[i..end];
            out.push_str(&rest[..i]);
            match tag_values(entry, "Key").first() {
                Some(key) if !entry.contains("<ETag>") => {
                    // s3s-fs lists keys as stored even when asked for `encoding-type=url`
                    // (they are encoded below).
                    let etag = self.etag_of(&bucket, &unescape(key));
                    let at = entry
                        .find("</Key>")
                        .map_or(entry.len(), |k| k + "</Key>".len());
                    out.push_str(&entry[..at]);
                    out.push_str(&format!("<ETag>&quot;{etag}&quot;</ETag>"));
                    out.push_str(&entry[at..]);
                }
                _ => out.push_str(entry),
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        let out = self.with_markers_listed(&out, &bucket, query);
        let fetch_owner = !query.contains("list-type=2") || query.contains("fetch-owner=true");
        let out = with_storage_class_and_owner(&out, fetch_owner);
        if url_encoded {
            url_encoded_listing(&out)
        } else {
            out
        }
    }

    fn etag_of(&self, bucket: &str, key: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let info = self.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            b64(bucket),
            b64(key)
        ));
        let saved = std::fs::read(info)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("e_tag")?.as_str().map(str::to_string));
        if let Some(e) = saved {
            return e;
        }
        use md5::Digest as _;
        let mut h = md5::Md5::new();
        if let Ok(mut f) = std::fs::File::open(self.root.join(bucket).join(key)) {
            if f.metadata().is_ok_and(|m| m.is_file()) {
                let _ = std::io::copy(&mut f, &mut h);
            }
        }
        hex::encode(h.finalize())
    }
}

/// A marker's kept headers; `None` when no marker was written there.
fn read_marker_headers(file: &Path) -> Option<Vec<(String, String)>> {
    let b = std::fs::read(file).ok()?;
    Some(serde_json::from_slice(&b).unwrap_or_default())
}

/// The current time as S3's XML writes it (`2026-01-02T03:04:05.000Z`).
fn iso8601_now() -> String {
    iso8601(std::time::SystemTime::now())
}

/// A time as S3's XML writes it.
fn iso8601(time: std::time::SystemTime) -> String {
    let t = raw::amz_date(time); // YYYYMMDDTHHMMSSZ
    format!(
        "{}-{}-{}T{}:{}:{}.000Z",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[9..11],
        &t[11..13],
        &t[13..15]
    )
}

/// A path-style HEAD or GET of an object key that is a folder on the store's disk.
struct FolderKey {
    head: bool,
    /// The key ends in "/": a folder marker (s3s-fs keeps an empty "dir/" as the folder).
    marker: bool,
    modified: Option<std::time::SystemTime>,
    /// The marker's Content-Type and user metadata, as written; `None` when no marker was
    /// written (a folder s3s-fs made for the keys under it: S3 has no object there).
    headers: Option<Vec<(String, String)>>,
}

fn folder_key<B>(markers: &FolderMarkers, req: &http::Request<B>) -> Option<FolderKey> {
    let head = req.method() == http::Method::HEAD;
    if !(head || req.method() == http::Method::GET) || req.uri().query().is_some() {
        return None;
    }
    let (bucket, key) = FolderMarkers::bucket_key(req.uri().path())?;
    let meta = std::fs::metadata(markers.root.join(&bucket).join(&key)).ok()?;
    let marker = key.ends_with('/');
    meta.is_dir().then(|| FolderKey {
        head,
        marker,
        modified: meta.modified().ok(),
        headers: marker
            .then(|| read_marker_headers(&markers.file(&bucket, &key)))
            .flatten(),
    })
}

/// What S3 answers where s3s-fs fails (500) on a folder: a folder marker ("dir/") that was
/// written is an empty object with its headers; a folder s3s-fs made for the keys under it,
/// or the folder's name without the slash ("dir"), is no object.
fn folder_answer(f: FolderKey) -> http::Response<s3s::Body> {
    let (found, headers) = match f.headers {
        Some(h) if f.marker => (true, h),
        _ => (false, Vec::new()),
    };
    let body = if f.head || found {
        s3s::Body::empty()
    } else {
        s3s::Body::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
                .to_string(),
        )
    };
    let mut resp = http::Response::new(body);
    if !found {
        *resp.status_mut() = http::StatusCode::NOT_FOUND;
    }
    let h = resp.headers_mut();
    if found {
        h.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("0"),
        );
        h.insert(
            http::header::ETAG,
            http::HeaderValue::from_static("\"d41d8cd98f00b204e9800998ecf8427e\""),
        );
        if let Some(t) = f.modified {
            if let Ok(v) = http::HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
                h.insert(http::header::LAST_MODIFIED, v);
            }
        }
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        for (n, v) in &headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                h.insert(n, v);
            }
        }
    } else if !f.head {
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml"),
        );
    }
    resp
}

impl Store {
    pub async fn start(root: &Path) -> Store {
        Store::start_on(root, ("127.0.0.1", 0)).await
    }

    pub async fn start_on(root: &Path, addr: impl tokio::net::ToSocketAddrs) -> Store {
        Store::start_with(root, addr, None).await
    }

    /// A store served over TLS with `certs` (as the S3 of a real deployment is).
    pub async fn start_tls(root: &Path, certs: &TestCerts) -> Store {
        Store::start_with(root, ("127.0.0.1", 0), Some(certs)).await
    }

    /// [`Store::start_tls`] on a given address.
    pub async fn start_tls_on(
        root: &Path,
        addr: impl tokio::net::ToSocketAddrs,
        certs: &TestCerts,
    ) -> Store {
        Store::start_with(root, addr, Some(certs)).await
    }

    async fn start_with(
        root: &Path,
        addr: impl tokio::net::ToSocketAddrs,
        certs: Option<&TestCerts>,
    ) -> Store {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use rustls_pki_types::pem::PemObject;
        let acceptor = certs.map(|c| {
            let chain = rustls_pki_types::CertificateDer::pem_file_iter(&c.cert_file)
                .expect("store cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("store cert");
            let key =
                rustls_pki_types::PrivateKeyDer::from_pem_file(&c.key_file).expect("store key");
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("store TLS config");
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let tls = acceptor.is_some();
        std::fs::create_dir_all(root).expect("store root");
        let root_dir = root.to_path_buf();
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(UPSTREAM_AK, UPSTREAM_SK));
        b.set_access(FolderKeysAccess {
            root: root_dir.clone(),
        });
        let service = b.build();
        let listener = TcpListener::bind(addr).await.expect("bind store");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = oneshot::channel::<()>();
        let markers = Arc::new(FolderMarkers {
            root: root_dir.clone(),
        });
        let limit = throttle::store_limit();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let (sock, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = &mut rx => break,
                };
                let _ = sock.set_nodelay(true);
                let sock = throttle::Throttled::new(sock, limit);
                // s3s-fs reads files in 4 KiB pieces (each a blocking-pool round trip) and hands
                // each to the connection as its own frame; production stores (S3, MinIO) send
                // large writes. Bodies are sent in 256 KiB frames, so the store's peers see a
                // store that writes like theirs.
                let service = service.clone();
                let markers = markers.clone();
                let coalesced =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let folder = folder_key(&markers, &req);
                        let write = markers.write_of(&req);
                        let copy = req.headers().contains_key("x-amz-copy-source");
                        let listing = object_listing(&req).then(|| markers.clone());
                        let query = req.uri().query().unwrap_or("").to_string();
                        let markers = markers.clone();
                        let deletes = delete_objects_request(&req);
                        let parts = parts_listing(&req);
                        let read = object_read(&req);
                        let list_buckets =
                            req.method() == http::Method::GET && req.uri().path() == "/";
                        let refused = refused_before_the_store(&markers, &req);
                        // s3s-fs says BucketAlreadyExists to the bucket's own (only) owner.
                        let create_bucket =
                            req.method() == http::Method::PUT && bare_bucket(&req).is_some();
                        let part = upload_part_of(&req);
                        let complete = complete_of(&req);
                        let etags = PartEtags::new(&markers.root);
                        async move {
                            if let Some(answer) = refused {
                                return Ok(answer
                                    .response()
                                    .map(|b| FillBody::new(b, 64 * 1024, None)));
                            }
                            let mut req = req.map(s3s::Body::from);
                            if let Some(id) = &complete {
                                // A Complete's XML is small: read it, check it, hand it on.
                                use http_body_util::BodyExt;
                                let (head, body) = req.into_parts();
                                let bytes = match body.collect().await {
                                    Ok(c) => c.to_bytes(),
                                    Err(_) => bytes::Bytes::new(),
                                };
                                if names_a_wrong_etag(&etags, id, &bytes) {
                                    return Ok(S3Answer::InvalidPart
                                        .response()
                                        .map(|b| FillBody::new(b, 64 * 1024, None)));
                                }
                                req = http::Request::from_parts(head, s3s::Body::from(bytes));
                            }
                            if let Some((id, n, _)) = &part {
                                etags.forget(id, *n);
                            }
                            let resp = service.call(req).await?;
                            // An UploadPartCopy's ETag is in its body: its part goes unchecked.
                            if let (Some((id, n, false)), true) =
                                (&part, resp.status().is_success())
                            {
                                if let Some(etag) = resp
                                    .headers()
                                    .get(http::header::ETAG)
                                    .and_then(|v| v.to_str().ok())
                                {
                                    etags.put(id, *n, etag);
                                }
                            }
                            let resp = if create_bucket && resp.status() == 409 {
                                S3Answer::BucketAlreadyOwnedByYou.response()
                            } else {
                                resp
                            };
                            let resp = match (folder, write) {
                                // s3s-fs answers a HEAD or GET of a key that is a folder on
                                // its disk with a 500 (it reads the folder as a file).
                                (Some(f), _) if resp.status() == 500 => folder_answer(f),
                                (_, Some(w)) => FolderMarkers::after(w, copy, resp),
                                _ => resp,
                            };
                            let mut resp = resp;
                            // s3s-fs answers an object stored without a Content-Type
                            // without one; S3 says `binary/octet-stream`.
                            if read
                                && resp.status().is_success()
                                && !resp.headers().contains_key(http::header::CONTENT_TYPE)
                            {
                                resp.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("binary/octet-stream"),
                                );
                            }
                            let resp = match (listing, parts.as_deref()) {
                                _ if resp.status() != 200 => resp,
                                (Some(m), _) => {
                                    rewrite_xml(resp, |x| m.listing_fixed(x, &query)).await
                                }
                                _ if deletes => rewrite_xml(resp, with_folder_keys_restored).await,
                                _ if list_buckets => rewrite_xml(resp, with_buckets_owner).await,
                                (_, Some(id)) if !upload_is_open(&markers.root, id) => {
                                    S3Answer::NoSuchUpload.response()
                                }
                                (_, Some(id)) => {
                                    rewrite_xml(resp, |x| with_parts_in_order(x, &etags, id)).await
                                }
                                _ => resp,
                            };
                            let len = resp
                                .headers()
                                .get(http::header::CONTENT_LENGTH)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            Ok::<_, s3s::HttpError>(resp.map(|b| FillBody::new(b, 64 * 1024, len)))
                        }
                    });
                let http = http.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(sock), coalesced).await;
                        }
                        Some(a) => {
                            if let Ok(tls) = a.accept(sock).await {
                                let _ = http.serve_connection(TokioIo::new(tls), coalesced).await;
                            }
                        }
                    }
                });
            }
        });
        Store {
            addr,
            root: root.to_path_buf(),
            tls,
            _stop: tx,
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The stored bytes of an object, read directly from the store's disk.
    pub fn stored(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(bucket).join(key)).ok()
    }
}

/// Options for a Chmura instance under test.
#[derive(Default, Clone)]
pub struct ProxyOptions {
    pub min_tls: Option<&'static str>,
    pub virtual_host_domain: Option<String>,
    pub extra_server: String,
    /// Upstream endpoint override (default: the harness store).
    pub upstream_endpoint: Option<String>,
    /// Encrypt bodies with a local keyring (`[kms]`); otherwise `insecure_no_encryption`.
    pub encrypt: bool,
    /// Extra lines for the `[kms]` section.
    pub extra_kms: String,
    /// A whole `[kms]` section replacing the local keyring one (with `encrypt`).
    pub kms_section: Option<String>,
    /// The local keyring's text (default: a new keyring), to run replicas with one keyring.
    pub keyring: Option<String>,
    /// The tenant's IAM policy JSON (default: allow `s3:*` on `*`; empty: no policy at all).
    pub policy: Option<String>,
    /// A base32 TOTP secret: the tenant gets MFA device `test-mfa` with it.
    pub mfa_secret: Option<String>,
    /// TOML appended to the config (whole sections such as `[audit]`).
    pub extra_sections: String,
    /// Lines added to `[upstream]`.
    pub extra_upstream: String,
    /// Files written (mode 0600) into the proxy's folder before the config loads.
    pub files: Vec<(String, String)>,
}

/// The policy test tenants get unless a test gives its own: everything in S3.
pub const ALLOW_ALL_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;

/// A running Chmura in front of a store.
pub struct Proxy {
    pub state: Arc<chmura_proxy::State>,
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The admin listener (/metrics, /healthz, /readyz), always bound in tests.
    pub admin_addr: SocketAddr,
    pub certs: TestCerts,
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    pub async fn start(dir: &Path, upstream_endpoint: &str, opts: ProxyOptions) -> Proxy {
        chmura_proxy::install_crypto_provider();
        std::fs::create_dir_all(dir).expect("dir");
        let certs = TestCerts::generate(dir);
        write_private(&dir.join("tenant.secret"), TENANT_SK);
        write_private(&dir.join("upstream.secret"), UPSTREAM_SK);
        std::fs::write(
            dir.join("policy.json"),
            opts.policy.as_deref().unwrap_or(ALLOW_ALL_POLICY),
        )
        .expect("policy");
        if let Some(m) = &opts.mfa_secret {
            write_private(&dir.join("mfa.totp"), m);
        }
        for (name, text) in &opts.files {
            write_private(&dir.join(name), text);
        }
        let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tls.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("addr");
        let vhost = opts
            .virtual_host_domain
            .as_ref()
            .map(|d| format!("virtual_host_domain = \"{d}\"\n"))
            .unwrap_or_default();
        let config = format!(
            r#"[server]
listen = "{addr}"
insecure_http_listen = "{http_addr}"
tls_cert_file = "cert.pem"
tls_key_file = "key.pem"
min_tls_version = "{min_tls}"
region = "{REGION}"
header_read_timeout_secs = 5
body_idle_timeout_secs = 5
shutdown_grace_secs = 10
{vhost}{extra}
[upstream]
endpoint = "{upstream}"
region = "{REGION}"
path_style = true
access_key_id = "{UPSTREAM_AK}"
secret_access_key_file = "upstream.secret"

[[tenants]]
name = "test"
access_key_id = "{TENANT_AK}"
secret_access_key_file = "tenant.secret"
{policy}{mfa}"#,
            policy = if opts.policy.as_deref() == Some("") {
                ""
            } else {
                "policy_files = [\"policy.json\"]\n"
            },
            mfa = if opts.mfa_secret.is_some() {
                "\n[[tenants.mfa_devices]]\nserial = \"test-mfa\"\nsecret_file = \"mfa.totp\"\n"
            } else {
                ""
            },
            min_tls = opts.min_tls.unwrap_or("1.2"),
            extra = opts.extra_server,
            upstream = opts
                .upstream_endpoint
                .as_deref()
                .unwrap_or(upstream_endpoint),
        );
        let kms = if opts.encrypt {
            let ring = match &opts.keyring {
                Some(text) => text.clone(),
                None => chmura_crypto::envelope::Keyring::generate("main")
                    .expect("keyring")
                    .to_string(),
            };
            write_private(&dir.join("chmura.keyring"), &ring);
            match &opts.kms_section {
                Some(section) => format!("{section}\n"),
                None => format!(
                    "[kms]\nprovider = \"local\"\nkey_file = \"chmura.keyring\"\n{}\n",
                    opts.extra_kms
                ),
            }
        } else {
            String::new()
        };
        let insecure = if opts.encrypt {
            ""
        } else {
            "insecure_no_encryption = true\n"
        };
        let config = config.replacen("[upstream]", &format!("{insecure}\n{kms}[upstream]"), 1);
        let config = config.replacen(
            "[upstream]\n",
            &format!("[upstream]\n{}", opts.extra_upstream),
            1,
        );
        let config = format!("{config}\n{}", opts.extra_sections);
        let config_path = dir.join("chmura.toml");
        std::fs::write(&config_path, config).expect("write config");
        Proxy::launch(dir, certs, (tls, http, admin), &config_path).await
    }

    /// Serves an existing config file (its `listen` is ignored: the harness binds 127.0.0.1
    /// ports). The directory must hold `cert.pem`/`key.pem` from [`TestCerts::generate`].
    pub async fn serve_config(dir: &Path, config_path: &Path) -> Proxy {
        chmura_proxy::install_crypto_provider();
        let certs = TestCerts::load(dir);
        let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Proxy::launch(dir, certs, (tls, http, admin), config_path).await
    }

    /// Loads `config_path` and serves it on the given listeners until the proxy is dropped.
    async fn launch(
        dir: &Path,
        certs: TestCerts,
        (tls, http, admin): (TcpListener, TcpListener, TcpListener),
        config_path: &Path,
    ) -> Proxy {
        let addr = tls.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("addr");
        let config = chmura_config::Config::load(config_path).expect("config loads");
        let state = Arc::new(chmura_proxy::State::new(config).await.expect("state"));
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = chmura_proxy::Listeners {
            tls,
            insecure_http: Some(http),
            admin: Some(admin),
        };
        let task = tokio::spawn(chmura_proxy::serve(listeners, state.clone(), async move {
            let _ = rx.await;
        }));
        Proxy {
            state,
            addr,
            http_addr,
            admin_addr,
            certs,
            dir: dir.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// An SDK client with other credentials (another tenant).
    pub fn sdk_client_as(&self, ak: &str, sk: &str) -> aws_sdk_s3::Client {
        sdk_client(&self.endpoint(), Some(&self.certs.ca_pem), ak, sk)
    }

    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_addr.port())
    }

    /// Triggers graceful shutdown and waits for `serve` to return.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("serve task"),
            None => Ok(()),
        }
    }

    /// An aws-sdk-s3 client for the tenant, over TLS with the test CA, path-style.
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        sdk_client(
            &self.endpoint(),
            Some(&self.certs.ca_pem),
            TENANT_AK,
            TENANT_SK,
        )
    }
}

/// An aws-sdk-s3 client with default settings except endpoint, trust and path-style.
pub fn sdk_client(endpoint: &str, ca_pem: Option<&str>, ak: &str, sk: &str) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let mut trust = TrustStore::empty();
    if let Some(pem) = ca_pem {
        trust = trust.with_pem_certificate(pem.as_bytes().to_vec());
    }
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .expect("tls ctx"),
        )
        .build_https();
    let creds = aws_credential_types::Credentials::new(ak, sk, None, None, "test");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .http_client(http)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(120))
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Store + proxy, in a temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub proxy: Proxy,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(ProxyOptions::default()).await
    }

    pub async fn start_with(opts: ProxyOptions) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::start(&dir.path().join("store")).await;
        let proxy = Proxy::start(&dir.path().join("proxy"), &store.endpoint(), opts).await;
        Env { dir, store, proxy }
    }

    /// Creates a bucket directly in the store.
    pub fn make_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.store.root.join(name)).expect("bucket dir");
    }
}

/// Chmura with encryption on in front of moto_server (for what s3s-fs lacks); `None` (the
/// test skips) when moto is not installed and not required.
pub async fn encrypted_env_on_moto(test: &str) -> Option<(Moto, Env)> {
    let program = tools::require("moto_server", test)?;
    let moto = Moto::start(&program).await;
    let env = Env::start_with(ProxyOptions {
        encrypt: true,
        upstream_endpoint: Some(moto.endpoint.clone()),
        ..Default::default()
    })
    .await;
    Some((moto, env))
}

/// Deterministic pseudo-random bytes (xorshift), for bodies whose content matters.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// moto_server on a free port; killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // moto_server is one process; no signal to a process group (a stray `kill -<n>` can
        // reach far more than the server).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto_server (S3 and KMS on one port) on 127.0.0.1 and waits for it.
    pub async fn start(program: &Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        // Moto owns the child from the start, so it is killed and reaped on every path.
        let moto = Moto {
            child: std::process::Command::new(program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("moto_server starts"),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Ready when it answers HTTP, not merely when the port accepts.
        for _ in 0..300 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 5];
                let sent = s
                    .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    .await
                    .is_ok();
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut buf))
                        .await;
                if sent && matches!(read, Ok(Ok(_))) && &buf == b"HTTP/" {
                    return moto;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("moto_server did not start on port {port}");
    }
}
