//! The `mcp-authz` binary: `serve` and `validate`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tonic_health::ServingStatus;

use mcp_authz::check::Options;
use mcp_authz::policy::{LoadError, Severity, load_paths};
use mcp_authz::reload::{self, PolicyStore};
use mcp_authz::service::{serve, set_health};
use mcp_authz::settings::{Cli, Command, LogFormat, ServeArgs};
use mcp_authz::telemetry::{Audit, ExportConfig, Exporter};

/// Exit status for an invalid policy set at start-up.
const EXIT_INVALID_POLICY: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Serve(args) => {
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(paths: &[std::path::PathBuf]) -> ExitCode {
    match load_paths(paths) {
        Ok(set) => {
            for warning in &set.warnings {
                eprintln!("{warning}");
            }
            println!(
                "ok: {} files, {} servers, {} grants, {} sessions, {} warnings, revision {}",
                set.files,
                set.servers.len(),
                set.grants.len(),
                set.sessions.len(),
                set.warnings.len(),
                set.revision
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(&e);
            ExitCode::FAILURE
        }
    }
}

fn print_problems(error: &LoadError) {
    for problem in error.problems() {
        eprintln!("{problem}");
    }
    let errors = error
        .problems()
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    eprintln!("invalid policy set: {errors} errors");
}

fn init_logging(format: LogFormat) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let (reporter, health) = tonic_health::server::health_reporter();
    // Serving starts before the policy is read: until it is, health says NOT_SERVING and
    // every Check is answered 503 policy_unavailable.
    set_health(&reporter, ServingStatus::NotServing).await;
    let store = Arc::new(PolicyStore::default());
    let options = Options {
        mode: args.mode.into(),
        max_body_bytes: args.max_body_bytes,
    };
    let export = ExportConfig::resolve(args.otlp_endpoint.as_deref(), args.otlp_protocol)
        .map_err(anyhow::Error::msg)?;
    let (audit, exporter) = match &export {
        Some(config) => {
            let (audit, exporter) = Exporter::start(config).map_err(anyhow::Error::msg)?;
            tracing::info!(endpoint = %config.url(), protocol = ?config.protocol, "exporting audit spans over OTLP");
            (audit, Some(exporter))
        }
        None => (Audit::log_only(), None),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Arc::clone(&store),
        options,
        audit,
        health,
        async {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(listen = %local, "serving ext_authz");

    // The watcher starts before the first load so no change between the two is missed.
    let (stop_watch, watch_stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(reload::watch(
        args.policy_dir.clone(),
        Arc::clone(&store),
        watch_stopped,
    ));
    let dir = args.policy_dir.clone();
    let loader = Arc::clone(&store);
    let loaded = tokio::task::spawn_blocking(move || loader.reload(&dir))
        .await
        .context("policy loader panicked")?;
    match loaded {
        Ok(loaded) => {
            let snapshot = &loaded.snapshot;
            tracing::info!(
                revision = %snapshot.revision,
                files = snapshot.counts.files,
                servers = snapshot.counts.servers,
                grants = snapshot.counts.grants,
                sessions = snapshot.counts.sessions,
                mode = mcp_authz::policy::Mode::from(args.mode).as_str(),
                "policy loaded"
            )
        }
        Err(e) => {
            print_problems(&e);
            return Ok(ExitCode::from(EXIT_INVALID_POLICY));
        }
    }
    set_health(&reporter, ServingStatus::Serving).await;

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight checks");
    set_health(&reporter, ServingStatus::NotServing).await;
    let _ = stop_tx.send(());
    let _ = stop_watch.send(true);
    server.await.context("server task failed")??;
    let _ = watcher.await;
    if let Some(exporter) = exporter {
        exporter.shutdown(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
