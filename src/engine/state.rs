//! Per-entity window state.
//!
//! An entity stores the events its rules may still count ([`Rec`]), grouped in one run per kind, each run
//! sorted by `occurred_at` with ties in arrival order. Every count is two binary searches in a run; there
//! are no per-rule counters to keep in step, so a late event, a class change or a rule with any window is
//! handled by the same code. Events are dropped once they are older than the longest reach of any rule
//! that counts them; of the classifications only the one in force (and any still in the future) are kept.
//! Profiles are stored only while some active rule has a scope, kept like classifications, each with its
//! field symbols and the scoped rules they match instead of an event id (evidence never lists them).
//!
//! Two layouts, chosen by size ([`Store`]): most entities hold a handful of events and keep them in one
//! vector sorted by `(kind, occurred_at)` (24 bytes plus the events); an entity with many events switches
//! to one [`Run`] per kind, so that an arrival is an append and an expiry moves a start index, never a shift
//! of the rest.

use compact_str::CompactString;

use crate::credit_code::EntityKey;
use crate::event::{Class, Event, Kind};
use crate::rules::{Measure, RuleSet};
use crate::time::Ts;

/// Kinds that can be stored: the five indicators, classifications and (for scoped rules) profiles.
const RUNS: usize = 7;
/// An entity switches to the per-kind layout above this many events...
const LARGE_ABOVE: usize = 64;
/// ...and back to the compact one below this many.
const SMALL_BELOW: usize = 16;

/// One stored event: 32 bytes. Ids of up to 24 bytes are held inline; the time is split in 40 bits
/// (±17,000 years around 1970) so that the record packs into four words.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub data: RecData,
    at_lo: u32,
    at_hi: i8,
    pub kind: Kind,
    /// The class of a classification.
    pub class: Option<Class>,
}

/// What a record holds besides its time, kind and class: 24 bytes (the profile variant lives beside the niche
/// of `CompactString`'s last byte).
#[derive(Debug, Clone)]
pub(super) enum RecData {
    /// An event's id (evidence lists it).
    Id(CompactString),
    /// A profile (kept for scoped rules): its region, industry, domain and authority symbols (see `Profiles`),
    /// and the active rule slots whose scope they match.
    Profile { fields: [u32; 4], matches: u32 },
}

impl Rec {
    pub fn new(event: &Event) -> Rec {
        Rec::from_parts(RecData::Id(event.id.clone()), event.at, event.kind, event.class)
    }

    /// A record of its parts (a checkpoint's, or a profile's).
    pub fn from_parts(data: RecData, at: Ts, kind: Kind, class: Option<Class>) -> Rec {
        // Event times are years 0000-9999 (with offset), far inside the 40-bit range.
        let at_hi = i8::try_from(at >> 32).unwrap_or(if at < 0 { i8::MIN } else { i8::MAX });
        Rec { data, at_lo: at as u32, at_hi, kind, class }
    }

    /// A placeholder for a dead slot of a [`Run`]; never read.
    fn dead(kind: Kind) -> Rec {
        Rec { data: RecData::Id(CompactString::default()), at_lo: 0, at_hi: 0, kind, class: None }
    }

    /// `occurred_at`.
    pub fn at(&self) -> Ts {
        i64::from(self.at_hi) << 32 | i64::from(self.at_lo)
    }

    /// The event's id (empty for a profile, which has none kept).
    pub fn id(&self) -> &str {
        match &self.data {
            RecData::Id(id) => id,
            RecData::Profile { .. } => "",
        }
    }

    /// The scoped rules a profile's fields match (0 for an event).
    pub fn scope_matches(&self) -> u32 {
        match self.data {
            RecData::Profile { matches, .. } => matches,
            RecData::Id(_) => 0,
        }
    }
}

