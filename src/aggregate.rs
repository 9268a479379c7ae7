//! Regional alerts (`[[aggregate]]` rules, seed 三(五) 综合研判): "at least N entities of one region (or
//! industry, or domain) at `min_action` or above within the window" raises an alert about the group, for the
//! bureau's leadership.
//!
//! [`Aggregator`] is pure and synchronous, like the engine: entity alerts in (in stream order, each with the
//! entity's profile when it was raised), [`RegionalAlert`]s out. It reads the entity alert stream and never
//! feeds back into it.
//!
//! **Semantics.** An entity alert qualifies for aggregate rule R when its rule is not in shadow, its action is
//! at least R's `min_action` and the entity's profile has a non-empty value for R's `group_by`; its group is
//! the first `prefix` characters of that value (all of it when shorter). Per (R, group) the aggregator keeps
//! each entity's latest qualifying alert time and a standing level. The window is SPEC's: at instant `t` it
//! holds the times `t - W < at <= t`; the count is the number of distinct entities in it.
//!
//! The evaluation instant `t` of an arrival is `max(at, the latest instant seen)`. Before adding an arrival at
//! an instant later than the group's last evaluation, the group's standing level is recomputed from its count
//! at `t` without the new arrival: counts only fall between arrivals, so that is the level that stood just
//! before `t` (falls are silent, they re-arm the group). The arrival is then added; if the level of the count
//! at `t` is above the standing level, a [`RegionalAlert`] is raised and becomes the standing level. Several
//! arrivals for one group at the same instant are evaluated one after another, so one instant can raise
//! `remind` and then `warn` for the same group, like a stream that brings them one by one.
//!
//! Entities whose time left the window are evicted lazily (when their group is next evaluated, and in a sweep
//! of every group once per day of stream time); a group with no entity left is dropped. Memory is bounded by
//! the entities with qualifying alerts in the window.

use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::engine::{Alert, Engine, Profile};
use crate::rules::{Action, AggregateRule, GroupBy, RuleSet, RuleState};
use crate::time::{DAY, Ts, format_rfc3339};

/// Most entity ids listed in a regional alert (the count is always exact).
pub const MAX_LISTED_ENTITIES: usize = 100;

/// An entity alert as the aggregator needs it. Build it with [`EntityAlert::new`] from an engine's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityAlert<'a> {
    /// The alert's instant.
    pub at: Ts,
    /// The entity's credit code.
    pub entity: &'a str,
    /// The level it rose to.
    pub action: Action,
    /// Raised by a shadow rule (never counts).
    pub shadow: bool,
    /// The entity's profile fields when the alert was raised (`None`: no profile, or no such field).
    pub region: Option<&'a str>,
    /// See `region`.
    pub industry: Option<&'a str>,
    /// See `region`.
    pub domain: Option<&'a str>,
}

impl<'a> EntityAlert<'a> {
    /// The input of `alert`, raised under `rules`, for the entity `entity_id` (`alert.entity.to_string()`)
    /// whose profile is `profile` (`Engine::profile(&alert.entity)` at the time the alert is handed over).
    pub fn new(alert: &Alert, rules: &RuleSet, entity_id: &'a str, profile: Option<&'a Profile>) -> EntityAlert<'a> {
        EntityAlert {
            at: alert.at,
            entity: entity_id,
            action: alert.action,
            shadow: rules.all.get(alert.rule).is_none_or(|r| r.state == RuleState::Shadow),
            region: profile.and_then(|p| p.region.as_deref()),
            industry: profile.and_then(|p| p.industry.as_deref()),
            domain: profile.and_then(|p| p.domain.as_deref()),
        }
    }

    /// The profile field an aggregate groups by.
    fn field(&self, by: GroupBy) -> Option<&'a str> {
        match by {
            GroupBy::Region => self.region,
            GroupBy::Industry => self.industry,
            GroupBy::Domain => self.domain,
        }
    }
}

