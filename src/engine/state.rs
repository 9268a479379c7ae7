//! Per-entity window state.
//!
//! An entity keeps one vector of stored events ([`Rec`]), sorted by `(kind, occurred_at)` with ties in
//! arrival order. Every count is two binary searches in the kind's run; there are no per-rule counters to
//! keep in step, so a late event, a duplicate-free re-evaluation or a rule with any window is handled by the
//! same code. Events are dropped once they are older than the longest reach of any rule that counts them;
//! of the classifications only the one in force (and any still in the future) are kept.

use std::ops::Range;

use compact_str::CompactString;

use crate::credit_code::EntityKey;
use crate::event::{Class, Event, Kind};
use crate::rules::{Measure, RuleSet};
use crate::time::Ts;

/// One stored event.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub at: Ts,
    pub id: CompactString,
    pub kind: Kind,
    /// The class of a classification.
    pub class: Option<Class>,
}

impl Rec {
    pub fn new(event: &Event) -> Rec {
        Rec { at: event.at, id: event.id.clone(), kind: event.kind, class: event.class }
    }
}

/// What the active rules need from stored events, precomputed per kind.
pub(super) struct Plan {
    /// Longest reach of any rule counting the kind (`None`: not stored).
    reach: [Option<Ts>; 7],
    /// Distinct offsets after `occurred_at` at which the kind's events change some count (0 = arrival).
    offsets: [Vec<Ts>; 7],
}

impl Plan {
    pub fn new(rules: &RuleSet) -> Plan {
        let mut offsets: [Vec<Ts>; 7] = Default::default();
        for rule in rules.active() {
            for &kind in rule.measure.kinds() {
                let o = &mut offsets[kind as usize];
                o.extend([0, rule.measure.window()]);
                if let Measure::Surge { window, .. } = rule.measure {
                    o.push(2 * window);
                }
            }
        }
        offsets[Kind::Classification as usize].push(0);
        for o in &mut offsets {
            o.sort_unstable();
            o.dedup();
        }
        let reach = Kind::ALL.map(|k| rules.reach(k));
        Plan { reach, offsets }
    }

    /// Whether events of `kind` are stored.
    pub fn keeps(&self, kind: Kind) -> bool {
        kind == Kind::Classification || self.reach[kind as usize].is_some()
    }

    /// The value of `measure` for `entity` at instant `at`.
    pub fn value(&self, entity: &Entity, measure: &Measure, at: Ts) -> i64 {
        match *measure {
            Measure::Count { ref kinds, window } => entity.count(kinds, at - window, at) as i64,
            Measure::Surge { ref kinds, window, ratio_num, ratio_den } => {
                let cur = entity.count(kinds, at - window, at);
                let prev = entity.count(kinds, at - 2 * window, at - window);
                let guard = u128::from(cur) * u128::from(ratio_den) >= u128::from(prev) * u128::from(ratio_num);
                if guard { cur as i64 - prev as i64 } else { 0 }
            }
        }
    }
}

/// The state of one entity.
#[derive(Debug)]
pub(super) struct Entity {
    pub key: EntityKey,
    /// Level per active rule, 3 bits each.
    levels: u64,
    /// The instant of this entity's live timer entry, `Ts::MAX` for none.
    pub due: Ts,
    /// In the engine's touched list.
    pub touched: bool,
    recs: Vec<Rec>,
}

impl Entity {
    pub fn new(key: EntityKey) -> Entity {
        Entity { key, levels: 0, due: Ts::MAX, touched: false, recs: Vec::new() }
    }

    pub fn level(&self, slot: usize) -> u8 {
        (self.levels >> (3 * slot) & 7) as u8
    }

    pub fn set_level(&mut self, slot: usize, level: u8) {
        self.levels = self.levels & !(7 << (3 * slot)) | u64::from(level) << (3 * slot);
    }

    pub fn recs_capacity(&self) -> usize {
        self.recs.capacity()
    }

