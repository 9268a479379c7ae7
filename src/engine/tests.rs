//! Engine tests through its public API: the live clock (`ingest`, `advance_to`, `flush`), which replay and the
//! rule tests do not exercise, and a few exact cases derived from SPEC.

use std::sync::Arc;

use super::*;
use crate::rules::load_str;
use crate::time::DAY;

const RULES: &str = r#"
[class_factors]
A = 2.0
B = 1.5
C = 1.0
D = 0.5
unclassified = 1.0

[[rule]]
id = "sentiment-1m"
name_zh = "一个月内负面舆情条数"
name_en = "Negative media items in the last month"
type = "count"
kind = "negative_sentiment"
window_days = 30
thresholds = { remind = 2, warn = 3 }

[[rule]]
id = "complaint-surge"
name_zh = "三个月内投诉举报次数变化"
name_en = "Change in complaints over three months"
type = "surge"
kind = "complaint"
window_days = 90
min_ratio = 1.5
thresholds = { remind = 2 }
"#;

fn engine() -> Engine {
    let rules = load_str("test.toml", RULES).unwrap();
    Engine::new(Arc::new(RuleSet::new(rules, vec![]))).unwrap()
}

fn key() -> EntityKey {
    EntityKey::parse("91350100M000100Y43").unwrap()
}

fn ev(id: &str, kind: Kind, at: Ts) -> Event {
    Event { id: id.into(), entity: key(), kind, at, class: None, profile: None }
}

/// (instant, rule index, action) of each alert.
fn brief(alerts: &[Alert]) -> Vec<(Ts, usize, Action)> {
    alerts.iter().map(|a| (a.at, a.rule, a.action)).collect()
}

#[test]
fn live_clock_evaluates_at_flush_and_fires_timers_on_time() {
    let mut e = engine();
    let mut out = Vec::new();
    e.advance_to(1000, &mut |a| out.push(a));
    assert_eq!(e.ingest(ev("a", Kind::NegativeSentiment, 900)), Offer::Accepted { late: true });
    assert_eq!(e.ingest(ev("b", Kind::NegativeSentiment, 1000)), Offer::Accepted { late: false });
    assert!(out.is_empty(), "nothing is evaluated before the batch is flushed");
    e.flush(&mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(1000, 0, Action::Remind)]);
    let ids: Vec<&str> = out[0].evidence.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!((out[0].evidence[0].kind, out[0].evidence[0].at), (Kind::NegativeSentiment, 900));

    // The first event leaves at 900 + 30 days; a third arriving later raises remind again.
    out.clear();
    e.advance_to(900 + 30 * DAY + 10, &mut |a| out.push(a));
    e.ingest(ev("c", Kind::NegativeSentiment, 900 + 30 * DAY + 10));
    e.flush(&mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(900 + 30 * DAY + 10, 0, Action::Remind)]);
}

#[test]
fn a_future_event_counts_from_its_own_instant() {
    let mut e = engine();
    let mut out = Vec::new();
    e.advance_to(0, &mut |a| out.push(a));
    e.ingest(ev("a", Kind::NegativeSentiment, 0));
    e.ingest(ev("b", Kind::NegativeSentiment, 50));
    e.flush(&mut |a| out.push(a));
    assert!(out.is_empty(), "the event at 50 is not in the window at 0");
    e.advance_to(100, &mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(50, 0, Action::Remind)], "its arrival is a timer");
}

#[test]
fn duplicates_change_nothing_live() {
    let mut e = engine();
    let mut out = Vec::new();
    e.advance_to(0, &mut |a| out.push(a));
    assert_eq!(e.ingest(ev("a", Kind::NegativeSentiment, 0)), Offer::Accepted { late: false });
    assert_eq!(e.ingest(ev("a", Kind::NegativeSentiment, 0)), Offer::Duplicate);
    e.flush(&mut |a| out.push(a));
    assert!(out.is_empty());
}