/// A regional alert: the level of a group rose. One JSON line in `replay --regional`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionalAlert {
    /// Stable id: a hash of rule id, rule version, group, instant and action.
    pub alert_id: String,
    /// What the group is made of: `region`, `industry` or `domain`.
    pub scope: GroupBy,
    /// The group: the first `prefix` characters of the profile field (e.g. `3605` for a city).
    pub group: String,
    /// The aggregate rule's id.
    pub rule_id: String,
    /// Its content hash.
    pub rule_version: String,
    /// Its Chinese name.
    pub rule_name_zh: String,
    /// The level reached.
    pub action: Action,
    /// The level standing before (null: none).
    pub previous_action: Option<Action>,
    /// Distinct entities counted at `at`.
    pub value: u64,
    /// The threshold of `action`.
    pub threshold: u64,
    /// The rule's window, in days.
    pub window_days: i64,
    /// The instant of evaluation, RFC 3339.
    pub at: String,
    /// The counted entities' ids, sorted, at most [`MAX_LISTED_ENTITIES`].
    pub entities: Vec<String>,
    /// Raised by a shadow aggregate rule: recorded, never to be mailed.
    pub shadow: bool,
}

/// The stable id of a regional alert.
pub fn regional_alert_id(rule: &str, version: &str, group: &str, at: Ts, action: Action) -> String {
    let key = format!("aggregate\u{1f}{rule}\u{1f}{version}\u{1f}{group}\u{1f}{at}\u{1f}{action}");
    format!("{:032x}", xxh3_128(key.as_bytes()))
}

/// One group of one aggregate rule. After an evaluation at `t` every entity it holds is in the window at `t`
/// (times are never later than the clock, and those at or before `t - W` are dropped), so the count is the
/// number of entities held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "GroupData", into = "GroupData")]
struct Group {
    /// Each entity's latest qualifying alert time.
    entities: BTreeMap<CompactString, Ts>,
    /// The same, ordered by time (what leaves the window first comes first).
    by_time: BTreeSet<(Ts, CompactString)>,
    /// The level as last evaluated (0: none).
    standing: u8,
    /// The instant of the last evaluation.
    evaluated: Ts,
}

/// A group as saved: `by_time` is rebuilt from `entities`.
#[derive(Serialize, Deserialize)]
struct GroupData {
    entities: BTreeMap<CompactString, Ts>,
    standing: u8,
    evaluated: Ts,
}

impl From<GroupData> for Group {
    fn from(d: GroupData) -> Group {
        let by_time = d.entities.iter().map(|(e, &at)| (at, e.clone())).collect();
        Group { entities: d.entities, by_time, standing: d.standing, evaluated: d.evaluated }
    }
}

impl From<Group> for GroupData {
    fn from(g: Group) -> GroupData {
        GroupData { entities: g.entities, standing: g.standing, evaluated: g.evaluated }
    }
}

impl Group {
    /// Drops the entities whose time left the window at `t` and recomputes the standing level (a fall is
    /// silent).
    fn evaluate(&mut self, rule: &AggregateRule, t: Ts) {
        while let Some((at, _)) = self.by_time.first()
            && *at <= t - rule.window
        {
            if let Some((_, entity)) = self.by_time.pop_first() {
                self.entities.remove(&entity);
            }
        }
        self.standing = rule.level(self.count());
        self.evaluated = t;
    }

    /// Distinct entities in the window (at the instant of the last evaluation).
    fn count(&self) -> u64 {
        self.entities.len() as u64
    }

    /// Records a qualifying alert of `entity` at `at` (in the window): its latest time is kept.
    fn insert(&mut self, entity: &str, at: Ts) {
        match self.entities.get_mut(entity) {
            Some(latest) if *latest >= at => {}
            Some(latest) => {
                let old = std::mem::replace(latest, at);
                let key = CompactString::from(entity);
                self.by_time.remove(&(old, key.clone()));
                self.by_time.insert((at, key));
            }
            None => {
                let key = CompactString::from(entity);
                self.entities.insert(key.clone(), at);
                self.by_time.insert((at, key));
            }
        }
    }
}

