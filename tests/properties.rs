//! Property tests of the replay semantics (SPEC "Semantics (normative)" and "Precise points").
//!
//! Streams are small: a few entities, every kind, and times drawn from a small set of instants
//! (`base + k * {1, 30, 90, 365} days ± 1 s`), so same-second ties, window boundaries (an event arriving when
//! another leaves) and late events are common. Each property runs under the shipped rules and under a
//! "dense" rule set whose low thresholds and short windows make alerts frequent.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use credit_sentinel::alert::AlertRecord;
use credit_sentinel::engine::Engine;
use credit_sentinel::event::{Class, Kind, decode};
use credit_sentinel::replay::{Input, Summary, replay};
use credit_sentinel::rules::{Action, Measure, RuleSet, load_dir, load_str};
use credit_sentinel::time::{DAY, format_rfc3339, parse_rfc3339};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use common::{code, default_rules_dir, format_beijing};

// ---------------------------------------------------------------------------------------------------------
// Rule sets

const DENSE_RULES: &str = r#"
[class_factors]
A = 2.0
B = 1.5
C = 1.0
D = 0.5
unclassified = 1.0

[[rule]]
id = "dense-off"
name_zh = "停用"
name_en = "Disabled"
state = "disabled"
type = "count"
kind = "penalty"
window_days = 1
thresholds = { remind = 1 }

[[rule]]
id = "dense-surge"
name_zh = "投诉激增"
name_en = "Complaint surge"
type = "surge"
kind = "complaint"
window_days = 30
min_ratio = 1.5
thresholds = { remind = 1, warn = 2, interview = 3, inspect = 4 }

[[rule]]
id = "dense-mix"
name_zh = "处罚与诉讼"
name_en = "Penalties and lawsuits"
type = "count"
kind = ["penalty", "lawsuit"]
window_days = 90
thresholds = { remind = 1, warn = 2, interview = 3, inspect = 5 }
class_thresholds = { A = { warn = 3, inspect = 6 } }

[[rule]]
id = "dense-year"
name_zh = "一年内变更与舆情"
name_en = "Changes and sentiment in a year"
type = "count"
kind = ["address_change", "negative_sentiment"]
window_days = 365
thresholds = { remind = 2, interview = 3 }

[[rule]]
id = "dense-day"
name_zh = "一天内投诉"
name_en = "Complaints in a day"
state = "shadow"
type = "count"
kind = "complaint"
window_days = 1
thresholds = { remind = 1, warn = 2 }

[[rule]]
id = "dense-surge-low"
name_zh = "投诉与舆情变化"
name_en = "Complaints and sentiment, low ratio"
type = "surge"
kind = ["complaint", "negative_sentiment"]
window_days = 90
min_ratio = 0.5
thresholds = { remind = 1, warn = 2, inspect = 3 }

[[rule]]
id = "dense-composite"
name_zh = "加权评定"
name_en = "Weighted score"
type = "composite"
thresholds = { remind = 0.3, warn = 0.5, interview = 0.7, inspect = 0.9 }

[[rule.parts]]
kind = "penalty"
window_days = 60
cap = 3
weight = 0.5

[[rule.parts]]
type = "surge"
kind = ["complaint", "negative_sentiment"]
window_days = 20
min_ratio = 0.5
cap = 2
weight = 0.3

[[rule.parts]]
kind = "address_change"
window_days = 200
cap = 2
weight = 0.25

[[rule]]
id = "dense-scoped"
name_zh = "食品经营者处罚与投诉"
name_en = "Penalties and complaints of food businesses"
type = "count"
kind = ["penalty", "complaint"]
window_days = 30
scope = { domain = "food", region = "3605", class = ["B", "C", "unclassified"] }
thresholds = { remind = 1, warn = 2, inspect = 3 }

[[rule]]
id = "dense-scoped-composite"
name_zh = "餐饮与零售加权评定"
name_en = "Weighted score of catering and retail"
type = "composite"
scope = { industry = ["H62", "F52"] }
thresholds = { remind = 0.5, warn = 1 }

[[rule.parts]]
kind = "lawsuit"
window_days = 90
cap = 2
weight = 1
"#;

static DEFAULT: LazyLock<Arc<RuleSet>> =
    LazyLock::new(|| Arc::new(load_dir(&default_rules_dir()).expect("shipped rules load")));
static DENSE: LazyLock<Arc<RuleSet>> = LazyLock::new(|| {
    Arc::new(RuleSet::new(load_str("dense.toml", DENSE_RULES).expect("dense rules load"), Vec::new()))
});

