//! The engine: valid events in, the exact alert stream out. Pure and synchronous: no I/O, no wall clock.
//!
//! # Clock and batches
//! The engine has one clock, `now`. Events handed to [`Engine::ingest`] join the batch of `now`; the batch is
//! evaluated by [`Engine::flush`] together with every entity whose timer is due at `now`, so everything at one
//! instant counts together. [`Engine::advance_to`] flushes `now`, then fires the timers strictly between `now`
//! and the new instant, each at its own instant, and moves the clock. Timers due exactly at the new instant
//! wait for its batch. Replay drives the clock from event times ([`Engine::offer`]); the daemon from the wall.
//!
//! # Levels
//! An entity's level for a rule is recomputed from its stored events at each instant it is evaluated and
//! compared with the level as last evaluated: a rise is an alert, a fall re-arms silently. Each entity has
//! one timer: the next instant at which any of its counts, its class or (for scoped rules) its profile can
//! change (an event entering a window, leaving one, or a future classification or profile taking effect), so
//! levels move with time, not only with arrivals. A scoped rule's level is none while the profile (or class)
//! in force is outside its scope.

mod dedup;
mod profiles;
mod snapshot;
mod state;
mod timers;

use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashMap;

use crate::credit_code::EntityKey;
use crate::event::{Class, Event, Kind};
use crate::rules::{Action, RuleSet};
use crate::time::Ts;

pub use dedup::Dedup;
use profiles::Profiles;
pub use profiles::{MAX_SYMBOLS as MAX_PROFILE_VALUES, Profile};
pub use snapshot::SnapshotError;
use state::{Entity, Plan, Rec, RecData, Runs};
use timers::TimerQueue;

use crate::limits::{EngineLimits, Limit};
pub use crate::rules::MAX_ACTIVE_RULES;

/// Most bytes of JSON an alert's evidence list takes (each id escaped, with its quotes and a comma): with more,
/// the oldest ids are left out and counted in [`Alert::evidence_omitted`]. Keeps every alert record well within
/// a Kafka message (1 MB by default), whatever one entity's window holds.
pub const MAX_EVIDENCE_BYTES: usize = 256 * 1024;

/// A window an alert's value was computed over: `from < occurred_at <= to`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub from: Ts,
    pub to: Ts,
    pub count: u64,
}

/// One level rise of one entity for one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub entity: EntityKey,
    /// Index of the rule in `RuleSet::all`.
    pub rule: usize,
    pub action: Action,
    pub previous: Option<Action>,
    pub at: Ts,
    pub value: i64,
    /// Effective threshold of `action` for `class`.
    pub threshold: u64,
    pub class: Option<Class>,
    /// The current window, then (surge rules) the one before it.
    pub windows: Vec<Window>,
    /// The rule's events in its windows, by occurred_at; within one second by kind, then arrival. The newest
    /// [`MAX_EVIDENCE_BYTES`] of them.
    pub evidence: Vec<Evidence>,
    /// Events in the windows left out of `evidence` (the oldest), 0 almost always.
    pub evidence_omitted: u64,
}

/// One event behind an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub id: CompactString,
    pub kind: Kind,
    pub at: Ts,
}

/// A level that fell: never an alert (SPEC), reported only when asked for ([`Engine::report_falls`]) so that
/// notifications can say a level is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fall {
    pub entity: EntityKey,
    /// Index of the rule in `RuleSet::all`.
    pub rule: usize,
    /// The level before.
    pub from: Action,
    /// The level now (`None`: no action applies any more).
    pub to: Option<Action>,
    pub at: Ts,
    pub value: i64,
    pub class: Option<Class>,
}

/// What became of an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// First seen; `late` when it occurred before the clock.
    Accepted { late: bool },
    /// Its `event_id` was seen before: nothing changed.
    Duplicate,
    /// Holding it would go over a limit: nothing changed, its id not remembered.
    OverLimit(Limit),
}

/// Where an admitted event is stored.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// In this entity's events.
    Entity(u32),
    /// In a new entity's.
    New,
    /// Not in window state: a profile while no active rule has a scope, or a kind no active rule counts.
    Elsewhere,
}

/// Why an engine cannot be built for a rule set.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} active rules; the engine evaluates at most {MAX_ACTIVE_RULES}")]
    TooManyRules(usize),
}

