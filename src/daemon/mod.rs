//! The long-running daemon (`credit-sentinel run`): a source (Kafka, or a followed file), one engine per
//! state partition, alert output, checkpoints, rule reloads and the systemd protocol.
//!
//! The work runs on one blocking thread per daemon ([`run_blocking`]): sources are polled, events go
//! through the partition's [`task::Task`], alerts are written out, and checkpoints are taken, all in
//! order, so that a checkpoint always matches the input before it. The async side ([`run`]) only
//! forwards shutdown and reload requests through a [`Handle`]; the binary maps signals onto it.

pub mod file;
pub mod kafka;
pub mod service;
pub mod task;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Source};
use crate::rules::RuleSet;
use crate::time::Ts;

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
}

/// Counters of what the daemon did (read by logs, STATUS lines and, later, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub lines: AtomicU64,
    pub accepted: AtomicU64,
    pub late: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub alerts: AtomicU64,
    /// Alerts not produced again after a restart because an earlier run already had.
    pub suppressed: AtomicU64,
    pub checkpoints: AtomicU64,
    pub entities: AtomicU64,
    /// Partitions currently owned.
    pub partitions: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// From taking a message off the consumer to handing its alerts to the producer (Kafka source).
    pub alert_latency: Histogram,
}

/// A histogram of durations in power-of-two microsecond buckets (bucket `i` holds `[2^i, 2^(i+1))` µs;
/// bucket 0 also holds less than 1 µs).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 32],
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().max(1) as u64;
        let i = (63 - us.leading_zeros() as usize).min(31);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), or zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Duration::from_micros(1 << (i + 1));
            }
        }
        Duration::from_micros(1 << 32)
    }
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// One line for logs and systemd's STATUS.
    pub fn status_line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "partitions={} entities={} events={} duplicates={} rejected={} alerts={} checkpoints={}",
            g(&self.partitions),
            g(&self.entities),
            g(&self.accepted),
            g(&self.duplicates),
            g(&self.rejected),
            g(&self.alerts),
            g(&self.checkpoints)
        )
    }
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

    /// Whether state is restored and the source is being read.
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Tells systemd (once) that state is restored and the source is being read.
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
    let mut notifier_thread = None;
    if let Some(notify) = &config.notifications {
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir)
            .map_err(|error| DaemonError::Io { context: state_dir.display().to_string(), error })?;
        let notifier = crate::notify::Notifier::open(notify.clone(), &state_dir)?;
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

/// Reads a JSON Lines history file (`[bootstrap]`) and hands each valid event to `each`, in file order. Bad
/// lines are skipped: history is the bureau's own export, already checked when it was first consumed. Logs and
/// returns the number of events.
fn read_history(
    path: &std::path::Path,
    mut each: impl FnMut(crate::event::Event) -> Result<(), DaemonError>,
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
            each(event)?;
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

/// Periodic chores of the loop: watchdog pings and STATUS lines, checkpoint timing.
struct Chores {
    watchdog: Option<Duration>,
    last_ping: Instant,
    checkpoint_every: Duration,
    last_checkpoint: Instant,
}

impl Chores {
    fn new(checkpoint_every: Duration) -> Chores {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        Chores { watchdog, last_ping: Instant::now(), checkpoint_every, last_checkpoint: Instant::now() }
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
