//! `chmura`: serve, check-config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chmura_config::{Config, LogFormat};

const USAGE: &str = "usage:
  chmura serve --config FILE
  chmura check-config FILE
  chmura keygen --output FILE [--id KEY_ID]
  chmura policy simulate --config FILE --tenant T --action s3:GetObject --resource ARN [--context key=value]...
  chmura audit verify [--config FILE] [--head SHA256] LOG...   (config: $CHMURA_CONFIG, else ./chmura.toml)
  chmura rekey --config FILE --bucket B [--prefix P] --to-key KEY_ID [--start-after KEY] [--max-objects N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let Some(path) = flag(&args[1..], "--config") else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            serve(PathBuf::from(path))
        }
        Some("check-config") => {
            let Some(path) = args
                .get(1)
                .cloned()
                .or_else(|| flag(&args[1..], "--config"))
            else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            match Config::load(std::path::Path::new(&path)) {
                Ok(c) => match chmura_proxy::server::tls_config(&c.server) {
                    Ok(_) => {
                        for w in &c.warnings {
                            eprintln!("{path}: warning: {w}");
                        }
                        println!("{path}: OK ({} tenant(s))", c.tenants.len());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    eprintln!("{path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("keygen") => {
            let Some(out) = flag(&args[1..], "--output") else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let id = flag(&args[1..], "--id").unwrap_or_else(|| "main".to_string());
            match keygen(std::path::Path::new(&out), &id) {
                Ok(()) => {
                    println!("{out}: new keyring with key {id:?} (mode 0600)");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{out}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("policy") if args.get(1).map(String::as_str) == Some("simulate") => {
            policy_simulate(&args[2..])
        }
        Some("audit") if args.get(1).map(String::as_str) == Some("verify") => {
            audit_verify(&args[2..])
        }
        Some("rekey") => {
            let a = &args[1..];
            let (Some(config), Some(bucket), Some(to_key)) = (
                flag(a, "--config"),
                flag(a, "--bucket"),
                flag(a, "--to-key"),
            ) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let max_objects = match flag(a, "--max-objects").map(|v| v.parse::<u64>()) {
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    eprintln!("--max-objects: not a number");
                    return ExitCode::from(2);
                }
                None => None,
            };
            let opts = chmura_proxy::rekey::RekeyOptions {
                bucket,
                prefix: flag(a, "--prefix").unwrap_or_default(),
                to_key,
                start_after: flag(a, "--start-after"),
                max_objects,
                copy_limit: chmura_proxy::rekey::COPY_LIMIT,
            };
            rekey(PathBuf::from(config), opts)
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Writes a new keyring file with mode 0600; refuses to overwrite.
fn keygen(path: &std::path::Path, id: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = chmura_crypto::envelope::Keyring::generate(id)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == name {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// `chmura policy simulate`: the decision for one action on one resource, and the statement
/// that made it.
fn policy_simulate(a: &[String]) -> ExitCode {
    let (Some(config), Some(tenant), Some(action), Some(resource)) = (
        flag(a, "--config"),
        flag(a, "--tenant"),
        flag(a, "--action"),
        flag(a, "--resource"),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let config = match Config::load(std::path::Path::new(&config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{config}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(t) = config.tenants.iter().find(|t| t.name == tenant) else {
        eprintln!("no tenant named {tenant:?}");
        return ExitCode::FAILURE;
    };
    let mut context: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    context.insert("aws:username".into(), vec![t.name.clone()]);
    let mut it = a.iter();
    while let Some(x) = it.next() {
        let kv = if x == "--context" {
            it.next().cloned()
        } else {
            x.strip_prefix("--context=").map(str::to_string)
        };
        if let Some(kv) = kv {
            let Some((k, v)) = kv.split_once('=') else {
                eprintln!("--context wants key=value, got {kv:?}");
                return ExitCode::from(2);
            };
            context
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.to_string());
        }
    }
    let d = chmura_config::policy::decide(
        &t.policies,
        &chmura_config::policy::Request {
            action: &action,
            resource: &resource,
            context: &context,
        },
    );
    match d {
        chmura_config::policy::Decision::Allow { source, statement } => {
            println!("ALLOW {action} on {resource}: {source} Statement[{statement}]");
            ExitCode::SUCCESS
        }
        chmura_config::policy::Decision::Deny { source, statement } => {
            println!(
                "DENY {action} on {resource}: explicit deny by {source} Statement[{statement}]"
            );
            ExitCode::from(1)
        }
        chmura_config::policy::Decision::ImplicitDeny => {
            println!("DENY {action} on {resource}: no statement allows it (implicit deny)");
            ExitCode::from(1)
        }
    }
}

/// `chmura audit verify`: 0 for an intact log, 1 naming the first broken line.
fn audit_verify(a: &[String]) -> ExitCode {
    // The checkpoints' key comes from the key provider the config names: by default the
    // config of the Chmura that wrote the log, run from its folder.
    let config = flag(a, "--config")
        .or_else(|| std::env::var("CHMURA_CONFIG").ok())
        .unwrap_or_else(|| "chmura.toml".to_string());
    let head = flag(a, "--head");
    let mut files = Vec::new();
    let mut it = a.iter();
    while let Some(x) = it.next() {
        if x == "--config" || x == "--head" {
            it.next();
        } else if !x.starts_with("--config=") && !x.starts_with("--head=") {
            files.push(PathBuf::from(x));
        }
    }
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let config = match Config::load(std::path::Path::new(&config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{config}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(kcfg) = config.kms.as_ref() else {
        eprintln!("audit verify needs the [kms] section the log was written with");
        return ExitCode::FAILURE;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let kms = match chmura_proxy::kms::Kms::from_config(kcfg).await {
            Ok(k) => k,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        match chmura_proxy::audit::verify_paths(&kms, &files).await {
            Ok(n) => {
                // --head: the chain head the service log printed at the last checkpoint; a log
                // cut back to an earlier checkpoint ends elsewhere.
                if let Some(want) = head {
                    let last = files
                        .last()
                        .and_then(|f| std::fs::read(f).ok())
                        .map(|b| {
                            let body = b.strip_suffix(b"\n").unwrap_or(&b).to_vec();
                            let start = body.iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
                            chmura_proxy::audit::sha256_hex(&body[start..])
                        })
                        .unwrap_or_default();
                    if last != want.trim() {
                        println!("audit log BROKEN: it does not end at the expected head {want} (cut back to an earlier checkpoint?)");
                        return ExitCode::FAILURE;
                    }
                }
                println!("audit log intact: {n} request records, chain and checkpoints verified");
                ExitCode::SUCCESS
            }
            Err(b) => {
                println!("audit log BROKEN at {}:{}: {}", b.file, b.line, b.why);
                ExitCode::FAILURE
            }
        }
    })
}

fn rekey(path: PathBuf, opts: chmura_proxy::rekey::RekeyOptions) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let state = match chmura_proxy::State::new(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let mut err = std::io::stderr();
        match chmura_proxy::rekey::run(&state, &opts, &mut err).await {
            Ok(sum) => {
                println!(
                    "rekey {}/{} to {}: {} listed, {} rekeyed, {} already under {}, {} not written by Chmura (untouched), {} failed",
                    opts.bucket,
                    opts.prefix,
                    opts.to_key,
                    sum.listed,
                    sum.rekeyed,
                    sum.already,
                    opts.to_key,
                    sum.not_chmura.len(),
                    sum.failed.len()
                );
                for k in &sum.not_chmura {
                    println!("not written by Chmura: {k}");
                }
                for (k, why) in &sum.failed {
                    println!("failed: {k}: {why}");
                }
                if let Some(k) = &sum.stopped_after {
                    println!("stopped early; resume with --start-after {k}");
                }
                if sum.failed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("rekey: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    init_tracing(config.server.log_format);
    chmura_proxy::install_crypto_provider();
    let config_admin = config.admin.as_ref().map(|a| a.listen);
    // This runtime starts up, serves the admin listener and waits for a signal; requests run
    // on `server.worker_threads` worker threads of their own (server::serve).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let tls = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("server.listen {}: {e}", config.server.listen);
                return ExitCode::FAILURE;
            }
        };
        let insecure_http = match config.server.insecure_http_listen {
            Some(a) => match tokio::net::TcpListener::bind(a).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("server.insecure_http_listen {a}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let state = match chmura_proxy::State::new(config).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            listen = %state.config.server.listen,
            insecure_http = ?state.config.server.insecure_http_listen,
            upstream = %state.config.upstream.endpoint,
            "chmura listening (TLS)"
        );
        let admin = match config_admin {
            Some(a) => match tokio::net::TcpListener::bind(a).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("admin.listen {a}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let listeners = chmura_proxy::Listeners {
            tls,
            insecure_http,
            admin,
        };
        match chmura_proxy::serve(listeners, state, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown signal received");
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CHMURA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}
