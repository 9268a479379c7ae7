//! Reading rule files: TOML, strictly typed (`deny_unknown_fields`), every error with file and line.
//!
//! A directory is loaded as a whole: every `*.toml` file under it (recursively, sorted by path), except
//! rule-test files (`*.test.toml`). One error anywhere and nothing is loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{
    Action, AggregateRule, CLASS_SLOT_NAMES, DOMAINS, GroupBy, Measure, Part, Rule, RuleSet, RuleState, Scope,
    milli_text,
};
use crate::event::Kind;
use crate::time::{DAY, Ts};

/// Most rules one set may define.
pub const MAX_RULES: usize = 256;
/// Most rules one set may have enabled or in shadow (the engine packs levels 3 bits per rule in a `u64`).
pub const MAX_ACTIVE_RULES: usize = 21;
/// Most aggregate rules (`[[aggregate]]`) one set may define.
pub const MAX_AGGREGATES: usize = 64;
/// Longest `prefix` of an aggregate rule, in characters (profile fields are cut at 200 characters).
pub const MAX_PREFIX: i64 = 200;
/// Longest window, in days.
pub const MAX_WINDOW_DAYS: i64 = 36_500;
/// Most parts of a composite rule.
pub const MAX_PARTS: usize = 6;
/// Largest `cap` of a composite rule's part. With [`MAX_PARTS`] and weights of at most 1000, a score is
/// computed exactly in 128-bit integers.
pub const MAX_CAP: u64 = 1000;

/// A rule file or directory that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{path}: cannot read: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid { path: String, line: usize, message: String },
    #[error("{path}: no rule files (*.toml) found")]
    NoFiles { path: String },
}

/// A decimal written in a rule file (`1.5`, `2`), kept exact as `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ratio {
    num: u64,
    den: u64,
}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            Int(i64),
            Float(f64),
        }
        let text = match Num::deserialize(d)? {
            Num::Int(i) => i.to_string(),
            // `Display` of f64 prints the shortest decimal that reads back the same, never an exponent.
            Num::Float(f) => f.to_string(),
        };
        Ratio::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Ratio {
    fn parse(text: &str) -> Result<Ratio, String> {
        let bad = || format!("{text} is not a decimal between 0 and 1000 with at most 6 decimals");
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if frac.len() > 6 || int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let den = 10u64.pow(frac.len() as u32);
        let num: u64 = format!("{int}{frac}").parse().map_err(|_| bad())?;
        if num == 0 || num > 1000 * den {
            return Err(bad());
        }
        Ok(Ratio { num, den })
    }
}

/// A threshold as written: a whole number (counts), or a decimal with at most 3 places and 4 digits before
/// the point (composite scores, which are at most the sum of the weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Threshold {
    Whole(u64),
    /// In thousandths.
    Decimal(u64),
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number, or for a composite rule a decimal with at most 3 places")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Threshold, E> {
                Ok(Threshold::Whole(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Threshold, E> {
                u64::try_from(v).map(Threshold::Whole).map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Threshold, E> {
                // `Display` of f64 prints the shortest decimal that reads back the same, never an exponent;
                // with at most 7 significant digits that is exactly the number written.
                let text = f.to_string();
                let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
                let digits = int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
                if frac.len() > 3 || int.is_empty() || int.len() > 4 || !digits {
                    return Err(E::custom(format!("{text} is not a decimal below 10000 with at most 3 places")));
                }
                let milli =
                    format!("{int}{frac:0<3}").parse().map_err(|_| E::custom(format!("{text}: not a number")))?;
                Ok(Threshold::Decimal(milli))
            }
        }
        d.deserialize_any(V)
    }
}

/// One threshold per action; an action left out is never raised by this rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    remind: Option<Threshold>,
    warn: Option<Threshold>,
    interview: Option<Threshold>,
    inspect: Option<Threshold>,
}

impl RawThresholds {
    /// Whole numbers (`score = false`), or scores in thousandths.
    fn as_array(&self, score: bool, what: &str) -> Result<[Option<u64>; 4], String> {
        let mut out = [None; 4];
        let given = [self.remind, self.warn, self.interview, self.inspect];
        for ((slot, t), action) in out.iter_mut().zip(given).zip(Action::ALL) {
            *slot = match (t, score) {
                (None, _) => None,
                (Some(Threshold::Whole(n)), false) => Some(n),
                (Some(Threshold::Decimal(milli)), true) => Some(milli),
                (Some(Threshold::Whole(n)), true) if n < 10_000 => Some(n * 1000),
                (Some(Threshold::Whole(n)), true) => {
                    return Err(format!("`{what}.{action}` = {n}: a score is below 10000"));
                }
                (Some(Threshold::Decimal(milli)), false) => {
                    return Err(format!(
                        "`{what}.{action}` = {}: a count's threshold is a whole number (decimals are for \
                         composite scores)",
                        milli_text(milli as i64)
                    ));
                }
            };
        }
        Ok(out)
    }
}

