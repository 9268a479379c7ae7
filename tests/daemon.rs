//! The daemon with the embedded default source (a JSON Lines file), run as a process: the README's local
//! configuration, following a growing and rotated file through `kill -9`, rule reloads on SIGHUP, and
//! `check-config`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, default_rules_dir, event, http_get, metrics_addr};

const BIN: &str = env!("CARGO_BIN_EXE_credit-sentinel");

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay_out(file: &Path) -> String {
    let o = Command::new(BIN).arg("replay").arg("--rules").arg(default_rules_dir()).arg(file).output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

fn write_config(dir: &Path, rules: &Path, source: &str) -> PathBuf {
    let text = format!(
        "rules = \"{}\"\nstate_dir = \"{}\"\n[clock]\nmode = \"event\"\n[checkpoint]\ninterval_secs = 1\n{source}",
        rules.display(),
        dir.join("state").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_to_end(config: &Path) -> Output {
    Command::new(BIN).args(["run", "--config"]).arg(config).output().unwrap()
}

#[test]
fn the_local_configuration_prints_what_replay_prints_and_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let sample = manifest().join("samples/events.jsonl");
    let source = format!("[file]\npath = \"{}\"\nfollow = false\nrejects = \"rejects.txt\"\n", sample.display());
    let config = write_config(dir.path(), &default_rules_dir(), &source);
    let first = run_to_end(&config);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let want = replay_out(&sample);
    assert!(want.lines().count() > 100);
    assert_eq!(String::from_utf8(first.stdout).unwrap(), want);
    let rejects = std::fs::read_to_string(dir.path().join("state/rejects.txt")).unwrap();
    assert!(
        rejects.lines().next().is_some_and(|l| l.contains("events.jsonl:") && l.contains("unknown_kind")),
        "{rejects}"
    );

    // A second run starts from the checkpoint at the end of the file: nothing is raised twice.
    let second = run_to_end(&config);
    assert!(second.status.success());
    assert!(second.stdout.is_empty());
    assert!(String::from_utf8_lossy(&second.stderr).contains("state restored from checkpoint"));
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(BIN).args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success());
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    signal(&child, "TERM");
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(started.elapsed() < Duration::from_secs(10), "stops within a bounded time");
}

fn append(path: &Path, lines: &[&[u8]]) {
    let mut f = std::fs::File::options().create(true).append(true).open(path).unwrap();
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

#[test]
fn a_followed_file_killed_and_rotated_gives_the_alerts_of_replay_once() {
    let dir = tempfile::tempdir().unwrap();
    let generated =
        Command::new(BIN).args(["gen", "--seed", "5", "--entities", "200", "--events", "30000"]).output().unwrap();
    let all = generated.stdout.clone();
    let lines: Vec<&[u8]> = all.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let whole = dir.path().join("whole.jsonl");
    std::fs::write(&whole, &all).unwrap();
    let log = dir.path().join("daemon.log");
    let input = dir.path().join("events.jsonl");
    let source = format!("[file]\npath = \"{}\"\npoll_ms = 20\nalerts = \"alerts.jsonl\"\n", input.display());
    let config = write_config(dir.path(), &default_rules_dir(), &source);
    let alerts = dir.path().join("state/alerts.jsonl");

    // Replay's alerts, but for the last instant (it stays pending while the file may still grow).
    let last_at = lines.iter().filter_map(|l| credit_sentinel::event::decode(l).ok()).map(|e| e.at).max().unwrap();
    let want: Vec<String> = replay_out(&whole)
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            credit_sentinel::time::parse_rfc3339(v["at"].as_str().unwrap()).unwrap() < last_at
        })
        .map(str::to_owned)
        .collect();

    std::fs::write(&input, b"").unwrap();
    let mut child = spawn(&config, &log);
    let chunks = 10;
    let size = lines.len().div_ceil(chunks);
    for (c, chunk) in lines.chunks(size).enumerate() {
        if c == 6 {
            // Rotation: lines are appended and at once the file is renamed away and a new one started, so
            // the daemon finds the rename with lines of the old file still unread.
            let (old, new) = chunk.split_at(chunk.len() / 2);
            append(&input, old);
            std::fs::rename(&input, dir.path().join("events.jsonl.1")).unwrap();
            append(&input, new);
        } else {
            append(&input, chunk);
        }
        std::thread::sleep(Duration::from_millis(150 + 250 * (c as u64 % 4)));
        if c % 3 == 1 {
            child.kill().unwrap();
            child.wait().unwrap();
            child = spawn(&config, &log);
        }
    }
    let count = || std::fs::read_to_string(&alerts).unwrap_or_default().lines().count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        count() >= want.len(),
        "{} alerts of {}; log:\n{}",
        count(),
        want.len(),
        std::fs::read_to_string(&log).unwrap()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop(child);
    let got: Vec<String> = std::fs::read_to_string(&alerts).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(got.len(), want.len(), "no alert lost or written twice");
    assert!(got == want, "the alert file equals replay, in order");
    let text = std::fs::read_to_string(&log).unwrap();
    let restores: Vec<&str> = text.lines().filter(|l| l.contains("state restored from checkpoint")).collect();
    assert!(restores.iter().any(|l| !l.contains("next_offset=0")), "a restart resumes mid-file:\n{text}");
    assert!(text.contains("file replaced or truncated") || text.contains("finishing the rotated file"), "{text}");
}

