//! One state partition: an engine, the positions its state matches, and the clock that drives it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::alert::AlertRecord;
use crate::checkpoint::{Meta, Store};
use crate::config::{ClockConfig, ClockMode};
use crate::engine::{Alert, Engine, Offer};
use crate::event::{Event, Kind, Reason};
use crate::limits::{EngineLimits, Limit};
use crate::notify::Notifier;
use crate::rules::RuleSet;
use crate::time::Ts;

use super::regional::Regional;
use super::{DaemonError, Stats};

/// An alert ready to be written: its id, entity and JSON record.
pub struct Output {
    pub alert_id: String,
    pub entity_id: String,
    pub json: Vec<u8>,
}

/// One state partition.
pub struct Task {
    pub engine: Engine,
    /// Positions of the input and output the state matches (updated as input is handled).
    pub meta: Meta,
    pub store: Store,
    mode: ClockMode,
    margin: Ts,
    /// Ids of alerts an earlier run already wrote after the last checkpoint: not written again.
    suppress: HashSet<String>,
    /// Alerts raised and not yet taken by the caller.
    out: Vec<Output>,
    /// Where live alerts and level falls are handed for e-mail.
    notifier: Option<Arc<Notifier>>,
    /// The process's regional aggregator, fed with every alert raised.
    regional: Option<Arc<Regional>>,
    /// When the first event of the batch not yet evaluated was handed in.
    batch_since: Option<Instant>,
    /// When the first event behind the output not yet taken was handed in (for the latency metric).
    out_since: Option<Instant>,
}

impl Task {
    /// A task restored from `store`'s newest good checkpoint, or a fresh one; the flag says which.
    pub fn open(
        store: Store,
        rules: &Arc<RuleSet>,
        clock: &ClockConfig,
        limits: EngineLimits,
        notifier: Option<Arc<Notifier>>,
        regional: Option<Arc<Regional>>,
    ) -> Result<(Task, bool), DaemonError> {
        let (engine, meta, restored) = match store.restore(rules, limits)? {
            Some(r) => {
                tracing::info!(
                    path = %r.path.display(),
                    entities = r.engine.entities(),
                    next_offset = r.meta.next_offset,
                    offsets = ?r.meta.offsets,
                    "state restored from checkpoint"
                );
                (r.engine, r.meta, true)
            }
            None => (Engine::new(rules.clone())?, Meta::default(), false),
        };
        let suppress = meta.suppress.iter().cloned().collect();
        let mut engine = engine;
        engine.set_limits(limits);
        if notifier.is_some() {
            engine.report_falls();
        }
        let task = Task {
            engine,
            meta,
            store,
            mode: clock.mode,
            margin: clock.future_margin_secs.min(i64::MAX as u64 / 2) as Ts,
            suppress,
            out: Vec::new(),
            notifier,
            regional,
            batch_since: None,
            out_since: None,
        };
        Ok((task, restored))
    }

    /// Adds alert ids not to write again (an earlier run wrote them after the checkpoint).
    pub fn suppress(&mut self, ids: impl IntoIterator<Item = String>) {
        self.suppress.extend(ids);
    }

    /// Handles one valid event at wall-clock second `wall`. `Err` for an event beyond the future margin
    /// (wall clock only; SPEC: replay and the event clock never compare with the wall).
    pub fn handle(&mut self, event: Event, wall: Ts, stats: &Stats) -> Result<Offer, Reason> {
        let kind = event.kind;
        let profile = self.profile_limits(&event);
        let offer = match self.mode {
            ClockMode::Event => {
                // An event after the clock closes the pending batch: it is evaluated first.
                let since =
                    if self.engine.now().is_some_and(|now| event.at > now) { self.batch_since.take() } else { None };
                let mut raised = Vec::new();
                let offer = self.engine.offer(event, &mut |a| raised.push(a));
                if !raised.is_empty() {
                    self.out_since = self.out_since.or(since);
                }
                self.emit(raised, stats);
                offer
            }
            ClockMode::Wall => {
                if event.at > wall.saturating_add(self.margin) {
                    return Err(Reason::Future);
                }
                self.tick(wall, stats);
                self.engine.ingest(event)
            }
        };
        // The clock is read once per batch, not per event.
        if self.batch_since.is_none() {
            self.batch_since = Some(Instant::now());
        }
        self.count(kind, offer, profile, stats)
    }

    /// For a profile event: whether a field was cut, and the engine's count of values refused before it.
    fn profile_limits(&self, event: &Event) -> Option<(bool, u64)> {
        let data = event.profile.as_ref()?;
        Some((data.clipped, self.engine.profile_values_refused()))
    }

    /// Counts an offered event; an event over a limit is to be rejected with that reason.
    fn count(&self, kind: Kind, offer: Offer, profile: Option<(bool, u64)>, stats: &Stats) -> Result<Offer, Reason> {
        match offer {
            Offer::Accepted { late } => stats.event(kind, false, late),
            Offer::Duplicate => {
                stats.event(kind, true, false);
                return Ok(offer);
            }
            Offer::OverLimit(limit) => return Err(Reason::OverLimit(limit)),
        }
        if let Some((clipped, refused)) = profile
            && (clipped || self.engine.profile_values_refused() > refused)
        {
            stats.limits.hit(Limit::ProfileFields, "a profile field cut or not stored");
        }
        Ok(offer)
    }

