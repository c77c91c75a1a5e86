//! Chmura's integration tests: one binary, one module per area. Every test runs Chmura in
//! process against a real S3 store (s3s-fs, which verifies SigV4) on 127.0.0.1.

mod audit;
mod auth;
mod cli;
mod clients;
mod encryption;
mod kms_aws;
mod lifecycle;
mod metrics;
mod multipart;
mod policy;
mod sdk;
mod ssec;
mod tenants;
mod tls;