fn rule_sets() -> [&'static Arc<RuleSet>; 2] {
    [&DEFAULT, &DENSE]
}

// ---------------------------------------------------------------------------------------------------------
// Streams

/// 2024-01-01T00:00:00Z.
static BASE: LazyLock<i64> = LazyLock::new(|| parse_rfc3339("2024-01-01T00:00:00Z").unwrap());

/// The entities (all their codes contain letters, so their lower-case form is a different, bad code).
static CODES: LazyLock<[String; 3]> = LazyLock::new(|| [code(0), code(1), code(3)]);

/// One valid event, before it gets an id.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    entity: usize,
    kind: Kind,
    at: i64,
    class: Class,
    /// Which of [`PROFILES`] a profile event carries.
    profile: usize,
    /// How `occurred_at` is written: 0 `Z`, 1 `+08:00`, 2 `Z` with a fraction, 3 `+08:00` with a fraction.
    style: u8,
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    id: String,
    ev: Ev,
}

fn time_text(at: i64, style: u8) -> String {
    let (text, frac) = match style {
        0 => (format_rfc3339(at), ""),
        1 => (format_beijing(at), ""),
        2 => (format_rfc3339(at), ".5"),
        _ => (format_beijing(at), ".999999"),
    };
    // The fraction goes right after the seconds (19 characters in), before the offset.
    format!("{}{frac}{}", &text[..19], &text[19..])
}

impl Item {
    fn json(&self) -> Value {
        let ev = &self.ev;
        let mut v = json!({
            "event_id": self.id,
            "entity_id": CODES[ev.entity],
            "kind": ev.kind.as_str(),
            "occurred_at": time_text(ev.at, ev.style),
        });
        match ev.kind {
            Kind::Classification => v["data"] = json!({ "class": ev.class.as_str() }),
            Kind::Profile => v["data"] = PROFILES[ev.profile].clone(),
            Kind::Complaint => v["source"] = json!("12315"),
            _ => {}
        }
        v
    }

    fn line(&self) -> Vec<u8> {
        self.json().to_string().into_bytes()
    }
}

/// Profiles events carry: in and out of the dense rules' scopes (domain, region prefix, industry prefix), and
/// one without the fields scopes look at.
static PROFILES: LazyLock<[Value; 4]> = LazyLock::new(|| {
    [
        json!({ "name": "示例", "domain": "food", "region": "360502", "industry": "H6210" }),
        json!({ "name": "示例", "domain": "food", "region": "360102", "industry": "F5212" }),
        json!({ "name": "示例", "domain": "drug", "region": "360521", "industry": "C2710" }),
        json!({ "name": "示例" }),
    ]
});

fn instant() -> impl Strategy<Value = i64> {
    (0i64..4, prop::sample::select(vec![1i64, 30, 90, 365]), prop::sample::select(vec![-1i64, 0, 0, 0, 1]))
        .prop_map(|(k, m, off)| *BASE + k * m * DAY + off)
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::AddressChange),
        3 => Just(Kind::Penalty),
        2 => Just(Kind::Lawsuit),
        4 => Just(Kind::Complaint),
        3 => Just(Kind::NegativeSentiment),
        2 => Just(Kind::Classification),
        1 => Just(Kind::Profile),
    ]
}

fn ev() -> impl Strategy<Value = Ev> {
    (0usize..3, kind(), instant(), prop::sample::select(Class::ALL.to_vec()), 0usize..4, 0u8..4)
        .prop_map(|(entity, kind, at, class, profile, style)| Ev { entity, kind, at, class, profile, style })
}

/// A stream of `events` in time order with a few moved out of order (so some arrive late); ids `e0`, `e1`, ...
fn stream_of(events: impl Strategy<Value = Ev>, max_len: usize) -> impl Strategy<Value = Vec<Item>> {
    (prop::collection::vec(events, 1..max_len), prop::collection::vec((any::<Index>(), any::<Index>()), 0..4)).prop_map(
        |(mut evs, swaps)| {
            evs.sort_by_key(|e| e.at);
            for (a, b) in swaps {
                let n = evs.len();
                evs.swap(a.index(n), b.index(n));
            }
            evs.into_iter().enumerate().map(|(i, ev)| Item { id: format!("e{i}"), ev }).collect()
        },
    )
}

/// Streams of every kind over three entities.
fn stream() -> impl Strategy<Value = Vec<Item>> {
    stream_of(ev(), 40)
}

