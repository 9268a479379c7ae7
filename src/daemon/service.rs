//! The `run` and `check-config` commands: logging, the runtime, signals and systemd around [`super::run`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::Handle;
use crate::config::{Config, Source};
use crate::rules::load_dir;

/// `check-config FILE`: the file and the rules it names. True if both are good.
pub fn check_config(path: &Path) -> anyhow::Result<bool> {
    let config = Config::load(path)?;
    let rules = load_dir(&config.rules)?;
    config.check_rule_names(&rules).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let source = match config.source() {
        Source::File(f) => format!("file {}", f.path.display()),
        Source::Kafka(k) => format!("kafka {} topics {}", k.brokers, k.topics.join(",")),
    };
    println!(
        "{}: ok: source {source}; clock {:?}; state {}; {} rules ({} active) and {} aggregate rules ({} active) from {}",
        path.display(),
        config.clock.mode,
        config.state_dir().display(),
        rules.all.len(),
        rules.active.len(),
        rules.aggregates.len(),
        rules.active_aggregates().count(),
        config.rules.display()
    );
    if let Some(n) = &config.notifications {
        println!(
            "{}: notify: {} receivers, {} routes, {} time intervals; {}",
            path.display(),
            n.config.receivers.len(),
            n.routes.len(),
            n.intervals.len(),
            match &n.config.smtp {
                Some(s) => format!("smtp {}:{} ({:?})", s.host, s.port(), s.security),
                None =>
                    format!("no smtp: e-mails written to {}", config.state_dir().join(&n.config.mail_dir).display()),
            }
        );
    }
    Ok(true)
}

/// `run --config FILE`: runs the daemon until a signal (or the end of a file that is not followed).
pub fn run(path: &Path, bootstrap: Vec<PathBuf>) -> anyhow::Result<bool> {
    init_logging();
    let mut config = Config::load(path)?;
    config.bootstrap.files.extend(bootstrap);
    let rules = Arc::new(load_dir(&config.rules)?);
    config.check_rule_names(&rules).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tracing::info!(config = %path.display(), rules = rules.active.len(), "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handle = Handle::new();
    runtime.block_on(async {
        let signals = tokio::spawn(signals(handle.clone(), config.rules.clone()));
        let stop_http = std::sync::Arc::new(tokio::sync::Notify::new());
        let http = match &config.metrics {
            Some(m) => {
                let listener = tokio::net::TcpListener::bind(m.listen)
                    .await
                    .with_context(|| format!("metrics: cannot listen on {}", m.listen))?;
                tracing::info!(addr = %listener.local_addr()?, "metrics listening (/metrics, /healthz, /readyz)");
                let stop = stop_http.clone();
                Some(tokio::spawn(crate::metrics::serve(
                    listener,
                    handle.clone(),
                    async move { stop.notified().await },
                )))
            }
            None => None,
        };
        let result = super::run(config, rules, handle, std::future::pending()).await;
        stop_http.notify_one();
        if let Some(http) = http {
            let _ = http.await;
        }
        signals.abort();
        result.map_err(anyhow::Error::from)
    })?;
    Ok(true)
}

/// SIGTERM/SIGINT: graceful stop, a second one exits at once. SIGHUP: reload the rules; an invalid set is
/// refused with the error logged and the rules in force kept.
async fn signals(handle: Handle, rules_dir: PathBuf) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => stop(&handle),
            _ = int.recv() => stop(&handle),
            _ = hup.recv() => match load_dir(&rules_dir) {
                Ok(rules) => {
                    tracing::info!(dir = %rules_dir.display(), rules = rules.active.len(), "SIGHUP: new rules validated");
                    handle.reload(Arc::new(rules));
                }
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: rule reload refused; the rules in force are kept");
                    handle.reload_failed();
                    handle.audit_reload(None, Some(&error.to_string()));
                }
            },
        }
    }
}

fn stop(handle: &Handle) {
    if handle.stopping() {
        tracing::warn!("second stop signal: exiting at once");
        std::process::exit(1);
    }
    tracing::info!("stop signal: finishing the current batch, checkpointing, then exiting");
    super::notify(&[sd_notify::NotifyState::Stopping]);
    handle.shutdown();
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