/// What the active rules need from stored events, precomputed per kind.
pub(super) struct Plan {
    /// Longest reach of any rule counting the kind (`None`: not stored).
    reach: [Option<Ts>; 7],
    /// Offsets after `occurred_at` at which the kind's events change some count, each with when it matters.
    offsets: [Vec<Offset>; 7],
    /// Some active rule has a scope: profiles are stored.
    scoped: bool,
    /// The distinct windowed counts of the active rules: `(kinds, window, surge guard)`. Rules often share one
    /// (a domain set's parts count what the default rules count), and each is computed once per evaluation.
    components: Vec<Counted>,
    /// Per active rule (by slot): its components' indices in `components`, in part order, and for a composite
    /// rule the constants of its exact score.
    of_rule: Vec<RulePlan>,
}

/// A windowed count of the plan, owned: `(kinds, window, surge guard)` (see `rules::Component`).
type Counted = (Vec<Kind>, Ts, Option<(u64, u64)>);

/// What one active rule's value is computed from.
struct RulePlan {
    /// Indices in `Plan::components`, in part order.
    components: Vec<usize>,
    /// A composite rule's `weight_i * (product of caps / cap_i)` per part (0 for other rules' one component),
    /// so that its score is `floor(sum(scale_i * min(v_i, cap_i)) / product)`.
    scale: Vec<u128>,
    /// The product of a composite rule's caps (1 for other rules).
    product: u128,
}

/// Values of a plan's components already computed at one instant of one entity's evaluation: `values[c]` is
/// meaningful where bit `c` of `known` is set. `values` is scratch space the engine keeps, one slot per
/// component (at most 21 active rules of 6 parts: 126, within the 128 bits of `known`).
pub(super) struct Memo<'a> {
    pub known: u128,
    pub values: &'a mut [i64],
}

const _: () = assert!(crate::rules::MAX_ACTIVE_RULES * crate::rules::MAX_PARTS <= 128);

impl Plan {
    pub fn new(rules: &RuleSet) -> Plan {
        let mut offsets: [Vec<Offset>; 7] = Default::default();
        let always = |after| Offset { after, always: true, falls: 0 };
        for (slot, rule) in rules.active().enumerate() {
            for (kinds, window, surge) in rule.measure.components() {
                let falls = Offset { after: window, always: false, falls: 7 << (3 * slot) };
                for &kind in kinds {
                    let o = &mut offsets[kind as usize];
                    // Arrival of an event still in the future; leaving the (current) window only lowers the value
                    // (a composite's score is a sum of parts that each only fall then).
                    o.extend([always(0), falls]);
                    if surge.is_some() {
                        // Leaving the previous window raises `cur - prev`.
                        o.push(always(2 * window));
                    }
                }
            }
        }
        offsets[Kind::Classification as usize].push(always(0));
        if rules.scoped() {
            // A profile taking effect can move the entity into a scope.
            offsets[Kind::Profile as usize].push(always(0));
        }
        for o in &mut offsets {
            o.sort_unstable_by_key(|x| x.after);
            o.dedup_by(|b, a| {
                let same = a.after == b.after;
                if same {
                    a.always |= b.always;
                    a.falls |= b.falls;
                }
                same
            });
        }
        let reach = Kind::ALL.map(|k| rules.reach(k));
        let mut components: Vec<Counted> = Vec::new();
        let mut of_rule = Vec::new();
        for rule in rules.active() {
            let mut of = Vec::new();
            for (kinds, window, surge) in rule.measure.components() {
                let same = |c: &Counted| c.0 == kinds && c.1 == window && c.2 == surge;
                let i = components.iter().position(same).unwrap_or_else(|| {
                    components.push((kinds.to_vec(), window, surge));
                    components.len() - 1
                });
                of.push(i);
            }
            // The loader's bounds (6 parts, caps up to 1000, weights up to 1000.000) keep every term within u128.
            let (scale, product) = match &rule.measure {
                Measure::Composite { parts, .. } => {
                    let product: u128 = parts.iter().map(|p| u128::from(p.cap)).product();
                    (parts.iter().map(|p| u128::from(p.weight) * (product / u128::from(p.cap))).collect(), product)
                }
                _ => (vec![0], 1),
            };
            of_rule.push(RulePlan { components: of, scale, product });
        }
        Plan { reach, offsets, scoped: rules.scoped(), components, of_rule }
    }

