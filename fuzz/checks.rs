//! What each fuzz target checks, on any bytes. Shared by the targets (`fuzz/fuzz_targets/`, run by
//! `scripts/fuzz.sh` under cargo fuzz) and by `tests/fuzz_inputs.rs`, which runs every seed
//! (`fuzz/seeds/`) and every input that once failed (`fuzz/regressions/`) through the same checks on the stable
//! compiler, as part of the ordinary test suite.
//!
//! Beyond "never panics, never overflows, never allocates without bound" (libFuzzer's own checks), each one
//! asserts a property a user relies on: a rejection names its reason, a state restored from a snapshot goes
//! on exactly like the state never saved, an event refused over a limit changes nothing, a corrupted
//! checkpoint is refused or decodes to a state that saves, reads back and goes on, an admin request always
//! gets an answer.

#![allow(dead_code)] // each target uses one check

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use credit_sentinel::alert::AlertRecord;
use credit_sentinel::config::Config;
use credit_sentinel::engine::{Engine, Offer};
use credit_sentinel::event::decode;
use credit_sentinel::limits::EngineLimits;
use credit_sentinel::lines::{Line, Lines};
use credit_sentinel::notify::{Notifier, admin};
use credit_sentinel::rules::{RuleSet, load_texts};

/// SPEC's default policy, the shipped regional rules and the shipped domain sets turned on.
pub fn shipped_rules() -> Arc<RuleSet> {
    static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            // The domain sets are turned on (their files' `state = "disabled"` taken out), so that scoped and
            // composite rules are fuzzed with the default ones.
            let on = |text: &str| text.replacen("state = \"disabled\"\n", "", 1);
            let texts = [
                ("default.toml".to_owned(), include_str!("../alert-rules/default.toml").to_owned()),
                ("drug.toml".to_owned(), on(include_str!("../alert-rules/drug/drug.toml"))),
                ("food.toml".to_owned(), on(include_str!("../alert-rules/food/food.toml"))),
                ("regional.toml".to_owned(), include_str!("../alert-rules/regional.toml").to_owned()),
                (
                    "special_equipment.toml".to_owned(),
                    on(include_str!("../alert-rules/special_equipment/special_equipment.toml")),
                ),
            ];
            Arc::new(load_texts(&texts).expect("the shipped rules load"))
        })
        .clone()
}

/// The alerts of `lines` offered in order to an engine for `rules` with `limits` (then finished), as JSON
/// records, and the indices of the lines refused over a limit. With `restart_at`, the engine is saved to a
/// snapshot and restored from it before that line.
fn run(
    rules: &Arc<RuleSet>,
    limits: EngineLimits,
    lines: &[&[u8]],
    restart_at: Option<usize>,
) -> (Vec<String>, Vec<usize>) {
    let mut engine = Engine::new(rules.clone()).expect("an engine for a loaded rule set");
    engine.set_limits(limits);
    let (mut alerts, mut refused) = (Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        if restart_at == Some(i) {
            engine = round_trip(&engine);
            engine.set_limits(limits);
        }
        if let Ok(event) = decode(line)
            && let Offer::OverLimit(_) = engine.offer(event, &mut |a| alerts.push(record(rules, &a)))
        {
            refused.push(i);
        }
    }
    engine.finish(None, &mut |a| alerts.push(record(rules, &a)));
    (alerts, refused)
}

fn record(rules: &RuleSet, alert: &credit_sentinel::engine::Alert) -> String {
    serde_json::to_string(&AlertRecord::new(alert, rules)).expect("an alert serializes")
}

/// Saves `engine` and reads it back. The copy holds as much (hash maps make the order of the bytes vary, so
/// `event_lines` checks the copy by what it does next).
fn round_trip(engine: &Engine) -> Engine {
    let mut bytes = Vec::new();
    engine.write_snapshot(&mut bytes).expect("writing to memory");
    let copy = Engine::read_snapshot(engine.rules().clone(), &bytes).expect("a snapshot just written reads back");
    let mut again = Vec::new();
    copy.write_snapshot(&mut again).expect("writing to memory");
    assert_eq!(bytes.len(), again.len(), "a restored engine saves a different amount");
    assert_eq!((copy.entities(), copy.profiles(), copy.now()), (engine.entities(), engine.profiles(), engine.now()));
    copy
}

