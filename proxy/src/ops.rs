//! Classifies an HTTP request into the S3 operation it is (Garage's `Endpoint` idea).
//!
//! Every request Chmura handles becomes one [`Op`]; a request that matches none is refused with
//! `NotImplemented`, never forwarded blindly. Query parameters that select a sub-resource Chmura
//! does not know also make the request unclassifiable.

use http::Method;

/// S3 operations Chmura understands. Names follow the S3 API reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ListBuckets,
    // Bucket
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    GetBucketLocation,
    GetBucketVersioning,
    PutBucketVersioning,
    GetBucketTagging,
    PutBucketTagging,
    DeleteBucketTagging,
    GetBucketPolicy,
    PutBucketPolicy,
    DeleteBucketPolicy,
    GetBucketAcl,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
    GetBucketLifecycleConfiguration,
    PutBucketLifecycleConfiguration,
    DeleteBucketLifecycle,
    GetBucketEncryption,
    GetObjectLockConfiguration,
    PutObjectLockConfiguration,
    PutBucketAcl,
    PutBucketEncryption,
    DeleteBucketEncryption,
    GetBucketOwnershipControls,
    PutBucketOwnershipControls,
    DeleteBucketOwnershipControls,
    GetPublicAccessBlock,
    PutPublicAccessBlock,
    DeletePublicAccessBlock,
    GetBucketPolicyStatus,
    GetBucketLogging,
    PutBucketLogging,
    GetBucketWebsite,
    PutBucketWebsite,
    DeleteBucketWebsite,
    GetBucketRequestPayment,
    PutBucketRequestPayment,
    GetBucketNotificationConfiguration,
    PutBucketNotificationConfiguration,
    GetBucketAccelerateConfiguration,
    PutBucketAccelerateConfiguration,
    DeleteObjects,
    // Object
    GetObject,
    HeadObject,
    PutObject,
    /// POST Object: an upload from an HTML form (post.rs); becomes a PutObject once read.
    PostObject,
    CopyObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    GetObjectTagging,
    PutObjectTagging,
    DeleteObjectTagging,
    GetObjectAcl,
    PutObjectAcl,
    GetObjectAttributes,
    GetObjectRetention,
    PutObjectRetention,
    GetObjectLegalHold,
    PutObjectLegalHold,
}