    /// Whether events of `kind` are stored.
    pub fn keeps(&self, kind: Kind) -> bool {
        match kind {
            Kind::Classification => true,
            Kind::Profile => self.scoped,
            _ => self.reach[kind as usize].is_some(),
        }
    }

    /// Distinct windowed counts of the active rules (the size of a [`Memo`]'s scratch).
    pub fn components(&self) -> usize {
        self.components.len()
    }

    /// The value at instant `at` of the active rule in `slot`, whose measure is `measure`; `memo` holds the
    /// components already computed at `at` for this entity.
    pub fn value(&self, runs: &Runs<'_>, slot: usize, measure: &Measure, at: Ts, memo: &mut Memo<'_>) -> i64 {
        let plan = &self.of_rule[slot];
        match measure {
            Measure::Count { .. } | Measure::Surge { .. } => self.component(runs, plan.components[0], at, memo),
            Measure::Composite { parts, .. } => {
                // floor(1000 * sum(w_i * min(v_i, cap_i) / cap_i)) over the common denominator prod(cap_i),
                // with weights already in thousandths.
                let mut sum: u128 = 0;
                for ((p, &c), &scale) in parts.iter().zip(&plan.components).zip(&plan.scale) {
                    // A count is never negative; a surge part's negative delta counts as 0.
                    let v = self.component(runs, c, at, memo).max(0) as u64;
                    sum += scale * u128::from(v.min(p.cap));
                }
                // 64-bit division when it fits (small caps, the usual case): a 128-bit one is a slow call.
                match (u64::try_from(sum), u64::try_from(plan.product)) {
                    (Ok(sum), Ok(product)) => (sum / product) as i64,
                    _ => (sum / plan.product) as i64,
                }
            }
        }
    }

    /// The value of component `c` at `at`: a count, or a surge's `cur - prev` under its guard.
    fn component(&self, runs: &Runs<'_>, c: usize, at: Ts, memo: &mut Memo<'_>) -> i64 {
        if memo.known >> c & 1 == 1 {
            return memo.values[c];
        }
        let (ref kinds, window, guard) = self.components[c];
        let v = match guard {
            None => runs.count(kinds, at - window, at) as i64,
            Some(guard) => surge(runs, kinds, window, guard, at),
        };
        memo.values[c] = v;
        memo.known |= 1 << c;
        v
    }

    /// How many of a run's first events can no longer matter at `at` or later.
    fn expired(&self, kind: usize, run: &[Rec], at: Ts) -> usize {
        let in_force = kind == Kind::Classification as usize || (kind == Kind::Profile as usize && self.scoped);
        if in_force {
            // Keep the classification (profile) in force and any later ones.
            run.partition_point(|r| r.at() <= at).saturating_sub(1)
        } else {
            match self.reach[kind] {
                Some(reach) => run.partition_point(|r| r.at() + reach <= at),
                None => run.len(),
            }
        }
    }
}

/// `cur - prev` of `kinds` over `window` at `at` while `cur * den >= prev * num`, else 0.
fn surge(runs: &Runs<'_>, kinds: &[Kind], window: Ts, (num, den): (u64, u64), at: Ts) -> i64 {
    let cur = runs.count(kinds, at - window, at);
    let prev = runs.count(kinds, at - 2 * window, at - window);
    let guard = u128::from(cur) * u128::from(den) >= u128::from(prev) * u128::from(num);
    if guard { cur as i64 - prev as i64 } else { 0 }
}

