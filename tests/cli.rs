//! Integration tests of the `credit-sentinel` command line, run on files.
//!
//! Every expected alert below is derived by hand from SPEC ("Default policy", "Semantics (normative)",
//! "Precise points"); the derivation is written next to each case.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{code, default_rules_dir, event};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_credit-sentinel");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run credit-sentinel")
}

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn credit-sentinel");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Parses JSON Lines alert output.
fn alerts(o: &Output) -> Vec<Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(ls: &[String]) -> String {
    ls.iter().map(|l| format!("{l}\n")).collect()
}

fn default_rules_text() -> String {
    std::fs::read_to_string(default_rules_dir().join("default.toml")).unwrap()
}

/// A copy of the default rules with `edit` applied, in `dir/name/default.toml`.
fn rules_copy(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = default_rules_text();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit must change the rules");
    let rules = dir.join(name);
    write(&rules, "default.toml", &edited);
    rules
}

/// Inserts `line` right after the `id = "{rule}"` line.
fn after_id(text: String, rule: &str, line: &str) -> String {
    let id = format!("id = \"{rule}\"\n");
    assert!(text.contains(&id), "default rules define {rule}");
    text.replace(&id, &format!("{id}{line}\n"))
}

/// The main hand-written stream (11 lines) and its derivation.
///
/// E1 is unclassified; E2 is class D. Lines:
///  1 p1  E1 penalty 2024-01-01T00:00:00Z
///  2 not JSON                                           -> rejected
///  3 c1  E2 classification D 2024-01-15T00:00:00Z
///  4 p2  E1 penalty 2024-02-01T00:00:00+08:00 (= 2024-01-31T16:00:00Z)
///        penalties-3y: 2 in 1095 days >= remind 2  -> alert remind
///  5 p1 again, byte for byte                            -> duplicate
///  6 s1  E2 negative_sentiment 2024-03-01T08:00:00+08:00 (= 2024-03-01T00:00:00Z)
///        sentiment-1m for D: remind = max(1, ceil(2 * 0.5)) = 1 -> alert remind, threshold 1
///  7 E1's code with a wrong check character             -> rejected
///  8 unknown kind                                       -> rejected
///  9 pr1 E1 profile 2024-03-10T00:00:00Z: moves the clock to 2024-03-10
/// 10 p3  E1 penalty 2023-06-01T00:00:00Z: late; 3 penalties at now = 2024-03-10 -> alert warn
/// 11 event_id s1 reused for another sentiment of E2 at 2024-03-10: a duplicate. Were it counted, E2 would
///    have 2 items in 30 days >= warn for D (ceil(3 * 0.5) = 2) and raise warn.
fn main_stream() -> Vec<String> {
    let (e1, e2) = (code(0), code(1));
    let mut bad_code = e1.clone();
    let last = if bad_code.ends_with('0') { "1" } else { "0" };
    bad_code.replace_range(17.., last);
    vec![
        event("p1", &e1, "penalty", "2024-01-01T00:00:00Z", None),
        "this is not json".to_string(),
        event("c1", &e2, "classification", "2024-01-15T00:00:00Z", Some("D")),
        event("p2", &e1, "penalty", "2024-02-01T00:00:00+08:00", None),
        event("p1", &e1, "penalty", "2024-01-01T00:00:00Z", None),
        event("s1", &e2, "negative_sentiment", "2024-03-01T08:00:00+08:00", None),
        event("x1", &bad_code, "penalty", "2024-03-02T00:00:00Z", None),
        event("x2", &e1, "fraud", "2024-03-02T00:00:00Z", None),
        format!(
            r#"{{"event_id":"pr1","entity_id":"{e1}","kind":"profile","occurred_at":"2024-03-10T00:00:00Z","data":{{"name":"新余市示例商贸有限公司","domain":"food"}}}}"#
        ),
        event("p3", &e1, "penalty", "2023-06-01T00:00:00Z", None),
        event("s1", &e2, "negative_sentiment", "2024-03-10T00:00:00Z", None),
    ]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect()
}

