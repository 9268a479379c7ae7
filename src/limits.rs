//! Every size limit on what comes in, in one place, and the one event that counts and logs a limit hit.
//!
//! Nothing a producer, a rule author or an admin client sends can make the daemon hold more than these
//! bounds. What is over a limit is refused whole, never half-applied: a line or event is rejected with
//! reason `over_limit` or `too_large` (dead-letter topic or reject file, so it can be replayed once the limit
//! is raised); a rule file, configuration or admin request is refused with a message; an e-mail that would
//! overflow the outbox is moved to `outbox/dead/`. Each hit counts in
//! `credit_sentinel_limit_hits_total{limit}` and writes a warning at most once a minute per limit.
//!
//! The limits below [`EngineLimits`] are constants of the code; the engine's are configurable (`[limits]`),
//! with defaults far above what SPEC's streams reach, so the alert stream is exactly SPEC's until one is hit.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Deserialize;

/// A limit that can be hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// A line or message longer than [`crate::event::MAX_LINE_BYTES`].
    MessageBytes,
    /// A profile field longer than [`crate::event::MAX_PROFILE_FIELD_CHARS`] (cut), or a new field value
    /// beyond the engine's distinct values (stored as absent).
    ProfileFields,
    /// Entities held (`[limits] entities`).
    Entities,
    /// Events held for one entity (`[limits] events_per_entity`).
    EntityEvents,
    /// Event ids remembered for deduplication (`[limits] seen_ids`).
    SeenIds,
    /// An alert's evidence longer than [`crate::engine::MAX_EVIDENCE_BYTES`]: the oldest ids are left out.
    AlertEvidence,
    /// E-mails waiting in the outbox (`[limits] outbox`).
    Outbox,
    /// Silences ([`crate::notify::dispatch::MAX_SILENCES`]).
    Silences,
    /// An admin request longer than [`crate::notify::admin::MAX_REQUEST`].
    AdminRequest,
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::MessageBytes,
        Limit::ProfileFields,
        Limit::Entities,
        Limit::EntityEvents,
        Limit::SeenIds,
        Limit::AlertEvidence,
        Limit::Outbox,
        Limit::Silences,
        Limit::AdminRequest,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MessageBytes => "message_bytes",
            Limit::ProfileFields => "profile_fields",
            Limit::Entities => "entities",
            Limit::EntityEvents => "events_per_entity",
            Limit::SeenIds => "seen_ids",
            Limit::AlertEvidence => "alert_evidence",
            Limit::Outbox => "outbox",
            Limit::Silences => "silences",
            Limit::AdminRequest => "admin_request",
        }
    }

    /// Where the limit is set, for log lines and messages.
    pub fn setting(self) -> String {
        use crate::event::{MAX_LINE_BYTES, MAX_PROFILE_FIELD_CHARS};
        match self {
            Limit::MessageBytes => format!("{MAX_LINE_BYTES} bytes per line or message"),
            Limit::ProfileFields => format!(
                "{MAX_PROFILE_FIELD_CHARS} characters per profile field, {} distinct values",
                crate::engine::MAX_PROFILE_VALUES
            ),
            Limit::Entities => "[limits] entities".into(),
            Limit::EntityEvents => "[limits] events_per_entity".into(),
            Limit::SeenIds => "[limits] seen_ids".into(),
            Limit::AlertEvidence => format!("{} bytes of event ids per alert", crate::engine::MAX_EVIDENCE_BYTES),
            Limit::Outbox => "[limits] outbox".into(),
            Limit::Silences => format!("{} silences", crate::notify::dispatch::MAX_SILENCES),
            Limit::AdminRequest => format!("{} bytes per admin request", crate::notify::admin::MAX_REQUEST),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.setting())
    }
}

/// `[limits]`: the bounds an operator sets, per state partition. Each one's cost in memory is stated, so that
/// a host can be sized: at most `entities` × 150 B + `seen_ids` × 18 B + events held × 40 B, where the events
/// held are at most `seen_ids` (and `entities` × `events_per_entity`). The defaults are set so that SPEC's
/// streams never reach them, not to fit a host (at the defaults that bound is tens of GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Entities with window state, and (counted apart) entities with a profile (about 150 bytes each).
    #[serde(default = "default_entities")]
    pub entities: usize,
    /// Events held in windows for one entity (about 40 bytes each). One entity's flood is refused before it
    /// costs the others time.
    #[serde(default = "default_events_per_entity")]
    pub events_per_entity: usize,
    /// Event ids remembered for deduplication (9 to 18 bytes each: 8 in a hash table at least half full, and
    /// 27 while it doubles). Ids are never forgotten (SPEC: a repeated id changes nothing, however late), so
    /// this bounds the events accepted over the state's life.
    #[serde(default = "default_seen_ids")]
    pub seen_ids: usize,
    /// E-mails waiting in the outbox (each its size on disk). Beyond it, a new e-mail goes straight to
    /// `outbox/dead/`, audited: the alert itself is in the alert output.
    #[serde(default = "default_outbox")]
    pub outbox: usize,
}