/// Streams of complaints (and a few classifications) over two entities, a multiple of 30 days ± 1 s from
/// `base`: surge windows (30 and 90 days) start and end on these instants, so rises caused only by events
/// leaving the earlier window are common.
fn complaint_stream() -> impl Strategy<Value = Vec<Item>> {
    let at = (0i64..9, prop::sample::select(vec![-1i64, 0, 0, 1])).prop_map(|(j, off)| *BASE + j * 30 * DAY + off);
    let kind = prop_oneof![6 => Just(Kind::Complaint), 1 => Just(Kind::Classification)];
    let ev = (0usize..2, kind, at, prop::sample::select(Class::ALL.to_vec()), 0u8..4)
        .prop_map(|(entity, kind, at, class, style)| Ev { entity, kind, at, class, profile: 0, style });
    stream_of(ev, 24)
}

/// A stream and its `--until`: none, or one in the next four years, or (most often) an event's time plus a
/// window length (1, 20, 30, 40, 60, 90, 180, 200, 365, 730 or 1095 days) ± 1 s, so that the horizon falls exactly on a
/// departure (and just before or after it) often; it is then usually after the last event, so timers fire.
fn stream_until() -> impl Strategy<Value = (Vec<Item>, Option<i64>)> {
    with_until(stream())
}

fn with_until(streams: impl Strategy<Value = Vec<Item>>) -> impl Strategy<Value = (Vec<Item>, Option<i64>)> {
    streams.prop_flat_map(|items| {
        let times: Vec<i64> = items.iter().map(|it| it.ev.at).collect();
        let windows = vec![1i64, 20, 30, 40, 60, 90, 180, 200, 365, 730, 1095];
        let until = prop_oneof![
            1 => Just(None),
            1 => (0i64..1500).prop_map(|d| Some(*BASE + d * DAY)),
            3 => (prop::sample::select(times), prop::sample::select(windows), prop::sample::select(vec![-1i64, 0, 0, 1]))
                .prop_map(|(t, w, off)| Some(t + w * DAY + off)),
        ];
        (Just(items), until)
    })
}

// ---------------------------------------------------------------------------------------------------------
// Running

fn lines_of(items: &[Item]) -> Vec<Vec<u8>> {
    items.iter().map(Item::line).collect()
}

/// Replays `lines` under `rules`; the alert records as printed, and the summary.
fn run(rules: &Arc<RuleSet>, lines: &[Vec<u8>], until: Option<i64>) -> (Vec<Value>, Summary) {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    let mut engine = Engine::new(rules.clone()).unwrap();
    let mut alerts = Vec::new();
    let summary = replay(
        &mut engine,
        vec![Input::from_bytes("prop.jsonl", text)],
        until,
        &mut |engine, a| alerts.push(serde_json::to_value(AlertRecord::new(a, engine.rules())).unwrap()),
        &mut |_| {},
    )
    .unwrap();
    (alerts, summary)
}

fn alerts(rules: &Arc<RuleSet>, items: &[Item], until: Option<i64>) -> Vec<Value> {
    run(rules, &lines_of(items), until).0
}