/// The state of one aggregate rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RuleGroups {
    /// The rule version this state was built under.
    version: String,
    groups: BTreeMap<String, Group>,
}

/// Regional alerts from the entity alert stream. Its state is serde (the rules are not: after
/// deserializing, call [`Aggregator::set_rules`] before offering alerts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Aggregator {
    /// The active aggregate rules, in order.
    #[serde(skip)]
    rules: Vec<AggregateRule>,
    /// The latest instant seen.
    clock: Option<Ts>,
    /// The instant of the last sweep of every group.
    swept: Option<Ts>,
    /// Per rule id.
    state: BTreeMap<String, RuleGroups>,
}

impl PartialEq for Aggregator {
    /// Same state (rules are compared by id and version through the state).
    fn eq(&self, other: &Aggregator) -> bool {
        self.clock == other.clock && self.swept == other.swept && self.state == other.state
    }
}

impl Aggregator {
    /// An aggregator for the active aggregate rules of `rules`, with no state.
    pub fn new(rules: &RuleSet) -> Aggregator {
        let mut aggregator = Aggregator::default();
        aggregator.set_rules(rules);
        aggregator
    }

    /// Takes the active aggregate rules of `rules` (a reload, or after deserializing): keeps the state of the
    /// aggregates whose id and version are unchanged, drops the others'.
    pub fn set_rules(&mut self, rules: &RuleSet) {
        self.rules = rules.active_aggregates().cloned().collect();
        let old = std::mem::take(&mut self.state);
        for (id, groups) in old {
            if self.rules.iter().any(|r| r.id == id && r.version == groups.version) {
                self.state.insert(id, groups);
            }
        }
        for rule in &self.rules {
            self.state
                .entry(rule.id.clone())
                .or_insert_with(|| RuleGroups { version: rule.version.clone(), groups: BTreeMap::new() });
        }
    }

    /// Whether there is any active aggregate rule (when not, [`Aggregator::offer`] does nothing).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The latest instant seen.
    pub fn clock(&self) -> Option<Ts> {
        self.clock
    }

    /// Groups and (group, entity) entries held.
    pub fn size(&self) -> (usize, usize) {
        let groups = self.state.values().flat_map(|r| r.groups.values());
        groups.fold((0, 0), |(g, e), group| (g + 1, e + group.entities.len()))
    }

    /// Offers one entity alert (in stream order); each regional alert it raises goes to `sink`, in rule order.
    pub fn offer(&mut self, alert: &EntityAlert<'_>, sink: &mut impl FnMut(RegionalAlert)) {
        if self.rules.is_empty() {
            return;
        }
        let t = self.clock.map_or(alert.at, |c| c.max(alert.at));
        self.clock = Some(t);
        if self.swept.is_none_or(|s| t - s >= DAY) {
            self.sweep(t);
        }
        if alert.shadow {
            return;
        }
        for rule in &self.rules {
            if alert.action < rule.min_action {
                continue;
            }
            if alert.at <= t - rule.window {
                continue; // late, and already out of the window: it would never count
            }
            let Some(group) = alert.field(rule.group_by).and_then(|v| rule.group_of(v)) else { continue };
            let Some(state) = self.state.get_mut(&rule.id) else { continue };
            let g = state.groups.entry(group.to_owned()).or_insert_with(|| Group { evaluated: t, ..Group::default() });
            if t > g.evaluated {
                g.evaluate(rule, t);
            }
            g.insert(alert.entity, alert.at);
            let value = g.count();
            let level = rule.level(value);
            if level > g.standing {
                let (Some(action), Some(threshold)) =
                    (Action::from_level(level), Action::from_level(level).and_then(|a| rule.threshold(a)))
                else {
                    continue;
                };
                // Sorted, as the map's keys are.
                let entities: Vec<String> =
                    g.entities.keys().take(MAX_LISTED_ENTITIES).map(|e| e.to_string()).collect();
                sink(RegionalAlert {
                    alert_id: regional_alert_id(&rule.id, &rule.version, group, t, action),
                    scope: rule.group_by,
                    group: group.to_owned(),
                    rule_id: rule.id.clone(),
                    rule_version: rule.version.clone(),
                    rule_name_zh: rule.name_zh.clone(),
                    action,
                    previous_action: Action::from_level(g.standing),
                    value,
                    threshold,
                    window_days: rule.window / DAY,
                    at: format_rfc3339(t),
                    entities,
                    shadow: rule.state == RuleState::Shadow,
                });
                g.standing = level;
            }
        }
    }