    /// With the wall clock, moves `now` to `wall`: the batch of the previous second is evaluated and the
    /// timers in between fire at their instants. With the event clock, nothing (time is the input's).
    pub fn tick(&mut self, wall: Ts, stats: &Stats) {
        if self.mode == ClockMode::Wall && self.engine.now().is_none_or(|now| wall > now) {
            let since = self.batch_since.take();
            let mut raised = Vec::new();
            self.engine.advance_to(wall, &mut |a| raised.push(a));
            if !raised.is_empty() {
                self.out_since = self.out_since.or(since);
            }
            self.emit(raised, stats);
        }
    }

    /// Swaps in a reloaded rule set (see [`Engine::set_rules`]).
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) -> Result<(), DaemonError> {
        Ok(self.engine.set_rules(rules)?)
    }

    /// Handles one event of history (`[bootstrap]`) with the event clock, whatever the live clock. Its
    /// alerts are output like any other but not mailed: they are the past. `Err` for an event over a limit
    /// (counted): history that does not fit is not loaded in part.
    pub fn history(&mut self, event: crate::event::Event, stats: &Stats) -> Result<(), Reason> {
        let mut raised = Vec::new();
        let kind = event.kind;
        let profile = self.profile_limits(&event);
        let offer = self.engine.offer(event, &mut |a| raised.push(a));
        self.emit_with(raised, stats, false);
        self.count(kind, offer, profile, stats).map(|_| ()).inspect_err(|&reason| stats.rejected(reason))
    }

    /// Turns raised alerts into output, leaving out the suppressed ones, and hands them (with the level
    /// falls since the last call) to the notifier. Suppressed alerts are handed over too: the notifier
    /// drops those it already has, and takes those an earlier run output but never made durable to it.
    pub fn emit(&mut self, raised: Vec<Alert>, stats: &Stats) {
        self.emit_with(raised, stats, true);
    }

    fn emit_with(&mut self, raised: Vec<Alert>, stats: &Stats, notify: bool) {
        let rules = self.engine.rules().clone();
        let falls = self.engine.take_falls();
        let notifier = self.notifier.as_ref().filter(|_| notify);
        // The notifier gets rises and falls in the order they were evaluated (by instant): one call can
        // see a level fall at one instant and rise again at a later one.
        let mut falls = falls.iter().peekable();
        for alert in &raised {
            if alert.evidence_omitted > 0 {
                stats.limits.hit(Limit::AlertEvidence, "the oldest evidence of an alert left out");
            }
            let record = AlertRecord::new(alert, &rules);
            if let Some(n) = notifier {
                // Falls of every rule, shadow ones included: a level notified before its rule became a shadow
                // one must still be resolved (the notifier ignores falls of levels it never notified).
                while let Some(fall) = falls.next_if(|f| f.at < alert.at) {
                    n.fall(fall, &self.engine);
                }
                if !record.shadow {
                    n.alert(alert, &record.alert_id, &self.engine);
                }
            }
            if !self.suppress.is_empty() && self.suppress.remove(&record.alert_id) {
                Stats::add(&stats.suppressed, 1);
                continue;
            }
            let json = serde_json::to_vec(&record).unwrap_or_default();
            stats.alert(record.rule, alert.action);
            self.out.push(Output { alert_id: record.alert_id, entity_id: record.entity_id, json });
        }
        if let Some(n) = notifier {
            for fall in falls {
                n.fall(fall, &self.engine);
            }
        }
        if let Some(r) = &self.regional {
            r.offer(&self.engine, &raised, stats, notifier.map(|n| &**n));
        }
    }

    /// Whether alerts are waiting to be taken.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Alerts raised since the last call, in order.
    pub fn take_output(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// When the first event behind the output just taken was handed in (`None` for output raised by time
    /// alone: events leaving windows).
    pub fn take_output_since(&mut self) -> Option<Instant> {
        self.out_since.take()
    }

    /// Writes a checkpoint of the current state with `meta`'s positions (the caller has made the output
    /// before them durable). Returns its size in bytes.
    pub fn checkpoint(&mut self, stats: &Stats) -> Result<u64, DaemonError> {
        self.meta.seq += 1;
        self.meta.written_at = super::wall_now();
        self.meta.suppress = self.suppress.iter().cloned().collect();
        self.meta.suppress.sort();
        // The notifier's state first: the checkpoint says these alerts are done.
        if let Some(n) = &self.notifier {
            n.sync()?;
        }
        // The regional state too: the alerts before this checkpoint are never offered again.
        if let Some(r) = &self.regional {
            r.save()?;
        }
        let started = std::time::Instant::now();
        let bytes = self.store.write(&self.meta, &self.engine)?;
        stats.checkpoint_duration.record(started.elapsed());
        stats.last_checkpoint_at.store(self.meta.written_at.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
        Stats::add(&stats.checkpoints, 1);
        tracing::debug!(
            dir = %self.store.dir().display(),
            seq = self.meta.seq,
            bytes,
            entities = self.engine.entities(),
            millis = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        Ok(bytes)
    }
}