/// Checks the three alerts of [`main_stream`] under the default rules.
fn check_main_alerts(got: &[Value]) {
    let (e1, e2) = (code(0), code(1));
    assert_eq!(got.len(), 3, "{got:#?}");

    let a = &got[0];
    assert_eq!(a["entity_id"], e1.as_str());
    assert_eq!(a["rule"], "penalties-3y");
    assert_eq!(a["action"], "remind");
    assert_eq!(a["previous_action"], Value::Null);
    assert_eq!(a["at"], "2024-01-31T16:00:00Z");
    assert_eq!(a["value"], 2);
    assert_eq!(a["threshold"], 2);
    assert_eq!(a["class"], Value::Null);
    assert_eq!(strs(&a["evidence"]), ["p1", "p2"]);
    // 1095 days before 2024-01-31T16:00Z: three 365-day years (no 29 February in between).
    assert_eq!(a["windows"][0]["from"], "2021-01-31T16:00:00Z");
    assert_eq!(a["windows"][0]["to"], "2024-01-31T16:00:00Z");
    assert_eq!(a["windows"][0]["count"], 2);

    let b = &got[1];
    assert_eq!(b["entity_id"], e2.as_str());
    assert_eq!(b["rule"], "sentiment-1m");
    assert_eq!(b["action"], "remind");
    assert_eq!(b["previous_action"], Value::Null);
    assert_eq!(b["at"], "2024-03-01T00:00:00Z");
    assert_eq!(b["value"], 1);
    assert_eq!(b["threshold"], 1);
    assert_eq!(b["class"], "D");
    assert_eq!(strs(&b["evidence"]), ["s1"]);
    // 30 days before 2024-03-01 (February 2024 has 29 days).
    assert_eq!(b["windows"][0]["from"], "2024-01-31T00:00:00Z");

    let c = &got[2];
    assert_eq!(c["entity_id"], e1.as_str());
    assert_eq!(c["rule"], "penalties-3y");
    assert_eq!(c["action"], "warn");
    assert_eq!(c["previous_action"], "remind");
    assert_eq!(c["at"], "2024-03-10T00:00:00Z");
    assert_eq!(c["value"], 3);
    assert_eq!(c["threshold"], 3);
    assert_eq!(c["class"], Value::Null);
    assert_eq!(strs(&c["evidence"]), ["p3", "p1", "p2"], "evidence is ordered by occurred_at");

    for x in got {
        assert!(!x["rule_version"].as_str().unwrap().is_empty(), "{x}");
        assert!(!x["alert_id"].as_str().unwrap().is_empty(), "{x}");
        assert_eq!(x["shadow"], false);
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|x| x["alert_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "alert ids are distinct");
}

fn assert_main_summary(err: &str) {
    // 11 lines: 6 accepted (p1 c1 p2 s1 pr1 p3), 3 rejected, 2 duplicates, 1 late (p3).
    for want in ["read: 11", "accepted: 6", "rejected: 3", "duplicates: 2", "late: 1"] {
        assert!(err.contains(want), "summary lacks {want:?}:\n{err}");
    }
    for reason in ["not_json: 1", "bad_credit_code: 1", "unknown_kind: 1"] {
        assert!(err.contains(reason), "summary lacks rejected {reason:?}:\n{err}");
    }
}

#[test]
fn replay_prints_the_alerts_spec_derives_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let rules = default_rules_dir();
    let out = run(&["replay", "--rules", p(&rules), p(&file)]);
    assert!(out.status.success(), "bad lines do not fail a replay: {}", stderr(&out));
    let got = alerts(&out);
    check_main_alerts(&got);
    assert_main_summary(&stderr(&out));

    // The same alerts get the same ids in another run.
    let again = alerts(&run(&["replay", "--rules", p(&rules), p(&file)]));
    let ids = |v: &[Value]| v.iter().map(|a| a["alert_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&again));
    assert_eq!(got, again, "replay is deterministic");
}

#[test]
fn replay_reads_stdin_for_dash() {
    let text = lines(&main_stream());
    let out = run_stdin(&["replay", "--rules", p(&default_rules_dir()), "-"], text.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    check_main_alerts(&alerts(&out));
    assert_main_summary(&stderr(&out));
}

#[test]
fn replay_writes_rejects_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let rejects = dir.path().join("rejects.txt");
    let out = run(&["replay", "--quiet", "--rules", p(&default_rules_dir()), "--rejects", p(&rejects), p(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&rejects).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 3, "{text}");
    for (line, (n, reason)) in got.iter().zip([(2, "not_json"), (7, "bad_credit_code"), (8, "unknown_kind")]) {
        let prefix = format!("{}:{n}: ", file.display());
        assert!(line.starts_with(&prefix), "{line:?} should start with {prefix:?}");
        assert!(line.contains(reason), "{line:?} should name {reason}");
    }
    // Duplicates are not rejects; --quiet does not print rejected lines but still counts them.
    assert!(!stderr(&out).contains("rejected events.jsonl"), "{}", stderr(&out));
    assert_main_summary(&stderr(&out));
}

#[test]
fn replay_parse_only_prints_no_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let out = run(&["replay", "--parse-only", p(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "parse-only printed {}", stdout(&out));
    assert!(stderr(&out).contains("read: 11"), "{}", stderr(&out));
}

/// complaint-surge, unclassified (remind at 5): 4 complaints at T0 = 2024-01-01, 6 at T1 = T0 + 100 d
/// (2024-04-10). At T1: cur = 6, prev = 4, 2*6 >= 3*4 so the value is 6 - 4 = 2: no action. The T0
/// complaints leave the prev window at T0 + 180 d = 2024-06-29T00:00:00Z; then prev = 0, cur = 6 (the T1
/// ones leave only at T1 + 90 d): value 6 >= 5, a remind raised by time passing, with no event.
fn surge_stream() -> String {
    let e = code(2);
    let mut out = Vec::new();
    for i in 1..=4 {
        out.push(event(&format!("k{i}"), &e, "complaint", "2024-01-01T00:00:00Z", None));
    }
    for i in 5..=10 {
        out.push(event(&format!("k{i}"), &e, "complaint", "2024-04-10T00:00:00Z", None));
    }
    lines(&out)
}

#[test]
fn replay_until_fires_a_departure_driven_rise() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "surge.jsonl", &surge_stream());
    let rules = default_rules_dir();

    // Without --until the horizon is the last event (T1): nothing.
    let out = run(&["replay", "--rules", p(&rules), p(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(alerts(&out), Vec::<Value>::new());

    // One second before the departure: nothing.
    let out = run(&["replay", "--rules", p(&rules), "--until", "2024-06-28T23:59:59Z", p(&file)]);
    assert_eq!(alerts(&out), Vec::<Value>::new());

    // A horizon exactly at the departure, or after it: the rise at 2024-06-29T00:00:00Z.
    for until in ["2024-06-29T00:00:00Z", "2024-06-29T08:00:00+08:00", "2024-07-01T00:00:00Z"] {
        let out = run(&["replay", "--rules", p(&rules), "--until", until, p(&file)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let got = alerts(&out);
        assert_eq!(got.len(), 1, "--until {until}: {got:#?}");
        let a = &got[0];
        assert_eq!(a["entity_id"], code(2).as_str());
        assert_eq!(a["rule"], "complaint-surge");
        assert_eq!(a["action"], "remind");
        assert_eq!(a["previous_action"], Value::Null);
        assert_eq!(a["at"], "2024-06-29T00:00:00Z");
        assert_eq!(a["value"], 6);
        assert_eq!(a["threshold"], 5);
        assert_eq!(a["class"], Value::Null);
        // Current window (2024-03-31, 2024-06-29] holds 6, the one before it (2024-01-01, 2024-03-31] none.
        assert_eq!(a["windows"][0]["from"], "2024-03-31T00:00:00Z");
        assert_eq!(a["windows"][0]["count"], 6);
        assert_eq!(a["windows"][1]["from"], "2024-01-01T00:00:00Z");
        assert_eq!(a["windows"][1]["to"], "2024-03-31T00:00:00Z");
        assert_eq!(a["windows"][1]["count"], 0);
        assert_eq!(strs(&a["evidence"]), ["k5", "k6", "k7", "k8", "k9", "k10"]);
    }
}

#[test]
fn replay_missing_input_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let missing = dir.path().join("no-such-file.jsonl");
    let out = run(&["replay", "--rules", p(&default_rules_dir()), p(&good), p(&missing)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-file.jsonl"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "a missing input stops the command before it prints alerts");
}

#[test]
fn replay_with_bad_rules_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let rules = rules_copy(dir.path(), "rules", |t| after_id(t, "sentiment-1m", "colour = \"red\""));
    let out = run(&["replay", "--rules", p(&rules), p(&events)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("default.toml:"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("no-rules-here");
    let out = run(&["replay", "--rules", p(&missing), p(&events)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-rules-here"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------------------
// check-rules

const GOOD_RULE: &str = r#"[[rule]]
id = "x-rule"
name_zh = "测试"
name_en = "Test"
type = "count"
kind = "penalty"
window_days = 30
thresholds = { remind = 1, warn = 2 }
"#;

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle present") + 1
}

fn check_rules(path: &Path) -> Output {
    run(&["check-rules", p(path)])
}

#[test]
fn check_rules_accepts_the_shipped_rules_and_lists_them() {
    let out = run(&["check-rules", "alert-rules"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for id in ["address-churn", "penalties-3y", "lawsuits-3y", "complaint-surge", "sentiment-1m"] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
    }
}

#[test]
fn check_rules_reports_unknown_key_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD_RULE.replace("window_days = 30\n", "window_days = 30\nwindow = 3\n");
    let file = write(dir.path(), "r.toml", &text);
    let out = check_rules(&file);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("{}:{}", file.display(), line_of(&text, "window = 3"));
    assert!(stderr(&out).contains(&want), "{want} not in {}", stderr(&out));
    assert!(stderr(&out).contains("window"), "{}", stderr(&out));
}

#[test]
fn check_rules_reports_bad_threshold_order_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // Two rules so the line points at the second one.
    let bad = GOOD_RULE.replace("x-rule", "y-rule").replace("remind = 1, warn = 2", "remind = 3, warn = 2");
    let text = format!("{GOOD_RULE}\n{bad}");
    let file = write(dir.path(), "r.toml", &text);
    let out = check_rules(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let path = file.display().to_string();
    let (header, id) =
        (text.lines().enumerate().filter(|(_, l)| *l == "[[rule]]").nth(1).unwrap().0 + 1, line_of(&text, "y-rule"));
    assert!(
        err.contains(&format!("{path}:{header}")) || err.contains(&format!("{path}:{id}")),
        "the error should point at the second rule (line {header} or {id}): {err}"
    );
    assert!(err.contains("y-rule"), "{err}");
}

#[test]
fn check_rules_requires_min_ratio_for_surge() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD_RULE.replace("type = \"count\"", "type = \"surge\"");
    let file = write(dir.path(), "r.toml", &text);
    let out = check_rules(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:", file.display())), "{err}");
    assert!(err.contains("min_ratio"), "{err}");
    // With a ratio it is a valid surge rule.
    let ok = write(dir.path(), "ok/r.toml", &text.replace("window_days = 30\n", "window_days = 30\nmin_ratio = 1.5\n"));
    let out = check_rules(&ok);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_rules_rejects_duplicate_ids_across_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", GOOD_RULE);
    let second = format!("# another file\n\n{GOOD_RULE}");
    let b = write(dir.path(), "b.toml", &second);
    let out = check_rules(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let want = format!("{}:{}", b.display(), line_of(&second, "[[rule]]"));
    assert!(err.contains(&want), "{want} not in {err}");
    assert!(err.contains("x-rule"), "{err}");
    assert!(err.contains("a.toml"), "the message names the first definition: {err}");
}

#[test]
fn check_rules_loads_nothing_when_one_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", &GOOD_RULE.replace("x-rule", "good-rule"));
    let bad_text = GOOD_RULE.replace("x-rule", "bad-rule").replace("kind = \"penalty\"", "kind = \"profile\"");
    let bad = write(dir.path(), "b.toml", &bad_text);
    let out = check_rules(dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("{}:", bad.display())), "{}", stderr(&out));
    assert!(!stdout(&out).contains("good-rule"), "nothing is loaded: {}", stdout(&out));

    // A replay with that directory refuses to run instead of running with half the rules.
    let events = write(dir.path(), "ev/events.jsonl", &lines(&main_stream()));
    let out = run(&["replay", "--rules", p(dir.path()), p(&events)]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

// ---------------------------------------------------------------------------------------------------------
// shadow and disabled rules

#[test]
fn shadow_rule_alerts_are_marked_shadow() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(dir.path(), "rules", |t| after_id(t, "penalties-3y", "state = \"shadow\""));
    let events = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let out = run(&["replay", "--rules", p(&rules), p(&events)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = alerts(&out);
    // A shadow rule is evaluated as before: the same three alerts, the penalty ones marked shadow.
    let key = |a: &Value| (a["rule"].clone(), a["action"].clone(), a["at"].clone(), a["shadow"].clone());
    let keys: Vec<_> = got.iter().map(key).collect();
    let want = [
        ("penalties-3y", "remind", "2024-01-31T16:00:00Z", true),
        ("sentiment-1m", "remind", "2024-03-01T00:00:00Z", false),
        ("penalties-3y", "warn", "2024-03-10T00:00:00Z", true),
    ]
    .map(|(r, a, at, s)| (Value::from(r), Value::from(a), Value::from(at), Value::from(s)));
    assert_eq!(keys, want.to_vec());
}

#[test]
fn disabled_rule_raises_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(dir.path(), "rules", |t| after_id(t, "penalties-3y", "state = \"disabled\""));
    let events = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let out = run(&["replay", "--rules", p(&rules), p(&events)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = alerts(&out);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["rule"], "sentiment-1m");
    assert_eq!(got[0]["at"], "2024-03-01T00:00:00Z");
    assert_eq!(got[0]["shadow"], false);
}

// ---------------------------------------------------------------------------------------------------------
// test-rules

#[test]
fn test_rules_shipped_tests_pass() {
    let out = run(&["test-rules", "alert-rules/tests"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

#[test]
fn test_rules_wrong_expectation_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    // Two penalties a month apart: remind is raised at the second (2 >= 2), not the first.
    let text = format!(
        r#"rules = '{rules}'
entity = "{entity}"

[[test]]
name = "right"
events = [
  {{ at = "2024-01-01T00:00:00Z", kind = "penalty" }},
  {{ at = "2024-02-01T00:00:00Z", kind = "penalty" }},
]
expect = [
  {{ at = "2024-02-01T00:00:00Z", rule = "penalties-3y", action = "remind", previous = "none", value = 2 }},
]

[[test]]
name = "wrong"
events = [
  {{ at = "2024-01-01T00:00:00Z", kind = "penalty" }},
  {{ at = "2024-02-01T00:00:00Z", kind = "penalty" }},
]
expect = [
  {{ at = "2024-01-01T00:00:00Z", rule = "penalties-3y", action = "remind" }},
]
"#,
        rules = default_rules_dir().display(),
        entity = code(0)
    );
    let file = write(dir.path(), "wrong.test.toml", &text);

    let out = run(&["test-rules", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    let has = |prefix: &str, at: &str| {
        report.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with(prefix) && l.contains(at) && l.contains("penalties-3y") && l.contains("remind")
        })
    };
    assert!(has("- ", "2024-01-01T00:00:00Z"), "expected-but-not-raised line missing:\n{report}");
    assert!(has("+ ", "2024-02-01T00:00:00Z"), "raised-but-not-expected line missing:\n{report}");

    // The correct case alone passes.
    let right_only = text.split("[[test]]\nname = \"wrong\"").next().unwrap();
    let file = write(dir.path(), "right.test.toml", right_only);
    let out = run(&["test-rules", p(&file)]);
    assert!(out.status.success(), "{}", stdout(&out));
}

// ---------------------------------------------------------------------------------------------------------
// diff-rules

#[test]
fn diff_rules_reports_appeared_and_disappeared_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (e1, e2) = (code(0), code(1));
    // Old rules (remind at 2, warn at 3): E1 remind at p2, warn at p3; E2 (one penalty) nothing.
    // New rules (remind at 1): E1 remind at p1, nothing at p2 (still remind), warn at p3; E2 remind at q1.
    // So: appeared 2 remind (E1 at p1, E2 at q1), disappeared 1 remind (E1 at p2), unchanged 1 (warn at p3).
    let events = lines(&[
        event("p1", &e1, "penalty", "2024-01-01T00:00:00Z", None),
        event("q1", &e2, "penalty", "2024-01-15T00:00:00Z", None),
        event("p2", &e1, "penalty", "2024-02-01T00:00:00Z", None),
        event("p3", &e1, "penalty", "2024-03-01T00:00:00Z", None),
    ]);
    let file = write(dir.path(), "events.jsonl", &events);
    let new = rules_copy(dir.path(), "new", |t| {
        t.replace(
            "thresholds = { remind = 2, warn = 3, interview = 5, inspect = 8 }",
            "thresholds = { remind = 1, warn = 3, interview = 5, inspect = 8 }",
        )
    });
    let old = default_rules_dir();

    let out = run(&["diff-rules", "--old", p(&old), "--new", p(&new), "--verbose", p(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let first = report.lines().next().unwrap_or_default();
    for want in ["old 2", "new 3", "appeared 2", "disappeared 1", "changed action 0", "unchanged 1"] {
        assert!(first.contains(want), "{want:?} not in {first:?}");
    }
    let row: Vec<&str> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&"penalties-3y") && w.get(1) == Some(&"remind"))
        .unwrap_or_else(|| panic!("no penalties-3y remind row:\n{report}"));
    assert_eq!(&row[2..4], ["2", "1"], "appeared 2, disappeared 1: {report}");
    assert!(!report.lines().any(|l| l.starts_with("penalties-3y") && l.contains("warn")), "{report}");
    // --verbose lists each differing alert.
    let verbose: Vec<&str> = report.lines().filter(|l| l.starts_with("+ ") || l.starts_with("- ")).collect();
    assert_eq!(verbose.len(), 3, "{report}");
    assert!(verbose.iter().any(|l| l.starts_with("+ 2024-01-01T00:00:00Z") && l.contains(&e1)), "{report}");
    assert!(verbose.iter().any(|l| l.starts_with("+ 2024-01-15T00:00:00Z") && l.contains(&e2)), "{report}");
    assert!(verbose.iter().any(|l| l.starts_with("- 2024-02-01T00:00:00Z") && l.contains(&e1)), "{report}");
}

#[test]
fn diff_rules_identical_sets_report_no_difference() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "events.jsonl", &lines(&main_stream()));
    let copy = rules_copy(dir.path(), "copy", |t| format!("# a copy\n{t}"));
    let out = run(&["diff-rules", "--old", "alert-rules", "--new", p(&copy), p(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let first = report.lines().next().unwrap_or_default();
    // The main stream raises 3 alerts under the default rules (see main_stream).
    for want in ["old 3", "new 3", "appeared 0", "disappeared 0", "changed action 0", "unchanged 3"] {
        assert!(first.contains(want), "{want:?} not in {first:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// gen

#[test]
fn gen_is_deterministic_per_seed_and_replays() {
    let args = |seed: &'static str| ["gen", "--seed", seed, "--entities", "50", "--events", "2000"];
    let a = run(&args("3"));
    let b = run(&args("3"));
    let c = run(&args("4"));
    assert!(a.status.success() && b.status.success() && c.status.success(), "{}", stderr(&a));
    assert!(!a.stdout.is_empty());
    assert!(a.stdout == b.stdout, "the same seed gives the same bytes");
    assert!(a.stdout != c.stdout, "another seed gives another stream");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gen.jsonl");
    std::fs::write(&file, &a.stdout).unwrap();
    let out = run(&["replay", "--quiet", "--rules", p(&default_rules_dir()), p(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("events read: 2000,"), "--events counts every line written:\n{err}");
    let count = |label: &str| -> u64 {
        let start = err.find(&format!("{label}: ")).unwrap_or_else(|| panic!("{label} in {err}")) + label.len() + 2;
        err[start..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert_eq!(count("accepted") + count("rejected") + count("duplicates"), 2000, "{err}");
    // Every alert printed is a valid record for one of the default rules.
    for a in alerts(&out) {
        assert!(a["entity_id"].as_str().is_some_and(|e| credit_sentinel::credit_code::EntityKey::parse(e).is_some()));
    }
}

// ---------------------------------------------------------------------------------------------------------
// regional alerts ([[aggregate]] rules)

/// A valid credit code of district `region` (e.g. `360502`), numbered `i`.
fn code_in(region: &str, i: usize) -> String {
    credit_sentinel::credit_code::complete(&format!("91{region}MA{i:07}")).unwrap()
}

/// Three entities of 新余市 (3605) with profiles, each reaching penalties-3y warn (3 penalties at one instant)
/// on 2 to 4 March 2024; then a fourth of another city (3601). Under the shipped `region-warn-cluster`
/// (remind at 3 entities of one city) the third raises 3605 to remind on 4 March; the fourth adds nothing.
fn regional_stream() -> (Vec<String>, Vec<String>) {
    let entities: Vec<String> =
        vec![code_in("360502", 1), code_in("360521", 2), code_in("360502", 3), code_in("360102", 4)];
    let mut out = Vec::new();
    for (i, e) in entities.iter().enumerate() {
        let region = &e[2..8];
        out.push(format!(
            r#"{{"event_id":"pr{i}","entity_id":"{e}","kind":"profile","occurred_at":"2024-03-01T00:00:00Z","data":{{"region":"{region}"}}}}"#
        ));
    }
    for (i, e) in entities.iter().enumerate() {
        for n in 0..3 {
            out.push(event(&format!("p{i}-{n}"), e, "penalty", &format!("2024-03-0{}T00:00:00Z", i + 2), None));
        }
    }
    (out, entities)
}

fn regional_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn replay_regional_writes_group_alerts_and_leaves_stdout_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, entities) = regional_stream();
    let events = write(dir.path(), "events.jsonl", &lines(&stream));
    let plain = run(&["replay", p(&events)]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(alerts(&plain).len(), 4, "one warn per entity");
    let regional = dir.path().join("regional.jsonl");
    let with = run(&["replay", "--regional", p(&regional), p(&events)]);
    assert!(with.status.success(), "{}", stderr(&with));
    assert!(with.stdout == plain.stdout, "the entity alert stream is the same with --regional");
    assert!(with.stderr == plain.stderr, "and so is the summary");

    let got = regional_lines(&regional);
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    let mut counted = entities[..3].to_vec();
    counted.sort();
    assert_eq!(r["scope"], "region");
    assert_eq!(r["group"], "3605");
    assert_eq!(r["rule_id"], "region-warn-cluster");
    assert_eq!(r["rule_name_zh"], "同一设区市三十天内多家主体达到警示及以上");
    assert_eq!(r["action"], "remind");
    assert_eq!(r["previous_action"], Value::Null);
    assert_eq!((r["value"].as_u64(), r["threshold"].as_u64(), r["window_days"].as_u64()), (Some(3), Some(3), Some(30)));
    assert_eq!(r["at"], "2024-03-04T00:00:00Z");
    assert_eq!(strs(&r["entities"]), counted);
    assert_eq!(r["shadow"], false);
    assert!(r["alert_id"].as_str().is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));

    // The same input gives the same regional alert, id included.
    let again = dir.path().join("again.jsonl");
    assert!(run(&["replay", "--regional", p(&again), p(&events)]).status.success());
    assert_eq!(std::fs::read(&regional).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn shadow_rule_alerts_do_not_count_for_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(dir.path(), "rules", |t| after_id(t, "penalties-3y", "state = \"shadow\""));
    let shipped = std::fs::read_to_string(default_rules_dir().join("regional.toml")).unwrap();
    write(&rules, "regional.toml", &shipped);
    let (stream, _) = regional_stream();
    let events = write(dir.path(), "events.jsonl", &lines(&stream));
    let regional = dir.path().join("regional.jsonl");
    let out = run(&["replay", "--rules", p(&rules), "--regional", p(&regional), p(&events)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(alerts(&out).iter().all(|a| a["shadow"] == true), "the four warns are shadow alerts");
    assert_eq!(alerts(&out).len(), 4);
    assert_eq!(std::fs::read_to_string(&regional).unwrap(), "", "shadow alerts never count");

    // The same in a rule test: a case expecting no regional alert passes, one expecting the city's passes
    // only under the enabled rule.
    let events_toml: String = stream.iter().map(|l| format!("  '{l}',\n")).collect();
    let case = |name: &str, expect_regional: &str| {
        format!(
            "[[test]]\nname = \"{name}\"\nevents = [\n{events_toml}]\nexpect = [\n{}]\n{expect_regional}\n",
            ["02", "03", "04", "05"]
                .map(|d| format!(
                    "  {{ at = \"2024-03-{d}T00:00:00Z\", rule = \"penalties-3y\", action = \"warn\" }},\n"
                ))
                .join("")
        )
    };
    let raised = "expect_regional = [\n  { at = \"2024-03-04T00:00:00Z\", rule = \"region-warn-cluster\", group = \
                  \"3605\", action = \"remind\", previous = \"none\", value = 3 },\n]";
    let shadow_file = format!("rules = '{}'\n\n{}", rules.display(), case("shadow: none", ""));
    let file = write(dir.path(), "shadow.test.toml", &shadow_file);
    let out = run(&["test-rules", p(&file)]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let wrong = format!("rules = '{}'\n\n{}", rules.display(), case("shadow: expects the city", raised));
    let file = write(dir.path(), "wrong.test.toml", &wrong);
    let out = run(&["test-rules", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(report.contains("regional alerts:"), "{report}");
    assert!(report.lines().any(|l| l.trim_start().starts_with("- 2024-03-04T00:00:00Z region-warn-cluster 3605")));

    let enabled = format!("rules = '{}'\n\n{}", default_rules_dir().display(), case("enabled: the city", raised));
    let file = write(dir.path(), "enabled.test.toml", &enabled);
    let out = run(&["test-rules", p(&file)]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn check_rules_lists_aggregates_and_checks_them() {
    let out = run(&["check-rules", "alert-rules"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("2 aggregate rules (2 active)"), "{text}");
    for want in
        ["region-warn-cluster [Enabled] aggregate version", "by region (first 4 characters)", "industry-warn-cluster"]
    {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }

    // Ids are unique across rules and aggregates, named with file and line.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", GOOD_RULE);
    let aggregate = "# aggregates\n\n[[aggregate]]\nid = \"x-rule\"\nname_zh = \"测试\"\nname_en = \"Test\"\n\
                     group_by = \"domain\"\nmin_action = \"warn\"\nwindow_days = 30\nthresholds = { remind = 2 }\n";
    let b = write(dir.path(), "b.toml", aggregate);
    let out = check_rules(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3: aggregate id `x-rule` is already defined at", b.display())), "{err}");

    // A bad key of an aggregate: file and line, nothing loaded.
    write(dir.path(), "b.toml", &aggregate.replace("x-rule", "y-agg").replace("min_action", "prefix = 2\nmin_action"));
    let out = check_rules(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3: aggregate `y-agg`: `prefix` applies only", b.display())), "{err}");
}

// ---------------------------------------------------------------------------------------------------------
// Domain rule sets (scoped rules, --enable)

/// Alert records printed by `replay` as (entity, rule, at, action), in order.
fn alert_keys(alerts: &[Value]) -> Vec<(String, String, String, String)> {
    let s = |a: &Value, k: &str| a[k].as_str().unwrap_or_default().to_owned();
    alerts.iter().map(|a| (s(a, "entity_id"), s(a, "rule"), s(a, "at"), s(a, "action"))).collect()
}

#[test]
fn domain_sets_are_disabled_as_shipped_and_enabling_one_only_adds_its_scoped_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let history = run(&["gen", "--seed", "5", "--entities", "400", "--events", "12000"]);
    assert!(history.status.success(), "{}", stderr(&history));
    let file = dir.path().join("history.jsonl");
    std::fs::write(&file, &history.stdout).unwrap();

    // As shipped, the sets are listed but not active.
    let listed = stdout(&run(&["check-rules", "alert-rules"]));
    for id in ["food-production-score [Disabled]", "drug-score [Disabled]", "special-equipment-score [Disabled]"] {
        assert!(listed.contains(id), "{id} missing from:\n{listed}");
    }
    assert!(listed.contains("scope: domain food; industry C13* | C14* | C15*"), "{listed}");

    let plain = run(&["replay", "--quiet", "--rules", "alert-rules", p(&file)]);
    let food = run(&["replay", "--quiet", "--rules", "alert-rules", "--enable", "alert-rules/food", p(&file)]);
    assert!(plain.status.success() && food.status.success(), "{}{}", stderr(&plain), stderr(&food));
    let (plain, food) = (alert_keys(&alerts(&plain)), alert_keys(&alerts(&food)));
    let food_rules = ["food-production-score", "food-retail-score", "catering-score"];
    let (added, kept): (Vec<_>, Vec<_>) = food.iter().cloned().partition(|a| food_rules.contains(&a.1.as_str()));
    assert_eq!(kept, plain, "enabling the food set leaves every other alert as it was");
    assert!(!added.is_empty(), "the generated history raises food-set alerts");
    // Only entities whose profile says food are in scope: the generator gives entity e domain e % 4 (food: 1).
    let profiles: std::collections::HashMap<String, String> = history
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|v| v["kind"] == "profile")
        .map(|v| (v["entity_id"].as_str().unwrap().to_owned(), v["data"]["domain"].as_str().unwrap().to_owned()))
        .collect();
    assert!(added.iter().all(|a| profiles.get(&a.0).map(String::as_str) == Some("food")), "{added:?}");

    // diff-rules --enable reports exactly those alerts as appeared, per rule.
    let diff =
        run(&["diff-rules", "--old", "alert-rules", "--new", "alert-rules", "--enable", "alert-rules/food", p(&file)]);
    assert!(diff.status.success(), "{}", stderr(&diff));
    let report = stdout(&diff);
    let first = report.lines().next().unwrap_or_default();
    let want = format!("appeared {}, disappeared 0, changed action 0, unchanged {}", added.len(), plain.len());
    assert!(first.contains(&want), "{want:?} not in {first:?}");
    let rows = report.lines().skip(3).filter(|l| !l.trim().is_empty()); // after the counts, a blank line, the header
    assert!(rows.clone().all(|l| food_rules.iter().any(|r| l.starts_with(r))), "{report}");

    // A path with no rule file of the set is refused.
    let bad = run(&["replay", "--rules", "alert-rules", "--enable", p(dir.path()), p(&file)]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("no rule file of the set is there"), "{}", stderr(&bad));
}

#[test]
fn readme_rule_examples_pass_check_rules() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (n, block) in readme.split("```toml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap_or_default();
        if !block.contains("[[rule]]") || block.contains("[[test]]") {
            continue;
        }
        let file = write(dir.path(), &format!("example-{n}.toml"), block);
        let out = check_rules(&file);
        assert!(out.status.success(), "README example {n}:\n{block}\n{}", stderr(&out));
        checked += 1;
    }
    assert!(checked >= 3, "the key reference, the composite and the scoped examples: {checked}");
}