/// Threshold factors per class (`effective = max(1, ceil(base * factor))`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFactors {
    #[serde(rename = "A")]
    a: Ratio,
    #[serde(rename = "B")]
    b: Ratio,
    #[serde(rename = "C")]
    c: Ratio,
    #[serde(rename = "D")]
    d: Ratio,
    unclassified: Ratio,
}

impl RawFactors {
    fn as_array(&self) -> [Ratio; 5] {
        [self.a, self.b, self.c, self.d, self.unclassified]
    }
}

/// One kind or a list of kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, one or many, as written.
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(vs) => vs.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum RuleType {
    #[default]
    Count,
    Surge,
    Composite,
}

/// A `[[rule.parts]]` table of a composite rule, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPart {
    /// `count` (default) or `surge`.
    #[serde(rename = "type", default)]
    kind_of_part: RuleType,
    kind: OneOrMany,
    window_days: i64,
    min_ratio: Option<Ratio>,
    cap: u64,
    weight: Ratio,
}

/// A rule's `scope` table as written: each key one value or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    domain: Option<OneOrMany>,
    region: Option<OneOrMany>,
    industry: Option<OneOrMany>,
    authority: Option<OneOrMany>,
    class: Option<OneOrMany>,
}

/// A `[[rule]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    name_zh: String,
    name_en: String,
    #[serde(default)]
    description: String,
    /// `None`: the file's `state`, else enabled.
    state: Option<RuleState>,
    scope: Option<RawScope>,
    #[serde(rename = "type")]
    kind_of_rule: RuleType,
    kind: Option<OneOrMany>,
    window_days: Option<i64>,
    min_ratio: Option<Ratio>,
    #[serde(default)]
    parts: Vec<RawPart>,
    thresholds: RawThresholds,
    class_factors: Option<RawFactors>,
    #[serde(default)]
    class_thresholds: BTreeMap<String, RawThresholds>,
}

/// An `[[aggregate]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregate {
    id: String,
    name_zh: String,
    name_en: String,
    #[serde(default)]
    description: String,
    /// `None`: the file's `state`, else enabled.
    state: Option<RuleState>,
    group_by: GroupBy,
    prefix: Option<i64>,
    min_action: Action,
    window_days: i64,
    thresholds: RawThresholds,
}

/// A rule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Default state of the rules and aggregates of this file (a rule's own `state` wins); enabled if unset.
    /// A shipped domain set is `disabled` here: one line turns the whole set on.
    state: Option<RuleState>,
    /// Default class factors for the rules of this file.
    class_factors: Option<RawFactors>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    aggregate: Vec<Spanned<RawAggregate>>,
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Parses one rule file's text and returns its `[[rule]]`s only (its `[[aggregate]]`s are checked, then
/// left out: see [`load_file_str`]). `path` is only used in messages.
pub fn load_str(path: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    load_file_str(path, text).map(|(rules, _)| rules)
}

/// Parses one rule file's text: its `[[rule]]`s and its `[[aggregate]]`s, each in file order. `path` is only
/// used in messages.
pub fn load_file_str(path: &str, text: &str) -> Result<(Vec<Rule>, Vec<AggregateRule>), RuleError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| RuleError::Invalid {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().to_owned(),
    })?;
    let mut rules = Vec::with_capacity(raw.rule.len());
    for spanned in &raw.rule {
        let line = line_of(text, spanned.span().start);
        let rule = build(spanned.get_ref(), &raw, &format!("{path}:{line}")).map_err(|message| RuleError::Invalid {
            path: path.to_owned(),
            line,
            message: format!("rule `{}`: {message}", spanned.get_ref().id),
        })?;
        rules.push(rule);
    }
    let mut aggregates = Vec::with_capacity(raw.aggregate.len());
    for spanned in &raw.aggregate {
        let line = line_of(text, spanned.span().start);
        let aggregate =
            build_aggregate(spanned.get_ref(), raw.state, &format!("{path}:{line}")).map_err(|message| {
                RuleError::Invalid {
                    path: path.to_owned(),
                    line,
                    message: format!("aggregate `{}`: {message}", spanned.get_ref().id),
                }
            })?;
        aggregates.push(aggregate);
    }
    Ok((rules, aggregates))
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("`id` must be non-empty lower-case letters, digits and `-`".into());
    }
    Ok(())
}

