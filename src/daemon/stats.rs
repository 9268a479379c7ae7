//! What the daemon counts: atomics and small bounded maps that the working loop updates, read by log lines,
//! systemd's STATUS line and the metrics endpoint (`crate::metrics`). Counting costs the loop a relaxed add;
//! the maps (alerts by rule, lag by partition, the regional view) are touched per alert, per statistics
//! report and per view refresh, never per event.
//!
//! No label carries an entity: every map is keyed by a bounded set (rule ids of the loaded rules, owned
//! partitions, region prefixes capped at [`MAX_VIEW_GROUPS`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::event::{Kind, Reason};
use crate::rules::Action;

/// Distinct regions the regional view reports: the ones with the most entities standing (ties by code); the
/// entities of the rest are counted under [`OTHER`], so a producer sending ever new region codes cannot grow
/// the label set.
pub const MAX_VIEW_GROUPS: usize = 2000;
/// The domains of SPEC's profile; any other value is counted under [`OTHER`].
pub const DOMAINS: [&str; 4] = ["food", "drug", "special_equipment", "general"];
/// The view's group for entities beyond [`MAX_VIEW_GROUPS`].
pub const OTHER: &str = "other";
/// The view's group for entities without the field (no `profile` event, or the field left out).
pub const UNKNOWN: &str = "unknown";

/// Counters of what the daemon did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Input lines (or messages) read.
    pub lines: AtomicU64,
    /// Valid events by kind (`Kind as usize`) and outcome (0: accepted, 1: duplicate).
    events: [[AtomicU64; 2]; Kind::ALL.len()],
    /// Rejected lines by reason (`Reason::index`).
    rejected: [AtomicU64; Reason::NAMES.len()],
    pub late: AtomicU64,
    /// Alerts not produced again after a restart because an earlier run already had.
    pub suppressed: AtomicU64,
    pub checkpoints: AtomicU64,
    pub entities: AtomicU64,
    /// Partitions currently owned.
    pub partitions: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Wall-clock Unix time of the last input line read (0: none yet).
    pub last_line_at: AtomicU64,
    /// Wall-clock Unix time of the last checkpoint written (0: none yet).
    pub last_checkpoint_at: AtomicU64,
    /// An estimate of the bytes of window state held by all partitions (refreshed with the view).
    pub state_bytes: AtomicU64,
    /// From taking a message off the consumer to handing its alerts to the producer (Kafka source).
    pub alert_latency: Histogram,
    /// Writing one partition's checkpoint (serialise, write, fsync, rename).
    pub checkpoint_duration: Histogram,
    /// Whether the source has caught up (file: its end was reached; Kafka: lag within the configured bound).
    caught_up: AtomicBool,
    /// Alerts output, by rule id and action.
    alerts: Mutex<BTreeMap<(String, Action), u64>>,
    /// Regional alerts raised, by rule id and action.
    regional: Mutex<BTreeMap<(String, Action), u64>>,
    /// Kafka: the low and high watermarks of each `(topic, partition)` being fetched, from librdkafka's
    /// statistics.
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
    /// Kafka: messages behind the high watermark, per owned `(topic, partition)`.
    lag: Mutex<BTreeMap<(String, i32), u64>>,
    view: Mutex<View>,
    /// Limit hits (`crate::limits`).
    pub limits: crate::limits::LimitHits,
}

/// Entities standing at each action (their highest level over the enabled rules), per region prefix and per
/// domain: `counts[action as usize - 1]`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct View {
    pub regions: BTreeMap<String, [u64; 4]>,
    pub domains: BTreeMap<String, [u64; 4]>,
}

impl View {
    /// Counts one entity standing at `action`; a region is cut to its first `prefix` characters, a domain
    /// outside [`DOMAINS`] counts as [`OTHER`].
    pub fn add(&mut self, region: Option<&str>, domain: Option<&str>, action: Action, prefix: usize) {
        let region = region.map(|r| r.char_indices().nth(prefix).map_or(r, |(cut, _)| &r[..cut]));
        let domain = domain.map(|d| if DOMAINS.contains(&d) { d } else { OTHER });
        let mut one = [0; 4];
        one[action as usize - 1] = 1;
        add_to(&mut self.regions, region.unwrap_or(UNKNOWN), one);
        add_to(&mut self.domains, domain.unwrap_or(UNKNOWN), one);
    }

    /// Adds another view's counts (of another partition).
    pub fn merge(&mut self, other: View) {
        for (group, counts) in &other.regions {
            add_to(&mut self.regions, group, *counts);
        }
        for (group, counts) in &other.domains {
            add_to(&mut self.domains, group, *counts);
        }
    }

