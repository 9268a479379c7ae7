//! The long-running daemon (`credit-sentinel run`): a source (Kafka, or a followed file), one engine per
//! state partition, alert output, checkpoints, rule reloads and the systemd protocol.
//!
//! The work runs on one blocking thread per daemon ([`run_blocking`]): sources are polled, events go
//! through the partition's [`task::Task`], alerts are written out, and checkpoints are taken, all in
//! order, so that a checkpoint always matches the input before it. The async side ([`run`]) only
//! forwards shutdown and reload requests through a [`Handle`]; the binary maps signals onto it.

pub mod file;
pub mod kafka;
pub mod regional;
pub mod service;
pub mod stats;
pub mod task;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Source};
use crate::rules::RuleSet;
use crate::time::Ts;

pub use stats::{Histogram, Stats};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("the daemon's worker thread panicked")]
    Panicked,
    #[error("notifications: {0}")]
    Notify(#[from] crate::notify::NotifyError),
    #[error("{location}: history event refused, {reason}: raise [limits] and start again (nothing was checkpointed)")]
    History { location: String, reason: crate::event::Reason },
}

/// Requests to a running daemon, and what it reports back. Cheap to clone.
#[derive(Clone, Default)]
pub struct Handle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    ready: AtomicBool,
    reload: Mutex<Option<Arc<RuleSet>>>,
    stats: Stats,
    notifier: std::sync::OnceLock<Arc<crate::notify::Notifier>>,
    regional: std::sync::OnceLock<Arc<regional::Regional>>,
}

impl Handle {
    /// A handle for a daemon not yet started.
    pub fn new() -> Handle {
        Handle::default()
    }

    /// Asks the daemon to stop: stop consuming, checkpoint, commit, return.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Hands a new, already validated rule set to the daemon; it is swapped in at its next loop turn.
    pub fn reload(&self, rules: Arc<RuleSet>) {
        if let Ok(mut slot) = self.shared.reload.lock() {
            *slot = Some(rules);
        }
    }

    /// Counts a reload refused because the rules did not load.
    pub fn reload_failed(&self) {
        Stats::add(&self.shared.stats.reloads_failed, 1);
    }