#[test]
fn sighup_swaps_in_a_valid_rule_set_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let shipped = std::fs::read_to_string(default_rules_dir().join("default.toml")).unwrap();
    std::fs::write(rules.join("default.toml"), &shipped).unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, b"").unwrap();
    let source = format!("[file]\npath = \"{}\"\npoll_ms = 20\nalerts = \"alerts.jsonl\"\n", input.display());
    let config = write_config(dir.path(), &rules, &source);
    let log = dir.path().join("daemon.log");
    let alerts = dir.path().join("state/alerts.jsonl");
    let read_alerts = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&alerts).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let log_has = |s: &str, n: usize| std::fs::read_to_string(&log).unwrap_or_default().matches(s).count() >= n;
    let (a, b) = (code(0), code(1));
    let child = spawn(&config, &log);

    // One negative media item for A: under the shipped remind threshold of 2.
    append(
        &input,
        &[
            event("s1", &a, "negative_sentiment", "2025-03-01T09:00:00+08:00", None).as_bytes(),
            event("x1", &b, "penalty", "2025-03-01T10:00:00+08:00", None).as_bytes(),
        ],
    );
    wait_for("the lines to be read", || log_has("reading events", 1));
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_alerts().is_empty());

    // A valid set with remind = 1: swapped in at once; A's standing count now reaches remind.
    let lowered = shipped.replacen(
        "remind = 2, warn = 3, interview = 5, inspect = 10",
        "remind = 1, warn = 3, interview = 5, inspect = 10",
        1,
    );
    assert_ne!(lowered, shipped, "the test edits the sentiment rule's thresholds");
    std::fs::write(rules.join("default.toml"), &lowered).unwrap();
    signal(&child, "HUP");
    wait_for("the reload", || log_has("rules reloaded", 1));
    append(&input, &[event("x2", &b, "penalty", "2025-03-01T11:00:00+08:00", None).as_bytes()]);
    wait_for("A's alert", || !read_alerts().is_empty());
    let got = read_alerts();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["entity_id"].as_str(), got[0]["rule"].as_str(), got[0]["action"].as_str()),
        (Some(a.as_str()), Some("sentiment-1m"), Some("remind"))
    );

    // An invalid set is refused; the daemon keeps the rules in force and keeps working.
    std::fs::write(rules.join("default.toml"), "[[rule]]\nid = \"broken\"\n").unwrap();
    signal(&child, "HUP");
    wait_for("the refusal", || log_has("rule reload refused", 1));
    append(
        &input,
        &[
            event("s2", &b, "negative_sentiment", "2025-03-02T09:00:00+08:00", None).as_bytes(),
            event("x3", &a, "penalty", "2025-03-03T09:00:00+08:00", None).as_bytes(),
        ],
    );
    wait_for("B's alert under the kept rules", || read_alerts().len() >= 2);
    assert_eq!(read_alerts()[1]["entity_id"].as_str(), Some(b.as_str()));
    stop(child);
    assert!(std::fs::read_to_string(&log).unwrap().contains("default.toml"), "the refusal names the file");
}