#[test]
fn surge_rises_when_prev_leaves_with_no_new_event() {
    let mut e = engine();
    let mut out = Vec::new();
    // prev: 2 complaints at day 0; cur: 3 at day 100 (guard 2*3 >= 3*2 holds: value 1, no action).
    for (i, at) in [0, 0, 100 * DAY, 100 * DAY, 100 * DAY].into_iter().enumerate() {
        e.offer(ev(&format!("c{i}"), Kind::Complaint, at), &mut |a| out.push(a));
    }
    // At day 0 cur = 2, prev = 0: value 2, remind. It falls at day 90 (both leave cur).
    assert_eq!(brief(&out), vec![(0, 1, Action::Remind)]);
    out.clear();
    e.finish(Some(200 * DAY), &mut |a| out.push(a));
    // At day 100 the batch is flushed (value 1); at day 180 prev empties: value 3.
    assert_eq!(brief(&out), vec![(180 * DAY, 1, Action::Remind)]);
    assert_eq!(out[0].value, 3);
    assert_eq!(out[0].windows.len(), 2);
}

#[test]
fn too_many_active_rules_are_refused() {
    let mut rules = load_str("test.toml", RULES).unwrap();
    let template = rules[0].clone();
    for i in 0..MAX_ACTIVE_RULES {
        let mut r = template.clone();
        r.id = format!("r{i}");
        rules.push(r);
    }
    assert!(matches!(Engine::new(Arc::new(RuleSet::new(rules, vec![]))), Err(EngineError::TooManyRules(_))));
}

#[test]
fn a_reload_alerts_on_levels_that_rise_under_the_new_thresholds() {
    let mut e = engine();
    let mut out = Vec::new();
    e.advance_to(0, &mut |a| out.push(a));
    e.ingest(ev("a", Kind::NegativeSentiment, 0));
    e.flush(&mut |a| out.push(a));
    assert!(out.is_empty(), "one item is under remind = 2");

    // The same rule with remind = 1 (kept by id), and the surge rule dropped.
    let lowered = RULES.replace("thresholds = { remind = 2, warn = 3 }", "thresholds = { remind = 1, warn = 3 }");
    let lowered = &lowered[..lowered.find("[[rule]]\nid = \"complaint-surge\"").unwrap()];
    let rules = Arc::new(RuleSet::new(load_str("test.toml", lowered).unwrap(), vec![]));
    e.set_rules(rules).unwrap();
    e.flush(&mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(0, 0, Action::Remind)], "the standing count now reaches remind");
    assert_eq!(out[0].previous, None);

    // Back to remind = 2: the level falls silently, and a second item re-alerts.
    out.clear();
    e.set_rules(Arc::new(RuleSet::new(load_str("test.toml", RULES).unwrap(), vec![]))).unwrap();
    e.advance_to(10, &mut |a| out.push(a));
    assert!(out.is_empty());
    e.ingest(ev("b", Kind::NegativeSentiment, 10));
    e.flush(&mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(10, 0, Action::Remind)]);
}

#[test]
fn a_damaged_snapshot_is_refused_never_trusted() {
    let mut e = engine();
    let mut out = Vec::new();
    for (i, at) in [0, 5, 5, 40 * DAY].into_iter().enumerate() {
        e.offer(ev(&format!("s{i}"), Kind::NegativeSentiment, at), &mut |a| out.push(a));
    }
    e.offer(Event { class: Some(Class::B), ..ev("k", Kind::Classification, 7) }, &mut |a| out.push(a));
    let mut bytes = Vec::new();
    e.write_snapshot(&mut bytes).unwrap();
    let rules = e.rules().clone();
    assert!(Engine::read_snapshot(rules.clone(), &bytes).is_ok());
    for len in 0..bytes.len() {
        assert!(Engine::read_snapshot(rules.clone(), &bytes[..len]).is_err(), "truncated at {len}");
    }
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0xff;
        // A flipped byte may still read as a valid state (a different time or level); it must never panic.
        let _ = Engine::read_snapshot(rules.clone(), &bad);
    }
}

#[test]
fn falls_are_reported_only_when_asked_and_never_as_alerts() {
    let run = |report: bool| {
        let mut e = engine();
        if report {
            e.report_falls();
        }
        let mut out = Vec::new();
        e.offer(ev("a", Kind::NegativeSentiment, 0), &mut |a| out.push(a));
        e.offer(ev("b", Kind::NegativeSentiment, 10), &mut |a| out.push(a));
        e.offer(ev("c", Kind::NegativeSentiment, 20), &mut |a| out.push(a));
        // "a" leaves at 30 days: warn (3) falls to remind; "b" leaves 10 s later: remind falls to none.
        e.finish(Some(30 * DAY + 10), &mut |a| out.push(a));
        (brief(&out), e.take_falls())
    };
    let (alerts, falls) = run(true);
    assert_eq!(alerts, vec![(10, 0, Action::Remind), (20, 0, Action::Warn)]);
    let brief_falls: Vec<_> = falls.iter().map(|f| (f.at, f.from, f.to, f.value)).collect();
    assert_eq!(
        brief_falls,
        vec![(30 * DAY, Action::Warn, Some(Action::Remind), 2), (30 * DAY + 10, Action::Remind, None, 1)]
    );
    let (same_alerts, none) = run(false);
    assert_eq!(same_alerts, alerts, "reporting falls changes no alert");
    assert!(none.is_empty());
}