fn build_aggregate(raw: &RawAggregate, file_state: Option<RuleState>, origin: &str) -> Result<AggregateRule, String> {
    check_id(&raw.id)?;
    let prefix = match (raw.group_by, raw.prefix) {
        (GroupBy::Domain, Some(_)) => {
            return Err("`prefix` applies only to `group_by = \"region\"` or `\"industry\"`".into());
        }
        (_, None) => None,
        (_, Some(n)) if (1..=MAX_PREFIX).contains(&n) => Some(n as usize),
        (_, Some(_)) => return Err(format!("`prefix` must be between 1 and {MAX_PREFIX} characters")),
    };
    if !(1..=MAX_WINDOW_DAYS).contains(&raw.window_days) {
        return Err(format!("`window_days` must be between 1 and {MAX_WINDOW_DAYS}"));
    }
    let thresholds = raw.thresholds.as_array(false, "thresholds")?;
    check_thresholds(&thresholds, "thresholds", None)?;
    let window = raw.window_days * DAY;
    let canonical = serde_json::json!({
        "id": raw.id,
        "aggregate": raw.group_by,
        "prefix": prefix,
        "min_action": raw.min_action,
        "window": window,
        "thresholds": thresholds,
    });
    let version = hex::encode(&Sha256::digest(canonical.to_string().as_bytes())[..6]);
    Ok(AggregateRule {
        id: raw.id.clone(),
        name_zh: raw.name_zh.clone(),
        name_en: raw.name_en.clone(),
        description: raw.description.clone(),
        state: raw.state.or(file_state).unwrap_or(RuleState::Enabled),
        group_by: raw.group_by,
        prefix,
        min_action: raw.min_action,
        window,
        thresholds,
        version,
        origin: origin.to_owned(),
    })
}

/// The kinds of `kind` (one or a list), each an indicator, without repeats.
fn parse_kinds(kind: &OneOrMany) -> Result<Vec<Kind>, String> {
    let names = kind.to_vec();
    if names.is_empty() {
        return Err("`kind` lists no event kind".into());
    }
    let mut kinds = Vec::new();
    for name in &names {
        match Kind::parse(name) {
            Some(k) if k.is_indicator() => {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            _ => {
                return Err(format!(
                    "`kind` {name:?} is not one of address_change, penalty, lawsuit, complaint, negative_sentiment"
                ));
            }
        }
    }
    Ok(kinds)
}

/// A window in seconds, from `window_days` checked.
fn window_of(days: i64) -> Result<Ts, String> {
    if !(1..=MAX_WINDOW_DAYS).contains(&days) {
        return Err(format!("`window_days` must be between 1 and {MAX_WINDOW_DAYS}"));
    }
    Ok(days * DAY)
}

/// A count or a surge (`type`), with its ratio guard when a surge.
fn guard_of(kind_of: RuleType, min_ratio: Option<Ratio>) -> Result<Option<(u64, u64)>, String> {
    match (kind_of, min_ratio) {
        (RuleType::Count, None) => Ok(None),
        (RuleType::Count, Some(_)) => Err("`min_ratio` applies only to `type = \"surge\"`".into()),
        (RuleType::Surge, Some(r)) => Ok(Some((r.num, r.den))),
        (RuleType::Surge, None) => Err("a surge needs `min_ratio` (e.g. 1.5: cur >= 1.5 * prev)".into()),
        (RuleType::Composite, _) => Err("a part is a `count` or a `surge`".into()),
    }
}

fn build_part(raw: &RawPart, n: usize) -> Result<Part, String> {
    let at = |m: String| format!("`parts[{n}]`: {m}");
    let kinds = parse_kinds(&raw.kind).map_err(at)?;
    let window = window_of(raw.window_days).map_err(at)?;
    let surge = guard_of(raw.kind_of_part, raw.min_ratio).map_err(at)?;
    if !(1..=MAX_CAP).contains(&raw.cap) {
        return Err(at(format!("`cap` must be between 1 and {MAX_CAP}")));
    }
    // A weight (a decimal up to 1000) is kept exactly in thousandths.
    if !(raw.weight.num * 1000).is_multiple_of(raw.weight.den) {
        return Err(at("`weight` has at most 3 decimals".into()));
    }
    let weight = raw.weight.num * 1000 / raw.weight.den;
    Ok(Part { kinds, window, surge, cap: raw.cap, weight })
}

/// The threshold-table slot (`rules::class_slot`) of a class as rule files name it: `A`-`D` or `unclassified`.
fn class_slot_of(name: &str) -> Option<usize> {
    CLASS_SLOT_NAMES.iter().position(|n| *n == name)
}

/// Longest value of a scope key, in characters (profile fields are cut at 200 characters).
const MAX_SCOPE_VALUE: usize = 200;

/// A scope's listed values, checked: at least one, none empty or too long, no repeats.
fn scope_values(key: &str, values: &Option<OneOrMany>) -> Result<Vec<String>, String> {
    let Some(values) = values else { return Ok(Vec::new()) };
    let values = values.to_vec();
    if values.is_empty() {
        return Err(format!("`scope.{key}` lists no value (leave the key out to match any)"));
    }
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() || v.trim() != v || v.chars().count() > MAX_SCOPE_VALUE {
            return Err(format!(
                "`scope.{key}` value {v:?} must be 1 to {MAX_SCOPE_VALUE} characters without surrounding space"
            ));
        }
        if values[..i].contains(v) {
            return Err(format!("`scope.{key}` lists {v:?} twice"));
        }
    }
    Ok(values)
}

