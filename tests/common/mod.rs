//! Helpers shared by the integration tests: valid credit codes, event lines, and HTTP to the metrics endpoint.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// GET `path` from `addr` (HTTP/1.0): the status code and the body; `(0, "")` when nothing listens.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// The metrics endpoint's address, from the daemon's log line `metrics listening addr=...` (waits up to 30 s).
pub fn metrics_addr(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .split("metrics listening")
            .nth(1)
            .and_then(|rest| rest.split("addr=").nth(1)?.split_whitespace().next().map(str::to_owned));
        if let Some(addr) = addr {
            return addr;
        }
        assert!(Instant::now() < deadline, "no metrics address in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