/// The same alerts with each evidence list sorted (its order among same-second events follows arrival).
fn evidence_as_sets(alerts: &[Value]) -> Vec<Value> {
    alerts
        .iter()
        .map(|a| {
            let mut a = a.clone();
            let mut ev: Vec<String> =
                a["evidence"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
            ev.sort();
            a["evidence"] = json!(ev);
            a
        })
        .collect()
}

fn action_level(v: &Value) -> u8 {
    match v.as_str() {
        None => 0,
        Some("remind") => 1,
        Some("warn") => 2,
        Some("interview") => 3,
        Some("inspect") => 4,
        Some(other) => panic!("unknown action {other}"),
    }
}

fn at_of(v: &Value) -> i64 {
    parse_rfc3339(v["at"].as_str().unwrap()).unwrap()
}

/// Whether `rule` applies to an entity with `profile` (the one in force) and `class`: every scope key given
/// matches (domain and authority exactly, region and industry by prefix); no profile, no scope.
fn in_scope(rule: &credit_sentinel::rules::Rule, profile: Option<&Value>, class: Option<Class>) -> bool {
    let Some(scope) = &rule.scope else { return true };
    let Some(p) = profile else { return false };
    let field = |key: &str| p[key].as_str();
    let exact = |listed: &[String], key| listed.is_empty() || listed.iter().any(|l| field(key) == Some(l.as_str()));
    let prefix = |listed: &[String], key| {
        listed.is_empty() || listed.iter().any(|l| field(key).is_some_and(|v| v.starts_with(l.as_str())))
    };
    let class_ok = scope.classes[class.map_or(4, |c| c as usize)];
    exact(&scope.domains, "domain")
        && exact(&scope.authorities, "authority")
        && prefix(&scope.regions, "region")
        && prefix(&scope.industries, "industry")
        && class_ok
}

/// A composite rule's score in thousandths, by exact rationals: floor(1000 * sum(w * min(v, cap) / cap)).
fn composite_score(parts: &[credit_sentinel::rules::Part], values: &[i64]) -> i64 {
    // Sum of fractions weight * m / cap (weight in thousandths), kept as num / den in lowest terms.
    let gcd = |mut a: u128, mut b: u128| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let (mut num, mut den) = (0u128, 1u128);
    for (p, &v) in parts.iter().zip(values) {
        let m = v.clamp(0, p.cap as i64) as u128;
        let (n, d) = (u128::from(p.weight) * m, u128::from(p.cap));
        (num, den) = (num * d + n * den, den * d);
        let g = gcd(num, den).max(1);
        (num, den) = (num / g, den / g);
    }
    (num / den) as i64
}

// ---------------------------------------------------------------------------------------------------------
// A naive model of SPEC, for comparison: evaluate every entity and every rule at every instant where a
// count can change, with the replay clock of "Precise points".

struct Known<'a> {
    item: &'a Item,
    seq: usize,
}

fn naive(rules: &RuleSet, items: &[Item], until: Option<i64>) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut known: Vec<Known> = Vec::new();
    let mut levels: HashMap<(usize, usize), u8> = HashMap::new();
    let mut out = Vec::new();
    let mut now: Option<i64> = None;

    let candidates = |known: &[Known], after: i64, upto: i64, inclusive: bool| -> Vec<i64> {
        let mut c: Vec<i64> = Vec::new();
        for k in known {
            for &r in &rules.active {
                for (kinds, window, surge) in rules.all[r].measure.components() {
                    if kinds.contains(&k.item.ev.kind) {
                        c.push(k.item.ev.at + window);
                        if surge.is_some() {
                            c.push(k.item.ev.at + 2 * window);
                        }
                    }
                }
            }
        }
        c.retain(|&t| t > after && (t < upto || (inclusive && t == upto)));
        c.sort_unstable();
        c.dedup();
        c
    };

    let evaluate = |t: i64, known: &[Known], levels: &mut HashMap<(usize, usize), u8>, out: &mut Vec<Value>| {
        let mut entities: Vec<usize> = (0..CODES.len()).collect();
        entities.sort_by_key(|&e| CODES[e].clone());
        for e in entities {
            let class = known
                .iter()
                .filter(|k| k.item.ev.entity == e && k.item.ev.kind == Kind::Classification && k.item.ev.at <= t)
                .max_by_key(|k| (k.item.ev.at, k.seq))
                .map(|k| k.item.ev.class);
            let profile = known
                .iter()
                .filter(|k| k.item.ev.entity == e && k.item.ev.kind == Kind::Profile && k.item.ev.at <= t)
                .max_by_key(|k| (k.item.ev.at, k.seq))
                .map(|k| &PROFILES[k.item.ev.profile]);
            for &r in &rules.active {
                let rule = &rules.all[r];
                if !in_scope(rule, profile, class) {
                    // Out of scope the level is none: a fall is silent.
                    levels.insert((e, r), 0);
                    continue;
                }
                let m = &rule.measure;
                let mut of_rule: Vec<&Known> =
                    known.iter().filter(|k| k.item.ev.entity == e && m.kinds().contains(&k.item.ev.kind)).collect();
                of_rule.sort_by_key(|k| (k.item.ev.at, k.seq));
                let count = |kinds: &[Kind], from: i64, to: i64| {
                    let inside = |k: &&&Known| from < k.item.ev.at && k.item.ev.at <= to;
                    of_rule.iter().filter(|k| kinds.contains(&k.item.ev.kind)).filter(inside).count() as i64
                };
                // Each windowed count: its value (a surge's cur - prev under its guard) and its windows.
                let mut windows = Vec::new();
                let mut values = Vec::new();
                for (kinds, w, surge) in m.components() {
                    let cur = count(kinds, t - w, t);
                    windows.push((t - w, t, cur));
                    values.push(match surge {
                        None => cur,
                        Some((num, den)) => {
                            let prev = count(kinds, t - 2 * w, t - w);
                            windows.push((t - 2 * w, t - w, prev));
                            if cur as u64 * den >= prev as u64 * num { cur - prev } else { 0 }
                        }
                    });
                }
                let value = match m {
                    Measure::Composite { parts, .. } => composite_score(parts, &values),
                    _ => values[0],
                };
                let level = rule.level(class, value);
                let before = levels.insert((e, r), level).unwrap_or(0);
                if level > before {
                    let action = Action::from_level(level).unwrap();
                    // An event any count of the rule counts over its reach.
                    let counted = |k: &&&Known| {
                        m.components().any(|(kinds, w, surge)| {
                            let reach = if surge.is_some() { 2 * w } else { w };
                            kinds.contains(&k.item.ev.kind) && t - reach < k.item.ev.at && k.item.ev.at <= t
                        })
                    };
                    let evidence: Vec<&str> = of_rule.iter().filter(counted).map(|k| k.item.id.as_str()).collect();
                    out.push(json!({
                        "entity_id": CODES[e],
                        "rule": rule.id,
                        "action": action.as_str(),
                        "previous_action": Action::from_level(before).map(Action::as_str),
                        "at": format_rfc3339(t),
                        "value": value,
                        "threshold": rule.threshold(class, action).unwrap(),
                        "class": class.map(Class::as_str),
                        "windows": windows
                            .drain(..)
                            .map(|(f, to, c)| json!({ "from": format_rfc3339(f), "to": format_rfc3339(to), "count": c }))
                            .collect::<Vec<_>>(),
                        "evidence": evidence,
                    }));
                }
            }
        }
    };

    for (seq, item) in items.iter().enumerate() {
        if !seen.insert(item.id.as_str()) {
            continue;
        }
        let at = item.ev.at;
        match now {
            None => now = Some(at),
            Some(n) if at > n => {
                evaluate(n, &known, &mut levels, &mut out);
                for c in candidates(&known, n, at, false) {
                    evaluate(c, &known, &mut levels, &mut out);
                }
                now = Some(at);
            }
            Some(_) => {}
        }
        known.push(Known { item, seq });
    }
    if let Some(n) = now {
        evaluate(n, &known, &mut levels, &mut out);
        if let Some(h) = until.filter(|&h| h > n) {
            for c in candidates(&known, n, h, true) {
                evaluate(c, &known, &mut levels, &mut out);
            }
        }
    }
    out
}

