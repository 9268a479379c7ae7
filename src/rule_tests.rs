//! `test-rules`: rule unit tests in the spirit of `promtool test rules`.
//!
//! A test file (`*.test.toml`) names a rule set and lists cases; each case gives input events and the exact
//! alert stream expected. The case passes when replaying the events gives exactly those alerts, in order
//! (fields an expectation leaves out are not compared). A failure prints a diff of expected and actual.
//!
//! ```toml
//! rules = ".."                        # rule file or directory, relative to this file
//! entity = "91350100M000100Y43"       # default entity of events and expectations
//! enable = true                       # optional: run the set's disabled rules as enabled (a domain set)
//!
//! [[test]]
//! name = "two penalties: remind"
//! until = "2026-01-01T00:00:00Z"      # optional horizon
//! events = [
//!   { at = "2024-01-01T00:00:00Z", kind = "penalty" },
//!   { at = "2024-02-01T00:00:00Z", kind = "penalty", id = "p2" },
//!   '{"event_id":"raw","entity_id":"91350100M000100Y43","kind":"lawsuit","occurred_at":"2024-02-01T00:00:00Z"}',
//! ]
//! expect = [
//!   { at = "2024-02-01T00:00:00Z", rule = "penalties-3y", action = "remind", value = 2 },
//! ]
//! # regional alerts of `[[aggregate]]` rules, compared exactly too (a case without the key expects none)
//! expect_regional = [
//!   { at = "2024-02-01T00:00:00Z", rule = "region-warn-cluster", group = "3605", action = "remind", value = 3 },
//! ]
//! ```
//!
//! A `profile` event can be a table: `{ at = "...", kind = "profile", entity = "...", region = "360502",
//! industry = "F5212", domain = "food", authority = "..." }`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::aggregate::{Aggregator, RegionalAlert};
use crate::engine::{Alert, Engine};
use crate::replay::{Input, replay};
use crate::rules::{Action, RuleSet, line_of, load_dir};
use crate::time::{format_rfc3339, parse_rfc3339};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// Rule file or directory, relative to the test file.
    rules: String,
    /// Run its disabled rules as enabled (a shipped domain set is disabled until a bureau turns it on).
    #[serde(default)]
    enable: bool,
    /// Default entity for events and expectations.
    entity: Option<String>,
    #[serde(default)]
    test: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    until: Option<String>,
    #[serde(default)]
    events: Vec<EventSpec>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    expect_regional: Vec<ExpectRegional>,
}

/// An input event: a table, or a raw JSON line (for bad input).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EventSpec {
    Raw(String),
    Table(EventTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventTable {
    at: String,
    kind: String,
    entity: Option<String>,
    id: Option<String>,
    class: Option<String>,
    /// Profile fields (`kind = "profile"`).
    region: Option<String>,
    industry: Option<String>,
    domain: Option<String>,
    authority: Option<String>,
}

/// An expected regional alert; left-out optional fields are not compared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectRegional {
    at: String,
    rule: String,
    group: String,
    action: Action,
    /// `"none"` for no previous action.
    previous: Option<String>,
    value: Option<u64>,
    threshold: Option<u64>,
    entities: Option<Vec<String>>,
}

impl ExpectRegional {
    fn matches(&self, seen: &RegionalAlert) -> bool {
        parse_rfc3339(&self.at).is_ok_and(|t| format_rfc3339(t) == seen.at)
            && self.rule == seen.rule_id
            && self.group == seen.group
            && self.action == seen.action
            && self.previous.as_ref().is_none_or(|p| p == seen.previous_action.map_or("none", Action::as_str))
            && self.value.is_none_or(|v| v == seen.value)
            && self.threshold.is_none_or(|t| t == seen.threshold)
            && self.entities.as_ref().is_none_or(|e| *e == seen.entities)
    }

    fn line(&self) -> String {
        let mut extra = common_fields(&self.previous, self.value, self.threshold);
        if let Some(e) = &self.entities {
            extra.push(format!("entities {e:?}"));
        }
        with_fields(format!("{} {} {} {}", self.at, self.rule, self.group, self.action), &extra)
    }
}

/// A regional alert as a diff line.
fn regional_line(r: &RegionalAlert) -> String {
    format!(
        "{} {} {} {} (previous {}, value {}, threshold {}, entities {:?})",
        r.at,
        r.rule_id,
        r.group,
        r.action,
        r.previous_action.map_or("none", Action::as_str),
        r.value,
        r.threshold,
        r.entities
    )
}

