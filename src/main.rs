//! The `mcp-authz` binary: `serve`, `validate`, `check` and `replay`.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use tonic_health::ServingStatus;

use mcp_authz::admin::{self, AdminState};
use mcp_authz::audit::line;
use mcp_authz::audit::line::LineFormat;
use mcp_authz::audit::otlp;
use mcp_authz::check::{Options, decide_call};
use mcp_authz::decide::Evidence;
use mcp_authz::decision::Target;
use mcp_authz::explain;
use mcp_authz::identity::Caller;
use mcp_authz::logging::Output;
use mcp_authz::metrics::Metrics;
use mcp_authz::otlp_config::Export;
use mcp_authz::policy::Snapshot;
use mcp_authz::policy::Timestamp;
use mcp_authz::policy::snapshot::Identity;
use mcp_authz::policy::{LoadError, Severity, load_paths};
use mcp_authz::reload::{self, PolicyStore};
use mcp_authz::replay::compare::{Baseline, Change, Policy, Replayer};
use mcp_authz::replay::report::{PolicySource, Report};
use mcp_authz::replay::{self, Input};
use mcp_authz::service::{CheckContext, serve, serve_on, set_health};
use mcp_authz::settings::{
    AdminListen, CheckArgs, Cli, Command, FailOn, LogFormat, ReplayArgs, ReportFormat, ServeArgs,
};
use mcp_authz::tls::ServerTls;