/// The fields SPEC names, in an order that does not depend on how alerts of one instant are listed, with
/// evidence as a set (its order is checked by `every_alert_is_a_rise`).
fn comparable(alerts: &[Value]) -> Vec<Value> {
    let keys =
        ["entity_id", "rule", "action", "previous_action", "at", "value", "threshold", "class", "windows", "evidence"];
    let mut out: Vec<Value> =
        alerts.iter().map(|a| Value::Object(keys.iter().map(|k| (k.to_string(), a[*k].clone())).collect())).collect();
    out.sort_by_key(|a| {
        (at_of(a), a["entity_id"].as_str().unwrap().to_owned(), a["rule"].as_str().unwrap().to_owned())
    });
    evidence_as_sets(&out)
}

// ---------------------------------------------------------------------------------------------------------
// Bad lines

fn bad_line(variant: u8, item: &Item, future: bool) -> Vec<u8> {
    let mut v = item.json();
    if future {
        v["occurred_at"] = json!("2999-01-01T00:00:00Z");
    }
    let code = CODES[item.ev.entity].clone();
    let set = |mut v: Value, key: &str, x: Value| {
        v[key] = x;
        v.to_string().into_bytes()
    };
    match variant {
        0 => b"this is not json".to_vec(),
        1 => Vec::new(),
        2 => b"  \t ".to_vec(),
        3 => b"[1,2,3]".to_vec(),
        4 => {
            v.as_object_mut().unwrap().remove("event_id");
            v.to_string().into_bytes()
        }
        5 => set(v, "event_id", json!(7)),
        6 => set(v, "kind", json!("fraud")),
        7 => {
            let mut bad = code.clone();
            let last = if bad.ends_with('0') { "1" } else { "0" };
            bad.replace_range(17.., last);
            set(v, "entity_id", json!(bad))
        }
        8 => set(v, "entity_id", json!(code.to_lowercase())),
        9 => set(v, "occurred_at", json!("2023-02-29T00:00:00Z")),
        10 => set(v, "occurred_at", json!("2024-01-01T00:00:00")),
        11 => set(v, "occurred_at", json!("2024-01-01T00:00:60Z")),
        12 => set(v, "occurred_at", json!("2024-01-01T00:00:00+24:00")),
        13 => {
            v["kind"] = json!("classification");
            set(v, "data", json!({ "class": "E" }))
        }
        14 => {
            v["kind"] = json!("classification");
            v.as_object_mut().unwrap().remove("data");
            v.to_string().into_bytes()
        }
        15 => {
            // A repeated key: the id once more at the end.
            let mut s = v.to_string();
            s.pop();
            format!("{s},\"event_id\":\"{}\"}}", item.id).into_bytes()
        }
        16 => set(v, "source", json!(5)),
        17 => set(v, "data", json!("x")),
        18 => set(v, "event_id", json!("")),
        19 => set(v, "entity_id", json!(&code[..17])),
        20 => set(v, "entity_id", Value::Null),
        21 => {
            // Not UTF-8.
            let mut bytes = set(v, "source", json!("@"));
            let at = bytes.iter().position(|&b| b == b'@').unwrap();
            bytes[at] = 0xff;
            bytes
        }
        _ => {
            // Longer than 65536 bytes.
            v["data"] = json!({ "class": "D", "pad": "x".repeat(70_000) });
            v.to_string().into_bytes()
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Properties

fn config() -> ProptestConfig {
    // Integration tests have no lib.rs next to them for proptest's regression files; failures print the
    // minimal input instead.
    // PROPTEST_CASES, when set, overrides the default of 96 cases (for longer local runs).
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 96 };
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// (a) Events that share one `occurred_at` and are adjacent in the stream form one instant's batch: their
    /// order does not matter. Classifications and profiles of one entity keep their relative order, because for
    /// those "the one read later wins". Evidence is compared as a set, since it lists same-second events by arrival.
    #[test]
    fn order_within_an_instant_does_not_matter(
        (items, until) in stream_until(),
        keys in prop::collection::vec(any::<u32>(), 40),
    ) {
        let mut permuted = items.clone();
        let mut start = 0;
        while start < permuted.len() {
            let mut end = start + 1;
            while end < permuted.len() && permuted[end].ev.at == permuted[start].ev.at {
                end += 1;
            }
            let run = &mut permuted[start..end];
            let original: Vec<Item> = run.to_vec();
            let mut order: Vec<usize> = (0..run.len()).collect();
            order.sort_by_key(|&i| keys[(start + i) % keys.len()]);
            for (slot, &i) in order.iter().enumerate() {
                run[slot] = original[i].clone();
            }
            // Put each entity's classifications and profiles back in their original relative order (of two at
            // one instant, the one read later is in force: order matters there, by SPEC).
            for entity in 0..CODES.len() {
                let is_class = |it: &Item| {
                    it.ev.entity == entity && matches!(it.ev.kind, Kind::Classification | Kind::Profile)
                };
                let slots: Vec<usize> = (0..run.len()).filter(|&i| is_class(&run[i])).collect();
                let in_order: Vec<Item> = original.iter().filter(|it| is_class(it)).cloned().collect();
                for (slot, it) in slots.into_iter().zip(in_order) {
                    run[slot] = it;
                }
            }
            start = end;
        }
        for rules in rule_sets() {
            let a = evidence_as_sets(&alerts(rules, &items, until));
            let b = evidence_as_sets(&alerts(rules, &permuted, until));
            prop_assert_eq!(a, b);
        }
    }

    /// (b) A repeated `event_id` changes nothing: an exact copy of a line, or another event that reuses an id,
    /// anywhere after the first line with that id.
    #[test]
    fn duplicates_change_nothing(
        (items, until) in stream_until(),
        copies in prop::collection::vec((any::<Index>(), any::<Index>(), prop::option::of(ev())), 1..5),
    ) {
        let mut with = items.clone();
        for (which, pos, other) in &copies {
            let original = which.index(items.len());
            let id = items[original].id.clone();
            let first = with.iter().position(|it| it.id == id).unwrap();
            let at = first + 1 + pos.index(with.len() - first);
            let dup = match other {
                None => items[original].clone(),
                Some(ev) => Item { id, ev: ev.clone() },
            };
            with.insert(at, dup);
        }
        for rules in rule_sets() {
            let (a, sa) = run(rules, &lines_of(&items), until);
            let (b, sb) = run(rules, &lines_of(&with), until);
            prop_assert_eq!(a, b);
            prop_assert_eq!(sb.duplicates, sa.duplicates + copies.len() as u64);
            prop_assert_eq!(sb.accepted, sa.accepted);
            prop_assert_eq!(sb.late, sa.late);
        }
    }

    /// (c) Replay is deterministic, and driving the engine directly (decode, offer, finish) gives the same
    /// stream as `replay`.
    #[test]
    fn replay_is_deterministic((items, until) in stream_until()) {
        for rules in rule_sets() {
            let a = alerts(rules, &items, until);
            let b = alerts(rules, &items, until);
            prop_assert_eq!(&a, &b);

            let mut engine = Engine::new(rules.clone()).unwrap();
            let mut raw = Vec::new();
            for line in lines_of(&items) {
                let event = decode(&line).expect("generated events are valid");
                engine.offer(event, &mut |a| raw.push(a));
            }
            engine.finish(until, &mut |a| raw.push(a));
            let direct: Vec<Value> =
                raw.iter().map(|a| serde_json::to_value(AlertRecord::new(a, rules)).unwrap()).collect();
            prop_assert_eq!(&a, &direct);
        }
    }

    /// (c2) A checkpoint changes nothing: stopping the engine after any event (duplicates included), writing
    /// its snapshot, reading it back and going on gives the alert stream of one uninterrupted run.
    #[test]
    fn a_snapshot_restores_the_same_stream(
        (items, until) in stream_until(),
        cut in any::<Index>(),
        dups in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let mut lines = lines_of(&items);
        for d in &dups {
            let l = lines[d.index(lines.len())].clone();
            lines.push(l);
        }
        let cut = cut.index(lines.len() + 1);
        for rules in rule_sets() {
            let mut whole = Engine::new(rules.clone()).unwrap();
            let mut a = Vec::new();
            for line in &lines {
                whole.offer(decode(line).unwrap(), &mut |x| a.push(x));
            }
            whole.finish(until, &mut |x| a.push(x));

            let mut first = Engine::new(rules.clone()).unwrap();
            let mut b = Vec::new();
            for line in &lines[..cut] {
                first.offer(decode(line).unwrap(), &mut |x| b.push(x));
            }
            let mut bytes = Vec::new();
            first.write_snapshot(&mut bytes).unwrap();
            let mut second = Engine::read_snapshot(rules.clone(), &bytes).unwrap();
            prop_assert_eq!(second.entities(), first.entities());
            for line in &lines[cut..] {
                second.offer(decode(line).unwrap(), &mut |x| b.push(x));
            }
            second.finish(until, &mut |x| b.push(x));
            prop_assert_eq!(a, b);
        }
    }

    /// (d) Bad lines change nothing, wherever they are, even when they carry the `event_id` of a later valid
    /// event ("a bad line does not use up its event_id") or a far-future time.
    #[test]
    fn bad_lines_change_nothing(
        (items, until) in stream_until(),
        bad in prop::collection::vec((any::<Index>(), any::<Index>(), 0u8..23, any::<bool>()), 1..6),
    ) {
        let mut lines = lines_of(&items);
        for (pos, which, variant, future) in &bad {
            let item = &items[which.index(items.len())];
            let at = pos.index(lines.len() + 1);
            lines.insert(at, bad_line(*variant, item, *future));
        }
        for rules in rule_sets() {
            let (a, sa) = run(rules, &lines_of(&items), until);
            let (b, sb) = run(rules, &lines, until);
            prop_assert_eq!(a, b);
            prop_assert_eq!(sb.rejected_total(), bad.len() as u64, "every bad line is rejected");
            prop_assert_eq!(sb.lines, sa.lines + bad.len() as u64);
            prop_assert_eq!((sb.accepted, sb.duplicates, sb.late), (sa.accepted, sa.duplicates, sa.late));
        }
    }

    /// (e) Every alert is a rise: its action is above its previous action; alerts come in time order, never
    /// after the horizon; for one (entity, rule) the first alert rises from nothing, and each later one comes
    /// at a later instant from a level no higher than the last alert's action (between two alerts the level can
    /// only stay or fall). Each alert's numbers agree with its windows and evidence, and its evidence is
    /// listed by occurred_at.
    #[test]
    fn every_alert_is_a_rise((items, until) in stream_until()) {
        let occurred: HashMap<&str, i64> = items.iter().map(|it| (it.id.as_str(), it.ev.at)).collect();
        let last = items.iter().map(|it| it.ev.at).max().unwrap();
        let horizon = until.map_or(last, |u| u.max(last));
        for rules in rule_sets() {
            let got = alerts(rules, &items, until);
            let mut last_at = i64::MIN;
            let mut last_of: HashMap<(String, String), (i64, u8)> = HashMap::new();
            for a in &got {
                let (action, previous) = (action_level(&a["action"]), action_level(&a["previous_action"]));
                prop_assert!(action > previous, "not a rise: {}", a);
                let at = at_of(a);
                prop_assert!(at >= last_at, "alerts out of time order at {}", a);
                prop_assert!(at <= horizon, "alert after the horizon: {}", a);
                last_at = at;
                let key = (a["entity_id"].as_str().unwrap().to_owned(), a["rule"].as_str().unwrap().to_owned());
                match last_of.insert(key, (at, action)) {
                    None => prop_assert_eq!(previous, 0, "first alert of an (entity, rule) rises from none: {}", a),
                    Some((prev_at, prev_action)) => {
                        prop_assert!(at > prev_at, "two alerts at one instant for one (entity, rule): {}", a);
                        prop_assert!(previous <= prev_action, "a rise between alerts was not alerted: {}", a);
                    }
                }

                let rule = rules.all.iter().find(|r| r.id == a["rule"]).unwrap();
                prop_assert!(a["value"].as_i64().unwrap() >= a["threshold"].as_i64().unwrap(), "{}", a);
                let windows = a["windows"].as_array().unwrap();
                let count = |i: usize| windows[i]["count"].as_i64().unwrap();
                let times: Vec<i64> =
                    a["evidence"].as_array().unwrap().iter().map(|id| occurred[id.as_str().unwrap()]).collect();
                prop_assert!(times.windows(2).all(|w| w[0] <= w[1]), "evidence not by occurred_at: {}", a);
                let evidence = times.len() as i64;
                prop_assert_eq!(&windows[0]["to"], &a["at"]);
                let first = rule.measure.components().next().unwrap().1;
                prop_assert_eq!(parse_rfc3339(windows[0]["from"].as_str().unwrap()).unwrap(), at - first);
                match &rule.measure {
                    Measure::Composite { parts, .. } => {
                        // A window per part, two for a surge part; the score follows from their counts.
                        let mut i = 0;
                        let mut values = Vec::new();
                        for p in parts {
                            values.push(match p.surge {
                                None => count(i),
                                Some((num, den)) => {
                                    i += 1;
                                    let (cur, prev) = (count(i - 1), count(i));
                                    if cur as u64 * den >= prev as u64 * num { cur - prev } else { 0 }
                                }
                            });
                            i += 1;
                        }
                        prop_assert_eq!(windows.len(), i);
                        prop_assert_eq!(a["value"].as_i64().unwrap(), composite_score(parts, &values));
                    }
                    Measure::Count { .. } => {
                        prop_assert_eq!(windows.len(), 1);
                        prop_assert_eq!(a["value"].as_i64().unwrap(), count(0));
                        prop_assert_eq!(evidence, count(0));
                    }
                    Measure::Surge { ratio_num, ratio_den, .. } => {
                        prop_assert_eq!(windows.len(), 2);
                        prop_assert_eq!(a["value"].as_i64().unwrap(), count(0) - count(1));
                        prop_assert!(count(0) as u64 * ratio_den >= count(1) as u64 * ratio_num, "guard: {}", a);
                        prop_assert_eq!(evidence, count(0) + count(1));
                    }
                }
            }
        }
    }

    /// (f) The alert stream equals that of a naive model of SPEC that evaluates everything at every instant
    /// where something can change (compared per instant, whatever the order of alerts within one instant).
    #[test]
    fn matches_a_naive_model((items, until) in stream_until()) {
        for rules in rule_sets() {
            let got = comparable(&alerts(rules, &items, until));
            let want = comparable(&naive(rules, &items, until));
            prop_assert_eq!(got, want);
        }
    }

    /// (f) again, on complaint streams built so that surge rises driven only by time passing are common,
    /// the horizon included.
    #[test]
    fn matches_a_naive_model_on_surges((items, until) in with_until(complaint_stream())) {
        for rules in rule_sets() {
            let got = comparable(&alerts(rules, &items, until));
            let want = comparable(&naive(rules, &items, until));
            prop_assert_eq!(got, want);
        }
    }
}