#[test]
fn a_profile_is_the_latest_by_time_and_survives_a_snapshot() {
    let mut e = engine();
    let profile = |id: &str, at: Ts, name: &str, region: &str| Event {
        profile: Some(Box::new(crate::event::ProfileData {
            name: Some(name.into()),
            region: Some(region.into()),
            domain: Some("food".into()),
            ..Default::default()
        })),
        ..ev(id, Kind::Profile, at)
    };
    e.offer(profile("p1", 100, "甲", "360502"), &mut |_| {});
    e.offer(profile("p2", 50, "乙", "360100"), &mut |_| {}); // late and older: ignored
    e.offer(profile("p3", 100, "丙", "360502"), &mut |_| {}); // same second, read later: wins
    let p = e.profile(&key()).unwrap();
    assert_eq!(
        (p.name.as_deref(), p.region.as_deref(), p.domain.as_deref()),
        (Some("丙"), Some("360502"), Some("food"))
    );
    assert_eq!(p.industry, None);
    assert_eq!(e.entities(), 0, "a profile alone holds no window state");
    let mut bytes = Vec::new();
    e.write_snapshot(&mut bytes).unwrap();
    let back = Engine::read_snapshot(e.rules().clone(), &bytes).unwrap();
    assert_eq!(back.profile(&key()), Some(p));
    assert_eq!(back.profiles(), 1);
}

fn ev_of(entity: &str, id: &str, kind: Kind, at: Ts) -> Event {
    Event { id: id.into(), entity: EntityKey::parse(entity).unwrap(), kind, at, class: None, profile: None }
}

#[test]
fn events_over_a_limit_are_refused_whole_and_can_come_back_once_it_is_raised() {
    let tight = EngineLimits { entities: 1, events_per_entity: 2, seen_ids: 4 };
    let first = "91350100M000100Y43";
    let second = "91110000600037341L";
    let mut e = engine();
    e.set_limits(tight);
    let mut out = Vec::new();
    let mut offer = |e: &mut Engine, entity: &str, id: &str, at: Ts| {
        e.offer(ev_of(entity, id, Kind::NegativeSentiment, at), &mut |a| out.push(a))
    };
    assert_eq!(offer(&mut e, first, "a", 100), Offer::Accepted { late: false });
    // A second entity is over `entities`: nothing of it is kept, its id included, and the clock stays.
    assert_eq!(offer(&mut e, second, "b", 150), Offer::OverLimit(Limit::Entities));
    assert_eq!((e.entities(), e.seen_ids(), e.now()), (1, 1, Some(100)));
    // A third event of the first entity is over `events_per_entity`, and did not raise `warn`.
    assert_eq!(offer(&mut e, first, "c", 101), Offer::Accepted { late: false });
    assert_eq!(offer(&mut e, first, "d", 102), Offer::OverLimit(Limit::EntityEvents));
    assert_eq!(e.now(), Some(101));
    // A duplicate is still a duplicate, whatever the limits.
    assert_eq!(offer(&mut e, first, "a", 103), Offer::Duplicate);
    // Raised: the refused event is taken as new.
    e.set_limits(EngineLimits::default());
    assert_eq!(offer(&mut e, second, "b", 150), Offer::Accepted { late: false });
    assert_eq!(e.entities(), 2);
    e.finish(None, &mut |a| out.push(a));
    assert_eq!(out.iter().map(|a| a.action).collect::<Vec<_>>(), [Action::Remind]);
}