/// The event decoder, through the bounded line reader: every line is an event or a rejection with a reason,
/// and an engine saved and restored halfway through the lines raises exactly the alerts of one never saved.
pub fn event_lines(data: &[u8]) {
    let mut reader = Lines::new(data);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    while let Some(line) = reader.next_line().expect("reading memory") {
        match line {
            Line::Text(bytes) => {
                if let Err(reason) = decode(bytes) {
                    assert!(!reason.to_string().is_empty() && !reason.as_str().is_empty());
                }
                lines.push(bytes.to_vec());
            }
            Line::TooLong => {}
        }
    }
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let rules = shipped_rules();
    let (straight, _) = run(&rules, EngineLimits::UNLIMITED, &lines, None);
    let (restarted, _) = run(&rules, EngineLimits::UNLIMITED, &lines, Some(lines.len() / 2));
    assert_eq!(straight, restarted, "a snapshot and restore changed the alerts");
    // Under tight limits, an event refused changes nothing: the alerts are those of the input without the
    // refused lines, with no limits.
    let tight = EngineLimits { entities: 3, events_per_entity: 4, seen_ids: 40 };
    let (limited, refused) = run(&rules, tight, &lines, None);
    let kept: Vec<&[u8]> = lines.iter().enumerate().filter(|(i, _)| !refused.contains(i)).map(|(_, l)| *l).collect();
    let (without, _) = run(&rules, EngineLimits::UNLIMITED, &kept, None);
    assert_eq!(limited, without, "an event refused over a limit changed the alerts");
}

/// A few days of events reaching every default rule, for rule files under test.
const SAMPLE: &str = include_str!("seeds/event_lines/seed-sample.jsonl");

/// The rule-file loader: a file is refused with a line and a message, or loads into a set an engine
/// evaluates (over a sample stream) without failing, through a snapshot too.
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match load_texts(&[("fuzz.toml".to_owned(), text.to_owned())]) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(set) => {
            let set = Arc::new(set);
            let lines: Vec<&[u8]> = SAMPLE.lines().map(str::as_bytes).collect();
            let (straight, _) = run(&set, EngineLimits::UNLIMITED, &lines, None);
            let (restarted, _) = run(&set, EngineLimits::UNLIMITED, &lines, Some(lines.len() / 2));
            assert_eq!(straight, restarted, "a snapshot and restore changed the alerts");
        }
    }
}

/// The configuration parser: a file is refused with a message, or parses into a configuration whose
/// derived values can be computed.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse("fuzz.toml", text) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(config) => {
            let _ = config.source();
            let _ = config.state_dir();
        }
    }
}

/// The checkpoint reader, given bytes that carry a valid checksum (so the checks behind it are reached): a
/// checkpoint is refused as damaged, or decodes into a state that saves back to itself and goes on.
pub fn checkpoint(data: &[u8]) {
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    let rules = shipped_rules();
    match credit_sentinel::checkpoint::decode("fuzz.ckpt", &bytes, &rules) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok((_meta, engine)) => {
            let mut engine = round_trip(&engine);
            let lines: Vec<&[u8]> = SAMPLE.lines().map(str::as_bytes).collect();
            for line in lines {
                if let Ok(event) = decode(line) {
                    engine.offer(event, &mut |_| {});
                }
            }
            engine.finish(None, &mut |_| {});
            round_trip(&engine);
        }
    }
    // The bytes as given are refused unless their last four happen to be the checksum of the rest.
    let (body, tail) = data.split_at(data.len().saturating_sub(4));
    if tail.len() < 4 || crc32fast::hash(body).to_le_bytes() != tail {
        assert!(credit_sentinel::checkpoint::decode("fuzz.ckpt", data, &rules).is_err());
    }
}

const ADMIN_CONFIG: &str = r#"
[file]
path = "events.jsonl"

[notify]
from = "alerts@amr.example.gov.cn"

[[notify.receivers]]
name = "登记注册科"
to = ["registration@amr.example.gov.cn"]

[notify.route]
receiver = "登记注册科"
"#;

/// The admin interface: every request line gets an answer, an error says why, and the silences stay within
/// their limit. Each input gets a new notifier in a new folder (on /dev/shm when there is one: the interface
/// fsyncs every change), so a failure reproduces from its input alone.
pub fn admin_request(data: &[u8]) {
    let dir = tempdir::Dir::new();
    let config = Config::parse("fuzz.toml", ADMIN_CONFIG).expect("the fuzz configuration parses");
    let notify = config.notifications.clone().expect("it has [notify]");
    let notifier = Notifier::open(notify, &dir.0, 10).expect("the notifier opens");
    let response = admin::answer(&notifier, data);
    assert!(response.ok || response.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert!(notifier.silences().len() <= credit_sentinel::notify::dispatch::MAX_SILENCES);
}

/// A temporary folder, removed when dropped (no dev-dependency in the fuzz crate).
mod tempdir {
    use super::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = base.join(format!("credit-sentinel-fuzz-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("a temporary folder");
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