fn build_scope(raw: &RawScope) -> Result<Scope, String> {
    let domains = scope_values("domain", &raw.domain)?;
    if let Some(d) = domains.iter().find(|d| !DOMAINS.contains(&d.as_str())) {
        return Err(format!("`scope.domain` {d:?} is not one of {}", DOMAINS.join(", ")));
    }
    let regions = scope_values("region", &raw.region)?;
    if let Some(r) = regions.iter().find(|r| r.len() > 6 || !r.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("`scope.region` {r:?} is not a prefix of a 6-digit division code (1 to 6 digits)"));
    }
    let industries = scope_values("industry", &raw.industry)?;
    if let Some(i) = industries.iter().find(|i| i.chars().any(|c| c.is_whitespace() || c.is_ascii_lowercase())) {
        return Err(format!("`scope.industry` {i:?}: an industry code has no spaces or lower-case letters (H62)"));
    }
    let authorities = scope_values("authority", &raw.authority)?;
    let class_names = scope_values("class", &raw.class)?;
    let mut classes = [class_names.is_empty(); 5];
    for name in &class_names {
        let slot = class_slot_of(name).ok_or(format!("`scope.class` {name:?} is not A, B, C, D or unclassified"))?;
        classes[slot] = true;
    }
    let keys = [&domains, &regions, &industries, &authorities, &class_names];
    if keys.iter().all(|k| k.is_empty()) {
        return Err("`scope` sets no key (domain, region, industry, authority or class)".into());
    }
    Ok(Scope { domains, regions, industries, authorities, classes })
}