/// The engine. See the module documentation.
pub struct Engine {
    rules: Arc<RuleSet>,
    plan: Plan,
    index: HashMap<EntityKey, u32>,
    entities: Vec<Entity>,
    dedup: Dedup,
    /// `(due, entity)`; an entry is live only while `entities[i].due == due` (lazy deletion).
    timers: TimerQueue,
    now: Option<Ts>,
    /// Entities that received events since the last flush.
    touched: Vec<u32>,
    /// Scratch list of entities to evaluate at one instant.
    batch: Vec<u32>,
    /// Falls not yet taken, when reported.
    falls: Option<Vec<Fall>>,
    /// The latest master data of each entity.
    profiles: Profiles,
    limits: EngineLimits,
    /// Scratch space for the plan's component values during one evaluation ([`state::Memo`]).
    memo: Vec<i64>,
    /// See [`Engine::profiles_not_seeded`].
    profiles_not_seeded: u64,
}

impl Engine {
    /// An empty engine for `rules`.
    pub fn new(rules: Arc<RuleSet>) -> Result<Engine, EngineError> {
        let n = rules.active.len();
        if n > MAX_ACTIVE_RULES {
            return Err(EngineError::TooManyRules(n));
        }
        let plan = Plan::new(&rules);
        Ok(Engine {
            memo: vec![0; plan.components()],
            profiles_not_seeded: 0,
            plan,
            rules,
            index: HashMap::new(),
            entities: Vec::new(),
            dedup: Dedup::default(),
            timers: TimerQueue::default(),
            now: None,
            touched: Vec::new(),
            batch: Vec::new(),
            falls: None,
            profiles: Profiles::default(),
            limits: EngineLimits::UNLIMITED,
        })
    }

    /// Sets the bounds on what the engine holds (the daemon's `[limits]`). Without it there are none: replay
    /// and the rule tools are SPEC's reference and hold whatever their input needs.
    pub fn set_limits(&mut self, limits: EngineLimits) {
        self.limits = limits;
    }

    /// Event ids remembered.
    pub fn seen_ids(&self) -> usize {
        self.dedup.len()
    }

    /// Profile field values not stored because the table of distinct values is full (since start).
    pub fn profile_values_refused(&self) -> u64 {
        self.profiles.refused
    }

    /// From now on, level falls are kept for [`Engine::take_falls`].
    pub fn report_falls(&mut self) {
        self.falls.get_or_insert_with(Vec::new);
    }