    /// Inserts after every stored event of the same kind and time (arrival order breaks ties).
    pub fn insert(&mut self, rec: Rec) {
        let key = (rec.kind, rec.at);
        let pos = if self.recs.last().is_none_or(|last| (last.kind, last.at) <= key) {
            self.recs.len()
        } else {
            self.recs.partition_point(|r| (r.kind, r.at) <= key)
        };
        if self.recs.len() == self.recs.capacity() && self.recs.len() < 8 {
            // Most entities hold a handful of events: grow one at a time rather than doubling.
            self.recs.reserve_exact(1);
        }
        self.recs.insert(pos, rec);
    }

    fn segment(&self, kind: Kind) -> Range<usize> {
        let start = self.recs.partition_point(|r| r.kind < kind);
        let end = start + self.recs[start..].partition_point(|r| r.kind == kind);
        start..end
    }

    /// The stored events of `kind` with `from < at <= to`.
    fn window(&self, kind: Kind, from: Ts, to: Ts) -> &[Rec] {
        let run = &self.recs[self.segment(kind)];
        let lo = run.partition_point(|r| r.at <= from);
        let hi = run.partition_point(|r| r.at <= to);
        &run[lo..hi.max(lo)]
    }

    /// Events of `kinds` with `from < occurred_at <= to`.
    pub fn count(&self, kinds: &[Kind], from: Ts, to: Ts) -> u64 {
        kinds.iter().map(|&k| self.window(k, from, to).len() as u64).sum()
    }

    /// Ids of events of `kinds` with `from < occurred_at <= to`, by time then arrival.
    pub fn evidence(&self, kinds: &[Kind], from: Ts, to: Ts) -> Vec<CompactString> {
        let mut recs: Vec<&Rec> = kinds.iter().flat_map(|&k| self.window(k, from, to)).collect();
        recs.sort_by_key(|r| r.at); // stable: arrival order within a kind is kept
        recs.into_iter().map(|r| r.id.clone()).collect()
    }

    /// The class in force at `at`: the latest classification with `occurred_at <= at` (the later read wins a tie).
    pub fn class_at(&self, at: Ts) -> Option<Class> {
        let run = &self.recs[self.segment(Kind::Classification)];
        let n = run.partition_point(|r| r.at <= at);
        n.checked_sub(1).and_then(|i| run[i].class)
    }

    /// Drops what can no longer matter at `at` or later.
    pub fn prune(&mut self, plan: &Plan, at: Ts) {
        let mut cut: Vec<Range<usize>> = Vec::new();
        for kind in Kind::ALL {
            let seg = self.segment(kind);
            if seg.is_empty() {
                continue;
            }
            let run = &self.recs[seg.clone()];
            let n = if kind == Kind::Classification {
                // Keep the classification in force and any later ones.
                run.partition_point(|r| r.at <= at).saturating_sub(1)
            } else {
                match plan.reach[kind as usize] {
                    Some(reach) => run.partition_point(|r| r.at + reach <= at),
                    None => run.len(),
                }
            };
            if n > 0 {
                cut.push(seg.start..seg.start + n);
            }
        }
        for range in cut.into_iter().rev() {
            self.recs.drain(range);
        }
        if self.recs.capacity() > 2 * self.recs.len() + 4 {
            self.recs.shrink_to_fit();
        }
    }

    /// The first instant after `at` at which a count or the class can change, `Ts::MAX` if none.
    pub fn next_change(&self, plan: &Plan, at: Ts) -> Ts {
        let mut next = Ts::MAX;
        let mut start = 0;
        while start < self.recs.len() {
            let kind = self.recs[start].kind;
            let end = start + self.recs[start..].partition_point(|r| r.kind == kind);
            let run = &self.recs[start..end];
            for &off in &plan.offsets[kind as usize] {
                let i = run.partition_point(|r| r.at + off <= at);
                if let Some(r) = run.get(i) {
                    next = next.min(r.at + off);
                }
            }
            start = end;
        }
        next
    }
}