/// An expected alert; left-out optional fields are not compared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    at: String,
    rule: String,
    action: Action,
    entity: Option<String>,
    /// `"none"` for no previous action.
    previous: Option<String>,
    value: Option<i64>,
    threshold: Option<u64>,
    class: Option<String>,
    evidence: Option<Vec<String>>,
}

/// An alert reduced to what tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    at: String,
    entity: String,
    rule: String,
    action: Action,
    previous: String,
    value: i64,
    threshold: u64,
    class: String,
    evidence: Vec<String>,
}

impl Seen {
    fn new(alert: &Alert, rules: &RuleSet) -> Seen {
        Seen {
            at: format_rfc3339(alert.at),
            entity: alert.entity.to_string(),
            rule: rules.all[alert.rule].id.clone(),
            action: alert.action,
            previous: alert.previous.map_or("none", Action::as_str).to_owned(),
            value: alert.value,
            threshold: alert.threshold,
            class: alert.class.map_or("none", |c| c.as_str()).to_owned(),
            evidence: alert.evidence.iter().map(|e| e.id.to_string()).collect(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {} (previous {}, value {}, threshold {}, class {})",
            self.at, self.entity, self.rule, self.action, self.previous, self.value, self.threshold, self.class
        )
    }
}

impl Expect {
    fn matches(&self, seen: &Seen, default_entity: Option<&str>) -> bool {
        let at_ok = parse_rfc3339(&self.at).is_ok_and(|t| format_rfc3339(t) == seen.at);
        at_ok
            && self.rule == seen.rule
            && self.action == seen.action
            && self.entity.as_deref().or(default_entity).is_none_or(|e| e == seen.entity)
            && self.previous.as_ref().is_none_or(|p| *p == seen.previous)
            && self.value.is_none_or(|v| v == seen.value)
            && self.threshold.is_none_or(|t| t == seen.threshold)
            && self.class.as_ref().is_none_or(|c| *c == seen.class)
            && self.evidence.as_ref().is_none_or(|e| *e == seen.evidence)
    }

