//! Alert records: the JSON form of an [`Alert`] (SPEC "Outputs").

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use crate::engine::{Alert, Fall};
use crate::rules::{Action, RuleSet, RuleState};
use crate::time::format_rfc3339;

/// A window as printed.
#[derive(Debug, Serialize)]
pub struct WindowRecord {
    pub from: String,
    pub to: String,
    pub count: u64,
}

/// One alert as printed by `replay` and produced to the alert topic.
#[derive(Debug, Serialize)]
pub struct AlertRecord<'a> {
    /// Stable id: the same alert gets the same id in every run (a hash of entity, rule, instant and action).
    pub alert_id: String,
    pub entity_id: String,
    pub rule: &'a str,
    /// Content hash of the rule that raised it.
    pub rule_version: &'a str,
    pub rule_name_zh: &'a str,
    pub action: Action,
    pub previous_action: Option<Action>,
    pub at: String,
    pub value: i64,
    pub threshold: u64,
    /// `A`..`D`, or null when unclassified.
    pub class: Option<&'static str>,
    pub windows: Vec<WindowRecord>,
    /// The `event_id`s in the rule's window(s), by occurred_at.
    pub evidence: Vec<&'a str>,
    /// Events in the window(s) left out of `evidence`, the oldest (present only when some were: see
    /// `engine::MAX_EVIDENCE_BYTES`).
    #[serde(skip_serializing_if = "is_zero")]
    pub evidence_omitted: u64,
    /// Raised by a shadow rule: recorded, never mailed.
    pub shadow: bool,
}

impl<'a> AlertRecord<'a> {
    /// The record of `alert`, raised under `rules`.
    pub fn new(alert: &'a Alert, rules: &'a RuleSet) -> AlertRecord<'a> {
        let rule = &rules.all[alert.rule];
        let entity_id = alert.entity.to_string();
        AlertRecord {
            alert_id: alert_id(&entity_id, &rule.id, alert.at, alert.action),
            entity_id,
            rule: &rule.id,
            rule_version: &rule.version,
            rule_name_zh: &rule.name_zh,
            action: alert.action,
            previous_action: alert.previous,
            at: format_rfc3339(alert.at),
            value: alert.value,
            threshold: alert.threshold,
            class: alert.class.map(|c| c.as_str()),
            windows: alert
                .windows
                .iter()
                .map(|w| WindowRecord { from: format_rfc3339(w.from), to: format_rfc3339(w.to), count: w.count })
                .collect(),
            evidence: alert.evidence.iter().map(|e| e.id.as_str()).collect(),
            evidence_omitted: alert.evidence_omitted,
            shadow: rule.state == RuleState::Shadow,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The stable id of an alert.
pub fn alert_id(entity_id: &str, rule: &str, at: i64, action: Action) -> String {
    let key = format!("{entity_id}\u{1f}{rule}\u{1f}{at}\u{1f}{action}");
    format!("{:032x}", xxh3_128(key.as_bytes()))
}

/// A level that fell, as printed by `replay --falls`: never an alert, only what lets notifications say
/// "resolved".
#[derive(Debug, Serialize)]
pub struct FallRecord<'a> {
    pub entity_id: String,
    pub rule: &'a str,
    /// The level before.
    pub from: Action,
    /// The level now, or null when no action applies any more.
    pub to: Option<Action>,
    pub at: String,
    pub value: i64,
    pub class: Option<&'static str>,
}

impl<'a> FallRecord<'a> {
    pub fn new(fall: &Fall, rules: &'a RuleSet) -> FallRecord<'a> {
        FallRecord {
            entity_id: fall.entity.to_string(),
            rule: &rules.all[fall.rule].id,
            from: fall.from,
            to: fall.to,
            at: format_rfc3339(fall.at),
            value: fall.value,
            class: fall.class.map(|c| c.as_str()),
        }
    }
}