    /// The view with at most [`MAX_VIEW_GROUPS`] regions besides [`OTHER`] and [`UNKNOWN`]: those with the
    /// most entities (ties by code), the rest summed into [`OTHER`]. The same counts always give the same view.
    pub fn capped(mut self) -> View {
        let named = self.regions.keys().filter(|g| *g != OTHER && *g != UNKNOWN).count();
        if named <= MAX_VIEW_GROUPS {
            return self;
        }
        let mut ranked: Vec<(String, [u64; 4])> =
            self.regions.iter().filter(|(g, _)| *g != OTHER && *g != UNKNOWN).map(|(g, c)| (g.clone(), *c)).collect();
        ranked.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then_with(|| a.0.cmp(&b.0)));
        for (group, counts) in ranked.into_iter().skip(MAX_VIEW_GROUPS) {
            self.regions.remove(&group);
            add_to(&mut self.regions, OTHER, counts);
        }
        self
    }
}

fn add_to(map: &mut BTreeMap<String, [u64; 4]>, group: &str, counts: [u64; 4]) {
    let group = if group.is_empty() { UNKNOWN } else { group };
    let slot = match map.get_mut(group) {
        Some(slot) => slot,
        None => map.entry(group.to_owned()).or_default(),
    };
    for (s, c) in slot.iter_mut().zip(counts) {
        *s += c;
    }
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an input line read now.
    pub fn line(&self, wall: i64) {
        Stats::add(&self.lines, 1);
        self.last_line_at.store(wall.max(0) as u64, Ordering::Relaxed);
    }

    /// Counts a valid event of `kind`: accepted (and maybe late), or a duplicate.
    pub fn event(&self, kind: Kind, duplicate: bool, late: bool) {
        Stats::add(&self.events[kind as usize][usize::from(duplicate)], 1);
        Stats::add(&self.late, u64::from(late));
    }

    /// Counts a rejected line.
    pub fn rejected(&self, reason: Reason) {
        Stats::add(&self.rejected[reason.index()], 1);
        match reason {
            Reason::TooLarge => self.limits.hit(crate::limits::Limit::MessageBytes, "a line or message refused"),
            Reason::OverLimit(limit) => self.limits.hit(limit, "an event refused"),
            _ => {}
        }
    }

    /// Counts an alert output.
    pub fn alert(&self, rule: &str, action: Action) {
        bump(&self.alerts, rule, action);
    }

    /// Counts a regional alert raised.
    pub fn regional_alert(&self, rule: &str, action: Action) {
        bump(&self.regional, rule, action);
    }

    /// Events of `kind` with `duplicate` outcome.
    pub fn events_of(&self, kind: Kind, duplicate: bool) -> u64 {
        self.events[kind as usize][usize::from(duplicate)].load(Ordering::Relaxed)
    }

    /// Lines rejected for reason number `index` (see [`Reason::NAMES`]).
    pub fn rejected_of(&self, index: usize) -> u64 {
        self.rejected.get(index).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Events accepted (all kinds).
    pub fn accepted(&self) -> u64 {
        Kind::ALL.iter().map(|&k| self.events_of(k, false)).sum()
    }

    /// Duplicates dropped (all kinds).
    pub fn duplicates(&self) -> u64 {
        Kind::ALL.iter().map(|&k| self.events_of(k, true)).sum()
    }

    /// Lines rejected (all reasons).
    pub fn rejected_total(&self) -> u64 {
        (0..Reason::NAMES.len()).map(|i| self.rejected_of(i)).sum()
    }

    /// Alerts output, by rule and action.
    pub fn alerts_by_rule(&self) -> BTreeMap<(String, Action), u64> {
        self.alerts.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Regional alerts raised, by rule and action.
    pub fn regional_by_rule(&self) -> BTreeMap<(String, Action), u64> {
        self.regional.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Alerts output (all rules).
    pub fn alerts(&self) -> u64 {
        self.alerts.lock().map(|m| m.values().sum()).unwrap_or_default()
    }

    /// Records the `(low, high)` watermarks reported by librdkafka's statistics for partitions being
    /// fetched (partition `-1`, the internal unassigned one, and unknown values are left out by the caller).
    pub fn set_watermarks(&self, marks: impl IntoIterator<Item = ((String, i32), (i64, i64))>) {
        if let Ok(mut map) = self.watermarks.lock() {
            map.extend(marks);
        }
    }

    /// Forgets the watermarks of `partition` (newly assigned: what librdkafka reported before may be stale
    /// until it fetches again).
    pub fn forget_watermarks(&self, partition: i32) {
        if let Ok(mut map) = self.watermarks.lock() {
            map.retain(|k, _| k.1 != partition);
        }
    }

    /// The `(low, high)` watermarks of a partition, if statistics reported them since it was assigned.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.watermarks.lock().ok()?.get(&(topic.to_owned(), partition)).copied()
    }

    /// Replaces the lag of the owned partitions.
    pub fn set_lag(&self, lag: BTreeMap<(String, i32), u64>) {
        if let Ok(mut slot) = self.lag.lock() {
            *slot = lag;
        }
    }

    /// Messages behind, per owned partition.
    pub fn lag(&self) -> BTreeMap<(String, i32), u64> {
        self.lag.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Sets whether the source has caught up.
    pub fn set_caught_up(&self, yes: bool) {
        self.caught_up.store(yes, Ordering::Release);
    }

    /// Whether the source has caught up.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Replaces the regional view.
    pub fn set_view(&self, view: View) {
        if let Ok(mut slot) = self.view.lock() {
            *slot = view;
        }
    }

    /// The regional view as last refreshed.
    pub fn view(&self) -> View {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// One line for logs and systemd's STATUS.
    pub fn status_line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "partitions={} entities={} events={} duplicates={} rejected={} alerts={} checkpoints={}",
            g(&self.partitions),
            g(&self.entities),
            self.accepted(),
            self.duplicates(),
            self.rejected_total(),
            self.alerts(),
            g(&self.checkpoints)
        )
    }
}

fn bump(map: &Mutex<BTreeMap<(String, Action), u64>>, rule: &str, action: Action) {
    if let Ok(mut map) = map.lock() {
        // Rule ids are bounded by the rule files (`MAX_RULES`); reloads add at most that many more each.
        match map.get_mut(&(rule.to_owned(), action)) {
            Some(n) => *n += 1,
            None => {
                map.insert((rule.to_owned(), action), 1);
            }
        }
    }
}

/// A histogram of durations in power-of-two microsecond buckets (bucket `i` holds `[2^i, 2^(i+1))` µs;
/// bucket 0 also holds less than 1 µs), with the sum of the samples.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 32],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().max(1) as u64;
        let i = (63 - us.leading_zeros() as usize).min(31);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the samples.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    /// Cumulative counts at each bucket's upper bound (`2^(i+1)` µs), for bounds up to `max`; samples above
    /// the last bound are only in [`Histogram::count`] (the `+Inf` bucket).
    pub fn cumulative(&self, max: Duration) -> Vec<(Duration, u64)> {
        let mut seen = 0;
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter().enumerate() {
            let bound = Duration::from_micros(1 << (i + 1));
            if bound > max {
                break;
            }
            seen += b.load(Ordering::Relaxed);
            out.push((bound, seen));
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_the_samples() {
        let h = Histogram::default();
        h.record(Duration::from_micros(3)); // [2, 4)
        h.record(Duration::from_micros(3));
        h.record(Duration::from_millis(5)); // [4096, 8192)
        let c = h.cumulative(Duration::from_secs(1));
        assert_eq!(c[0], (Duration::from_micros(2), 0));
        assert_eq!(c[1], (Duration::from_micros(4), 2));
        assert_eq!(c.iter().find(|(b, _)| *b == Duration::from_micros(8192)).map(|x| x.1), Some(3));
        assert!(c.last().is_some_and(|(b, _)| *b <= Duration::from_secs(1)));
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum(), Duration::from_micros(5006));
    }

    #[test]
    fn the_view_cuts_regions_to_their_prefix_and_bounds_its_groups() {
        let warn = Action::Warn as usize - 1;
        let mut v = View::default();
        v.add(Some("360502"), Some("food"), Action::Warn, 4);
        v.add(Some("360503"), Some("food"), Action::Warn, 4);
        v.add(Some("36"), None, Action::Remind, 4);
        v.add(None, Some("drug"), Action::Inspect, 4);
        assert_eq!(v.regions["3605"], [0, 2, 0, 0]);
        assert_eq!(v.regions["36"], [1, 0, 0, 0]);
        assert_eq!(v.regions[UNKNOWN], [0, 0, 0, 1]);
        assert_eq!(v.domains["food"][warn], 2);
        assert_eq!(v.domains[UNKNOWN], [1, 0, 0, 0]);

        let mut big = View::default();
        for i in 0..MAX_VIEW_GROUPS + 10 {
            big.add(Some(&format!("{i:06}")), Some("bakery"), Action::Remind, 6);
        }
        // The region with two entities is kept whatever its code; the ten last codes of one entity go to `other`.
        big.add(Some("999999"), None, Action::Warn, 6);
        big.add(Some("999999"), None, Action::Warn, 6);
        let big = big.capped();
        assert_eq!(big.regions.len(), MAX_VIEW_GROUPS + 1, "named, and other");
        assert_eq!(big.regions["999999"], [0, 2, 0, 0]);
        assert_eq!(big.regions[OTHER], [11, 0, 0, 0]);
        assert!(
            big.regions.contains_key("000000") && !big.regions.contains_key(&format!("{:06}", MAX_VIEW_GROUPS + 9))
        );
        assert_eq!(big.domains[OTHER], [MAX_VIEW_GROUPS as u64 + 10, 0, 0, 0], "free-text domains are not labels");

        let mut merged = View::default();
        merged.merge(v.clone());
        merged.merge(v);
        assert_eq!(merged.regions["3605"][warn], 4);
    }
}