fn check_config(path: &Path) -> Output {
    Command::new(BIN).arg("check-config").arg(path).output().unwrap()
}

#[test]
fn check_config_accepts_the_shipped_files_and_names_file_and_line_of_an_error() {
    for shipped in ["deploy/config.example.toml", "deploy/local.toml"] {
        let o = check_config(&manifest().join(shipped));
        assert!(o.status.success(), "{shipped}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "rules = \"x\"\n\n[file]\npath = \"e.jsonl\"\nfolow = true\n").unwrap();
    let o = check_config(&bad);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:5:") && err.contains("folow"), "{err}");

    // A secret must come from a file, and the file must be readable.
    std::fs::write(
        &bad,
        "[kafka]\nbrokers = \"b:9092\"\ntopics = [\"t\"]\nalert_topic = \"a\"\nsecurity_protocol = \"sasl_ssl\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_file = \"missing.secret\"\n",
    )
    .unwrap();
    let o = check_config(&bad);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:9:") && err.contains("missing.secret"), "{err}");

    // What librdkafka would refuse at start is refused now; output topics cannot be input topics.
    let kafka = "[kafka]\nbrokers = \"b:9092\"\ntopics = [\"t\"]\nalert_topic = \"a\"\n";
    for (extra, want) in [
        ("[kafka.consumer_options]\n\"fetch.wait.max.msx\" = \"5\"\n", "librdkafka refuses it"),
        ("dead_letter_topic = \"t\"\n", "bad.toml:5: dead_letter_topic `t` is also an input topic"),
    ] {
        std::fs::write(&bad, format!("{kafka}{extra}")).unwrap();
        let o = check_config(&bad);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }

    // The rules the config names are checked too.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("r.toml"), "[[rule]]\nid = 1\n").unwrap();
    let good = write_config(dir.path(), &rules, "[file]\npath = \"-\"\n");
    let o = check_config(&good);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("r.toml:2"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn with_the_wall_clock_timers_fire_on_time_and_far_future_events_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, b"").unwrap();
    let source = format!(
        "[file]\npath = \"{}\"\npoll_ms = 20\nalerts = \"alerts.jsonl\"\nrejects = \"rejects.txt\"\n",
        input.display()
    );
    let config = write_config(dir.path(), &default_rules_dir(), &source).display().to_string();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("mode = \"event\"", "mode = \"wall\"\nfuture_margin_secs = 60");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("daemon.log");
    let alerts = dir.path().join("state/alerts.jsonl");
    let child = spawn(Path::new(&config), &log);
    wait_for("the daemon to start", || std::fs::read_to_string(&log).unwrap_or_default().contains("reading events"));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let at = |t: i64| common::format_beijing(t);
    let a = code(0);
    // One negative item 40 days ago (late, and outside the 30-day window), one 10 s ago, one 3 s ahead (within
    // the margin: it counts from its own instant), one an hour ahead (beyond the margin: bad input).
    append(
        &input,
        &[
            event("old", &a, "negative_sentiment", &at(now - 40 * 86400), None).as_bytes(),
            event("recent", &a, "negative_sentiment", &at(now - 10), None).as_bytes(),
            event("soon", &a, "negative_sentiment", &at(now + 3), None).as_bytes(),
            event("far", &a, "negative_sentiment", &at(now + 3600), None).as_bytes(),
        ],
    );
    let read = || std::fs::read_to_string(&alerts).unwrap_or_default();
    wait_for("the alert of the event that arrives in 3 s", || !read().is_empty());
    let fired = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let alert: serde_json::Value = serde_json::from_str(read().lines().next().unwrap()).unwrap();
    let alert_at = credit_sentinel::time::parse_rfc3339(alert["at"].as_str().unwrap()).unwrap();
    assert_eq!(alert_at, now + 3, "the level rises at the future event's own instant: {alert}");
    assert!(fired >= (now + 3) as f64, "not before its instant");
    // An instant's batch is evaluated when its second ends: the alert of `now + 3` comes at about `now + 4`.
    assert!(fired < (now + 3) as f64 + 3.0, "within about a second of it (fired at +{:.2} s)", fired - now as f64);
    assert_eq!(alert["evidence"], serde_json::json!(["recent", "soon"]));
    let rejects = std::fs::read_to_string(dir.path().join("state/rejects.txt")).unwrap_or_default();
    assert!(rejects.contains(":4: future:"), "the far-future line is rejected with its line: {rejects}");
    stop(child);
}

/// A scrape, parsed by a Prometheus text-format parser.
struct Scrape {
    samples: Vec<prometheus_parse::Sample>,
    body: String,
}

impl Scrape {
    fn get(addr: &str) -> Scrape {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let samples = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format").samples;
        Scrape { samples, body }
    }

    /// The sum of the samples of `name` whose labels include `labels` (0 when none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{name}: not a number"),
            })
            .sum()
    }

    /// Whether a sample of `name` exists.
    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.metric == name)
    }

    /// `(label value, action) -> n` of a regional gauge, zeros left out.
    fn view(&self, name: &str, label: &str) -> std::collections::BTreeMap<(String, String), u64> {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) if v > 0.0 => {
                    Some(((s.labels.get(label)?.to_owned(), s.labels.get("action")?.to_owned()), v as u64))
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn metrics_and_health_are_served_over_http_and_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    // The sample, and one more event a second after its last one: it makes the daemon (following the file,
    // event clock) evaluate the sample's last instant, as replay does at the end of its input.
    let sample = std::fs::read_to_string(manifest().join("samples/events.jsonl")).unwrap();
    let last_at = sample.lines().filter_map(|l| credit_sentinel::event::decode(l.as_bytes()).ok()).map(|e| e.at).max();
    let input = dir.path().join("events.jsonl");
    let mut text = sample.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let closing = credit_sentinel::time::format_rfc3339(last_at.unwrap() + 1);
    text.push_str(&event("closing", &code(0), "profile", &closing, None));
    text.push('\n');
    std::fs::write(&input, &text).unwrap();

    // What the counters must say, worked out from the input and from replay's outputs (alerts, level falls
    // and rejected lines), not from the daemon.
    let rejects_file = dir.path().join("replay-rejects.txt");
    let falls_file = dir.path().join("replay-falls.jsonl");
    let o = Command::new(BIN)
        .arg("replay")
        .arg("--rules")
        .arg(default_rules_dir())
        .arg("--quiet")
        .arg("--rejects")
        .arg(&rejects_file)
        .arg("--falls")
        .arg(&falls_file)
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success());
    let replay_alerts: Vec<serde_json::Value> =
        String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rejects = std::fs::read_to_string(&rejects_file).unwrap();
    let mut want_rejected: std::collections::BTreeMap<String, u64> = Default::default();
    let mut rejected_lines = std::collections::HashSet::new();
    for line in rejects.lines() {
        // `file:line: reason: text`
        let mut parts = line.rsplit(".jsonl:").next().unwrap().splitn(3, ": ");
        let number: usize = parts.next().unwrap().parse().unwrap();
        *want_rejected.entry(parts.next().unwrap().to_owned()).or_default() += 1;
        rejected_lines.insert(number);
    }
    let mut want_events: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut profiles: std::collections::HashMap<String, (i64, Option<String>, Option<String>)> = Default::default();
    for (_, line) in text.lines().enumerate().filter(|(i, _)| !rejected_lines.contains(&(i + 1))) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = v["kind"].as_str().unwrap().to_owned();
        let outcome = if seen.insert(v["event_id"].as_str().unwrap().to_owned()) { "accepted" } else { "duplicate" };
        if kind == "profile" && outcome == "accepted" {
            let at = credit_sentinel::time::parse_rfc3339(v["occurred_at"].as_str().unwrap()).unwrap();
            let entity = v["entity_id"].as_str().unwrap().to_owned();
            let field = |k: &str| v["data"][k].as_str().map(str::to_owned);
            // The latest by time; for the same second, the one read later.
            if profiles.get(&entity).is_none_or(|p| p.0 <= at) {
                profiles.insert(entity, (at, field("region"), field("domain")));
            }
        }
        *want_events.entry((kind, outcome)).or_default() += 1;
    }
    let mut want_alerts: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for a in &replay_alerts {
        *want_alerts.entry((a["rule"].as_str().unwrap().into(), a["action"].as_str().unwrap().into())).or_default() +=
            1;
    }
    // Standing levels at the end: the last alert or fall of each (entity, rule), in time order.
    let level = |a: &serde_json::Value| {
        a.as_str().map_or(0, |s| ["remind", "warn", "interview", "inspect"].iter().position(|x| *x == s).unwrap() + 1)
    };
    let mut signals: Vec<(i64, String, String, usize)> = replay_alerts
        .iter()
        .map(|a| {
            (
                credit_sentinel::time::parse_rfc3339(a["at"].as_str().unwrap()).unwrap(),
                a["entity_id"].as_str().unwrap().to_owned(),
                a["rule"].as_str().unwrap().to_owned(),
                level(&a["action"]),
            )
        })
        .collect();
    for line in std::fs::read_to_string(&falls_file).unwrap().lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        signals.push((
            credit_sentinel::time::parse_rfc3339(f["at"].as_str().unwrap()).unwrap(),
            f["entity_id"].as_str().unwrap().to_owned(),
            f["rule"].as_str().unwrap().to_owned(),
            level(&f["to"]),
        ));
    }
    signals.sort_by_key(|s| s.0); // stable: within one instant, output order
    let mut standing: std::collections::HashMap<(String, String), usize> = Default::default();
    for (_, entity, rule, level) in signals {
        standing.insert((entity, rule), level);
    }
    let mut top: std::collections::BTreeMap<String, usize> = Default::default();
    for ((entity, _), level) in standing {
        let t = top.entry(entity).or_default();
        *t = (*t).max(level);
    }
    let actions = ["none", "remind", "warn", "interview", "inspect"];
    let mut want_regions: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut want_domains: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for (entity, level) in top.iter().filter(|(_, l)| **l > 0) {
        let (region, domain) = profiles.get(entity).map(|p| (p.1.clone(), p.2.clone())).unwrap_or_default();
        let region = region.map_or("unknown".to_owned(), |r| r.chars().take(4).collect());
        *want_regions.entry((region, actions[*level].to_owned())).or_default() += 1;
        *want_domains.entry((domain.unwrap_or("unknown".into()), actions[*level].to_owned())).or_default() += 1;
    }
    assert!(want_regions.keys().any(|(r, _)| r != "unknown"), "the sample has profiled entities at some level");

    let source = format!(
        "[file]\npath = \"{}\"\nfollow = true\npoll_ms = 20\nalerts = \"alerts.jsonl\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\nview_interval_secs = 1\nregion_prefix = 4\n",
        input.display()
    );
    let config = write_config(dir.path(), &default_rules_dir(), &source);
    let log = dir.path().join("daemon.log");
    let child = spawn(&config, &log);
    let addr = metrics_addr(&log);
    assert!(addr.starts_with("127.0.0.1:"), "loopback: {addr}");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    wait_for("ready (the file read to its end)", || http_get(&addr, "/readyz").0 == 200);
    // Wait for the whole input to be counted and the view refreshed after it (every second here).
    let lines = text.lines().count() as f64;
    wait_for("every line counted and the view refreshed", || {
        let s = Scrape::get(&addr);
        s.sum("credit_sentinel_lines_total", &[]) == lines
            && s.view("credit_sentinel_region_entities", "region") == want_regions
    });
    let alerts_file = || std::fs::read_to_string(dir.path().join("state/alerts.jsonl")).unwrap_or_default();
    wait_for("the alert file (flushed with each checkpoint)", || alerts_file().lines().count() == replay_alerts.len());
    let s = Scrape::get(&addr);

    for ((kind, outcome), n) in &want_events {
        assert_eq!(
            s.sum("credit_sentinel_events_total", &[("kind", kind), ("outcome", outcome)]),
            *n as f64,
            "{kind} {outcome}"
        );
    }
    assert_eq!(s.sum("credit_sentinel_events_total", &[]), want_events.values().sum::<u64>() as f64);
    for (reason, n) in &want_rejected {
        assert_eq!(s.sum("credit_sentinel_rejected_lines_total", &[("reason", reason)]), *n as f64, "{reason}");
    }
    assert_eq!(s.sum("credit_sentinel_rejected_lines_total", &[]), want_rejected.values().sum::<u64>() as f64);
    let reasons: std::collections::BTreeSet<&str> = s
        .samples
        .iter()
        .filter(|x| x.metric == "credit_sentinel_rejected_lines_total")
        .filter_map(|x| x.labels.get("reason"))
        .collect();
    assert_eq!(reasons.len(), 15, "every reason is exported, at 0 until it happens: {reasons:?}");
    assert_eq!(s.sum("credit_sentinel_rejected_lines_total", &[("reason", "future")]), 0.0);
    // No limit is near: the only hits are the over-long lines.
    for limit in credit_sentinel::limits::Limit::ALL {
        let want =
            if limit == credit_sentinel::limits::Limit::MessageBytes { want_rejected.get("too_large") } else { None };
        assert_eq!(
            s.sum("credit_sentinel_limit_hits_total", &[("limit", limit.as_str())]),
            want.copied().unwrap_or(0) as f64,
            "{limit}"
        );
    }
    for ((rule, action), n) in &want_alerts {
        assert_eq!(
            s.sum("credit_sentinel_alerts_total", &[("rule", rule), ("action", action)]),
            *n as f64,
            "{rule} {action}"
        );
    }
    assert_eq!(s.sum("credit_sentinel_alerts_total", &[]), replay_alerts.len() as f64);
    assert_eq!(s.view("credit_sentinel_region_entities", "region"), want_regions);
    assert_eq!(s.view("credit_sentinel_domain_entities", "domain"), want_domains);
    assert_eq!(s.sum("credit_sentinel_ready", &[]), 1.0);
    assert_eq!(s.sum("credit_sentinel_partitions", &[]), 1.0);
    assert!(s.sum("credit_sentinel_entities", &[]) >= top.len() as f64);
    assert!(s.sum("credit_sentinel_state_bytes", &[]) > 0.0);
    assert!(s.sum("credit_sentinel_checkpoints_total", &[]) >= 1.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let checkpoint_at = s.sum("credit_sentinel_last_checkpoint_timestamp_seconds", &[]);
    assert!(now - checkpoint_at < 10.0, "a checkpoint within the last seconds (interval 1 s): {}", now - checkpoint_at);
    assert!(now - s.sum("credit_sentinel_last_event_timestamp_seconds", &[]) < 60.0);
    assert_eq!(
        s.sum("credit_sentinel_checkpoint_duration_seconds_count", &[]),
        s.sum("credit_sentinel_checkpoints_total", &[]),
        "one duration per checkpoint"
    );
    assert!(s.has("credit_sentinel_build_info"));
    assert!(!s.has("credit_sentinel_notifications_total"), "no [notify]: no notification metrics");
    assert!(!s.body.contains("91360"), "no entity in any label");
    stop(child);
}

