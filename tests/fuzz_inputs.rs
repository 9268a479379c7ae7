//! The fuzz targets' checks (`fuzz/checks.rs`) on the stable compiler, over every seed input
//! (`fuzz/seeds/<target>/`) and every input that once made a target fail (`fuzz/regressions/<target>/`, each
//! named after what it found). `scripts/fuzz.sh` runs the targets themselves under libFuzzer.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file of the target's seed and regression folders; returns how many it ran.
fn each_input(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
        let mut paths: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} fails its check", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn event_lines_inputs_pass() {
    assert!(each_input("event_lines", checks::event_lines) >= 2);
}

#[test]
fn rule_file_inputs_pass() {
    assert!(each_input("rule_file", checks::rule_file) >= 2);
}

#[test]
fn config_file_inputs_pass() {
    assert!(each_input("config_file", checks::config_file) >= 3);
}

#[test]
fn checkpoint_inputs_pass() {
    assert!(each_input("checkpoint", checks::checkpoint) >= 2);
}

#[test]
fn admin_request_inputs_pass() {
    assert!(each_input("admin_request", checks::admin_request) >= 4);
}