/// Exit status for an invalid policy set at start-up.
const EXIT_INVALID_POLICY: u8 = 2;
/// Exit status for a setting that cannot be used (as clap's for a malformed flag).
const EXIT_INVALID_SETTING: u8 = 2;
/// Exit status of `replay` when a change of the `--fail-on` kind was found.
const EXIT_CHANGED: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Check(args) => check(&args),
        Command::Replay(args) => replay(&args),
        Command::Serve(args) => {
            let (output, lines) = init_logging(args.log_format);
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
            match runtime.block_on(run(args, output, lines)) {
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

fn check(args: &CheckArgs) -> ExitCode {
    let set = match load_paths(std::slice::from_ref(&args.policy_dir)) {
        Ok(set) => set,
        Err(e) => {
            print_problems(&e);
            return ExitCode::from(EXIT_INVALID_POLICY);
        }
    };
    let snapshot = Snapshot::compile(set);
    let Some(server) = snapshot.server_named(&args.server) else {
        eprintln!("error: no loaded MCPServer `{}`", args.server);
        return ExitCode::from(EXIT_INVALID_POLICY);
    };
    fn given(value: &Option<String>) -> Option<Cow<'_, str>> {
        value
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(Cow::Borrowed)
    }
    let caller = Caller {
        identity: Identity {
            human: given(&args.human),
            agent: given(&args.agent),
            team: given(&args.team),
        },
        session_id: given(&args.session),
        session: None,
    };
    let now = args.now.unwrap_or_else(Timestamp::now);
    let options = Options {
        mode: args.mode.into(),
        ..Options::default()
    };
    let (primitive, name) = args.target();
    let target = Target {
        primitive,
        name: Cow::Borrowed(name),
    };
    let mut evidence = Evidence::default();
    let decision = decide_call(
        &snapshot,
        server,
        caller,
        target,
        &options,
        now,
        &mut evidence,
    );
    let report = explain::report(&decision, &evidence, now);
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    ExitCode::from(explain::exit_code(&decision))
}

/// `replay`: exit 0, 4 when a change of the `--fail-on` kind was found, 2 for an invalid policy
/// set, an unknown `--enforce` name or no readable input.
fn replay(args: &ReplayArgs) -> ExitCode {
    let invalid = ExitCode::from(EXIT_INVALID_POLICY);
    let load = |dir: &std::path::PathBuf| match load_paths(std::slice::from_ref(dir)) {
        Ok(set) => Some(set),
        Err(e) => {
            eprintln!("{}:", dir.display());
            print_problems(&e);
            None
        }
    };
    let Some(mut candidate) = load(&args.policy_dir) else {
        return invalid;
    };
    match replay::enforce(&mut candidate, &args.enforce) {
        Ok(notes) => notes.iter().for_each(|note| eprintln!("note: {note}")),
        Err(e) => {
            eprintln!("error: {e}");
            return invalid;
        }
    }
    let mode = args.mode.into();
    let baseline = match &args.against {
        None => Baseline::Recorded,
        Some(dir) => match load(dir) {
            Some(set) => Baseline::Current(Box::new(Policy::new(Snapshot::compile(set), mode))),
            None => return invalid,
        },
    };
    let replayer = Replayer {
        candidate: Policy::new(Snapshot::compile(candidate), mode),
        baseline,
    };
    let inputs: Vec<Input> = args.files.iter().cloned().map(Input::new).collect();
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let replayed = replay::run(&replayer, &inputs, workers, std::io::stderr().is_terminal());
    for file in &replayed.files {
        if let Some(error) = &file.error {
            eprintln!("warning: {}: {error}", file.name);
        }
    }
    let tally = &replayed.tally;
    if tally.read.records == 0 {
        eprintln!("error: no recorded decision could be read from the input");
        return invalid;
    }
    let against = args.against.as_ref().zip(match &replayer.baseline {
        Baseline::Current(current) => Some(current),
        Baseline::Recorded => None,
    });
    let dirs = (
        args.policy_dir.display().to_string(),
        against.map(|(dir, _)| dir.display().to_string()),
    );
    let report = Report {
        candidate: PolicySource {
            dir: &dirs.0,
            revision: &replayer.candidate.snapshot.revision,
        },
        against: against
            .zip(dirs.1.as_deref())
            .map(|((_, current), dir)| PolicySource {
                dir,
                revision: &current.snapshot.revision,
            }),
        mode,
        enforce: &args.enforce,
        files: &replayed.files,
        tally,
    };
    match args.format {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        ),
    }
    let found = |change: Change| tally.changed[change as usize].records > 0;
    let failed = match args.fail_on {
        None => false,
        Some(FailOn::Any) => tally.changed_total().records > 0,
        Some(FailOn::Tighten) => found(Change::Tighten),
        Some(FailOn::Loosen) => found(Change::Loosen),
    };
    ExitCode::from(if failed { EXIT_CHANGED } else { 0 })
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

/// Sets up `tracing` on a shared stderr; returns it and how audit lines should look there.
fn init_logging(format: LogFormat) -> (Output, LineFormat) {
    let output = Output::default();
    let lines = LineFormat {
        json: format == LogFormat::Json,
        ansi: std::io::stderr().is_terminal(),
    };
    // Every `RUST_LOG` directive (`warn`, `info,h2=debug`, `info,mcp_authz::audit=off`);
    // unset or empty means `info`, and a directive that does not parse is left out.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(lines.ansi)
        .with_writer(output.clone());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    (output, lines)
}

async fn run(args: ServeArgs, output: Output, lines: LineFormat) -> anyhow::Result<ExitCode> {
    // Registered before anything else, so a SIGINT or SIGTERM that arrives while the service
    // is still starting is a clean stop, not the signal's default action.
    let shutdown = shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
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
    let metrics = Arc::new(Metrics::new());
    let export = match Export::from_env(
        args.otlp_endpoint.as_deref(),
        args.otlp_protocol.map(Into::into),
    )
    .and_then(|export| {
        if let Export::Otlp(config) = &export {
            config.check_files()?;
        }
        Ok(export)
    }) {
        Ok(export) => export,
        Err(e) => {
            tracing::error!("{e}");
            return Ok(ExitCode::from(EXIT_INVALID_SETTING));
        }
    };
    let (audit, worker) = match &export {
        Export::Otlp(config) => {
            let started = otlp::start(config, metrics.spans_dropped())?;
            tracing::info!(endpoint = %config.url(), protocol = ?config.protocol, "exporting audit spans over OTLP");
            started
        }
        Export::Lines | Export::Disabled => {
            if matches!(export, Export::Disabled) {
                tracing::info!(
                    "OTEL_SDK_DISABLED=true: no spans exported, decisions logged as lines"
                );
            }
            line::start(metrics.spans_dropped(), output, lines)
                .context("cannot start the audit log thread")?
        }
    };
    if args.audit_allowed < 1.0 {
        tracing::info!(
            ratio = args.audit_allowed,
            "keeping this fraction of allowed decisions in the audit trail"
        );
    }
    let context = CheckContext {
        store: Arc::clone(&store),
        options: Options {
            mode: args.mode.into(),
            max_body_bytes: args.max_body_bytes,
        },
        audit: audit.keeping_allowed(args.audit_allowed),
        metrics: Arc::clone(&metrics),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tls = match args.tls_files().map(ServerTls::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!("{e}");
            return Ok(ExitCode::from(EXIT_INVALID_SETTING));
        }
    };
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server = match &tls {
        None => tokio::spawn(serve(listener, context, health, stopped)),
        Some(tls) => tokio::spawn(serve_on(
            mcp_authz::tls::incoming(listener, Arc::clone(tls)),
            context,
            health,
            stopped,
        )),
    };
    let client_ca = tls.as_ref().is_some_and(|t| t.files().client_ca.is_some());
    tracing::info!(listen = %local, tls = tls.is_some(), mutual_tls = client_ca, "serving ext_authz");

    let (stop_tasks, tasks_stopped) = tokio::sync::watch::channel(false);
    let tls_watcher =
        tls.map(|tls| tokio::spawn(mcp_authz::tls::watch(tls, tasks_stopped.clone())));
    let admin_state = Arc::new(AdminState {
        metrics: Arc::clone(&metrics),
        store: Arc::clone(&store),
        shutting_down: false.into(),
    });
    let admin = match args.admin_listen {
        AdminListen::Off => None,
        AdminListen::On(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin)"))?;
            let local = listener
                .local_addr()
                .context("cannot read the admin address")?;
            tracing::info!(admin = %local, "serving /metrics, /healthz, /ready");
            Some(tokio::spawn(admin::serve(
                listener,
                Arc::clone(&admin_state),
                tasks_stopped.clone(),
            )))
        }
    };

    // The watcher starts before the first load so no change between the two is missed.
    let watcher = tokio::spawn(reload::watch(
        args.policy_dir.clone(),
        Arc::clone(&store),
        Arc::clone(&metrics),
        tasks_stopped,
    ));
    let dir = args.policy_dir.clone();
    let loader = Arc::clone(&store);
    let loaded = tokio::task::spawn_blocking(move || loader.reload(&dir))
        .await
        .context("policy loader panicked")?;
    match loaded {
        Ok(loaded) => {
            let snapshot = &loaded.snapshot;
            let counts = snapshot.counts();
            metrics.set_policy(snapshot);
            tracing::info!(
                revision = %snapshot.revision,
                files = counts.files,
                servers = counts.servers,
                grants = counts.grants,
                sessions = counts.sessions,
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

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight checks");
    admin_state.shutting_down.store(true, Ordering::Relaxed);
    set_health(&reporter, ServingStatus::NotServing).await;
    let _ = stop_tx.send(());
    server.await.context("server task failed")??;
    let _ = stop_tasks.send(true);
    let _ = watcher.await;
    if let Some(tls_watcher) = tls_watcher {
        let _ = tls_watcher.await;
    }
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    worker.shutdown(std::time::Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// A future that completes on the first SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers
/// are in place when this returns; a signal before the future is polled is kept, not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
