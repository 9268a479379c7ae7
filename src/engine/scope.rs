//! Scoped rules: the profile history each entity needs so that a rule's scope is judged with the profile in
//! force at each instant, exactly like the class.
//!
//! Kept only while some active rule has a scope (otherwise profiles are master data for routing alone, in
//! `profiles.rs`). Per entity: its profiles by `occurred_at` (ties in arrival order), the one in force at the
//! last evaluation and any later ones; older ones are dropped when the entity is evaluated. Each profile
//! carries the set of scoped rules (by slot) its fields match, recomputed when the rules change, so an
//! evaluation tests one bit per scoped rule.

use hashbrown::HashMap;

use super::profiles::Profiles;
use crate::rules::RuleSet;
use crate::time::Ts;

/// One profile of an entity, in force from `at` until the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProfileAt {
    pub at: Ts,
    /// Symbols of region, industry, domain, authority (0: absent), as in [`Profiles`].
    pub fields: [u32; 4],
    /// Bit `slot` set: the fields match the scope of the active rule in that slot.
    pub matches: u64,
}

/// The profile histories of all entities (by entity index), for the active rules' scopes.
#[derive(Debug, Default)]
pub(super) struct Scopes {
    /// Bit `slot` set: the active rule in that slot has a scope. 0: histories are not kept.
    pub scoped: u64,
    pub by_entity: HashMap<u32, Vec<ProfileAt>>,
}

impl Scopes {
    /// Whether histories are kept (some active rule has a scope).
    pub fn active(&self) -> bool {
        self.scoped != 0
    }

    /// The scoped rules a profile's fields match, by slot.
    pub fn matches(rules: &RuleSet, profiles: &Profiles, fields: [u32; 4]) -> u64 {
        let values = profiles.resolve(fields);
        let mut bits = 0;
        for (slot, rule) in rules.active().enumerate() {
            if rule.scope.as_ref().is_some_and(|s| s.matches_profile(values)) {
                bits |= 1 << slot;
            }
        }
        bits
    }

    /// Adopts `rules`: which slots are scoped, and every stored profile's matches recomputed. Histories are
    /// dropped when no rule is scoped any more.
    pub fn set_rules(&mut self, rules: &RuleSet, profiles: &Profiles) {
        self.scoped = rules.active().enumerate().filter(|(_, r)| r.scope.is_some()).fold(0, |b, (s, _)| b | 1 << s);
        if !self.active() {
            self.by_entity = HashMap::new();
            return;
        }
        for history in self.by_entity.values_mut() {
            for p in history {
                p.matches = Self::matches(rules, profiles, p.fields);
            }
        }
    }

    /// Profiles stored for entity `idx`.
    pub fn len_of(&self, idx: u32) -> usize {
        self.by_entity.get(&idx).map_or(0, Vec::len)
    }

    /// Adds a profile of entity `idx`: after those with the same or an earlier `occurred_at` (the later read
    /// wins a tie).
    pub fn insert(&mut self, idx: u32, p: ProfileAt) {
        let history = self.by_entity.entry(idx).or_default();
        let pos = history.partition_point(|q| q.at <= p.at);
        history.insert(pos, p);
    }

    /// The scoped rules (by slot) entity `idx`'s profile in force at `at` matches (0 with no profile then),
    /// dropping the profiles it supersedes (evaluation instants never go back).
    pub fn in_force(&mut self, idx: u32, at: Ts) -> u64 {
        let Some(history) = self.by_entity.get_mut(&idx) else { return 0 };
        let n = history.partition_point(|p| p.at <= at);
        if n > 1 {
            history.drain(..n - 1);
        }
        if n == 0 { 0 } else { history[0].matches }
    }

    /// Drops the profiles of entity `idx` superseded at `at` (an entity at its limit; see `Engine::admit_pruning`).
    pub fn prune(&mut self, idx: u32, at: Ts) {
        self.in_force(idx, at);
    }

    /// The first instant after `at` at which entity `idx`'s profile changes, `Ts::MAX` if none.
    pub fn next_change(&self, idx: u32, at: Ts) -> Ts {
        let Some(history) = self.by_entity.get(&idx) else { return Ts::MAX };
        history.iter().map(|p| p.at).find(|&t| t > at).unwrap_or(Ts::MAX)
    }

    /// A rough count of the bytes held.
    pub fn bytes(&self) -> usize {
        let lists: usize = self.by_entity.values().map(|h| h.capacity() * std::mem::size_of::<ProfileAt>()).sum();
        super::table_bytes(self.by_entity.capacity(), std::mem::size_of::<(u32, Vec<ProfileAt>)>()) + lists
    }
}
