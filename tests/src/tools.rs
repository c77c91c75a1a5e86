//! Locating the external clients (boto3, aws cli, s3cmd from the venv; rclone) that
//! `scripts/install-tools.sh` installs. Under a bare `cargo test` they may be missing: the
//! tests that need them then print a skip message. With `CHMURA_REQUIRE_TOOLS=1` (set by
//! the README's test command) a missing tool fails the test instead.

use std::path::PathBuf;

/// The tools folder: `$CHMURA_TOOLS_DIR`, else `<repo>/.tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("CHMURA_TOOLS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".tools"),
    }
}

/// The path of a tool (`python`, `aws`, `s3cmd` from the venv; `rclone` from the venv's bin or PATH).
pub fn find(name: &str) -> Option<PathBuf> {
    // fsspec's s3fs lives in a venv of its own (aiobotocore pins botocore).
    if name == "fsspec-python" {
        let p = tools_dir().join("venv-fsspec").join("bin").join("python");
        return p.exists().then_some(p);
    }
    // The aws cli v2 from Debian's package (the venv's `aws` is v1).
    if name == "aws2" {
        return ["/usr/bin/aws", "/usr/local/bin/aws"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
    }
    let venv = tools_dir().join("venv").join("bin").join(name);
    if venv.exists() {
        return Some(venv);
    }
    let local = tools_dir().join("bin").join(name);
    if local.exists() {
        return Some(local);
    }
    if ["rclone", "openssl", "node", "s3fs", "restic", "ruby", "go"].contains(&name) {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = PathBuf::from(dir).join(name);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

/// The tool, or `None` after printing why the calling test is skipped. Panics instead when
/// `CHMURA_REQUIRE_TOOLS=1`.
pub fn require(name: &str, test: &str) -> Option<PathBuf> {
    match find(name) {
        Some(p) => Some(p),
        None if std::env::var("CHMURA_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("{test}: {name} is required (CHMURA_REQUIRE_TOOLS=1) but was not found; run scripts/install-tools.sh")
        }
        None => {
            eprintln!("SKIPPED {test}: {name} not installed (run scripts/install-tools.sh, or the README test command)");
            None
        }
    }
}