    /// The falls since the last call, in order (empty unless [`Engine::report_falls`] was called).
    pub fn take_falls(&mut self) -> Vec<Fall> {
        self.falls.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The master data of `entity`: from its latest `profile` event by `occurred_at` (the later read wins
    /// a tie), whatever the clock.
    pub fn profile(&self, entity: &EntityKey) -> Option<Profile> {
        self.profiles.get(entity)
    }

    /// Entities with a profile.
    pub fn profiles(&self) -> usize {
        self.profiles.len()
    }

    /// The rule set alerts refer to.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The clock, once set.
    pub fn now(&self) -> Option<Ts> {
        self.now
    }

    /// Entities with state.
    pub fn entities(&self) -> usize {
        self.entities.len()
    }

    /// The replay clock of SPEC: a first-seen event moves `now` forward to its time (evaluating everything
    /// on the way), then joins the batch of `now`. Duplicates change nothing, the clock included.
    pub fn offer(&mut self, event: Event, sink: &mut impl FnMut(Alert)) -> Offer {
        match self.remember(&event) {
            Ok(slot) => self.accept(event, slot, sink),
            Err(refused) => refused,
        }
    }

    /// Remembers the event's id and says where it goes; `Err` for a duplicate, or for an event that would go
    /// over a limit (its id then not remembered).
    fn remember(&mut self, event: &Event) -> Result<Slot, Offer> {
        let hash = self.dedup.hash(&event.id);
        let admitted =
            if self.dedup.len() >= self.limits.seen_ids { Err(Limit::SeenIds) } else { self.admit_pruning(event) };
        match admitted {
            // One probe of the id set on the common path.
            Ok(slot) if self.dedup.insert_hash(hash) => Ok(slot),
            Ok(_) => Err(Offer::Duplicate),
            Err(_) if self.dedup.contains_hash(hash) => Err(Offer::Duplicate),
            Err(limit) => Err(Offer::OverLimit(limit)),
        }
    }

    /// [`Engine::admit`], and when the entity's events are at their limit, again after dropping those that left
    /// every window (stored events are otherwise pruned only when the entity is evaluated, and a refused event
    /// does not evaluate it: without this an entity at the limit would refuse events forever).
    fn admit_pruning(&mut self, event: &Event) -> Result<Slot, Limit> {
        match self.admit(event) {
            Err(Limit::EntityEvents) => {
                if let (Some(now), Some(&idx)) = (self.now, self.index.get(&event.entity)) {
                    self.entities[idx as usize].prune(&self.plan, now);
                }
                self.admit(event)
            }
            other => other,
        }
    }

    /// Where `event` would be stored, or the limit storing it would go over (see [`EngineLimits`]).
    fn admit(&self, event: &Event) -> Result<Slot, Limit> {
        if event.kind == Kind::Profile
            && self.profiles.len() >= self.limits.entities
            && !self.profiles.contains(&event.entity)
        {
            return Err(Limit::Entities);
        }
        // A profile joins the window state only while some rule has a scope.
        if !self.plan.keeps(event.kind) {
            return Ok(Slot::Elsewhere);
        }
        match self.index.get(&event.entity) {
            None if self.entities.len() >= self.limits.entities => Err(Limit::Entities),
            None => Ok(Slot::New),
            Some(&idx) if self.entities[idx as usize].len() >= self.limits.events_per_entity => {
                Err(Limit::EntityEvents)
            }
            Some(&idx) => Ok(Slot::Entity(idx)),
        }
    }

    /// [`Engine::offer`] for an event the caller has already checked against [`Engine::take_dedup`]'s
    /// memory (replay does so on its reader thread). `Accepted`, or `OverLimit` for an event of an entity
    /// over a limit (the id limit is the caller's to check).
    pub fn offer_first_seen(&mut self, event: Event, sink: &mut impl FnMut(Alert)) -> Offer {
        match self.admit_pruning(&event) {
            Ok(slot) => self.accept(event, slot, sink),
            Err(limit) => Offer::OverLimit(limit),
        }
    }

    /// Moves the clock to a first-seen event within the limits, and stores it in `slot`.
    fn accept(&mut self, event: Event, slot: Slot, sink: &mut impl FnMut(Alert)) -> Offer {
        match self.now {
            Some(now) if event.at > now => self.advance_to(event.at, sink),
            None => self.now = Some(event.at),
            _ => {}
        }
        self.store(event, slot)
    }

    /// Touches the state the given entities' next events will need (index entry, entity, first stored event)
    /// without changing anything. Looking up several entities in one go lets the processor overlap their
    /// cache misses, which one-at-a-time processing serialises; call it on the next few events before
    /// offering them.
    pub fn warm<'a>(&self, entities: impl Iterator<Item = &'a EntityKey>) {
        let mut sum = 0;
        for key in entities {
            if let Some(&idx) = self.index.get(key) {
                sum ^= self.entities[idx as usize].first_at();
            }
        }
        std::hint::black_box(sum);
    }

    /// Lends out the memory of seen ids (to deduplicate elsewhere); give it back with [`Engine::put_dedup`].
    pub fn take_dedup(&mut self) -> Dedup {
        std::mem::take(&mut self.dedup)
    }

    /// Takes back the memory of seen ids lent by [`Engine::take_dedup`].
    pub fn put_dedup(&mut self, dedup: Dedup) {
        self.dedup = dedup;
    }

    /// Adds a first-seen event to the batch of the current clock without moving it (the live daemon's way;
    /// an event in the future waits for its instant). Returns `Duplicate` for a repeated `event_id`.
    pub fn ingest(&mut self, event: Event) -> Offer {
        let slot = match self.remember(&event) {
            Ok(slot) => slot,
            Err(refused) => return refused,
        };
        if self.now.is_none() {
            self.now = Some(event.at);
        }
        self.store(event, slot)
    }

    /// Stores an admitted event in the slot [`Engine::admit`] found for it.
    fn store(&mut self, event: Event, slot: Slot) -> Offer {
        let late = self.now.is_some_and(|now| event.at < now);
        let idx = match slot {
            Slot::Elsewhere => {
                if event.kind == Kind::Profile {
                    self.profiles.offer(&event, false);
                }
                return Offer::Accepted { late };
            }
            Slot::Entity(idx) => idx,
            Slot::New => self.new_entity(event.entity),
        };
        let rec = if event.kind == Kind::Profile {
            let fields = self.profiles.offer(&event, true);
            self.profile_rec(event.at, fields)
        } else {
            Rec::new(&event)
        };
        self.entities[idx as usize].insert(rec);
        self.touch(idx);
        Offer::Accepted { late }
    }

    /// The stored record of a profile (for scoped rules): its symbols and the scopes they match.
    fn profile_rec(&self, at: Ts, fields: [u32; 4]) -> Rec {
        let matches = scope_matches(&self.rules, &self.profiles, fields);
        Rec::from_parts(RecData::Profile { fields, matches }, at, Kind::Profile, None)
    }

    /// Adds an entity with no state; its index.
    fn new_entity(&mut self, key: EntityKey) -> u32 {
        let idx = self.entities.len() as u32;
        self.index.insert(key, idx);
        self.entities.push(Entity::new(key));
        idx
    }

    /// Puts entity `idx` in the batch of `now`.
    fn touch(&mut self, idx: u32) {
        let entity = &mut self.entities[idx as usize];
        if !entity.touched {
            entity.touched = true;
            self.touched.push(idx);
        }
    }

    /// Evaluates the batch of `now`: entities touched since the last flush and those whose timer is due.
    pub fn flush(&mut self, sink: &mut impl FnMut(Alert)) {
        let Some(now) = self.now else { return };
        self.batch.clear();
        for idx in self.touched.drain(..) {
            self.entities[idx as usize].touched = false;
            self.batch.push(idx);
        }
        self.pop_due(now);
        self.evaluate_batch(now, sink);
    }

    /// Flushes `now`, fires every timer due before `to` at its own instant, and sets the clock to `to`.
    /// Does nothing if `to` is not after `now`.
    pub fn advance_to(&mut self, to: Ts, sink: &mut impl FnMut(Alert)) {
        let Some(now) = self.now else {
            self.now = Some(to);
            return;
        };
        if to <= now {
            return;
        }
        self.flush(sink);
        while let Some(due) = self.timers.peek() {
            if due >= to {
                break;
            }
            self.batch.clear();
            self.pop_due(due);
            self.evaluate_batch(due, sink);
        }
        self.now = Some(to);
    }

    /// Ends a replay: flushes `now` and fires every timer due at or before `horizon` (if later than `now`).
    pub fn finish(&mut self, horizon: Option<Ts>, sink: &mut impl FnMut(Alert)) {
        self.flush(sink);
        if let (Some(h), Some(now)) = (horizon, self.now)
            && h > now
        {
            self.advance_to(h, sink);
            self.flush(sink);
        }
    }

    /// Moves the live entries of timers due at or before `at` into `batch`.
    fn pop_due(&mut self, at: Ts) {
        while let Some((due, idx)) = self.timers.pop_due(at) {
            let entity = &mut self.entities[idx as usize];
            if entity.due == due {
                entity.due = Ts::MAX;
                self.batch.push(idx);
            }
        }
    }

    fn evaluate_batch(&mut self, at: Ts, sink: &mut impl FnMut(Alert)) {
        let mut batch = std::mem::take(&mut self.batch);
        let entities = &self.entities;
        batch.sort_unstable_by_key(|&i| entities[i as usize].key);
        batch.dedup();
        for &idx in &batch {
            self.evaluate(idx, at, sink);
        }
        self.batch = batch;
    }

    fn evaluate(&mut self, idx: u32, at: Ts, sink: &mut impl FnMut(Alert)) {
        let rules = &*self.rules;
        let plan = &self.plan;
        let entity = &mut self.entities[idx as usize];
        let key = entity.key;
        let mut levels = entity.levels;
        let runs = entity.runs();
        let class = runs.class_at(at);
        // The scoped rules whose scope the profile in force matches (the class is checked per rule below).
        let in_scope = runs.scope_at(at);
        let mut memo = state::Memo { known: 0, values: &mut self.memo };
        for (slot, &rule_idx) in rules.active.iter().enumerate() {
            let rule = &rules.all[rule_idx];
            let before = state::level(levels, slot);
            // Out of scope, a rule's level is none: a level it had falls silently.
            let applies = rule.scope.as_ref().is_none_or(|s| in_scope >> slot & 1 == 1 && s.matches_class(class));
            if !applies && before == 0 {
                continue;
            }
            let value = plan.value(&runs, slot, &rule.measure, at, &mut memo);
            let now = if applies { rule.level(class, value) } else { 0 };
            if now > before
                && let Some(action) = Action::from_level(now)
            {
                sink(alert(key, &runs, rule_idx, rules, action, before, at, value, class));
            } else if now < before
                && let (Some(falls), Some(from)) = (&mut self.falls, Action::from_level(before))
            {
                falls.push(Fall { entity: key, rule: rule_idx, from, to: Action::from_level(now), at, value, class });
            }
            levels = state::with_level(levels, slot, now);
        }
        entity.levels = levels;
        entity.prune(plan, at);
        let due = entity.runs().next_change(plan, at, levels);
        if due != entity.due {
            entity.due = due;
            if due != Ts::MAX {
                self.timers.push(due, idx);
            }
        }
    }

    /// Swaps in a new rule set (a reload). Levels are kept for the rules whose id is still active; a new
    /// rule starts at no level. Every entity joins the batch of `now`, so at the next flush each is
    /// evaluated under the new rules against the levels it had: a level that now rises is an alert, one
    /// that falls re-arms silently, exactly as if the thresholds had changed at `now`. Events already pruned
    /// under the old rules' windows are gone: a longer window counts only what was still kept.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) -> Result<(), EngineError> {
        let n = rules.active.len();
        if n > MAX_ACTIVE_RULES {
            return Err(EngineError::TooManyRules(n));
        }
        let old: Vec<(String, String)> = self.rules.active().map(|r| (r.id.clone(), r.version.clone())).collect();
        self.rules = rules;
        let kept = self.plan.keeps(Kind::Profile);
        self.plan = Plan::new(&self.rules);
        self.memo = vec![0; self.plan.components()];
        match (kept, self.plan.keeps(Kind::Profile)) {
            (true, true) => self.rematch_profiles(),
            (false, true) => self.seed_profiles(),
            // At once, not at each entity's next evaluation: a checkpoint written before then must not hold
            // profiles its plan does not keep (nor a later reload see their stale matches).
            (true, false) => self.entities.iter_mut().for_each(|e| e.remove_kind(Kind::Profile)),
            (false, false) => {}
        }
        self.adopt_levels(&old);
        Ok(())
    }

