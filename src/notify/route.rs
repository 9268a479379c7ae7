//! Matchers (shared by routes and silences) and the routing tree walk, in the spirit of Alertmanager's
//! `route`: depth first, a matching child takes the alert (and stops its siblings unless `continue`), and a
//! route none of whose children match takes it itself.

use serde::{Deserialize, Serialize};

use super::config::Route;
use super::notice::Notice;
use crate::rules::{Action, RuleSet};

/// Conditions on an alert. Every non-empty list must hold one of its values; `region` and `industry`
/// match by prefix (`"3605"`: every county of Xinyu), the rest exactly. A notice without a profile
/// matches no `region`, `domain`, `authority` or `industry` list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action: Vec<Action>,
    /// Rule ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule: Vec<String>,
    /// `A`..`D`, or `none` for unclassified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class: Vec<String>,
    /// Prefixes of the 6-digit administrative division code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    /// `food`, `drug`, `special_equipment`, `general`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain: Vec<String>,
    /// The responsible unit, exactly as in the profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authority: Vec<String>,
    /// Prefixes of the industry code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub industry: Vec<String>,
    /// Credit codes (silences of one entity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity: Vec<String>,
}

const DOMAINS: [&str; 4] = ["food", "drug", "special_equipment", "general"];

impl Matchers {
    pub fn is_empty(&self) -> bool {
        *self == Matchers::default()
    }

    /// Whether `n` satisfies every matcher.
    pub fn matches(&self, n: &Notice) -> bool {
        let exact = |list: &[String], label: &str| {
            list.is_empty() || n.label(label).is_some_and(|v| list.iter().any(|x| x == v))
        };
        let prefix = |list: &[String], label: &str| {
            list.is_empty() || n.label(label).is_some_and(|v| list.iter().any(|x| v.starts_with(x.as_str())))
        };
        (self.action.is_empty() || self.action.contains(&n.action))
            && exact(&self.rule, "rule")
            && exact(&self.class, "class")
            && prefix(&self.region, "region")
            && exact(&self.domain, "domain")
            && exact(&self.authority, "authority")
            && prefix(&self.industry, "industry")
            && exact(&self.entity, "entity")
    }

    /// Refuses values no alert can have (a typo would silently match nothing).
    pub fn check(&self, rules: Option<&RuleSet>) -> Result<(), String> {
        for c in &self.class {
            if !["A", "B", "C", "D", "none"].contains(&c.as_str()) {
                return Err(format!("class {c:?}: expected A, B, C, D or none"));
            }
        }
        for d in &self.domain {
            if !DOMAINS.contains(&d.as_str()) {
                return Err(format!("domain {d:?}: expected one of {}", DOMAINS.join(", ")));
            }
        }
        for r in &self.region {
            if r.is_empty() || r.len() > 6 || !r.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("region {r:?}: expected 1 to 6 digits (a prefix of the division code)"));
            }
        }
        for e in &self.entity {
            if crate::credit_code::EntityKey::parse(e).is_none() {
                return Err(format!("entity {e:?} is not a valid unified social credit code"));
            }
        }
        if let Some(rules) = rules {
            for r in &self.rule {
                if !rules.all.iter().any(|x| x.id == *r) && !rules.aggregates.iter().any(|a| a.id == *r) {
                    return Err(format!("rule {r:?} is not in the rule set"));
                }
            }
        }
        Ok(())
    }

    /// A short description, e.g. `action=inspect region=3605`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, values: Vec<String>| {
            if !values.is_empty() {
                parts.push(format!("{name}={}", values.join("|")));
            }
        };
        add("action", self.action.iter().map(|a| a.as_str().to_owned()).collect());
        add("rule", self.rule.clone());
        add("class", self.class.clone());
        add("region", self.region.iter().map(|r| format!("{r}*")).collect());
        add("domain", self.domain.clone());
        add("authority", self.authority.clone());
        add("industry", self.industry.iter().map(|r| format!("{r}*")).collect());
        add("entity", self.entity.clone());
        if parts.is_empty() { "(all)".into() } else { parts.join(" ") }
    }
}

/// The routes (indexes into `routes`) that take `n`. Never empty: the root takes what no child does.
pub fn route(routes: &[Route], n: &Notice) -> Vec<usize> {
    let mut out = Vec::new();
    walk(routes, 0, n, &mut out);
    out
}

/// Whether route `i` or one of its descendants took `n`.
fn walk(routes: &[Route], i: usize, n: &Notice, out: &mut Vec<usize>) -> bool {
    let Some(r) = routes.get(i) else { return false };
    if !r.matchers.matches(n) {
        return false;
    }
    let mut taken = false;
    for &c in &r.children {
        if walk(routes, c, n, out) {
            taken = true;
            if !routes[c].continue_ {
                break;
            }
        }
    }
    if !taken {
        out.push(i);
    }
    true
}