/// An instant relative to an event's `occurred_at` at which some value changes.
#[derive(Debug, Clone, Copy)]
struct Offset {
    after: Ts,
    /// The change can raise a level: the entity must be evaluated then.
    always: bool,
    /// Levels (3 bits per rule slot) the change can only lower: the entity needs evaluating then only if one
    /// of them is above none. When all are none, nothing can change and no timer is set.
    falls: u64,
}

/// The stored events of one entity.
#[derive(Debug)]
enum Store {
    /// Sorted by `(kind, occurred_at)`, arrival order within ties.
    Small(Vec<Rec>),
    /// One run per stored kind.
    Large(Box<[Run; RUNS]>),
}

/// The events of one kind of a busy entity, by time: `recs[start..]`. Expired events are dropped by moving
/// `start`, and the dead prefix is compacted away once it is half the vector (amortised O(1) per event).
/// A late event shifts the shorter side of the run: the events before it move one slot into the dead
/// prefix (made, a quarter of the run wide, when there is none), or the events after it move right.
#[derive(Debug, Default)]
struct Run {
    recs: Vec<Rec>,
    start: usize,
}

impl Run {
    fn live(&self) -> &[Rec] {
        &self.recs[self.start..]
    }

    fn insert(&mut self, rec: Rec) {
        // After every event of the same time (arrival order); appending is the common case.
        let (live, at) = (self.live(), rec.at());
        let pos =
            if live.last().is_none_or(|l| l.at() <= at) { live.len() } else { live.partition_point(|r| r.at() <= at) };
        if pos >= live.len() / 2 {
            self.recs.insert(self.start + pos, rec);
            return;
        }
        if self.start == 0 {
            let gap = (self.recs.len() / 4).max(16);
            let mut recs = Vec::with_capacity(gap + self.recs.len());
            recs.resize_with(gap, || Rec::dead(rec.kind));
            recs.append(&mut self.recs);
            self.recs = recs;
            self.start = gap;
        }
        // Move the dead slot in front of the run to `pos`, shifting the events before it left by one.
        self.start -= 1;
        self.recs[self.start..=self.start + pos].rotate_left(1);
        self.recs[self.start + pos] = rec;
    }

    fn drop_front(&mut self, n: usize) {
        self.start += n;
        if self.start >= 16 && 2 * self.start >= self.recs.len() {
            self.recs.drain(..self.start);
            self.start = 0;
            if self.recs.capacity() > 2 * self.recs.len() + 16 {
                self.recs.shrink_to_fit();
            }
        }
    }
}

/// A read-only view of an entity's runs, one slice per stored kind.
pub(super) struct Runs<'a>([&'a [Rec]; RUNS]);