    fn line(&self, default_entity: Option<&str>) -> String {
        let entity = self.entity.as_deref().or(default_entity).unwrap_or("*");
        let mut extra = common_fields(&self.previous, self.value, self.threshold);
        if let Some(c) = &self.class {
            extra.push(format!("class {c}"));
        }
        if let Some(e) = &self.evidence {
            extra.push(format!("evidence {e:?}"));
        }
        with_fields(format!("{} {entity} {} {}", self.at, self.rule, self.action), &extra)
    }
}

/// The optional fields both kinds of expectation share, as diff-line parts.
fn common_fields(
    previous: &Option<String>,
    value: Option<impl std::fmt::Display>,
    threshold: Option<u64>,
) -> Vec<String> {
    let mut extra = Vec::new();
    if let Some(p) = previous {
        extra.push(format!("previous {p}"));
    }
    if let Some(v) = value {
        extra.push(format!("value {v}"));
    }
    if let Some(t) = threshold {
        extra.push(format!("threshold {t}"));
    }
    extra
}

/// `head (field, field, ...)`, or `head` alone.
fn with_fields(mut head: String, extra: &[String]) -> String {
    if !extra.is_empty() {
        let _ = write!(head, " ({})", extra.join(", "));
    }
    head
}

/// The JSON line of a table event.
fn event_line(t: &EventTable, n: usize, default_entity: Option<&str>) -> anyhow::Result<String> {
    let entity = t.entity.as_deref().or(default_entity).context("event without `entity` and no default `entity`")?;
    let id = t.id.clone().unwrap_or_else(|| format!("ev-{n}"));
    let mut v = serde_json::json!({ "event_id": id, "entity_id": entity, "kind": t.kind, "occurred_at": t.at });
    if let Some(class) = &t.class {
        v["data"] = serde_json::json!({ "class": class });
    }
    let fields = [("region", &t.region), ("industry", &t.industry), ("domain", &t.domain), ("authority", &t.authority)];
    for (key, value) in fields {
        if let Some(value) = value {
            v["data"][key] = serde_json::json!(value);
        }
    }
    Ok(v.to_string())
}

/// Runs one test file; returns the report and whether every case passed.
pub fn run_file(path: &Path) -> anyhow::Result<(String, bool)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let file: TestFile = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })?;
    let rules_path = path.parent().unwrap_or(Path::new(".")).join(&file.rules);
    let mut rules = load_dir(&rules_path)?;
    if file.enable {
        rules = rules.enabling(&rules_path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let rules = Arc::new(rules);
    let default_entity = file.entity.as_deref();
    let mut report = String::new();
    let mut all_ok = true;
    for case in &file.test {
        let mut input = String::new();
        // Raw lines may be bad input on purpose; a table event that is bad input is a mistake in the test.
        let mut mistakes = Vec::new();
        for (n, spec) in case.events.iter().enumerate() {
            match spec {
                EventSpec::Raw(line) => input.push_str(line),
                EventSpec::Table(t) => {
                    let line = event_line(t, n + 1, default_entity)
                        .with_context(|| format!("{}: test {:?}", path.display(), case.name))?;
                    if let Err(reason) = crate::event::decode(line.as_bytes()) {
                        mistakes.push(format!("event {} ({} {}) is bad input: {reason}", n + 1, t.at, t.kind));
                    }
                    input.push_str(&line);
                }
            }
            input.push('\n');
        }
        let until = case
            .until
            .as_deref()
            .map(|u| {
                parse_rfc3339(u).map_err(|e| anyhow::anyhow!("{}: test {:?}: until: {e}", path.display(), case.name))
            })
            .transpose()?;
        let mut engine = Engine::new(rules.clone())?;
        let mut aggregator = Aggregator::new(&rules);
        let mut seen = Vec::new();
        let mut regional = Vec::new();
        replay(
            &mut engine,
            vec![Input::from_bytes(&case.name, input.into_bytes())],
            until,
            &mut |engine, alert| {
                seen.push(Seen::new(alert, engine.rules()));
                aggregator.offer_engine_alert(engine, alert, &mut |r| regional.push(r));
            },
            &mut |_| {},
        )?;
        let ok =
            seen.len() == case.expect.len() && case.expect.iter().zip(&seen).all(|(e, s)| e.matches(s, default_entity));
        let regional_ok = regional.len() == case.expect_regional.len()
            && case.expect_regional.iter().zip(&regional).all(|(e, r)| e.matches(r));
        if ok && regional_ok && mistakes.is_empty() {
            let _ = writeln!(report, "  ok    {}", case.name);
        } else {
            all_ok = false;
            let _ = writeln!(report, "  FAIL  {}", case.name);
            for mistake in &mistakes {
                let _ = writeln!(report, "        {mistake}");
            }
            if !ok {
                diff(
                    &mut report,
                    (case.expect.len(), seen.len()),
                    |i, j| case.expect[i].matches(&seen[j], default_entity),
                    |i| case.expect[i].line(default_entity),
                    |j| seen[j].line(),
                );
            }
            if !regional_ok {
                let _ = writeln!(report, "        regional alerts:");
                diff(
                    &mut report,
                    (case.expect_regional.len(), regional.len()),
                    |i, j| case.expect_regional[i].matches(&regional[j]),
                    |i| case.expect_regional[i].line(),
                    |j| regional_line(&regional[j]),
                );
            }
        }
    }
    Ok((report, all_ok))
}

/// A line diff of `n` expected and `m` actual alerts (longest common subsequence); `matches(i, j)`: expectation
/// `i` matches alert `j`.
fn diff(
    report: &mut String,
    (n, m): (usize, usize),
    matches: impl Fn(usize, usize) -> bool,
    expect_line: impl Fn(usize) -> String,
    seen_line: impl Fn(usize) -> String,
) {
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if matches(i, j) { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && matches(i, j) {
            let _ = writeln!(report, "          {}", seen_line(j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(report, "        + {}", seen_line(j));
            j += 1;
        } else {
            let _ = writeln!(report, "        - {}", expect_line(i));
            i += 1;
        }
    }
    let _ = writeln!(report, "        (- expected but not raised, + raised but not expected)");
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let is_test = entry.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".test.toml"));
            if entry.is_dir() || is_test {
                collect(&entry, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Runs test files (directories are searched for `*.test.toml`); true when every case passed.
pub fn run_files(paths: &[PathBuf]) -> anyhow::Result<bool> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        bail!("no rule test files (*.test.toml) found");
    }
    let mut all_ok = true;
    for file in &files {
        let (report, ok) = run_file(file)?;
        println!("{}: {}\n{report}", file.display(), if ok { "PASS" } else { "FAIL" });
        all_ok &= ok;
    }
    println!("{}", if all_ok { "all rule tests passed" } else { "rule tests FAILED" });
    Ok(all_ok)
}
