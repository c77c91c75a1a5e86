//! The `chmura` binary's command line, run as a user runs it. (Its presence here also makes
//! `cargo test --workspace` build `target/<profile>/chmura` with the rest, so the integration
//! tests in `tests/` that run the binary find this build of it.)

use std::process::Command;

/// Runs in a folder of its own, empty (no chmura.toml or audit.log to find by accident).
fn chmura(args: &[&str]) -> std::process::Output {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "chmura-usage-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_chmura"))
        .args(args)
        .env_remove("CHMURA_CONFIG")
        .current_dir(&dir)
        .output()
        .expect("run chmura");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn unknown_or_incomplete_commands_print_the_usage_and_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["serve"][..],
        &["keygen"][..],
        &["rekey", "--config", "x.toml"][..],
        &["policy", "simulate"][..],
    ] {
        let out = chmura(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("usage:") && err.contains("chmura serve --config FILE"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_config_that_cannot_be_read_is_named_and_fails() {
    let out = chmura(&["check-config", "chmura-no-such-config.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmura-no-such-config.toml"), "{err}");
    // audit verify without --config looks for ./chmura.toml, and says so when it is not there.
    let out = chmura(&["audit", "verify", "audit.log"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmura.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