impl Runs<'_> {
    /// The stored events of `kind` with `from < at <= to`.
    fn window(&self, kind: Kind, from: Ts, to: Ts) -> &[Rec] {
        let run = self.0.get(kind as usize).copied().unwrap_or_default();
        let lo = run.partition_point(|r| r.at() <= from);
        let hi = run.partition_point(|r| r.at() <= to).max(lo);
        &run[lo..hi]
    }

    /// Events of `kinds` with `from < occurred_at <= to`.
    pub fn count(&self, kinds: &[Kind], from: Ts, to: Ts) -> u64 {
        kinds.iter().map(|&k| self.window(k, from, to).len() as u64).sum()
    }

    /// Ids of the events that windowed counts `(kinds, from)` ending at `to` count, `from < occurred_at <= to`
    /// (a composite rule has one count per part, each over its own reach; an event counted twice is listed
    /// once), by time; within one second by kind (in the rule's order), then arrival. Only the newest that fit
    /// in `max_bytes` of JSON ([`json_len`]), and how many older ones were left out.
    pub fn evidence<'k>(
        &self,
        counts: impl Iterator<Item = (&'k [Kind], Ts)>,
        to: Ts,
        max_bytes: usize,
    ) -> (Vec<super::Evidence>, u64) {
        let mut kinds: Vec<Kind> = Vec::new();
        let mut from_of = [Ts::MAX; 7];
        for (ks, from) in counts {
            for &k in ks {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
                from_of[k as usize] = from_of[k as usize].min(from);
            }
        }
        let mut recs: Vec<&Rec> = kinds.iter().flat_map(|&k| self.window(k, from_of[k as usize], to)).collect();
        recs.sort_by_key(|r| r.at()); // stable: arrival order within a kind is kept
        let mut bytes = 0;
        let kept = recs.iter().rev().take_while(|r| {
            bytes += json_len(r.id());
            bytes <= max_bytes
        });
        let skip = recs.len() - kept.count();
        let evidence = recs[skip..].iter().map(|r| super::Evidence { id: r.id().into(), kind: r.kind, at: r.at() });
        (evidence.collect(), skip as u64)
    }

    /// The class in force at `at`: the latest classification with `occurred_at <= at` (the later read wins a tie).
    pub fn class_at(&self, at: Ts) -> Option<Class> {
        let run = self.0[Kind::Classification as usize];
        let n = run.partition_point(|r| r.at() <= at);
        n.checked_sub(1).and_then(|i| run[i].class)
    }

    /// The scoped rules (by slot) whose scope the profile in force at `at` matches, like [`Runs::class_at`];
    /// 0 with no profile stored in force.
    pub fn scope_at(&self, at: Ts) -> u32 {
        let run = self.0[Kind::Profile as usize];
        let n = run.partition_point(|r| r.at() <= at);
        n.checked_sub(1).map_or(0, |i| run[i].scope_matches())
    }

    /// The first instant after `at` at which a level (packed `levels`, as evaluated at `at`) can change:
    /// an event arriving, a classification taking effect, an event leaving a window while a rule counting
    /// it stands above none, or leaving a surge rule's previous window. `Ts::MAX` if none.
    pub fn next_change(&self, plan: &Plan, at: Ts, levels: u64) -> Ts {
        let mut next = Ts::MAX;
        for (kind, run) in self.0.iter().enumerate() {
            for off in &plan.offsets[kind] {
                if !off.always && levels & off.falls == 0 {
                    continue;
                }
                let i = run.partition_point(|r| r.at() + off.after <= at);
                if let Some(r) = run.get(i) {
                    next = next.min(r.at() + off.after);
                }
            }
        }
        next
    }
}