    /// The rule set waiting to be swapped in, if any.
    fn take_reload(&self) -> Option<Arc<RuleSet>> {
        self.shared.reload.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Whether state is restored and the source is being read (systemd's READY was sent).
    pub fn restored(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Whether the daemon is ready (`/readyz`): state restored and the source caught up (see
    /// `[metrics] ready_max_lag`).
    pub fn ready(&self) -> bool {
        self.restored() && self.shared.stats.caught_up()
    }

    /// Tells systemd (once) that state is restored and the source is being read. Catching up may take
    /// longer: that is `ready`, not a start-up timeout.
    fn set_ready(&self) {
        if !self.shared.ready.swap(true, Ordering::AcqRel) {
            notify(&[sd_notify::NotifyState::Ready]);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Records a rule reload (applied, or refused with `error`) in the notification audit log, if any.
    pub fn audit_reload(&self, rules: Option<&RuleSet>, error: Option<&str>) {
        let Some(n) = self.notifier() else { return };
        match (rules, error) {
            (Some(rules), _) => {
                let ids: Vec<String> = rules.active().map(|r| format!("{}@{}", r.id, r.version)).collect();
                n.audit("daemon", &crate::notify::audit::Reload::RulesReloaded { rules: &ids });
            }
            (None, error) => {
                n.audit("daemon", &crate::notify::audit::Reload::RulesRefused { error: error.unwrap_or_default() });
            }
        }
    }

    /// The regional aggregator, once the daemon has started.
    pub fn regional(&self) -> Option<Arc<regional::Regional>> {
        self.shared.regional.get().cloned()
    }

    /// The notifier, when `[notify]` is configured and the daemon has started it.
    pub fn notifier(&self) -> Option<Arc<crate::notify::Notifier>> {
        self.shared.notifier.get().cloned()
    }
}

/// Runs the daemon until `shutdown` completes (or the source ends, for a file that is not followed).
pub async fn run(
    config: Config,
    rules: Arc<RuleSet>,
    handle: Handle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let worker_handle = handle.clone();
    let mut worker = tokio::task::spawn_blocking(move || run_blocking(&config, rules, &worker_handle));
    tokio::select! {
        result = &mut worker => return result.map_err(|_| DaemonError::Panicked)?,
        () = shutdown => handle.shutdown(),
    }
    worker.await.map_err(|_| DaemonError::Panicked)?
}

/// The daemon's loop on the calling thread (and, with `[notify]`, the notifier's and the admin socket's
/// threads).
pub fn run_blocking(config: &Config, rules: Arc<RuleSet>, handle: &Handle) -> Result<(), DaemonError> {
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir)
        .map_err(|error| DaemonError::Io { context: state_dir.display().to_string(), error })?;
    if let Some(regional) = regional::Regional::open(&state_dir, &rules)? {
        let _ = handle.shared.regional.set(regional);
    }
    let mut notifier_thread = None;
    if let Some(notify) = &config.notifications {
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir)
            .map_err(|error| DaemonError::Io { context: state_dir.display().to_string(), error })?;
        let notifier = crate::notify::Notifier::open(notify.clone(), &state_dir, config.limits.outbox)?;
        let socket = state_dir.join(&notify.config.admin_socket);
        crate::notify::admin::serve(&socket, notifier.clone())
            .map_err(|error| DaemonError::Io { context: format!("admin socket {}", socket.display()), error })?;
        tracing::info!(socket = %socket.display(), "admin socket listening");
        notifier_thread =
            Some(notifier.start().map_err(|error| DaemonError::Io { context: "notifier thread".into(), error })?);
        let _ = handle.shared.notifier.set(notifier);
    }
    let result = match config.source() {
        Source::File(file) => file::run(config, file, rules, handle),
        Source::Kafka(kafka) => kafka::run(config, kafka, rules, handle),
    };
    if let (Some(notifier), Some(thread)) = (handle.notifier(), notifier_thread) {
        notifier.stop();
        let _ = thread.join();
        if let Err(error) = notifier.close() {
            tracing::error!(%error, "notification state not compacted at shutdown (the journal is replayed at the next start)");
        }
        if let Some(socket) = config.notifications.as_ref().map(|n| config.state_dir().join(&n.config.admin_socket)) {
            let _ = std::fs::remove_file(socket);
        }
    }
    result
}

/// Reads a JSON Lines history file (`[bootstrap]`) and hands each valid event to `each` with its location, in
/// file order. Bad lines are skipped: history is the bureau's own export, already checked when it was first
/// consumed. Logs and returns the number of events.
fn read_history(
    path: &std::path::Path,
    mut each: impl FnMut(crate::event::Event, &dyn Fn() -> String) -> Result<(), DaemonError>,
) -> Result<u64, DaemonError> {
    let name = path.display().to_string();
    let io = |error| DaemonError::Io { context: name.clone(), error };
    let input = crate::replay::Input::open(&name).map_err(io)?;
    let mut lines = crate::lines::Lines::new(input.reader);
    let mut events = 0u64;
    while let Some(line) = lines.next_line().map_err(io)? {
        if let crate::lines::Line::Text(bytes) = line
            && let Ok(event) = crate::event::decode(bytes)
        {
            each(event, &|| format!("{name}:{}", lines.number))?;
            events += 1;
        }
    }
    tracing::info!(path = %name, events, "history loaded");
    Ok(events)
}

/// Wall-clock Unix seconds.
pub fn wall_now() -> Ts {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as Ts)
}

/// Sends states to systemd if it is listening (`$NOTIFY_SOCKET`); otherwise does nothing.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// Periodic chores of the loop: watchdog pings and STATUS lines, checkpoint timing, the regional view.
struct Chores {
    watchdog: Option<Duration>,
    last_ping: Instant,
    checkpoint_every: Duration,
    last_checkpoint: Instant,
    /// With `[metrics]`: how often to refresh the view, and the region prefix.
    view: Option<(Duration, usize)>,
    last_view: Option<Instant>,
}

impl Chores {
    fn new(config: &Config) -> Chores {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        Chores {
            watchdog,
            last_ping: Instant::now(),
            checkpoint_every: config.checkpoint.interval(),
            last_checkpoint: Instant::now(),
            view: config.metrics.as_ref().map(|m| (Duration::from_secs(m.view_interval_secs.max(1)), m.region_prefix)),
            last_view: None,
        }
    }

    /// Recomputes the regional view and the state size from `engines` when due (only with `[metrics]`).
    fn view<'a>(&mut self, stats: &Stats, engines: impl Iterator<Item = &'a crate::engine::Engine>) {
        let Some((every, prefix)) = self.view else { return };
        if self.last_view.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        let started = Instant::now();
        let mut view = stats::View::default();
        let mut bytes = 0;
        for engine in engines {
            let mut part = stats::View::default();
            engine.standing(|region, domain, action| part.add(region, domain, action, prefix));
            view.merge(part);
            bytes += engine.state_bytes() as u64;
        }
        let view = view.capped();
        let groups = view.regions.len();
        stats.set_view(view);
        stats.state_bytes.store(bytes, Ordering::Relaxed);
        tracing::debug!(
            target: "credit_sentinel::view",
            regions = groups,
            state_bytes = bytes,
            micros = started.elapsed().as_micros() as u64,
            "regional view refreshed"
        );
        self.last_view = Some(Instant::now());
    }

    /// Pings the watchdog from the working loop itself, so a stalled loop is restarted by systemd.
    fn ping(&mut self, stats: &Stats) {
        if let Some(every) = self.watchdog
            && self.last_ping.elapsed() >= every
        {
            let status = stats.status_line();
            notify(&[sd_notify::NotifyState::Watchdog, sd_notify::NotifyState::Status(&status)]);
            self.last_ping = Instant::now();
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.last_checkpoint.elapsed() >= self.checkpoint_every
    }

    fn checkpointed(&mut self) {
        self.last_checkpoint = Instant::now();
    }
}
