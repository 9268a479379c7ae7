//! `diff-rules`: the back-test of a rule change. Replays the same history under the old and the new rule
//! set and reports alerts that appear, disappear or change action, keyed by (entity, rule id, instant).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::{load_rules, open_inputs, print_all};
use crate::engine::Engine;
use crate::replay::{Input, Signal, replay_all};
use crate::rules::Action;
use crate::time::{Ts, format_rfc3339};

type Key = (Ts, String, String); // (at, entity, rule)

/// The alerts of the old and the new rule set over the same history, read once.
fn alerts(
    old: &Path,
    new: &Path,
    enable: &[PathBuf],
    inputs: Vec<Input>,
    until: Option<Ts>,
) -> anyhow::Result<[BTreeMap<Key, Action>; 2]> {
    let mut engines = [Engine::new(load_rules(old, &[])?)?, Engine::new(load_rules(new, enable)?)?];
    let mut out = [BTreeMap::new(), BTreeMap::new()];
    replay_all(
        &mut engines,
        inputs,
        until,
        &mut |e, engine, signal| {
            if let Signal::Alert(a) = signal {
                out[e].insert((a.at, a.entity.to_string(), engine.rules().all[a.rule].id.clone()), a.action);
            }
        },
        &mut |_| {},
    )?;
    Ok(out)
}

/// The differences between two alert streams.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuleDiff {
    /// Raised only under the new rules.
    pub appeared: Vec<(Key, Action)>,
    /// Raised only under the old rules.
    pub disappeared: Vec<(Key, Action)>,
    /// Raised under both, with a different action: (old, new).
    pub changed: Vec<(Key, Action, Action)>,
    pub unchanged: usize,
}

fn compare(old: &BTreeMap<Key, Action>, new: &BTreeMap<Key, Action>) -> RuleDiff {
    let mut d = RuleDiff::default();
    let keys: BTreeSet<&Key> = old.keys().chain(new.keys()).collect();
    for key in keys {
        match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a == b => d.unchanged += 1,
            (Some(a), Some(b)) => d.changed.push((key.clone(), *a, *b)),
            (Some(a), None) => d.disappeared.push((key.clone(), *a)),
            (None, Some(b)) => d.appeared.push((key.clone(), *b)),
            (None, None) => {}
        }
    }
    d
}

/// Runs the back-test and prints the report; true when it ran.
pub fn run(
    old: &Path,
    new: &Path,
    enable: &[PathBuf],
    until: Option<Ts>,
    verbose: bool,
    files: &[String],
) -> anyhow::Result<bool> {
    let [before, after] = alerts(old, new, enable, open_inputs(files)?, until)?;
    let d = compare(&before, &after);

    let mut text = String::new();
    let mut counts: BTreeMap<(String, &str), [i64; 3]> = BTreeMap::new();
    for ((_, _, rule), a) in &d.appeared {
        counts.entry((rule.clone(), a.as_str())).or_default()[0] += 1;
    }
    for ((_, _, rule), a) in &d.disappeared {
        counts.entry((rule.clone(), a.as_str())).or_default()[1] += 1;
    }
    for ((_, _, rule), _, b) in &d.changed {
        counts.entry((rule.clone(), b.as_str())).or_default()[2] += 1;
    }
    let _ = writeln!(
        text,
        "alerts: old {}, new {}; appeared {}, disappeared {}, changed action {}, unchanged {}",
        before.len(),
        after.len(),
        d.appeared.len(),
        d.disappeared.len(),
        d.changed.len(),
        d.unchanged
    );
    if !counts.is_empty() {
        let _ = writeln!(
            text,
            "\n{:<24} {:<10} {:>9} {:>12} {:>16}",
            "rule", "action", "appeared", "disappeared", "changed (to it)"
        );
        for ((rule, action), [a, dis, ch]) in &counts {
            let _ = writeln!(text, "{rule:<24} {action:<10} {a:>9} {dis:>12} {ch:>16}");
        }
    }
    if verbose {
        let _ = writeln!(text);
        for ((at, e, r), a) in &d.appeared {
            let _ = writeln!(text, "+ {} {e} {r} {a}", format_rfc3339(*at));
        }
        for ((at, e, r), a) in &d.disappeared {
            let _ = writeln!(text, "- {} {e} {r} {a}", format_rfc3339(*at));
        }
        for ((at, e, r), a, b) in &d.changed {
            let _ = writeln!(text, "~ {} {e} {r} {a} -> {b}", format_rfc3339(*at));
        }
    }
    print_all(&text)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_differences() {
        let k = |t: Ts| (t, "E".to_string(), "r".to_string());
        let old = BTreeMap::from([(k(1), Action::Remind), (k(2), Action::Warn), (k(3), Action::Warn)]);
        let new = BTreeMap::from([(k(2), Action::Warn), (k(3), Action::Inspect), (k(4), Action::Remind)]);
        let d = compare(&old, &new);
        assert_eq!(d.appeared, vec![(k(4), Action::Remind)]);
        assert_eq!(d.disappeared, vec![(k(1), Action::Remind)]);
        assert_eq!(d.changed, vec![(k(3), Action::Warn, Action::Inspect)]);
        assert_eq!(d.unchanged, 1);
    }
}