/// The regional alerts `replay --regional` writes for `input` (through `out`).
fn replay_regional(input: &Path, out: &Path) -> Vec<serde_json::Value> {
    let o = Command::new(BIN)
        .arg("replay")
        .arg("--rules")
        .arg(default_rules_dir())
        .arg("--regional")
        .arg(out)
        .arg(input)
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::read_to_string(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A profile event line.
fn profile_event(id: &str, entity: &str, at: i64, region: &str, industry: &str) -> String {
    serde_json::json!({
        "event_id": id, "entity_id": entity, "kind": "profile",
        "occurred_at": credit_sentinel::time::format_rfc3339(at),
        "data": { "name": format!("示例 {entity}"), "region": region, "industry": industry, "domain": "food" }
    })
    .to_string()
}

#[test]
fn regional_alerts_reach_the_leadership_once_and_their_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Three entities of city 3605 and one of city 3601 each reach warn (three penalties within days): the
    // city 3605 reaches the shipped aggregate's remind threshold (3 entities at warn or above in 30 days).
    let t0 = credit_sentinel::time::parse_rfc3339("2025-03-01T00:00:00Z").unwrap();
    let day = 86_400;
    let mut lines = Vec::new();
    // (Each of another industry division, so that only the city's aggregate counts them together.)
    for (i, region, industry) in
        [(0, "360502", "F5211"), (1, "360521", "C1311"), (2, "360502", "H6210"), (3, "360102", "G5411")]
    {
        lines.push(profile_event(&format!("p{i}"), &code(i), t0, region, industry));
    }
    for k in 1..=3 {
        for i in 0..4 {
            let at = credit_sentinel::time::format_rfc3339(t0 + k * day + i as i64 * 60);
            lines.push(event(&format!("pen{i}-{k}"), &code(i), "penalty", &at, None));
        }
    }
    let closing = credit_sentinel::time::format_rfc3339(t0 + 10 * day);
    lines.push(event("closing", &code(0), "address_change", &closing, None));
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    // What replay --regional says (independent of the daemon's notifier).
    let regional_file = dir.path().join("regional.jsonl");
    let want = replay_regional(&input, &regional_file);
    assert_eq!(want.len(), 1, "one regional alert: {want:?}");
    assert_eq!(want[0]["group"], "3605");
    assert_eq!(want[0]["rule_id"], "region-warn-cluster");
    assert_eq!(want[0]["action"], "remind");

    let notify = r#"
[notify]
from = "预警 <alerts@amr.example.cn>"
[[notify.receivers]]
name = "科室"
to = ["dept@amr.example.cn"]
[[notify.receivers]]
name = "局领导"
to = ["leadership@amr.example.cn"]
[notify.route]
receiver = "科室"
group_wait_secs = 0
[[notify.route.routes]]
match = { rule = ["region-warn-cluster", "industry-warn-cluster"] }
receiver = "局领导"
group_wait_secs = 0
"#;
    let source = format!("[file]\npath = \"{}\"\nfollow = false\nalerts = \"alerts.jsonl\"\n{notify}", input.display());
    let config = write_config(dir.path(), &default_rules_dir(), &source);
    let run = run_to_end(&config);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("regional alert"), "logged");
    let mails = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.path().join("state/mail"))
            .unwrap()
            .flatten()
            .map(|f| std::fs::read_to_string(f.path()).unwrap())
            .collect();
        v.sort();
        v
    };
    let first = mails();
    let leaders: Vec<&String> = first.iter().filter(|m| m.contains("leadership@amr.example.cn")).collect();
    assert_eq!(leaders.len(), 1, "one e-mail to the leadership");
    let eml = leaders[0];
    assert!(eml.contains(want[0]["alert_id"].as_str().unwrap()), "it carries the regional alert's id:\n{eml}");
    assert!(!eml.contains("dept@amr.example.cn"), "only the leadership gets it");
    // The body lists the city's three entities (quoted-printable or base64: decode through the text part).
    let entity_alerts = std::fs::read_to_string(dir.path().join("state/alerts.jsonl")).unwrap();
    assert!(entity_alerts.lines().count() >= 8, "the entities' own alerts are written as usual");
    assert!(!entity_alerts.contains("region-warn-cluster"), "regional alerts never reach the entity alert output");
    assert!(first.iter().filter(|m| m.contains("dept@amr.example.cn")).count() >= 4, "entity alerts mailed");
    assert!(dir.path().join("state/regional.json").exists(), "the regional state is saved");

    // A restart with two more entities of the city reaching warn: with the count restored (3 + 2 = 5) the city
    // rises to warn; a fresh aggregator would count 2 and raise nothing. The remind is not mailed again.
    let mut more = std::fs::read_to_string(&input).unwrap();
    let later = t0 + 11 * day;
    for i in 4..6 {
        let entity = credit_sentinel::credit_code::complete(&format!("9136050200000000{i}")).unwrap();
        more.push_str(&profile_event(&format!("p{i}"), &entity, later, "360502", &format!("K70{i}1")));
        more.push('\n');
        for k in 1..=3 {
            let at = credit_sentinel::time::format_rfc3339(later + k * day + i as i64 * 60);
            more.push_str(&event(&format!("pen{i}-{k}"), &entity, "penalty", &at, None));
            more.push('\n');
        }
    }
    let at = credit_sentinel::time::format_rfc3339(later + 10 * day);
    more.push_str(&event("late-closing", &code(0), "address_change", &at, None));
    more.push('\n');
    std::fs::write(&input, more).unwrap();
    let want = replay_regional(&input, &regional_file);
    assert_eq!(want.len(), 2, "remind, then warn: {want:?}");
    assert_eq!((&want[1]["action"], &want[1]["value"]), (&serde_json::json!("warn"), &serde_json::json!(5)));

    let run = run_to_end(&config);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("regional state restored"));
    let second = mails();
    let leaders: Vec<&String> = second.iter().filter(|m| m.contains("leadership@amr.example.cn")).collect();
    assert_eq!(leaders.len(), 2, "the warn, and the remind not again");
    for w in &want {
        let id = w["alert_id"].as_str().unwrap();
        assert_eq!(leaders.iter().filter(|m| m.contains(id)).count(), 1, "{id} mailed once");
    }
}