    /// Recomputes the scopes every stored profile matches (the rules changed).
    fn rematch_profiles(&mut self) {
        for entity in &mut self.entities {
            for rec in entity.recs_mut() {
                if let RecData::Profile { fields, matches } = &mut rec.data {
                    *matches = scope_matches(&self.rules, &self.profiles, *fields);
                }
            }
        }
    }

    /// Starts the stored profiles of scoped rules from the latest profiles, when rules gain a scope at a
    /// reload (or a snapshot holds none): each entity's latest profile stands from its `occurred_at` on, and
    /// the entity joins the batch of `now`. Profiles before the latest were not kept, so until the latest takes
    /// effect (when it is in the future) the entity has no profile in force: in no scope. Within the limits:
    /// an entity that would go over `entities` or `events_per_entity` is left without (out of every scope until
    /// its next profile), and counted in [`Engine::profiles_not_seeded`].
    fn seed_profiles(&mut self) {
        let mut latest: Vec<(EntityKey, Ts, [u32; 4])> =
            self.profiles.map.iter().map(|(key, p)| (*key, p.at, p.fields)).collect();
        latest.sort_unstable_by_key(|(key, _, _)| *key);
        for (key, at, fields) in latest {
            let idx = match self.index.get(&key) {
                Some(&idx) if self.entities[idx as usize].len() < self.limits.events_per_entity => idx,
                None if self.entities.len() < self.limits.entities => self.new_entity(key),
                _ => {
                    self.profiles_not_seeded += 1;
                    continue;
                }
            };
            let rec = self.profile_rec(at, fields);
            self.entities[idx as usize].insert(rec);
            self.touch(idx);
        }
    }

