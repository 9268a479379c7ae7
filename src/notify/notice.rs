//! What the notifier is told: a [`Notice`] per alert (and per resolved level), self-contained so that it
//! can wait in a group, be persisted, and be rendered later without the engine.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use super::dispatch::FallNote;
use crate::aggregate::RegionalAlert;
use crate::engine::{Alert, Engine, Profile};
use crate::event::{Class, Kind};
use crate::rules::{Action, GroupBy, RuleSet};
use crate::time::Ts;

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A level rose: the alert itself.
    Firing,
    /// A level still standing, notified again (`repeat_after_secs`).
    Repeat,
    /// A notified level fell to none (`send_resolved`).
    Resolved,
}

/// A window of the alert's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub from: Ts,
    pub to: Ts,
    pub count: u64,
}

/// One event behind an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub kind: Kind,
    pub at: Ts,
}

/// One notice. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The alert's id (`Firing`), or a stable id derived from it.
    pub id: String,
    /// The alert this notice is about (equal to `id` when firing).
    pub alert_id: String,
    pub status: Status,
    pub entity_id: String,
    pub rule: String,
    pub rule_name_zh: String,
    pub rule_description: String,
    /// Firing/repeat: the action that stands. Resolved: the action that stood.
    pub action: Action,
    /// Firing: the level before the rise. Resolved: the level now (none).
    pub previous_action: Option<Action>,
    pub at: Ts,
    pub value: i64,
    pub threshold: u64,
    pub class: Option<Class>,
    pub windows: Vec<Span>,
    /// The newest [`MAX_NOTICE_EVIDENCE`] events behind the alert.
    pub evidence: Vec<Item>,
    /// `value` and `threshold` are a composite rule's score in thousandths (shown as decimals).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub score: bool,
    /// Older events behind the alert, not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evidence_omitted: u64,
    pub profile: Option<Profile>,
    /// The rule's window in days (for "in the last N days").
    pub window_days: i64,
    /// A regional alert's scope (`region`, `industry` or `domain`); `None` for an entity's alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A regional alert's counted entities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<String>,
}

/// Events a notice (so an e-mail) lists at most: the newest; the rest are counted. Notices wait in the
/// notifier's state and journal, so they are kept small whatever the alert's window holds.
pub const MAX_NOTICE_EVIDENCE: usize = 100;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Notice {
    /// The notice of an alert raised by `engine`.
    pub fn of_alert(alert: &Alert, alert_id: &str, engine: &Engine) -> Notice {
        let rule = &engine.rules().all[alert.rule];
        let cut = alert.evidence.len().saturating_sub(MAX_NOTICE_EVIDENCE);
        Notice {
            id: alert_id.to_owned(),
            alert_id: alert_id.to_owned(),
            status: Status::Firing,
            entity_id: alert.entity.to_string(),
            rule: rule.id.clone(),
            rule_name_zh: rule.name_zh.clone(),
            rule_description: rule.description.clone(),
            action: alert.action,
            previous_action: alert.previous,
            at: alert.at,
            value: alert.value,
            threshold: alert.threshold,
            class: alert.class,
            windows: alert.windows.iter().map(|w| Span { from: w.from, to: w.to, count: w.count }).collect(),
            evidence: alert.evidence[cut..]
                .iter()
                .map(|e| Item { id: e.id.to_string(), kind: e.kind, at: e.at })
                .collect(),
            evidence_omitted: alert.evidence_omitted + cut as u64,
            score: matches!(rule.measure, crate::rules::Measure::Composite { .. }),
            profile: engine.profile(&alert.entity),
            window_days: rule.measure.window() / crate::time::DAY,
            scope: None,
            entities: Vec::new(),
        }
    }

    /// The notice of a regional alert. Its `entity` label is `scope:group` (e.g. `region:3605`), and its profile
    /// holds the group in the scope's field, so routes match it by rule id, and by region or industry prefix.
    pub fn of_regional(r: &RegionalAlert, rules: &RuleSet) -> Notice {
        let at = crate::time::parse_rfc3339(&r.at).unwrap_or_default();
        let description = rules.aggregates.iter().find(|a| a.id == r.rule_id).map(|a| a.description.clone());
        let scope = r.scope.as_str();
        let group = Some(std::sync::Arc::<str>::from(r.group.as_str()));
        let name = match r.scope {
            GroupBy::Region => format!("行政区划 {}", r.group),
            GroupBy::Industry => format!("行业 {}", r.group),
            GroupBy::Domain => format!("监管领域 {}", r.group),
        };
        Notice {
            id: r.alert_id.clone(),
            alert_id: r.alert_id.clone(),
            status: Status::Firing,
            entity_id: format!("{scope}:{}", r.group),
            rule: r.rule_id.clone(),
            rule_name_zh: r.rule_name_zh.clone(),
            rule_description: description.unwrap_or_default(),
            action: r.action,
            previous_action: r.previous_action,
            at,
            value: r.value as i64,
            threshold: r.threshold,
            class: None,
            windows: vec![Span { from: at - r.window_days * crate::time::DAY, to: at, count: r.value }],
            evidence: Vec::new(),
            evidence_omitted: 0,
            score: false,
            profile: Some(Profile {
                at,
                name: Some(name.into()),
                region: group.clone().filter(|_| r.scope == GroupBy::Region),
                industry: group.clone().filter(|_| r.scope == GroupBy::Industry),
                domain: group.filter(|_| r.scope == GroupBy::Domain),
                authority: None,
            }),
            window_days: r.window_days,
            scope: Some(scope.to_owned()),
            entities: r.entities.clone(),
        }
    }

    /// The notice that `fall` resolves the level `standing` notified; `None` unless the level fell to none.
    pub fn of_fall(fall: &FallNote, standing: &Notice) -> Option<Notice> {
        if fall.to.is_some() {
            return None;
        }
        let id =
            format!("{:032x}", xxh3_128(format!("{}\u{1f}resolved\u{1f}{}", standing.alert_id, fall.at).as_bytes()));
        Some(Notice {
            id,
            status: Status::Resolved,
            action: standing.action,
            previous_action: None,
            at: fall.at,
            value: fall.value,
            class: fall.class,
            evidence: Vec::new(),
            evidence_omitted: 0,
            windows: Vec::new(),
            ..standing.clone()
        })
    }

    /// The value of a routing or grouping label.
    pub fn label(&self, name: &str) -> Option<&str> {
        let p = self.profile.as_ref();
        match name {
            "entity" => Some(&self.entity_id),
            "rule" => Some(&self.rule),
            "action" => Some(self.action.as_str()),
            "class" => Some(self.class.map_or("none", |c| c.as_str())),
            "region" => p.and_then(|p| p.region.as_deref()),
            "domain" => p.and_then(|p| p.domain.as_deref()),
            "authority" => p.and_then(|p| p.authority.as_deref()),
            "industry" => p.and_then(|p| p.industry.as_deref()),
            _ => None,
        }
    }
}