#[test]
fn an_entity_at_its_event_limit_takes_new_events_once_the_old_ones_left_every_window() {
    let mut e = engine();
    e.set_limits(EngineLimits { events_per_entity: 2, ..EngineLimits::default() });
    let mut out = Vec::new();
    // Two items 31 days apart: both stored, at the limit; the first left its 30-day window long ago.
    e.offer(ev("a", Kind::NegativeSentiment, 0), &mut |a| out.push(a));
    e.offer(ev("b", Kind::NegativeSentiment, 31 * DAY), &mut |a| out.push(a));
    // Months later, with nothing in any window, a new item is taken (the expired ones are dropped first).
    assert_eq!(
        e.offer(ev("c", Kind::NegativeSentiment, 200 * DAY), &mut |a| out.push(a)),
        Offer::Accepted { late: false }
    );
    assert_eq!(
        e.offer(ev("d", Kind::NegativeSentiment, 200 * DAY), &mut |a| out.push(a)),
        Offer::Accepted { late: false }
    );
    // Now both are in the window: the next one is over the limit.
    assert_eq!(
        e.offer(ev("x", Kind::NegativeSentiment, 200 * DAY), &mut |a| out.push(a)),
        Offer::OverLimit(Limit::EntityEvents)
    );
}

#[test]
fn seen_ids_are_bounded_and_a_profile_counts_toward_entities() {
    let mut e = engine();
    e.set_limits(EngineLimits { entities: 1, events_per_entity: 10, seen_ids: 2 });
    let profile =
        |entity: &str, id: &str| Event { profile: Some(Box::default()), ..ev_of(entity, id, Kind::Profile, 50) };
    assert_eq!(e.ingest(profile("91350100M000100Y43", "p1")), Offer::Accepted { late: false });
    assert_eq!(e.ingest(profile("91110000600037341L", "p2")), Offer::OverLimit(Limit::Entities));
    assert_eq!(e.ingest(ev("x", Kind::NegativeSentiment, 50)), Offer::Accepted { late: false });
    assert_eq!(e.ingest(ev("y", Kind::NegativeSentiment, 50)), Offer::OverLimit(Limit::SeenIds));
    // Full, a repeated id is still a duplicate.
    assert_eq!(e.ingest(ev("x", Kind::NegativeSentiment, 50)), Offer::Duplicate);
    assert_eq!(e.seen_ids(), 2);
}

#[test]
fn evidence_keeps_the_newest_ids_within_its_byte_bound() {
    let mut e = engine();
    let id = |i: usize| format!("{i:0>256}");
    let n = MAX_EVIDENCE_BYTES / 259 + 10;
    let mut out = Vec::new();
    for i in 0..n {
        e.offer(ev(&id(i), Kind::NegativeSentiment, 1000), &mut |a| out.push(a));
    }
    e.finish(None, &mut |a| out.push(a));
    let alert = out.last().unwrap();
    assert_eq!(alert.value, n as i64);
    let kept = alert.evidence.len();
    assert_eq!(alert.evidence_omitted as usize, n - kept);
    assert!(kept * 259 <= MAX_EVIDENCE_BYTES && (kept + 1) * 259 > MAX_EVIDENCE_BYTES);
    // The newest, in arrival order.
    assert_eq!(alert.evidence.last().unwrap().id, id(n - 1));
    assert_eq!(alert.evidence[0].id, id(n - kept));
}

#[test]
fn evidence_is_bounded_in_json_bytes_whatever_the_ids_escape_to() {
    let mut e = engine();
    // Control characters take six bytes each in JSON: 256 of them, 1,539 bytes per id with quotes and comma.
    let id = |i: usize| format!("{}{i:04}", "\u{1}".repeat(252));
    let n = MAX_EVIDENCE_BYTES / 1539 + 20;
    let mut out = Vec::new();
    for i in 0..n {
        e.offer(ev(&id(i), Kind::NegativeSentiment, 1000), &mut |a| out.push(a));
    }
    e.finish(None, &mut |a| out.push(a));
    let alert = out.last().unwrap();
    assert!(alert.evidence_omitted > 0);
    let ids: Vec<&str> = alert.evidence.iter().map(|e| e.id.as_str()).collect();
    let json = serde_json::to_string(&ids).unwrap();
    assert!(json.len() <= MAX_EVIDENCE_BYTES, "{} bytes", json.len());
}

const SCOPED: &str = r#"
[[rule]]
id = "food-sentiment"
name_zh = "食品经营者负面舆情"
name_en = "Negative media about food businesses"
type = "count"
kind = "negative_sentiment"
window_days = 30
scope = { domain = "food" }
thresholds = { remind = 1, warn = 2 }
"#;

fn scoped_engine() -> Engine {
    let mut rules = load_str("test.toml", RULES).unwrap();
    rules.extend(load_str("scoped.toml", SCOPED).unwrap());
    Engine::new(Arc::new(RuleSet::new(rules, vec![]))).unwrap()
}

