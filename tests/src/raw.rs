//! A raw HTTP/1.1 requester for malformed and edge-case requests (garage's custom_requester
//! idea), with SigV4 signing through the `aws-sigv4` crate and chunk signing written here from
//! the AWS documentation, independently of Chmura's own code.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::{digest, hmac};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request to be written byte for byte.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    /// Path and query, already encoded as they go on the wire.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send no Content-Length even without Transfer-Encoding (a body-less request that does
    /// not say so).
    pub omit_length: bool,
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `<Code>` of an S3 error body.
    pub fn code(&self) -> Option<String> {
        let t = self.text();
        let s = t.find("<Code>")? + 6;
        let e = t[s..].find("</Code>")? + s;
        Some(t[s..e].to_string())
    }
}

impl RawRequest {
    pub fn new(method: &str, target: &str) -> Self {
        RawRequest {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            omit_length: false,
        }
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.to_ascii_lowercase(), v.to_string()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
    pub fn get(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    }

    /// Signs with SigV4 (Authorization header) for the given payload hash value.
    pub fn sign_v4(
        mut self,
        host: &str,
        ak: &str,
        sk: &str,
        payload_hash: &str,
        time: SystemTime,
    ) -> Self {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode,
        };
        if self.get("host").is_none() {
            self.headers.push(("host".into(), host.into()));
        }
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = aws_credential_types::Credentials::new(ak, sk, None, None, "raw").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(crate::REGION)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .expect("params")
            .into();
        let uri = format!("https://{host}{}", self.target);
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .filter(|(k, _)| k != "content-length" && k != "transfer-encoding")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let signable = SignableRequest::new(
            &self.method,
            &uri,
            headers.into_iter(),
            SignableBody::Precomputed(payload_hash.to_string()),
        )
        .expect("signable");
        let (instr, _sig) = sign(signable, &params).expect("sign").into_parts();
        let (hs, _) = instr.into_parts();
        for h in hs {
            self.headers
                .push((h.name().to_string(), h.value().to_string()));
        }
        self
    }

    /// The seed signature of a signed request (for chunk chains).
    pub fn seed_signature(&self) -> String {
        let auth = self.get("authorization").expect("signed");
        auth.rsplit("Signature=").next().expect("sig").to_string()
    }

    /// Serializes with Host (if missing), Content-Length (unless chunked) and Connection: close.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        if self.get("host").is_none() {
            out.extend_from_slice(format!("host: {host}\r\n").as_bytes());
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if self.get("content-length").is_none()
            && self.get("transfer-encoding").is_none()
            && !self.omit_length
        {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

pub fn sha256_hex(d: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, d))
}

fn hmac256(k: &[u8], d: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), d)
        .as_ref()
        .to_vec()
}

/// The SigV4 signing key (AWS docs: kDate → kRegion → kService → kSigning).
pub fn signing_key(sk: &str, date: &str) -> Vec<u8> {
    let k = hmac256(format!("AWS4{sk}").as_bytes(), date.as_bytes());
    let k = hmac256(&k, crate::REGION.as_bytes());
    let k = hmac256(&k, b"s3");
    hmac256(&k, b"aws4_request")
}

/// Frames `data` as a signed aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]).
/// `tamper` flips a bit of chunk `tamper.0` after signing. `trailer` appends a signed trailer.
pub fn signed_chunked_body(
    data: &[u8],
    chunk: usize,
    sk: &str,
    amz_date: &str,
    seed: &str,
    trailer: Option<(&str, &str)>,
    tamper: Option<usize>,
) -> Vec<u8> {
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/s3/aws4_request", crate::REGION);
    let key = signing_key(sk, date);
    let empty = sha256_hex(b"");
    let mut prev = seed.to_string();
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    pieces.push(&[]);
    for (i, p) in pieces.iter().enumerate() {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{empty}\n{}",
            sha256_hex(p)
        );
        let sig = hex::encode(hmac256(&key, sts.as_bytes()));
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", p.len()).as_bytes());
        let mut d = p.to_vec();
        if tamper == Some(i) && !d.is_empty() {
            d[0] ^= 0x01;
        }
        out.extend_from_slice(&d);
        if !(p.is_empty() && trailer.is_some()) {
            out.extend_from_slice(b"\r\n");
        }
        prev = sig;
    }
    if let Some((n, v)) = trailer {
        let canonical = format!("{n}:{v}\n");
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{prev}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let sig = hex::encode(hmac256(&key, sts.as_bytes()));
        out.extend_from_slice(
            format!("{n}:{v}\r\nx-amz-trailer-signature:{sig}\r\n\r\n").as_bytes(),
        );
    }
    out
}

/// Frames `data` as an unsigned aws-chunked body with one trailer.
pub fn unsigned_chunked_body(data: &[u8], chunk: usize, trailer: (&str, &str)) -> Vec<u8> {
    let mut out = Vec::new();
    for p in data.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0\r\n{}:{}\r\n\r\n", trailer.0, trailer.1).as_bytes());
    out
}

/// HTTP/1.1 chunked transfer coding around `data`.
pub fn http_chunked(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in data.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A TLS client config that trusts `ca_pem`.
pub fn tls_client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("add root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub async fn tls_connect(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// Sends the request over TLS and reads the whole response (the connection is closed after).
pub async fn send(port: u16, ca_pem: &str, req: &RawRequest) -> RawResponse {
    let mut s = tls_connect(port, tls_client(ca_pem))
        .await
        .expect("tls connect");
    let host = format!("localhost:{port}");
    send_on(&mut s, &req.to_bytes(&host), None).await
}

/// Sends only the first `cut` bytes of the serialized request, then closes the connection.
pub async fn send_truncated(
    port: u16,
    ca_pem: &str,
    req: &RawRequest,
    cut: usize,
) -> Option<RawResponse> {
    let mut s = tls_connect(port, tls_client(ca_pem))
        .await
        .expect("tls connect");
    let bytes = req.to_bytes(&format!("localhost:{port}"));
    s.write_all(&bytes[..cut.min(bytes.len())]).await.ok()?;
    s.flush().await.ok()?;
    s.shutdown().await.ok()?;
    let r = read_response(&mut s).await;
    (r.status != 0).then_some(r)
}

pub async fn send_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    _: Option<()>,
) -> RawResponse {
    // Write and read concurrently: the proxy may answer (an error) before reading the body.
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        let _ = w.write_all(bytes).await;
        let _ = w.flush().await;
    };
    let read = read_response(&mut r);
    let (_, resp) = tokio::join!(write, read);
    resp
}

async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> RawResponse {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> RawResponse {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawResponse {
            status: 0,
            headers: vec![],
            body: buf.to_vec(),
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if n == 0 || b.len() < i + 2 + n {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[(i + 4 + n).min(b.len())..];
    }
    out
}

/// Formats a time as `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let days = secs / 86400;
    let rem = secs % 86400;
    // civil_from_days (Howard Hinnant)
    let z = days + 719468;
    let era = z / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