/// The lines a daemon with `[limits] entities = max` refuses as `over_limit`, worked out from the input alone:
/// the first `max` entities with window state (and apart, with a profile) are held; the valid, first-seen
/// events of any other are refused whole, their ids not remembered.
fn refused_by_entity_limit(text: &str, bad: &std::collections::HashSet<usize>, max: usize) -> Vec<usize> {
    let (mut seen, mut held, mut profiled) = (std::collections::HashSet::new(), Vec::new(), Vec::new());
    let mut refused = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(i, _)| !bad.contains(&(i + 1))) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["event_id"].as_str().unwrap().to_owned();
        if seen.contains(&id) {
            continue; // a duplicate
        }
        let entity = v["entity_id"].as_str().unwrap().to_owned();
        let set = if v["kind"] == "profile" { &mut profiled } else { &mut held };
        if !set.contains(&entity) {
            if set.len() == max {
                refused.push(i + 1);
                continue;
            }
            set.push(entity);
        }
        seen.insert(id);
    }
    refused
}

#[test]
fn events_over_a_limit_are_refused_whole_logged_and_change_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let sample = manifest().join("samples/events.jsonl");
    let text = std::fs::read_to_string(&sample).unwrap();
    let replay_rejects = dir.path().join("replay-rejects.txt");
    let o = Command::new(BIN)
        .args(["replay", "--quiet", "--rules"])
        .arg(default_rules_dir())
        .arg("--rejects")
        .arg(&replay_rejects)
        .arg(&sample)
        .output()
        .unwrap();
    assert!(o.status.success());
    let line_of = |l: &str| l.rsplit(".jsonl:").next().unwrap().split(':').next().unwrap().parse::<usize>().unwrap();
    let bad: std::collections::HashSet<usize> =
        std::fs::read_to_string(&replay_rejects).unwrap().lines().map(line_of).collect();
    let max = 10;
    let refused = refused_by_entity_limit(&text, &bad, max);
    assert!(refused.len() > 100, "the sample has more than {max} entities with many events");

    // The daemon, with the limit.
    let source = format!("[file]\npath = \"{}\"\nfollow = false\nrejects = \"rejects.txt\"\n", sample.display());
    let config = write_config(dir.path(), &default_rules_dir(), &format!("{source}[limits]\nentities = {max}\n"));
    let run = run_to_end(&config);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // Exactly those lines are rejected as over the limit, with a clear reason.
    let rejects = std::fs::read_to_string(dir.path().join("state/rejects.txt")).unwrap();
    let over: Vec<&str> = rejects.lines().filter(|l| l.contains(": over_limit: ")).collect();
    assert_eq!(over.iter().map(|l| line_of(l)).collect::<Vec<_>>(), refused);
    assert!(over[0].contains("over the limit on entities ([limits] entities)"), "{}", over[0]);
    // Each with the whole line, to be appended to the input again once the limit is raised.
    let input: Vec<&str> = text.lines().collect();
    for l in &over {
        assert!(l.ends_with(&format!(": {}", input[line_of(l) - 1])), "{l}");
    }
    // One warning names the limit (at most one a minute), not one per event.
    let log = String::from_utf8_lossy(&run.stderr);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("input over a limit")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("limit=\"entities\"") || warnings[0].contains("limit=entities"), "{}", warnings[0]);

    // Nothing else changed: the alerts are replay's of the input without the refused lines.
    let refused: std::collections::HashSet<usize> = refused.into_iter().collect();
    let kept: String =
        text.lines().enumerate().filter(|(i, _)| !refused.contains(&(i + 1))).map(|(_, l)| format!("{l}\n")).collect();
    let kept_file = dir.path().join("kept.jsonl");
    std::fs::write(&kept_file, kept).unwrap();
    let want = replay_out(&kept_file);
    assert!(want.lines().count() > 10);
    assert_eq!(String::from_utf8(run.stdout).unwrap(), want);
}