fn build(raw: &RawRule, file: &RawFile, origin: &str) -> Result<Rule, String> {
    check_id(&raw.id)?;
    let scope = raw.scope.as_ref().map(build_scope).transpose()?;
    let composite = raw.kind_of_rule == RuleType::Composite;
    let measure = if composite {
        if raw.kind.is_some() || raw.window_days.is_some() || raw.min_ratio.is_some() {
            return Err("a composite rule sets `kind`, `window_days` and `min_ratio` in its `parts`".into());
        }
        if raw.parts.is_empty() || raw.parts.len() > MAX_PARTS {
            return Err(format!("a composite rule has from 1 to {MAX_PARTS} `parts`"));
        }
        let parts = raw.parts.iter().enumerate().map(|(n, p)| build_part(p, n)).collect::<Result<Vec<_>, _>>()?;
        let mut kinds: Vec<Kind> = Vec::new();
        for k in parts.iter().flat_map(|p| &p.kinds) {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
        Measure::Composite { kinds, parts }
    } else {
        if !raw.parts.is_empty() {
            return Err("`parts` are for `type = \"composite\"`".into());
        }
        let kinds = parse_kinds(raw.kind.as_ref().ok_or("`kind` is missing")?)?;
        let window = window_of(raw.window_days.ok_or("`window_days` is missing")?)?;
        match guard_of(raw.kind_of_rule, raw.min_ratio)? {
            None => Measure::Count { kinds, window },
            Some((ratio_num, ratio_den)) => Measure::Surge { kinds, window, ratio_num, ratio_den },
        }
    };
    let max_score = match &measure {
        Measure::Composite { parts, .. } => Some(parts.iter().map(|p| p.weight).sum::<u64>()),
        _ => None,
    };
    let base = raw.thresholds.as_array(composite, "thresholds")?;
    check_thresholds(&base, "thresholds", max_score)?;
    let factors = raw.class_factors.as_ref().or(file.class_factors.as_ref()).map(RawFactors::as_array);
    let mut thresholds = [[None; 4]; 5];
    for (slot, row) in thresholds.iter_mut().enumerate() {
        let f = factors.map_or(Ratio { num: 1, den: 1 }, |f| f[slot]);
        *row = base.map(|b| b.map(|b| effective(b, f)));
    }
    for (class, table) in &raw.class_thresholds {
        let slot = class_slot_of(class)
            .ok_or(format!("`class_thresholds.{class}`: class must be A, B, C, D or unclassified"))?;
        let what = format!("class_thresholds.{class}");
        let row = table.as_array(composite, &what)?;
        check_thresholds(&row, &what, max_score)?;
        thresholds[slot] = row;
    }
    let version = version(&raw.id, &measure, scope.as_ref(), &thresholds);
    Ok(Rule {
        id: raw.id.clone(),
        name_zh: raw.name_zh.clone(),
        name_en: raw.name_en.clone(),
        description: raw.description.clone(),
        state: raw.state.or(file.state).unwrap_or(RuleState::Enabled),
        measure,
        scope,
        thresholds,
        version,
        origin: origin.to_owned(),
    })
}

/// `max(1, ceil(base * f))`, exactly.
fn effective(base: u64, f: Ratio) -> u64 {
    let scaled = (u128::from(base) * u128::from(f.num)).div_ceil(u128::from(f.den));
    u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
}

/// Checks a row of thresholds: whole counts, or (`max_score`) a composite rule's scores in thousandths, which
/// must be reachable (at most the sum of the weights).
fn check_thresholds(row: &[Option<u64>; 4], what: &str, max_score: Option<u64>) -> Result<(), String> {
    let show = |t: u64| if max_score.is_some() { milli_text(t as i64) } else { t.to_string() };
    if row.iter().all(Option::is_none) {
        return Err(format!("`{what}` sets no action"));
    }
    let mut last = 0;
    for (t, a) in row.iter().zip(Action::ALL) {
        if let Some(t) = *t {
            if t == 0 {
                return Err(format!("`{what}.{a}` must be at least {}", show(1)));
            }
            if t < last {
                return Err(format!(
                    "`{what}.{a}` = {} is below the threshold of a lower action ({})",
                    show(t),
                    show(last)
                ));
            }
            if let Some(max) = max_score
                && t > max
            {
                return Err(format!(
                    "`{what}.{a}` = {} can never be reached: the weights add up to {}",
                    show(t),
                    show(max)
                ));
            }
            last = t;
        }
    }
    Ok(())
}

fn version(id: &str, measure: &Measure, scope: Option<&Scope>, thresholds: &[[Option<u64>; 4]; 5]) -> String {
    let mut canonical = serde_json::json!({ "id": id, "measure": measure, "thresholds": thresholds });
    // Only a scoped rule hashes its scope: an unscoped rule keeps the version it had before scopes existed.
    if let Some(scope) = scope {
        canonical["scope"] = serde_json::json!(scope);
    }
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(&digest[..6])
}

fn rule_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let io = |error| RuleError::Io { path: dir.display().to_string(), error };
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            rule_files(&path, out)?;
        } else if name.ends_with(".toml") && !name.ends_with(".test.toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads every rule file under `dir` (or the single file `dir`). Nothing is loaded if anything is wrong.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
    let mut files = Vec::new();
    if dir.is_file() {
        files.push(dir.to_path_buf());
    } else {
        rule_files(dir, &mut files)?;
    }
    if files.is_empty() {
        return Err(RuleError::NoFiles { path: dir.display().to_string() });
    }
    let mut texts = Vec::with_capacity(files.len());
    for file in &files {
        let path = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|error| RuleError::Io { path: path.clone(), error })?;
        texts.push((path, text));
    }
    Ok(load_texts(&texts)?.with_files(files))
}

/// Loads a rule set from the texts of its files (path, text), checking each file and the set as a whole
/// (unique ids, counts). Nothing is loaded if anything is wrong. `fuzz/` drives this with arbitrary text.
pub fn load_texts(texts: &[(String, String)]) -> Result<RuleSet, RuleError> {
    let mut all: Vec<Rule> = Vec::new();
    let mut aggregates: Vec<AggregateRule> = Vec::new();
    for (path, text) in texts {
        let (rules, file_aggregates) = load_file_str(path, text)?;
        // Ids are unique across rules and aggregates: both name what raised an alert.
        let defined = |all: &[Rule], aggregates: &[AggregateRule], id: &str| {
            let rule = all.iter().find(|r| r.id == id).map(|r| r.origin.clone());
            rule.or_else(|| aggregates.iter().find(|a| a.id == id).map(|a| a.origin.clone()))
        };
        for rule in rules {
            let at = |message: String| {
                let (path, line) = split_origin(&rule.origin);
                Err(RuleError::Invalid { path, line, message })
            };
            if let Some(other) = defined(&all, &aggregates, &rule.id) {
                return at(format!("rule id `{}` is already defined at {other}", rule.id));
            }
            if all.len() == MAX_RULES {
                return at(format!("rule `{}` is one too many: a set has at most {MAX_RULES} rules", rule.id));
            }
            let active = all.iter().filter(|r| r.state != RuleState::Disabled).count();
            if rule.state != RuleState::Disabled && active == MAX_ACTIVE_RULES {
                return at(format!(
                    "rule `{}` is one active rule too many: at most {MAX_ACTIVE_RULES} rules can be enabled or \
                     shadow at once (disable one)",
                    rule.id
                ));
            }
            all.push(rule);
        }
        for aggregate in file_aggregates {
            let at = |message: String| {
                let (path, line) = split_origin(&aggregate.origin);
                Err(RuleError::Invalid { path, line, message })
            };
            if let Some(other) = defined(&all, &aggregates, &aggregate.id) {
                return at(format!("aggregate id `{}` is already defined at {other}", aggregate.id));
            }
            if aggregates.len() == MAX_AGGREGATES {
                return at(format!(
                    "aggregate `{}` is one too many: a set has at most {MAX_AGGREGATES} aggregate rules",
                    aggregate.id
                ));
            }
            aggregates.push(aggregate);
        }
    }
    Ok(RuleSet::new(all, Vec::new()).with_aggregates(aggregates))
}