    /// Latest profiles not stored for scoped rules when they were started (a reload adding the first scoped
    /// rule, or an old checkpoint) because an entity was at a limit (since the engine was made).
    pub fn profiles_not_seeded(&self) -> u64 {
        self.profiles_not_seeded
    }

    /// Maps levels stored under the active rules `old` (id, version) onto the current rules; if anything
    /// differs, every entity joins the batch of `now`.
    fn adopt_levels(&mut self, old: &[(String, String)]) {
        let same = old.len() == self.rules.active.len()
            && self.rules.active().zip(old).all(|(r, (id, version))| r.id == *id && r.version == *version);
        if same {
            return;
        }
        let from: Vec<Option<usize>> =
            self.rules.active().map(|r| old.iter().position(|(id, _)| *id == r.id)).collect();
        for (idx, entity) in self.entities.iter_mut().enumerate() {
            let mut levels = 0;
            for (slot, f) in from.iter().enumerate() {
                if let Some(f) = *f {
                    levels = state::with_level(levels, slot, state::level(entity.levels, f));
                }
            }
            entity.levels = levels;
            if !entity.touched {
                entity.touched = true;
                self.touched.push(idx as u32);
            }
        }
    }

    /// Calls `each` with the region, domain and highest standing level (over the enabled rules: shadow ones are
    /// left out) of every entity standing at an action. For the operators' regional view; O(entities).
    pub fn standing(&self, mut each: impl FnMut(Option<&str>, Option<&str>, Action)) {
        let rules = &*self.rules;
        let enabled: Vec<usize> = (rules.active.iter().enumerate())
            .filter(|(_, i)| rules.all[**i].state == crate::rules::RuleState::Enabled)
            .map(|(slot, _)| slot)
            .collect();
        for entity in self.entities.iter().filter(|e| e.levels != 0) {
            let top = enabled.iter().map(|&slot| state::level(entity.levels, slot)).max().unwrap_or(0);
            if let Some(action) = Action::from_level(top) {
                let [region, _, domain, _] = self.profiles.fields(&entity.key);
                each(region, domain, action);
            }
        }
    }