impl Op {
    pub fn name(self) -> &'static str {
        // The Debug form is the S3 API name.
        match self {
            Op::ListBuckets => "ListBuckets",
            Op::CreateBucket => "CreateBucket",
            Op::DeleteBucket => "DeleteBucket",
            Op::HeadBucket => "HeadBucket",
            Op::ListObjects => "ListObjects",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::ListObjectVersions => "ListObjectVersions",
            Op::ListMultipartUploads => "ListMultipartUploads",
            Op::GetBucketLocation => "GetBucketLocation",
            Op::GetBucketVersioning => "GetBucketVersioning",
            Op::PutBucketVersioning => "PutBucketVersioning",
            Op::GetBucketTagging => "GetBucketTagging",
            Op::PutBucketTagging => "PutBucketTagging",
            Op::DeleteBucketTagging => "DeleteBucketTagging",
            Op::GetBucketPolicy => "GetBucketPolicy",
            Op::PutBucketPolicy => "PutBucketPolicy",
            Op::DeleteBucketPolicy => "DeleteBucketPolicy",
            Op::GetBucketAcl => "GetBucketAcl",
            Op::GetBucketCors => "GetBucketCors",
            Op::PutBucketCors => "PutBucketCors",
            Op::DeleteBucketCors => "DeleteBucketCors",
            Op::GetBucketLifecycleConfiguration => "GetBucketLifecycleConfiguration",
            Op::PutBucketLifecycleConfiguration => "PutBucketLifecycleConfiguration",
            Op::DeleteBucketLifecycle => "DeleteBucketLifecycle",
            Op::GetBucketEncryption => "GetBucketEncryption",
            Op::GetObjectLockConfiguration => "GetObjectLockConfiguration",
            Op::PutObjectLockConfiguration => "PutObjectLockConfiguration",
            Op::PutBucketAcl => "PutBucketAcl",
            Op::PutBucketEncryption => "PutBucketEncryption",
            Op::DeleteBucketEncryption => "DeleteBucketEncryption",
            Op::GetBucketOwnershipControls => "GetBucketOwnershipControls",
            Op::PutBucketOwnershipControls => "PutBucketOwnershipControls",
            Op::DeleteBucketOwnershipControls => "DeleteBucketOwnershipControls",
            Op::GetPublicAccessBlock => "GetPublicAccessBlock",
            Op::PutPublicAccessBlock => "PutPublicAccessBlock",
            Op::DeletePublicAccessBlock => "DeletePublicAccessBlock",
            Op::GetBucketPolicyStatus => "GetBucketPolicyStatus",
            Op::GetBucketLogging => "GetBucketLogging",
            Op::PutBucketLogging => "PutBucketLogging",
            Op::GetBucketWebsite => "GetBucketWebsite",
            Op::PutBucketWebsite => "PutBucketWebsite",
            Op::DeleteBucketWebsite => "DeleteBucketWebsite",
            Op::GetBucketRequestPayment => "GetBucketRequestPayment",
            Op::PutBucketRequestPayment => "PutBucketRequestPayment",
            Op::GetBucketNotificationConfiguration => "GetBucketNotificationConfiguration",
            Op::PutBucketNotificationConfiguration => "PutBucketNotificationConfiguration",
            Op::GetBucketAccelerateConfiguration => "GetBucketAccelerateConfiguration",
            Op::PutBucketAccelerateConfiguration => "PutBucketAccelerateConfiguration",
            Op::DeleteObjects => "DeleteObjects",
            Op::GetObject => "GetObject",
            Op::HeadObject => "HeadObject",
            Op::PutObject => "PutObject",
            Op::PostObject => "PostObject",
            Op::CopyObject => "CopyObject",
            Op::DeleteObject => "DeleteObject",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::ListParts => "ListParts",
            Op::GetObjectTagging => "GetObjectTagging",
            Op::PutObjectTagging => "PutObjectTagging",
            Op::DeleteObjectTagging => "DeleteObjectTagging",
            Op::GetObjectAcl => "GetObjectAcl",
            Op::GetObjectAttributes => "GetObjectAttributes",
            Op::PutObjectAcl => "PutObjectAcl",
            Op::GetObjectRetention => "GetObjectRetention",
            Op::PutObjectRetention => "PutObjectRetention",
            Op::GetObjectLegalHold => "GetObjectLegalHold",
            Op::PutObjectLegalHold => "PutObjectLegalHold",
        }
    }

    /// Operations whose request body is object data (streamed, never collected).
    pub fn has_streaming_body(self) -> bool {
        matches!(self, Op::PutObject | Op::UploadPart)
    }
}

/// Query parameters that are plain arguments (not sub-resources) and may appear on any
/// classified request. Auth parameters are stripped before forwarding.
const ARGUMENT_PARAMS: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "marker",
    "continuation-token",
    "start-after",
    "fetch-owner",
    "encoding-type",
    "key-marker",
    "version-id-marker",
    "upload-id-marker",
    "max-uploads",
    "max-parts",
    "part-number-marker",
    "uploadId",
    "partNumber",
    "versionId",
    "x-id",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
    "x-amz-checksum-mode",
    "bucket-region",
    "max-buckets",
    "continuation-token",
];

/// MinIO's `metadata=true` on ListObjects v1/v2 (minio-go's `WithMetadata`) asks a MinIO
/// store for each object's user metadata in the listing, which for Chmura's objects holds
/// their envelopes. S3 ignores the parameter; Chmura accepts it on object listings only and
/// drops it before the store sees it.
pub const LISTING_METADATA: &str = "metadata";