    /// [`Aggregator::offer`] for an alert the engine just raised: the rule's state and the entity's profile
    /// are read from `engine`.
    pub fn offer_engine_alert(&mut self, engine: &Engine, alert: &Alert, sink: &mut impl FnMut(RegionalAlert)) {
        if self.rules.is_empty() {
            return;
        }
        let shadow = engine.rules().all.get(alert.rule).is_none_or(|r| r.state == RuleState::Shadow);
        let counts = !shadow && self.rules.iter().any(|r| alert.action >= r.min_action);
        let entity = alert.entity.to_string();
        // The profile is only looked up when the alert can count (it copies the entity's name).
        let profile = if counts { engine.profile(&alert.entity) } else { None };
        self.offer(&EntityAlert::new(alert, engine.rules(), &entity, profile.as_ref()), sink);
    }

    /// Evaluates every group at `t` (silently: counts only fall between arrivals), dropping the entities that
    /// left the window and the groups left empty.
    fn sweep(&mut self, t: Ts) {
        self.swept = Some(t);
        for rule in &self.rules {
            let Some(state) = self.state.get_mut(&rule.id) else { continue };
            state.groups.retain(|_, g| {
                if t > g.evaluated {
                    g.evaluate(rule, t);
                }
                !g.entities.is_empty() || g.standing > 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load_file_str;

    const RULES: &str = r#"
[[aggregate]]
id = "city-warn"
name_zh = "同一地区多家主体达到警示"
name_en = "Several entities of one city at warn"
group_by = "region"
prefix = 4
min_action = "warn"
window_days = 30
thresholds = { remind = 2, warn = 3 }
"#;

    fn rules(text: &str) -> RuleSet {
        let (all, aggregates) = load_file_str("t.toml", text).unwrap();
        RuleSet::new(all, vec![]).with_aggregates(aggregates)
    }

    fn alert<'a>(day: i64, entity: &'a str, region: &'a str) -> EntityAlert<'a> {
        EntityAlert {
            at: day * DAY,
            entity,
            action: Action::Warn,
            shadow: false,
            region: Some(region),
            industry: None,
            domain: None,
        }
    }

    fn offer(a: &mut Aggregator, input: EntityAlert<'_>) -> Vec<RegionalAlert> {
        let mut out = Vec::new();
        a.offer(&input, &mut |r| out.push(r));
        out
    }

    fn brief(out: &[RegionalAlert]) -> Vec<(String, Action, Option<Action>, u64)> {
        out.iter().map(|r| (r.group.clone(), r.action, r.previous_action, r.value)).collect()
    }

    #[test]
    fn rises_with_distinct_entities_of_one_city() {
        let mut a = Aggregator::new(&rules(RULES));
        assert!(offer(&mut a, alert(0, "e1", "360502")).is_empty());
        assert!(offer(&mut a, alert(1, "e1", "360502")).is_empty(), "the same entity counts once");
        assert!(offer(&mut a, alert(1, "x1", "360102")).is_empty(), "another city");
        let out = offer(&mut a, alert(2, "e2", "360521"));
        assert_eq!(brief(&out), [("3605".into(), Action::Remind, None, 2)]);
        assert_eq!(out[0].entities, ["e1", "e2"]);
        assert_eq!(out[0].at, "1970-01-03T00:00:00Z");
        assert_eq!(out[0].threshold, 2);
        let out = offer(&mut a, alert(3, "e3", "3605"));
        assert_eq!(brief(&out), [("3605".into(), Action::Warn, Some(Action::Remind), 3)]);
        let mut remind = alert(4, "e4", "360502");
        remind.action = Action::Remind;
        assert!(offer(&mut a, remind).is_empty(), "below min_action");
        let mut shadow = alert(4, "e5", "360502");
        shadow.shadow = true;
        assert!(offer(&mut a, shadow).is_empty());
        let mut no_profile = alert(4, "e6", "360502");
        no_profile.region = None;
        assert!(offer(&mut a, no_profile).is_empty());
        assert!(offer(&mut a, alert(4, "e7", "")).is_empty(), "an empty value forms no group");
        assert_eq!(a.size(), (2, 4));
    }

    #[test]
    fn the_standing_level_is_recomputed_across_a_fall() {
        let mut a = Aggregator::new(&rules(RULES));
        offer(&mut a, alert(0, "e1", "360502"));
        offer(&mut a, alert(10, "e2", "360502"));
        let out = offer(&mut a, alert(20, "e3", "360502"));
        assert_eq!(brief(&out), [("3605".into(), Action::Warn, Some(Action::Remind), 3)]);
        // Day 30: e1 (day 0) leaves exactly at t - W; the count fell to 2 (remind) silently before the arrival
        // of e4, which brings it back to 3: a rise from remind.
        let out = offer(&mut a, alert(30, "e4", "360502"));
        assert_eq!(brief(&out), [("3605".into(), Action::Warn, Some(Action::Remind), 3)]);
        assert_eq!(out[0].entities, ["e2", "e3", "e4"]);
        // Long after everything left: the group is gone, a new arrival starts from none.
        assert!(offer(&mut a, alert(100, "e5", "360502")).is_empty());
        assert_eq!(a.size(), (1, 1));
        let out = offer(&mut a, alert(101, "e6", "360502"));
        assert_eq!(brief(&out), [("3605".into(), Action::Remind, None, 2)]);
    }

    #[test]
    fn an_entity_counts_from_its_latest_alert() {
        let mut a = Aggregator::new(&rules(RULES));
        offer(&mut a, alert(0, "e1", "360502"));
        offer(&mut a, alert(20, "e1", "360502"));
        offer(&mut a, alert(25, "e2", "360502"));
        // Day 35: e1's first alert left the window, its latest (day 20) did not.
        let out = offer(&mut a, alert(35, "e3", "360502"));
        assert_eq!(brief(&out), [("3605".into(), Action::Warn, Some(Action::Remind), 3)]);
        // Day 50: e1 (20) left; e2, e3 remain: the level falls to remind silently, e4 makes 3 again.
        let out = offer(&mut a, alert(50, "e4", "360502"));
        assert_eq!(brief(&out), [("3605".into(), Action::Warn, Some(Action::Remind), 3)]);
        assert_eq!(out[0].entities, ["e2", "e3", "e4"]);
    }

    #[test]
    fn arrivals_of_one_instant_are_evaluated_one_by_one_and_late_ones_at_the_clock() {
        let mut a = Aggregator::new(&rules(RULES));
        offer(&mut a, alert(5, "e1", "360502"));
        let mut out = offer(&mut a, alert(5, "e2", "360502"));
        out.extend(offer(&mut a, alert(5, "e3", "360502")));
        assert_eq!(
            brief(&out),
            [("3605".into(), Action::Remind, None, 2), ("3605".into(), Action::Warn, Some(Action::Remind), 3)]
        );
        // An alert earlier than the clock is evaluated at the clock; one already out of the window never counts.
        let mut b = Aggregator::new(&rules(RULES));
        offer(&mut b, alert(40, "e1", "360502"));
        assert!(offer(&mut b, alert(5, "e2", "360502")).is_empty());
        let out = offer(&mut b, alert(20, "e3", "360502"));
        assert_eq!(brief(&out), [("3605".into(), Action::Remind, None, 2)]);
        assert_eq!(out[0].at, format_rfc3339(40 * DAY));
        assert_eq!(out[0].entities, ["e1", "e3"]);
    }

    #[test]
    fn set_rules_keeps_unchanged_aggregates_and_drops_changed_ones() {
        let two = format!("{RULES}\n{}", RULES.replace("city-warn", "city-warn-2"));
        let mut a = Aggregator::new(&rules(&two));
        offer(&mut a, alert(0, "e1", "360502"));
        assert_eq!(a.size(), (2, 2));
        // Names do not change the version: state kept.
        a.set_rules(&rules(&two.replace("Several", "Many")));
        assert_eq!(a.size(), (2, 2));
        // city-warn-2's thresholds change: its state goes, city-warn's stays.
        let changed = format!("{RULES}\n{}", RULES.replace("city-warn", "city-warn-2").replace("warn = 3", "warn = 4"));
        a.set_rules(&rules(&changed));
        assert_eq!(a.size(), (1, 1));
        let out = offer(&mut a, alert(1, "e2", "360502"));
        assert_eq!(out.len(), 1, "only city-warn has 2 entities");
        assert_eq!(out[0].rule_id, "city-warn");
        // Disabled: dropped.
        a.set_rules(&rules(&RULES.replace("min_action", "state = \"disabled\"\nmin_action")));
        assert_eq!(a.size(), (0, 0));
        assert!(!a.is_active());
        assert!(offer(&mut a, alert(2, "e3", "360502")).is_empty());
    }

    #[test]
    fn state_round_trips_through_serde() {
        let set = rules(RULES);
        let mut a = Aggregator::new(&set);
        offer(&mut a, alert(0, "e1", "360502"));
        offer(&mut a, alert(1, "e2", "360502"));
        let json = serde_json::to_string(&a).unwrap();
        let mut b: Aggregator = serde_json::from_str(&json).unwrap();
        assert_eq!(a, b);
        b.set_rules(&set);
        assert_eq!(a, b);
        let (x, y) = (offer(&mut a, alert(2, "e3", "360502")), offer(&mut b, alert(2, "e3", "360502")));
        assert_eq!(x, y);
        assert_eq!(brief(&y), [("3605".into(), Action::Warn, Some(Action::Remind), 3)]);
        let line = serde_json::to_string(&y[0]).unwrap();
        assert_eq!(serde_json::from_str::<RegionalAlert>(&line).unwrap(), y[0]);
        assert!(line.starts_with(r#"{"alert_id":""#), "{line}");
        assert!(line.contains(r#""scope":"region","group":"3605","rule_id":"city-warn""#), "{line}");
    }

    #[test]
    fn groups_by_industry_and_domain() {
        let text = RULES.replace("\"region\"", "\"industry\"").replace("prefix = 4", "prefix = 1")
            + &RULES
                .replace("city-warn", "domain-warn")
                .replace("\"region\"", "\"domain\"")
                .replace("prefix = 4\n", "");
        let mut a = Aggregator::new(&rules(&text));
        let mut e1 = alert(0, "e1", "360502");
        (e1.industry, e1.domain) = (Some("F5212"), Some("food"));
        let mut e2 = alert(0, "e2", "360502");
        (e2.industry, e2.domain) = (Some("F5251"), Some("food"));
        offer(&mut a, e1);
        let out = offer(&mut a, e2);
        assert_eq!(
            brief(&out),
            [("F".into(), Action::Remind, None, 2), ("food".into(), Action::Remind, None, 2)],
            "rule order"
        );
        assert_eq!((out[0].scope, out[1].scope), (GroupBy::Industry, GroupBy::Domain));
    }

    #[test]
    fn entity_lists_are_capped() {
        let text = RULES.replace("thresholds = { remind = 2, warn = 3 }", "thresholds = { remind = 150 }");
        let mut a = Aggregator::new(&rules(&text));
        let ids: Vec<String> = (0..150).rev().map(|i| format!("e{i:03}")).collect();
        let mut out = Vec::new();
        for id in &ids {
            out.extend(offer(&mut a, alert(0, id, "360502")));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 150);
        assert_eq!(out[0].entities.len(), MAX_LISTED_ENTITIES);
        assert_eq!(out[0].entities[0], "e000");
    }
}
