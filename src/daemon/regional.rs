//! The daemon's regional view of 综合研判 (seed 三(五)): one [`Aggregator`] for the whole process, fed by every
//! state partition's entity alerts, and its state file.
//!
//! Regional alerts are counted (`credit_sentinel_regional_alerts_total`), logged, and handed to the notifier
//! (routed like any alert, by their rule id: the leadership receiver). They never reach the entity alert output.
//!
//! # Durability
//! The aggregator's state is written to `state_dir/regional.json` (temporary file, fsync, rename, directory
//! fsync) before each engine checkpoint that follows a change, so a checkpoint never covers entity alerts the
//! aggregator would forget. After a crash the input after the last checkpoint is read again and its alerts
//! offered again: an entity's latest qualifying time is a maximum, so offering an alert twice changes nothing,
//! and a regional alert raised again has the same id (rule, version, group, instant, action), which the
//! notifier drops. Under Kafka, partitions re-read after a crash can interleave differently, so a regional
//! alert can then be raised at another instant (at least once).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::aggregate::{Aggregator, RegionalAlert};
use crate::engine::{Alert, Engine};
use crate::notify::Notifier;
use crate::rules::RuleSet;

use super::{DaemonError, Stats};

/// The state file, in `state_dir`.
const FILE: &str = "regional.json";

/// The process's aggregator and where it is saved.
pub struct Regional {
    inner: Mutex<Inner>,
    path: PathBuf,
    /// The lock on `regional.lock`, held while the process runs: instances sharing `state_dir` never write
    /// one file together.
    _lock: std::fs::File,
}

struct Inner {
    aggregator: Aggregator,
    /// Changed since the last save.
    dirty: bool,
}

impl Regional {
    /// Restores the aggregator from `state_dir` (or starts a fresh one) under `rules`. A damaged state file is
    /// set aside as `regional.json.damaged` with an error line, and the view starts afresh: it fills again
    /// from the alerts of the next 30 days (the entity alert stream is not affected).
    ///
    /// `None` when another process sharing `state_dir` holds the regional state (a scale-out on one host or
    /// shared storage): that one aggregates its own partitions' alerts, this one aggregates none (a warning
    /// says so).
    pub fn open(state_dir: &Path, rules: &RuleSet) -> Result<Option<Arc<Regional>>, DaemonError> {
        let path = state_dir.join(FILE);
        let io = |error| DaemonError::Io { context: path.display().to_string(), error };
        let lock_path = state_dir.join("regional.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| DaemonError::Io { context: lock_path.display().to_string(), error })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!(
                    lock = %lock_path.display(),
                    "another instance sharing state_dir holds the regional state: this instance raises no regional alerts"
                );
                return Ok(None);
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(DaemonError::Io { context: lock_path.display().to_string(), error });
            }
        }
        let aggregator = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Aggregator>(&bytes) {
                Ok(mut a) => {
                    a.set_rules(rules);
                    let (groups, entries) = a.size();
                    tracing::info!(path = %path.display(), groups, entries, "regional state restored");
                    a
                }
                Err(error) => {
                    let aside = path.with_extension("json.damaged");
                    tracing::error!(path = %path.display(), %error, aside = %aside.display(), "regional state damaged: set aside, starting afresh");
                    std::fs::rename(&path, &aside).map_err(io)?;
                    Aggregator::new(rules)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Aggregator::new(rules),
            Err(e) => return Err(io(e)),
        };
        Ok(Some(Arc::new(Regional { inner: Mutex::new(Inner { aggregator, dirty: false }), path, _lock: lock })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers the entity alerts `engine` just raised, in order; regional alerts are counted, logged and, when
    /// `notifier` is given, handed to it.
    pub fn offer(&self, engine: &Engine, alerts: &[Alert], stats: &Stats, notifier: Option<&Notifier>) {
        // Most calls carry no alert (one per event under the event clock): no lock for them.
        if alerts.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if !inner.aggregator.is_active() {
            return;
        }
        let mut raised: Vec<RegionalAlert> = Vec::new();
        for alert in alerts {
            inner.aggregator.offer_engine_alert(engine, alert, &mut |r| raised.push(r));
        }
        inner.dirty = true;
        drop(inner);
        for r in raised {
            stats.regional_alert(&r.rule_id, r.action);
            tracing::info!(
                rule = %r.rule_id,
                scope = %r.scope,
                group = %r.group,
                action = %r.action,
                value = r.value,
                threshold = r.threshold,
                at = %r.at,
                alert_id = %r.alert_id,
                "regional alert"
            );
            if let Some(n) = notifier
                && !r.shadow
            {
                n.regional(&r, engine.rules());
            }
        }
    }

    /// Swaps in reloaded rules (state is kept for aggregates whose id and version are unchanged).
    pub fn set_rules(&self, rules: &RuleSet) {
        let mut inner = self.lock();
        inner.aggregator.set_rules(rules);
        inner.dirty = true;
    }

    /// Writes the state file if anything changed since the last write.
    pub fn save(&self) -> Result<(), DaemonError> {
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(());
        }
        let io = |error| DaemonError::Io { context: self.path.display().to_string(), error };
        let bytes = serde_json::to_vec(&inner.aggregator).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        inner.dirty = false;
        Ok(())
    }
}