fn profile_of(id: &str, at: Ts, domain: &str) -> Event {
    let data = crate::event::ProfileData { domain: Some(domain.into()), ..Default::default() };
    Event { profile: Some(Box::new(data)), ..ev(id, Kind::Profile, at) }
}

/// Index of rule `food-sentiment` in the scoped engine.
const FOOD: usize = 2;

#[test]
fn a_future_profile_moves_the_entity_into_a_scope_at_its_own_instant() {
    let mut e = scoped_engine();
    let mut out = Vec::new();
    e.advance_to(1000, &mut |a| out.push(a));
    e.ingest(ev("s1", Kind::NegativeSentiment, 1000));
    e.ingest(profile_of("p-future", 5000, "food"));
    e.flush(&mut |a| out.push(a));
    assert!(out.is_empty(), "no profile in force at 1000: out of scope");
    // The profile takes effect at 5000 (a timer), not at its arrival nor at the next arrival.
    e.advance_to(6000, &mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(5000, FOOD, Action::Remind)]);
    assert_eq!(out[0].value, 1);
    // Moving out (a later profile) is a silent fall; moving back in raises again.
    out.clear();
    e.report_falls();
    e.ingest(profile_of("p-general", 6000, "general"));
    e.flush(&mut |a| out.push(a));
    assert!(out.is_empty());
    let falls = e.take_falls();
    assert_eq!(falls.len(), 1);
    assert_eq!((falls[0].rule, falls[0].from, falls[0].to, falls[0].at), (FOOD, Action::Remind, None, 6000));
    e.advance_to(7000, &mut |a| out.push(a));
    e.ingest(profile_of("p-food", 7000, "food"));
    e.ingest(ev("s2", Kind::NegativeSentiment, 7000));
    e.flush(&mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(7000, 0, Action::Remind), (7000, FOOD, Action::Warn)]);
}

#[test]
fn scoped_state_survives_a_snapshot_and_an_old_snapshot_starts_it_from_the_latest_profiles() {
    let run = |restore: &dyn Fn(&Engine) -> Engine| {
        let mut e = scoped_engine();
        let mut out = Vec::new();
        e.offer(profile_of("p1", 1000, "food"), &mut |a| out.push(a));
        e.offer(ev("s1", Kind::NegativeSentiment, 2000), &mut |a| out.push(a));
        e.offer(profile_of("p2", 3000, "drug"), &mut |a| out.push(a));
        e.offer(profile_of("p3", 4000, "food"), &mut |a| out.push(a));
        e.flush(&mut |a| out.push(a));
        let mut e = restore(&e);
        e.offer(ev("s2", Kind::NegativeSentiment, 5000), &mut |a| out.push(a));
        e.finish(None, &mut |a| out.push(a));
        brief(&out)
    };
    let straight = run(&|e| {
        let mut bytes = Vec::new();
        e.write_snapshot(&mut bytes).unwrap();
        Engine::read_snapshot(e.rules().clone(), &bytes).unwrap()
    });
    // In at 2000 (food), out at 3000 (drug), in again at 4000; two items at 5000 also make sentiment-1m remind.
    let expected = [
        (2000, FOOD, Action::Remind),
        (4000, FOOD, Action::Remind),
        (5000, 0, Action::Remind),
        (5000, FOOD, Action::Warn),
    ];
    assert_eq!(straight, expected);

    // The same state as the previous build wrote it (version 2: no stored profiles). The latest profile
    // (food, 4000) stands from its instant, so the same alerts follow; without it the entity would have no
    // profile and no alert at 5000.
    let from_v2 = run(&|e| {
        // Version 2 had no stored profiles and no flag: drop them (with a plan of the same windows that keeps no
        // profile), write, and take the flag off the end.
        let mut e = Engine::read_snapshot(e.rules().clone(), &{
            let mut b = Vec::new();
            e.write_snapshot(&mut b).unwrap();
            b
        })
        .unwrap();
        let unscoped = Plan::new(&RuleSet::new(load_str("test.toml", RULES).unwrap(), vec![]));
        for entity in &mut e.entities {
            entity.prune(&unscoped, 4000);
        }
        let mut bytes = Vec::new();
        e.write_snapshot(&mut bytes).unwrap();
        assert_eq!(bytes.pop(), Some(1), "the flag of stored profiles, last");
        bytes[7] = 2;
        Engine::read_snapshot(e.rules().clone(), &bytes).unwrap()
    });
    assert_eq!(from_v2, straight);
}