/// Bytes an id takes in an alert record's JSON list at most: the string escaped as serde_json writes it
/// (`"` and `\\` as two bytes, a control character as up to six), its quotes and a comma.
pub(super) fn json_len(id: &str) -> usize {
    3 + id
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The state of one entity.
#[derive(Debug)]
pub(super) struct Entity {
    pub key: EntityKey,
    /// Level per active rule, 3 bits each.
    pub levels: u64,
    /// The instant of this entity's live timer entry, `Ts::MAX` for none.
    pub due: Ts,
    /// In the engine's touched list.
    pub touched: bool,
    store: Store,
}

/// The level of rule `slot` in packed `levels`.
pub(super) fn level(levels: u64, slot: usize) -> u8 {
    (levels >> (3 * slot) & 7) as u8
}

/// `levels` with rule `slot` set to `level`.
pub(super) fn with_level(levels: u64, slot: usize, level: u8) -> u64 {
    levels & !(7 << (3 * slot)) | u64::from(level) << (3 * slot)
}

impl Entity {
    pub fn new(key: EntityKey) -> Entity {
        Entity { key, levels: 0, due: Ts::MAX, touched: false, store: Store::Small(Vec::new()) }
    }

    /// Reads the first stored event (a warm-up of its cache lines; see `Engine::warm`).
    pub fn first_at(&self) -> Ts {
        match &self.store {
            Store::Small(v) => v.first().map_or(0, Rec::at),
            Store::Large(runs) => runs.iter().find_map(|r| r.live().first()).map_or(0, Rec::at),
        }
    }

    /// Events stored.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Small(v) => v.len(),
            Store::Large(runs) => runs.iter().map(|r| r.live().len()).sum(),
        }
    }

    /// Heap bytes held by stored events.
    pub fn heap_bytes(&self) -> usize {
        let rec = std::mem::size_of::<Rec>();
        match &self.store {
            Store::Small(v) => v.capacity() * rec,
            Store::Large(runs) => runs.iter().map(|r| r.recs.capacity() * rec + 32).sum(),
        }
    }

    /// Stores an event of a stored kind.
    pub fn insert(&mut self, rec: Rec) {
        match &mut self.store {
            Store::Small(v) => {
                let key = (rec.kind, rec.at());
                let pos = if v.last().is_none_or(|last| (last.kind, last.at()) <= key) {
                    v.len()
                } else {
                    v.partition_point(|r| (r.kind, r.at()) <= key)
                };
                // Exact growth: most entities hold a few events and never grow again.
                v.reserve_exact(1);
                v.insert(pos, rec);
                if v.len() > LARGE_ABOVE {
                    let mut runs: Box<[Run; RUNS]> = Box::default();
                    for r in v.drain(..) {
                        runs[r.kind as usize].recs.push(r);
                    }
                    self.store = Store::Large(runs);
                }
            }
            Store::Large(runs) => runs[rec.kind as usize].insert(rec),
        }
    }

    /// Every stored event, kind by kind, each kind by `occurred_at` with ties in arrival order.
    pub fn recs(&self) -> impl Iterator<Item = &Rec> {
        self.runs().0.into_iter().flatten()
    }

    /// Every stored record, to change its data in place (never its time or kind: the order stays valid).
    pub fn recs_mut(&mut self) -> impl Iterator<Item = &mut Rec> {
        let (small, large): (&mut [Rec], Option<&mut [Run; RUNS]>) = match &mut self.store {
            Store::Small(v) => (v, None),
            Store::Large(runs) => (&mut [], Some(runs)),
        };
        let large = large.into_iter().flat_map(|runs| runs.iter_mut().flat_map(|r| &mut r.recs[r.start..]));
        small.iter_mut().chain(large)
    }

    /// A view of the runs.
    pub fn runs(&self) -> Runs<'_> {
        match &self.store {
            Store::Small(v) => {
                // One pass over at most `LARGE_ABOVE` records, sorted by kind: cheaper than a binary search per
                // kind for the few records most entities hold.
                let mut slices: [&[Rec]; RUNS] = [&[]; RUNS];
                let mut start = 0;
                while let Some(first) = v.get(start) {
                    let kind = first.kind;
                    let len = v[start..].iter().take_while(|r| r.kind == kind).count();
                    slices[kind as usize] = &v[start..start + len];
                    start += len;
                }
                Runs(slices)
            }
            Store::Large(runs) => Runs(std::array::from_fn(|kind| runs[kind].live())),
        }
    }

    /// Drops every stored record of `kind`.
    pub fn remove_kind(&mut self, kind: Kind) {
        match &mut self.store {
            Store::Small(v) => v.retain(|r| r.kind != kind),
            Store::Large(runs) => {
                let run = &mut runs[kind as usize];
                run.recs.clear();
                run.start = 0;
            }
        }
    }

    /// Drops what can no longer matter at `at` or later.
    pub fn prune(&mut self, plan: &Plan, at: Ts) {
        match &mut self.store {
            Store::Small(v) => {
                // The kept part of each run, then compaction in place (garbage moves behind `w`).
                let mut keep = [(0usize, 0usize); RUNS];
                let (mut start, mut runs, mut any) = (0, 0, false);
                while start < v.len() {
                    let kind = v[start].kind as usize;
                    let end = start + v[start..].partition_point(|r| r.kind as usize == kind);
                    let n = plan.expired(kind, &v[start..end], at);
                    any |= n > 0;
                    keep[runs] = (start + n, end);
                    runs += 1;
                    start = end;
                }
                if any {
                    let mut w = 0;
                    for &(from, to) in &keep[..runs] {
                        for i in from..to {
                            v.swap(w, i);
                            w += 1;
                        }
                    }
                    v.truncate(w);
                    if v.capacity() > 2 * v.len() + 4 {
                        v.shrink_to_fit();
                    }
                }
            }
            Store::Large(runs) => {
                for (kind, run) in runs.iter_mut().enumerate() {
                    let n = plan.expired(kind, run.live(), at);
                    run.drop_front(n);
                }
                let len: usize = runs.iter().map(|r| r.live().len()).sum();
                if len < SMALL_BELOW {
                    let mut v: Vec<Rec> = Vec::with_capacity(len);
                    for run in runs.iter_mut() {
                        v.extend(run.recs.drain(run.start..));
                    }
                    self.store = Store::Small(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: Kind, at: Ts, id: &str) -> Rec {
        let key = EntityKey::parse("91350100M000100Y43").unwrap();
        Rec::new(&Event { id: id.into(), entity: key, kind, at, class: None, profile: None })
    }

    #[test]
    fn a_run_drops_its_front_and_reuses_dead_slots_for_late_events() {
        let mut run = Run::default();
        for at in 0..40 {
            run.insert(rec(Kind::Penalty, at, &format!("e{at}")));
        }
        run.drop_front(10);
        assert_eq!(run.live().first().map(Rec::at), Some(10));
        // Late events in the first half move the events before them into the dead prefix.
        run.insert(rec(Kind::Penalty, 5, "late"));
        run.insert(rec(Kind::Penalty, 20, "tie"));
        let live: Vec<(Ts, &str)> = run.live().iter().map(|r| (r.at(), r.id())).collect();
        assert_eq!(live[..2], [(5, "late"), (10, "e10")]);
        assert_eq!(live.iter().position(|&(_, id)| id == "tie"), Some(12), "after e20: arrival order");
        assert!(live.windows(2).all(|w| w[0].0 <= w[1].0));
        // Past half dead, the prefix is compacted away.
        run.drop_front(25);
        assert_eq!(run.start, 0);
        assert_eq!(run.live().len(), 7);
        assert_eq!(run.live().first().map(Rec::at), Some(33), "late, e10..e20, tie, e21..e32 dropped");
    }

    #[test]
    fn records_are_four_words_and_keep_any_event_time() {
        assert_eq!(std::mem::size_of::<Rec>(), 32);
        for at in [crate::time::parse_rfc3339("0000-01-01T00:00:00+23:59").unwrap(), -1, 0, 1 << 33, 253_402_300_799] {
            assert_eq!(rec(Kind::Penalty, at, "x").at(), at);
        }
    }

    #[test]
    fn both_layouts_keep_time_order_and_arrival_ties() {
        let key = EntityKey::parse("91350100M000100Y43").unwrap();
        let mut e = Entity::new(key);
        // Enough events to switch to the large layout, some late, some tied.
        for i in 0..100i64 {
            let at = (i * 7) % 50;
            e.insert(rec(if i % 2 == 0 { Kind::Penalty } else { Kind::Lawsuit }, at, &format!("e{i}")));
        }
        assert!(matches!(e.store, Store::Large(_)));
        let runs = e.runs();
        let penalties = runs.window(Kind::Penalty, -1, 100);
        assert_eq!(penalties.len(), 50);
        assert!(penalties.windows(2).all(|w| w[0].at() <= w[1].at()));
        // Ties keep arrival order: ids at the same time rise in number.
        for w in penalties.windows(2).filter(|w| w[0].at() == w[1].at()) {
            let n = |r: &Rec| r.id()[1..].parse::<u32>().unwrap();
            assert!(n(&w[0]) < n(&w[1]));
        }
        assert_eq!(runs.count(&[Kind::Penalty, Kind::Lawsuit], 9, 19), 20);
    }
}
