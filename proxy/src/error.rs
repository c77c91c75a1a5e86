//! The proxy's one error type and its mapping to S3 error responses.
//!
//! Nothing else in the crate writes error XML: every failure becomes an [`S3Error`], which knows
//! its S3 code, HTTP status and where it came from ([`ErrorSource`]). Clients get the coarse
//! message; the `detail` goes only to the service log and never holds keys, signatures or
//! plaintext.

use http::StatusCode;

/// Where a failure originated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The downstream client sent something wrong.
    Client,
    /// The upstream store failed or could not be reached.
    Upstream,
    /// A bug or resource problem inside Chmura.
    Internal,
}

/// An S3-level error.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
    pub source: ErrorSource,
    /// Extra context for logs only (never sent to the client).
    pub detail: Option<String>,
    /// Elements S3 adds to the error document for some codes (`Region` for a credential
    /// scoped to the wrong region, which s3cmd reads to retry there; `RangeRequested` and
    /// `ActualObjectSize` for InvalidRange), in document order.
    pub elements: Vec<(&'static str, String)>,
}

impl S3Error {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        S3Error {
            code,
            status: status_for(code),
            message: message.into(),
            source: ErrorSource::Client,
            detail: None,
            elements: Vec::new(),
        }
    }

    pub fn upstream(
        code: &'static str,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        S3Error {
            source: ErrorSource::Upstream,
            detail: Some(detail.into()),
            ..S3Error::new(code, message)
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        S3Error {
            source: ErrorSource::Internal,
            detail: Some(detail.into()),
            ..S3Error::new(
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an element to the error document (after Message, before Resource).
    pub fn with_element(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.elements.push((name, value.into()));
        self
    }

    pub fn access_denied() -> Self {
        S3Error::new("AccessDenied", "Access Denied")
    }

    pub fn signature_mismatch() -> Self {
        S3Error::new(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
    }

    pub fn not_implemented() -> Self {
        S3Error::new(
            "NotImplemented",
            "A header or query you provided implies functionality that is not implemented.",
        )
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        S3Error::new("InvalidArgument", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        S3Error::new("InvalidRequest", message)
    }

    pub fn incomplete_body() -> Self {
        S3Error::new(
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )
    }

    pub fn bad_digest(message: impl Into<String>) -> Self {
        S3Error::new("BadDigest", message)
    }

    /// Renders the XML error document.
    pub fn to_xml(&self, resource: &str, request_id: &str) -> String {
        let extra: String = self
            .elements
            .iter()
            .map(|(n, v)| format!("<{n}>{}</{n}>", xml_escape(v)))
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>{extra}<Resource>{}</Resource><RequestId>{}</RequestId><HostId>{}</HostId></Error>",
            self.code,
            xml_escape(&self.message),
            xml_escape(resource),
            request_id,
            request_id
        )
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for S3Error {}

/// The HTTP status S3 uses for each error code (S3-PROTOCOL-NOTES §7).
pub fn status_for(code: &str) -> StatusCode {
    match code {
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "RequestTimeTooSkewed"
        | "SignatureDoesNotMatch"
        | "InvalidObjectState"
        | "InvalidSecurity"
        | "AccountProblem" => StatusCode::FORBIDDEN,
        "NoSuchBucket" | "NoSuchKey" | "NoSuchUpload" | "NoSuchVersion" => StatusCode::NOT_FOUND,
        "BucketAlreadyExists"
        | "BucketAlreadyOwnedByYou"
        | "BucketNotEmpty"
        | "OperationAborted" => StatusCode::CONFLICT,
        "MethodNotAllowed" => StatusCode::METHOD_NOT_ALLOWED,
        "MissingContentLength" => StatusCode::LENGTH_REQUIRED,
        "PreconditionFailed" => StatusCode::PRECONDITION_FAILED,
        "InvalidRange" | "InvalidPartNumber" => StatusCode::RANGE_NOT_SATISFIABLE,
        "RequestHeaderSectionTooLarge" => StatusCode::BAD_REQUEST,
        "InternalError" => StatusCode::INTERNAL_SERVER_ERROR,
        "NotImplemented" => StatusCode::NOT_IMPLEMENTED,
        "ServiceUnavailable" | "SlowDown" => StatusCode::SERVICE_UNAVAILABLE,
        "BadGateway" => StatusCode::BAD_GATEWAY,
        "GatewayTimeout" => StatusCode::GATEWAY_TIMEOUT,
        "EntityTooLarge" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {
                out.push_str(&format!("&#x{:X};", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_has_code_message_resource_request_id() {
        let e = S3Error::new("NoSuchKey", "The specified key does not exist.");
        let x = e.to_xml("/b/a<b>&c", "REQ1");
        assert!(x.contains("<Code>NoSuchKey</Code>"));
        assert!(x.contains("<Resource>/b/a&lt;b&gt;&amp;c</Resource>"));
        assert!(x.contains("<RequestId>REQ1</RequestId>"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn statuses_follow_s3() {
        assert_eq!(status_for("SignatureDoesNotMatch"), StatusCode::FORBIDDEN);
        assert_eq!(
            status_for("XAmzContentSHA256Mismatch"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_for("NotImplemented"), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            status_for("MissingContentLength"),
            StatusCode::LENGTH_REQUIRED
        );
    }
}
