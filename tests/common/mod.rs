//! Helpers shared by the integration tests: valid credit codes and event lines.
#![allow(dead_code)]

use std::path::PathBuf;

use credit_sentinel::credit_code;
use credit_sentinel::time::{DAY, civil_from_days};

/// 17-character prefixes of the credit codes used in tests; the check character is computed.
const PREFIXES: [&str; 4] = ["91350100M000100Y4", "91360500MA3N0000Q", "91110000802100433", "92360502MA35XK7Y1"];

/// The `i`-th test entity: a valid unified social credit code.
pub fn code(i: usize) -> String {
    credit_code::complete(PREFIXES[i]).expect("test prefixes use the code alphabet")
}

/// The alert-rules directory shipped with the crate.
pub fn default_rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("alert-rules")
}

/// One event as a JSON line (without newline). `class` adds `data.class`.
pub fn event(id: &str, entity: &str, kind: &str, at: &str, class: Option<&str>) -> String {
    let mut v = serde_json::json!({ "event_id": id, "entity_id": entity, "kind": kind, "occurred_at": at });
    if let Some(c) = class {
        v["data"] = serde_json::json!({ "class": c });
    }
    v.to_string()
}

/// An instant (epoch seconds) written with a `+08:00` offset: the same instant as `format_rfc3339` gives in UTC.
pub fn format_beijing(t: i64) -> String {
    let local = t + 8 * 3600;
    let (days, secs) = (local.div_euclid(DAY), local.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+08:00", secs / 3600, secs % 3600 / 60, secs % 60)
}