/// Sub-resources that select an operation.
const SUBRESOURCES: &[&str] = &[
    "uploads",
    "versions",
    "location",
    "versioning",
    "tagging",
    "policy",
    "acl",
    "cors",
    "lifecycle",
    "encryption",
    "object-lock",
    "delete",
    "attributes",
    "retention",
    "legal-hold",
    "ownershipControls",
    "publicAccessBlock",
    "policyStatus",
    "logging",
    "website",
    "requestPayment",
    "notification",
    "accelerate",
];

/// Whether a query parameter selects a sub-resource (an operation other than the plain
/// object or bucket one), as far as Chmura knows them.
pub fn is_subresource(name: &str) -> bool {
    SUBRESOURCES.contains(&name)
}

/// Classifies a request. `bucket`/`key` come from the addressing step (`key` is empty for
/// bucket-level requests). Returns `None` when the request is not an operation Chmura supports.
pub fn classify(
    method: &Method,
    bucket: Option<&str>,
    key: &str,
    query: &[(String, String)],
    headers: &http::HeaderMap,
) -> Option<Op> {
    let has = |n: &str| query.iter().any(|(k, _)| k == n);
    // Any unknown parameter makes the request unclassifiable.
    for (k, _) in query {
        if !ARGUMENT_PARAMS.contains(&k.as_str())
            && !SUBRESOURCES.contains(&k.as_str())
            && k != LISTING_METADATA
        {
            return None;
        }
    }
    let subs: Vec<&str> = query
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| SUBRESOURCES.contains(k))
        .collect();
    if subs.len() > 1 {
        return None;
    }
    let sub = subs.first().copied();
    let copy = headers.contains_key("x-amz-copy-source");

    let Some(_bucket) = bucket else {
        return (method == Method::GET && sub.is_none()).then_some(Op::ListBuckets);
    };

    if has(LISTING_METADATA) {
        // Only on an object listing, where the handler drops it (S3 ignores it).
        let listing = key.is_empty() && method == Method::GET && sub.is_none();
        if !listing || has("list-type") && !query.iter().any(|(k, v)| k == "list-type" && v == "2")
        {
            return None;
        }
    }
    if key.is_empty() {
        let op = match (method.as_str(), sub) {
            ("GET", None) if query.iter().any(|(k, v)| k == "list-type" && v == "2") => {
                Op::ListObjectsV2
            }
            ("GET", None) if has("list-type") => return None,
            ("GET", None) => Op::ListObjects,
            ("HEAD", None) => Op::HeadBucket,
            ("PUT", None) => Op::CreateBucket,
            ("DELETE", None) => Op::DeleteBucket,
            ("GET", Some("versions")) => Op::ListObjectVersions,
            ("GET", Some("uploads")) => Op::ListMultipartUploads,
            ("GET", Some("location")) => Op::GetBucketLocation,
            ("GET", Some("versioning")) => Op::GetBucketVersioning,
            ("PUT", Some("versioning")) => Op::PutBucketVersioning,
            ("GET", Some("tagging")) => Op::GetBucketTagging,
            ("PUT", Some("tagging")) => Op::PutBucketTagging,
            ("DELETE", Some("tagging")) => Op::DeleteBucketTagging,
            ("GET", Some("policy")) => Op::GetBucketPolicy,
            ("PUT", Some("policy")) => Op::PutBucketPolicy,
            ("DELETE", Some("policy")) => Op::DeleteBucketPolicy,
            ("GET", Some("acl")) => Op::GetBucketAcl,
            ("GET", Some("cors")) => Op::GetBucketCors,
            ("PUT", Some("cors")) => Op::PutBucketCors,
            ("DELETE", Some("cors")) => Op::DeleteBucketCors,
            ("GET", Some("lifecycle")) => Op::GetBucketLifecycleConfiguration,
            ("PUT", Some("lifecycle")) => Op::PutBucketLifecycleConfiguration,
            ("DELETE", Some("lifecycle")) => Op::DeleteBucketLifecycle,
            ("GET", Some("encryption")) => Op::GetBucketEncryption,
            ("GET", Some("object-lock")) => Op::GetObjectLockConfiguration,
            ("PUT", Some("object-lock")) => Op::PutObjectLockConfiguration,
            ("PUT", Some("acl")) => Op::PutBucketAcl,
            ("PUT", Some("encryption")) => Op::PutBucketEncryption,
            ("DELETE", Some("encryption")) => Op::DeleteBucketEncryption,
            ("GET", Some("ownershipControls")) => Op::GetBucketOwnershipControls,
            ("PUT", Some("ownershipControls")) => Op::PutBucketOwnershipControls,
            ("DELETE", Some("ownershipControls")) => Op::DeleteBucketOwnershipControls,
            ("GET", Some("publicAccessBlock")) => Op::GetPublicAccessBlock,
            ("PUT", Some("publicAccessBlock")) => Op::PutPublicAccessBlock,
            ("DELETE", Some("publicAccessBlock")) => Op::DeletePublicAccessBlock,
            ("GET", Some("policyStatus")) => Op::GetBucketPolicyStatus,
            ("GET", Some("logging")) => Op::GetBucketLogging,
            ("PUT", Some("logging")) => Op::PutBucketLogging,
            ("GET", Some("website")) => Op::GetBucketWebsite,
            ("PUT", Some("website")) => Op::PutBucketWebsite,
            ("DELETE", Some("website")) => Op::DeleteBucketWebsite,
            ("GET", Some("requestPayment")) => Op::GetBucketRequestPayment,
            ("PUT", Some("requestPayment")) => Op::PutBucketRequestPayment,
            ("GET", Some("notification")) => Op::GetBucketNotificationConfiguration,
            ("PUT", Some("notification")) => Op::PutBucketNotificationConfiguration,
            ("GET", Some("accelerate")) => Op::GetBucketAccelerateConfiguration,
            ("PUT", Some("accelerate")) => Op::PutBucketAccelerateConfiguration,
            ("POST", Some("delete")) => Op::DeleteObjects,
            // A form upload carries everything in its body: any query parameter (an
            // uploadId, say) would make the store do something else than the form says.
            ("POST", None) if query.iter().all(|(k, _)| k == "x-id") => Op::PostObject,
            _ => return None,
        };
        return Some(op);
    }

    let upload_id = has("uploadId");
    let part = has("partNumber");
    let op = match (method.as_str(), sub) {
        ("GET", None) if upload_id => Op::ListParts,
        ("GET", None) => Op::GetObject,
        ("HEAD", None) if !upload_id => Op::HeadObject,
        ("PUT", None) if upload_id && part && copy => Op::UploadPartCopy,
        ("PUT", None) if upload_id && part => Op::UploadPart,
        ("PUT", None) if upload_id || part => return None,
        ("PUT", None) if copy => Op::CopyObject,
        ("PUT", None) => Op::PutObject,
        ("DELETE", None) if upload_id => Op::AbortMultipartUpload,
        ("DELETE", None) => Op::DeleteObject,
        ("POST", Some("uploads")) if !upload_id => Op::CreateMultipartUpload,
        ("POST", None) if upload_id => Op::CompleteMultipartUpload,
        ("GET", Some("tagging")) => Op::GetObjectTagging,
        ("PUT", Some("tagging")) => Op::PutObjectTagging,
        ("DELETE", Some("tagging")) => Op::DeleteObjectTagging,
        ("GET", Some("acl")) => Op::GetObjectAcl,
        ("PUT", Some("acl")) => Op::PutObjectAcl,
        ("GET", Some("attributes")) => Op::GetObjectAttributes,
        ("GET", Some("retention")) => Op::GetObjectRetention,
        ("PUT", Some("retention")) => Op::PutObjectRetention,
        ("GET", Some("legal-hold")) => Op::GetObjectLegalHold,
        ("PUT", Some("legal-hold")) => Op::PutObjectLegalHold,
        _ => return None,
    };
    Some(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        crate::sigv4::parse_query(s)
    }

    fn c(m: Method, b: Option<&str>, k: &str, query: &str, copy: bool) -> Option<Op> {
        let mut h = http::HeaderMap::new();
        if copy {
            h.insert("x-amz-copy-source", "/b/k".parse().unwrap());
        }
        classify(&m, b, k, &q(query), &h)
    }

    /// method, bucket, key, query, has x-amz-copy-source, expected operation
    type Case = (
        Method,
        Option<&'static str>,
        &'static str,
        &'static str,
        bool,
        Option<Op>,
    );

    #[test]
    fn bucket_configuration_subresources() {
        use Method as M;
        for (m, sub, op) in [
            (M::GET, "logging", Op::GetBucketLogging),
            (M::PUT, "logging", Op::PutBucketLogging),
            (M::GET, "website", Op::GetBucketWebsite),
            (M::PUT, "website", Op::PutBucketWebsite),
            (M::DELETE, "website", Op::DeleteBucketWebsite),
            (M::GET, "requestPayment", Op::GetBucketRequestPayment),
            (M::PUT, "requestPayment", Op::PutBucketRequestPayment),
            (
                M::GET,
                "notification",
                Op::GetBucketNotificationConfiguration,
            ),
            (
                M::PUT,
                "notification",
                Op::PutBucketNotificationConfiguration,
            ),
            (M::GET, "accelerate", Op::GetBucketAccelerateConfiguration),
            (M::PUT, "accelerate", Op::PutBucketAccelerateConfiguration),
        ] {
            assert_eq!(
                c(m.clone(), Some("b"), "", sub, false),
                Some(op),
                "{m} ?{sub}"
            );
            assert_eq!(op.name(), format!("{op:?}"));
            // On a key they are no object operation.
            assert_eq!(c(m, Some("b"), "k", sub, false), None, "?{sub} on a key");
        }
    }

    #[test]
    fn minios_listing_metadata_parameter_only_on_object_listings() {
        use Method as M;
        let listing = "list-type=2&metadata=true&prefix=a";
        assert_eq!(
            c(M::GET, Some("b"), "", listing, false),
            Some(Op::ListObjectsV2)
        );
        assert_eq!(
            c(M::GET, Some("b"), "", "metadata=true", false),
            Some(Op::ListObjects)
        );
        for (m, k, query) in [
            (M::GET, "k", "metadata=true"),
            (M::PUT, "", "metadata=true"),
            (M::GET, "", "versions&metadata=true"),
            (M::GET, "", "uploads&metadata=true"),
            (M::GET, "", "list-type=3&metadata=true"),
        ] {
            assert_eq!(
                c(m.clone(), Some("b"), k, query, false),
                None,
                "{m} {k}?{query}"
            );
        }
    }

    #[test]
    fn table() {
        use Method as M;
        let cases: &[Case] = &[
            (M::GET, None, "", "", false, Some(Op::ListBuckets)),
            (
                M::GET,
                Some("b"),
                "",
                "list-type=2&prefix=a",
                false,
                Some(Op::ListObjectsV2),
            ),
            (
                M::GET,
                Some("b"),
                "",
                "prefix=a",
                false,
                Some(Op::ListObjects),
            ),
            (
                M::GET,
                Some("b"),
                "",
                "versions",
                false,
                Some(Op::ListObjectVersions),
            ),
            (
                M::GET,
                Some("b"),
                "",
                "uploads",
                false,
                Some(Op::ListMultipartUploads),
            ),
            (M::PUT, Some("b"), "", "", false, Some(Op::CreateBucket)),
            (
                M::POST,
                Some("b"),
                "",
                "delete",
                false,
                Some(Op::DeleteObjects),
            ),
            (M::GET, Some("b"), "k", "", false, Some(Op::GetObject)),
            (
                M::GET,
                Some("b"),
                "k",
                "partNumber=2&x-id=GetObject",
                false,
                Some(Op::GetObject),
            ),
            (M::PUT, Some("b"), "k", "", false, Some(Op::PutObject)),
            (M::POST, Some("b"), "", "", false, Some(Op::PostObject)),
            (
                M::POST,
                Some("b"),
                "",
                "uploadId=u&partNumber=1",
                false,
                None,
            ),
            (M::POST, Some("b"), "", "versionId=v", false, None),
            (M::POST, Some("b"), "k", "", false, None),
            (M::PUT, Some("b"), "k", "", true, Some(Op::CopyObject)),
            (
                M::PUT,
                Some("b"),
                "k",
                "partNumber=1&uploadId=u",
                false,
                Some(Op::UploadPart),
            ),
            (
                M::PUT,
                Some("b"),
                "k",
                "partNumber=1&uploadId=u",
                true,
                Some(Op::UploadPartCopy),
            ),
            (M::PUT, Some("b"), "k", "partNumber=1", false, None),
            (
                M::POST,
                Some("b"),
                "k",
                "uploads",
                false,
                Some(Op::CreateMultipartUpload),
            ),
            (
                M::POST,
                Some("b"),
                "k",
                "uploadId=u",
                false,
                Some(Op::CompleteMultipartUpload),
            ),
            (
                M::DELETE,
                Some("b"),
                "k",
                "uploadId=u",
                false,
                Some(Op::AbortMultipartUpload),
            ),
            (
                M::GET,
                Some("b"),
                "k",
                "uploadId=u",
                false,
                Some(Op::ListParts),
            ),
            (
                M::PUT,
                Some("b"),
                "k",
                "tagging",
                false,
                Some(Op::PutObjectTagging),
            ),
            (
                M::PUT,
                Some("b"),
                "k",
                "retention&versionId=v",
                false,
                Some(Op::PutObjectRetention),
            ),
            (
                M::GET,
                Some("b"),
                "k",
                "legal-hold",
                false,
                Some(Op::GetObjectLegalHold),
            ),
            (M::PUT, Some("b"), "k", "acl", false, Some(Op::PutObjectAcl)),
            (M::PUT, Some("b"), "", "acl", false, Some(Op::PutBucketAcl)),
            (
                M::PUT,
                Some("b"),
                "",
                "object-lock",
                false,
                Some(Op::PutObjectLockConfiguration),
            ),
            (
                M::DELETE,
                Some("b"),
                "",
                "publicAccessBlock",
                false,
                Some(Op::DeletePublicAccessBlock),
            ),
            (
                M::GET,
                Some("b"),
                "",
                "ownershipControls",
                false,
                Some(Op::GetBucketOwnershipControls),
            ),
            // Unknown sub-resources and methods are not classified.
            (M::GET, Some("b"), "", "replication", false, None),
            (M::GET, Some("b"), "", "inventory", false, None),
            (M::POST, Some("b"), "k", "retention", false, None),
            (M::GET, Some("b"), "k", "object-lock", false, None),
            (M::POST, Some("b"), "k", "select&select-type=2", false, None),
            (M::POST, Some("b"), "k", "", false, None),
            (M::PATCH, Some("b"), "k", "", false, None),
            (M::GET, Some("b"), "", "tagging&acl", false, None),
            (M::GET, Some("b"), "", "list-type=3", false, None),
            (M::PUT, None, "", "", false, None),
        ];
        for (m, b, k, query, copy, want) in cases {
            assert_eq!(
                c(m.clone(), *b, k, query, *copy),
                *want,
                "{m} {b:?} {k} ?{query}"
            );
        }
    }
}