    /// A rough count of the bytes of state held (for metrics and benchmarks).
    pub fn state_bytes(&self) -> usize {
        let recs: usize = self.entities.iter().map(Entity::heap_bytes).sum();
        self.entities.capacity() * std::mem::size_of::<Entity>()
            + table_bytes(self.index.capacity(), std::mem::size_of::<(EntityKey, u32)>())
            + recs
            + self.timers.bytes()
            + self.dedup.bytes()
            + self.profiles.bytes()
    }
}

/// The active rule slots whose scope a profile's field symbols match (bit `slot`).
fn scope_matches(rules: &RuleSet, profiles: &Profiles, fields: [u32; 4]) -> u32 {
    const _: () = assert!(MAX_ACTIVE_RULES <= 32, "scope matches are a u32 of rule slots");
    let values = profiles.resolve(fields);
    let scoped = rules.active().enumerate().filter_map(|(slot, r)| Some(slot).zip(r.scope.as_ref()));
    scoped.filter(|(_, scope)| scope.matches_profile(values)).fold(0, |bits, (slot, _)| bits | 1 << slot)
}

/// Bytes of a `hashbrown` table that can hold `capacity` items of `item` bytes: a power-of-two number of
/// buckets, at most 7/8 full, each with one control byte.
fn table_bytes(capacity: usize, item: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets =
        if capacity < 8 { (capacity + 1).next_power_of_two() } else { (capacity * 8 / 7).next_power_of_two() };
    buckets * (item + 1)
}

#[allow(clippy::too_many_arguments)]
fn alert(
    entity: EntityKey,
    runs: &Runs<'_>,
    rule_idx: usize,
    rules: &RuleSet,
    action: Action,
    before: u8,
    at: Ts,
    value: i64,
    class: Option<Class>,
) -> Alert {
    let rule = &rules.all[rule_idx];
    let measure = &rule.measure;
    // Per windowed count (a composite rule's parts in order): the current window, then a surge's previous one.
    let mut windows = Vec::new();
    for (kinds, w, surge) in measure.components() {
        windows.push(Window { from: at - w, to: at, count: runs.count(kinds, at - w, at) });
        if surge.is_some() {
            windows.push(Window { from: at - 2 * w, to: at - w, count: runs.count(kinds, at - 2 * w, at - w) });
        }
    }
    // Each count's events over its reach (a kind in several parts: over the longest).
    let counts = measure.components().map(|c| (c.0, at - crate::rules::component_reach(&c)));
    let (evidence, evidence_omitted) = runs.evidence(counts, at, MAX_EVIDENCE_BYTES);
    Alert {
        entity,
        rule: rule_idx,
        action,
        previous: Action::from_level(before),
        at,
        value,
        threshold: rule.threshold(class, action).unwrap_or_default(),
        class,
        windows,
        evidence,
        evidence_omitted,
    }
}

#[cfg(test)]
mod tests;