fn default_entities() -> usize {
    20_000_000
}

fn default_events_per_entity() -> usize {
    100_000
}

fn default_seen_ids() -> usize {
    500_000_000
}

fn default_outbox() -> usize {
    10_000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            entities: default_entities(),
            events_per_entity: default_events_per_entity(),
            seen_ids: default_seen_ids(),
            outbox: default_outbox(),
        }
    }
}

impl LimitsConfig {
    /// The engine's part.
    pub fn engine(&self) -> EngineLimits {
        EngineLimits { entities: self.entities, events_per_entity: self.events_per_entity, seen_ids: self.seen_ids }
    }

    /// The first limit out of its range, by name, with the range: 0 would refuse everything, and entities
    /// are numbered with 32 bits.
    pub fn out_of_range(&self) -> Option<(&'static str, &'static str)> {
        if self.entities > u32::MAX as usize {
            return Some(("entities", "from 1 to 4294967295"));
        }
        [
            ("entities", self.entities),
            ("events_per_entity", self.events_per_entity),
            ("seen_ids", self.seen_ids),
            ("outbox", self.outbox),
        ]
        .into_iter()
        .find_map(|(name, v)| (v == 0).then_some((name, "at least 1")))
    }
}

/// The engine's bounds (see [`LimitsConfig`] for each one's meaning); the defaults are `[limits]`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    pub entities: usize,
    pub events_per_entity: usize,
    pub seen_ids: usize,
}

impl EngineLimits {
    /// No bound: replay, `test-rules` and `diff-rules`.
    pub const UNLIMITED: EngineLimits =
        EngineLimits { entities: usize::MAX, events_per_entity: usize::MAX, seen_ids: usize::MAX };
}

impl Default for EngineLimits {
    /// `[limits]`' defaults.
    fn default() -> Self {
        LimitsConfig::default().engine()
    }
}

/// How often, at most, a limit's warning is logged.
const LOG_EVERY_SECS: i64 = 60;

/// Limit hits: counted for the metric, logged at most once a minute per limit with the hits since.
#[derive(Debug, Default)]
pub struct LimitHits {
    counts: [AtomicU64; Limit::ALL.len()],
    /// Wall-clock second of the last warning, per limit.
    logged_at: [AtomicI64; Limit::ALL.len()],
    /// Hits at the last warning, per limit.
    logged_count: [AtomicU64; Limit::ALL.len()],
}

impl LimitHits {
    /// Counts a hit of `limit`; `what` says what was refused or cut (no entity data: it reaches the log).
    pub fn hit(&self, limit: Limit, what: &str) {
        let i = limit.index();
        let total = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::daemon::wall_now();
        let last = self.logged_at[i].load(Ordering::Relaxed);
        if (last == 0 || now - last >= LOG_EVERY_SECS)
            && self.logged_at[i].compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let since = total - self.logged_count[i].swap(total, Ordering::Relaxed);
            tracing::warn!(
                limit = limit.as_str(),
                setting = limit.setting(),
                what,
                hits = since,
                total,
                "input over a limit"
            );
        }
    }

    /// Hits of `limit` since the process started.
    pub fn count(&self, limit: Limit) -> u64 {
        self.counts[limit.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_in_index_order() {
        for (i, l) in Limit::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
        let names: std::collections::BTreeSet<_> = Limit::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(names.len(), Limit::ALL.len());
    }

    #[test]
    fn hits_are_counted_per_limit() {
        let hits = LimitHits::default();
        for _ in 0..3 {
            hits.hit(Limit::Entities, "an event of a new entity");
        }
        hits.hit(Limit::Outbox, "an e-mail");
        assert_eq!((hits.count(Limit::Entities), hits.count(Limit::Outbox), hits.count(Limit::SeenIds)), (3, 1, 0));
    }
}