fn split_origin(origin: &str) -> (String, usize) {
    match origin.rsplit_once(':') {
        Some((p, l)) => (p.to_owned(), l.parse().unwrap_or(1)),
        None => (origin.to_owned(), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Class;

    const RULE: &str = r#"
[class_factors]
A = 2.0
B = 1.5
C = 1
D = 0.5
unclassified = 1.0

[[rule]]
id = "penalties-3y"
name_zh = "三年内受到行政处罚次数"
name_en = "Administrative penalties in three years"
type = "count"
kind = "penalty"
window_days = 1095
thresholds = { remind = 2, warn = 3, interview = 5, inspect = 8 }
"#;

    #[test]
    fn class_factors_scale_exactly() {
        let rules = load_str("x.toml", RULE).unwrap();
        let r = &rules[0];
        assert_eq!(r.thresholds[Class::A as usize], [Some(4), Some(6), Some(10), Some(16)]);
        assert_eq!(r.thresholds[Class::B as usize], [Some(3), Some(5), Some(8), Some(12)]);
        assert_eq!(r.thresholds[Class::D as usize], [Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(r.thresholds[4], [Some(2), Some(3), Some(5), Some(8)]);
        // Two actions sharing a threshold: the higher one applies.
        assert_eq!(r.level(Some(Class::D), 1), 1);
        assert_eq!(effective(1, Ratio { num: 1, den: 2 }), 1);
        assert_eq!(effective(5, Ratio::parse("1.2").unwrap()), 6, "no float drift: 5 * 1.2 is 6");
    }

    #[test]
    fn errors_name_file_and_line() {
        let bad = RULE.replace("window_days = 1095", "window_days = 1095\nwindow = 3");
        let err = load_str("x.toml", &bad).unwrap_err().to_string();
        assert!(err.starts_with("x.toml:"), "{err}");
        assert!(err.contains("unknown field `window`"), "{err}");

        let bad = RULE.replace("warn = 3", "warn = 1");
        let err = load_str("x.toml", &bad).unwrap_err().to_string();
        assert!(err.starts_with("x.toml:9: rule `penalties-3y`"), "{err}");

        let bad = RULE.replace("kind = \"penalty\"", "kind = \"profile\"");
        assert!(load_str("x.toml", &bad).is_err());
        let bad = RULE.replace("type = \"count\"", "type = \"surge\"");
        assert!(load_str("x.toml", &bad).unwrap_err().to_string().contains("min_ratio"));
    }

    const COMPOSITE: &str = r#"
[class_factors]
A = 2.0
B = 1.5
C = 1.0
D = 0.5
unclassified = 1.0

[[rule]]
id = "weighted"
name_zh = "加权评定"
name_en = "Weighted"
type = "composite"
thresholds = { remind = 0.4, warn = 0.65 }

[[rule.parts]]
kind = ["complaint", "negative_sentiment"]
window_days = 90
cap = 4
weight = 0.6

[[rule.parts]]
type = "surge"
kind = "penalty"
window_days = 30
min_ratio = 1.5
cap = 2
weight = 0.125
"#;

    #[test]
    fn composite_rules_load_exact_weights_and_scores_in_thousandths() {
        let rules = load_str("x.toml", COMPOSITE).unwrap();
        let Measure::Composite { kinds, parts } = &rules[0].measure else { panic!("{:?}", rules[0].measure) };
        assert_eq!(kinds, &[Kind::Complaint, Kind::NegativeSentiment, Kind::Penalty]);
        assert_eq!((parts[0].cap, parts[0].weight, parts[0].surge), (4, 600, None));
        assert_eq!((parts[1].window, parts[1].weight, parts[1].surge), (30 * DAY, 125, Some((15, 10))));
        // Scores in thousandths, scaled per class like counts: max(1, ceil(base * f)).
        assert_eq!(rules[0].thresholds[4], [Some(400), Some(650), None, None]);
        assert_eq!(rules[0].thresholds[Class::A as usize], [Some(800), Some(1300), None, None]);
        assert_eq!(rules[0].thresholds[Class::D as usize], [Some(200), Some(325), None, None]);
        assert_eq!((rules[0].measure.window(), rules[0].measure.reach()), (90 * DAY, 90 * DAY));
    }

    #[test]
    fn composite_rules_are_checked_with_their_line() {
        let refused = |from: &str, to: &str, says: &str| {
            let bad = COMPOSITE.replacen(from, to, 1);
            let err = load_str("x.toml", &bad).unwrap_err().to_string();
            assert!(err.starts_with("x.toml:9: rule `weighted`") && err.contains(says), "{from} -> {to}: {err}");
        };
        refused("weight = 0.6", "weight = 0.6001", "`parts[0]`: `weight` has at most 3 decimals");
        refused("cap = 4", "cap = 0", "`parts[0]`: `cap` must be between 1 and 1000");
        refused("cap = 2", "cap = 1001", "`parts[1]`: `cap` must be between 1 and 1000");
        refused("min_ratio = 1.5\n", "", "`parts[1]`: a surge needs `min_ratio`");
        refused("type = \"composite\"", "type = \"composite\"\nkind = \"penalty\"", "in its `parts`");
        refused("window_days = 90", "window_days = 0", "`window_days` must be between 1");
        let err = load_str("x.toml", &COMPOSITE.replace("remind = 0.4", "remind = 0.4005")).unwrap_err().to_string();
        assert_eq!(err, "x.toml:14: 0.4005 is not a decimal below 10000 with at most 3 places");
        refused(
            "warn = 0.65",
            "warn = 0.35",
            "`thresholds.warn` = 0.350 is below the threshold of a lower action (0.400)",
        );
        // The weights add up to 0.725: a higher threshold could never be reached.
        refused(
            "warn = 0.65",
            "warn = 0.8",
            "`thresholds.warn` = 0.800 can never be reached: the weights add up to 0.725",
        );
        let six = (0..7).map(|_| "\n[[rule.parts]]\nkind = \"penalty\"\nwindow_days = 1\ncap = 1\nweight = 1\n");
        let err = load_str("x.toml", &format!("{COMPOSITE}{}", six.collect::<String>())).unwrap_err();
        assert!(err.to_string().contains("from 1 to 6 `parts`"), "{err}");
        // Decimals are for scores only; parts are for composite rules only.
        let err = load_str("x.toml", &RULE.replace("warn = 3", "warn = 3.0")).unwrap_err();
        assert!(err.to_string().contains("`thresholds.warn` = 3.000: a count's threshold is a whole number"), "{err}");
        // Whole thresholds are taken as they are, however large.
        let big = load_str("x.toml", &RULE.replace("inspect = 8", "inspect = 9223372036854775807")).unwrap();
        assert_eq!(big[0].thresholds[4][3], Some(9_223_372_036_854_775_807));
        let err = load_str(
            "x.toml",
            &format!("{RULE}\n[[rule.parts]]\nkind = \"penalty\"\nwindow_days = 1\ncap = 1\nweight = 1\n"),
        );
        assert!(err.unwrap_err().to_string().contains("`parts` are for `type = \"composite\"`"));
    }

    const AGGREGATE: &str = r#"
[[aggregate]]
id = "city-warn"
name_zh = "同一地区多家主体达到警示"
name_en = "Several entities of one city at warn"
group_by = "region"
prefix = 4
min_action = "warn"
window_days = 30
thresholds = { remind = 3, warn = 5 }
"#;

    #[test]
    fn aggregates_load_with_file_and_line_errors() {
        let (rules, aggregates) = load_file_str("x.toml", &format!("{RULE}{AGGREGATE}")).unwrap();
        assert_eq!(rules.len(), 1);
        let a = &aggregates[0];
        assert_eq!((a.group_by, a.prefix, a.min_action, a.window), (GroupBy::Region, Some(4), Action::Warn, 30 * DAY));
        assert_eq!(a.thresholds, [Some(3), Some(5), None, None]);
        assert_eq!(a.state, RuleState::Enabled);
        assert_eq!(load_file_str("x.toml", AGGREGATE).unwrap().1[0].origin, "x.toml:2");
        assert_eq!(a.group_of("360502"), Some("3605"));
        assert_eq!(a.group_of("36"), Some("36"));
        assert_eq!(a.group_of(""), None);
        let renamed = &load_file_str("x.toml", &AGGREGATE.replace("Several", "Many")).unwrap().1[0];
        let changed = &load_file_str("x.toml", &AGGREGATE.replace("prefix = 4", "prefix = 6")).unwrap().1[0];
        assert_eq!(a.version, renamed.version);
        assert_ne!(a.version, changed.version);

        let err = |text: String| load_file_str("x.toml", &text).unwrap_err().to_string();
        let e = err(AGGREGATE.replace("prefix = 4", "prefix = 4\nper = 1"));
        assert!(e.starts_with("x.toml:") && e.contains("unknown field `per`"), "{e}");
        let e = err(AGGREGATE.replace("\"region\"", "\"domain\""));
        assert!(e.starts_with("x.toml:2: aggregate `city-warn`: `prefix` applies only"), "{e}");
        assert!(err(AGGREGATE.replace("\"region\"", "\"city\"")).contains("unknown variant `city`"));
        assert!(err(AGGREGATE.replace("prefix = 4", "prefix = 0")).contains("`prefix` must be between"));
        assert!(err(AGGREGATE.replace("warn = 5", "warn = 2")).contains("below the threshold"));
        assert!(err(AGGREGATE.replace("{ remind = 3, warn = 5 }", "{}")).contains("sets no action"));
        assert!(err(AGGREGATE.replace("window_days = 30", "window_days = 0")).contains("`window_days`"));
        assert!(err(AGGREGATE.replace("\"warn\"", "\"alarm\"")).contains("unknown variant `alarm`"));
        assert!(err(AGGREGATE.replace("city-warn", "City")).contains("`id` must be"));
    }

    #[test]
    fn scopes_load_and_are_checked_with_their_line() {
        let scoped = |scope: &str| RULE.replace("type = \"count\"", &format!("scope = {scope}\ntype = \"count\""));
        let rule = &load_str("x.toml", &scoped(r#"{ domain = "food", region = ["3605", "360102"], class = "D" }"#))
            .unwrap()[0];
        let scope = rule.scope.as_ref().unwrap();
        assert_eq!(scope.domains, ["food"]);
        assert_eq!(scope.regions, ["3605", "360102"]);
        assert_eq!(scope.classes, [false, false, false, true, false]);
        assert!(scope.matches_profile([Some("360521"), None, Some("food"), None]));
        assert!(!scope.matches_profile([Some("360521"), None, Some("drug"), None]));
        assert!(!scope.matches_profile([None, None, Some("food"), None]), "a listed key needs the field");
        assert!(scope.matches_class(Some(Class::D)) && !scope.matches_class(None));
        // An unscoped rule keeps its version; a scope changes it.
        let plain = &load_str("x.toml", RULE).unwrap()[0];
        assert!(plain.scope.is_none());
        assert_ne!(plain.version, rule.version);
        let refused = |scope: &str, says: &str| {
            let err = load_str("x.toml", &scoped(scope)).unwrap_err().to_string();
            assert!(err.starts_with("x.toml:9: rule `penalties-3y`") && err.contains(says), "{scope}: {err}");
        };
        refused(r#"{ domain = "foods" }"#, "`scope.domain` \"foods\" is not one of food, drug, special_equipment");
        refused(r#"{ region = "36O5" }"#, "`scope.region` \"36O5\" is not a prefix of a 6-digit division code");
        refused(r#"{ region = "3605021" }"#, "is not a prefix of a 6-digit division code");
        refused(r#"{ industry = [] }"#, "`scope.industry` lists no value");
        refused(r#"{ industry = " H62" }"#, "without surrounding space");
        refused(r#"{ industry = "h62" }"#, "an industry code has no spaces or lower-case letters");
        refused(r#"{ authority = ["a", "a"] }"#, "`scope.authority` lists \"a\" twice");
        refused(r#"{ class = "E" }"#, "`scope.class` \"E\" is not A, B, C, D or unclassified");
        refused("{}", "`scope` sets no key");
        let err = load_str("x.toml", &scoped(r#"{ sector = "food" }"#)).unwrap_err().to_string();
        assert!(err.contains("unknown field `sector`"), "{err}");
    }

    #[test]
    fn a_file_state_is_the_default_of_its_rules() {
        let disabled = format!("state = \"disabled\"\n{RULE}");
        let rules = load_str("x.toml", &disabled).unwrap();
        assert_eq!(rules[0].state, RuleState::Disabled);
        let own = disabled.replace("type = \"count\"", "state = \"shadow\"\ntype = \"count\"");
        assert_eq!(load_str("x.toml", &own).unwrap()[0].state, RuleState::Shadow, "a rule's own state wins");
        assert_eq!(load_str("x.toml", RULE).unwrap()[0].state, RuleState::Enabled);
    }

    #[test]
    fn version_follows_content_not_names() {
        let a = &load_str("x.toml", RULE).unwrap()[0];
        let b = &load_str("x.toml", &RULE.replace("Administrative", "Admin")).unwrap()[0];
        let c = &load_str("x.toml", &RULE.replace("inspect = 8", "inspect = 9")).unwrap()[0];
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
    }
}