#[test]
fn a_reload_that_adds_a_scoped_rule_judges_each_entity_by_its_latest_profile() {
    let mut e = engine();
    let mut out = Vec::new();
    e.offer(profile_of("p1", 1000, "food"), &mut |a| out.push(a));
    e.offer(ev("s1", Kind::NegativeSentiment, 2000), &mut |a| out.push(a));
    e.flush(&mut |a| out.push(a));
    assert!(out.is_empty());
    let mut rules = load_str("test.toml", RULES).unwrap();
    rules.extend(load_str("scoped.toml", SCOPED).unwrap());
    e.set_rules(Arc::new(RuleSet::new(rules, vec![]))).unwrap();
    e.flush(&mut |a| out.push(a));
    assert_eq!(brief(&out), vec![(2000, FOOD, Action::Remind)]);
    // A reload that drops it drops the stored profiles at once: a checkpoint written before the next flush
    // reads back (as version 2, what the build before scopes writes and reads).
    e.set_rules(Arc::new(RuleSet::new(load_str("test.toml", RULES).unwrap(), vec![]))).unwrap();
    assert_eq!(e.entities[0].recs().filter(|r| r.kind == Kind::Profile).count(), 0);
    let mut bytes = Vec::new();
    e.write_snapshot(&mut bytes).unwrap();
    assert_eq!(&bytes[..8], b"CSENG\x00\x00\x02");
    let back = Engine::read_snapshot(e.rules().clone(), &bytes).unwrap();
    assert_eq!(back.profile(&key()).map(|p| p.at), Some(1000), "master data is kept");
}

#[test]
fn profiles_held_for_scopes_are_bounded_per_entity() {
    let mut e = scoped_engine();
    e.set_limits(EngineLimits { events_per_entity: 2, ..EngineLimits::UNLIMITED });
    e.advance_to(100, &mut |_| {});
    // Future profiles cannot be pruned: the third is refused.
    assert_eq!(e.ingest(profile_of("p1", 1000, "food")), Offer::Accepted { late: false });
    assert_eq!(e.ingest(profile_of("p2", 2000, "drug")), Offer::Accepted { late: false });
    assert_eq!(e.ingest(profile_of("p3", 3000, "food")), Offer::OverLimit(Limit::EntityEvents));
    // Once the first two are in force and superseded, there is room again.
    e.advance_to(2500, &mut |_| {});
    assert_eq!(e.ingest(profile_of("p3", 3000, "food")), Offer::Accepted { late: false });
}

#[test]
fn a_reload_adding_a_scope_starts_profiles_within_the_limits() {
    let mut e = engine();
    e.set_limits(EngineLimits { entities: 2, ..EngineLimits::UNLIMITED });
    for (n, code) in ["91350100M000100Y43", "91360102MA00002001", "91360102MA00002014"].iter().enumerate() {
        let mut p = profile_of(&format!("p{n}"), 1000, "food");
        p.entity = EntityKey::parse(code).unwrap();
        // Two profiles fit the entity limit (profiles have their own table, bounded the same way).
        let want = if n < 2 { Offer::Accepted { late: false } } else { Offer::OverLimit(Limit::Entities) };
        assert_eq!(e.offer(p, &mut |_| {}), want);
    }
    e.offer(ev("s1", Kind::NegativeSentiment, 2000), &mut |_| {});
    assert_eq!(e.entities(), 1);
    let mut rules = load_str("test.toml", RULES).unwrap();
    rules.extend(load_str("scoped.toml", SCOPED).unwrap());
    e.set_rules(Arc::new(RuleSet::new(rules, vec![]))).unwrap();
    assert_eq!(e.entities(), 2, "one new entity for a profile, within `entities`");
    assert_eq!(e.profiles_not_seeded(), 0);
    e.set_limits(EngineLimits { entities: 2, events_per_entity: 1, ..EngineLimits::UNLIMITED });
    e.set_rules(Arc::new(RuleSet::new(load_str("test.toml", RULES).unwrap(), vec![]))).unwrap();
    let mut rules = load_str("test.toml", RULES).unwrap();
    rules.extend(load_str("scoped.toml", SCOPED).unwrap());
    e.set_rules(Arc::new(RuleSet::new(rules, vec![]))).unwrap();
    assert_eq!(e.profiles_not_seeded(), 1, "the entity holding an event is at `events_per_entity`");
}
