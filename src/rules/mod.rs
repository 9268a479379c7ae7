//! Alert rules: what the engine evaluates, loaded from the TOML files of `alert-rules/`.
//!
//! A [`RuleSet`] is immutable once loaded; every threshold is precomputed per class so the engine's
//! hot path is integer comparisons only. See `load.rs` for the file format and README for its reference.

mod load;

use std::fmt;
use std::path::{Path, PathBuf};

pub(crate) use load::line_of;
pub use load::{
    MAX_ACTIVE_RULES, MAX_AGGREGATES, MAX_CAP, MAX_PARTS, MAX_RULES, RuleError, load_dir, load_file_str, load_str,
    load_texts,
};

use crate::event::{Class, Kind};
use crate::time::Ts;

/// The four actions, in rising order. A level is `Option<Action>`: `None` is "no action".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Remind = 1,
    Warn = 2,
    Interview = 3,
    Inspect = 4,
}

impl Action {
    /// Every action, lowest first.
    pub const ALL: [Action; 4] = [Action::Remind, Action::Warn, Action::Interview, Action::Inspect];

    /// `remind`, `warn`, `interview` or `inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Remind => "remind",
            Action::Warn => "warn",
            Action::Interview => "interview",
            Action::Inspect => "inspect",
        }
    }

    /// The action of a level code (1..=4); 0 and anything else is none.
    pub fn from_level(level: u8) -> Option<Action> {
        match level {
            1 => Some(Action::Remind),
            2 => Some(Action::Warn),
            3 => Some(Action::Interview),
            4 => Some(Action::Inspect),
            _ => None,
        }
    }

    /// The level code of an optional action (0 for none).
    pub fn level(action: Option<Action>) -> u8 {
        action.map_or(0, |a| a as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Whether a rule runs, and whether its alerts are mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    /// Evaluated; alerts are recorded and mailed.
    Enabled,
    /// Not evaluated at all.
    Disabled,
    /// Evaluated; alerts are recorded with `shadow: true` and never mailed.
    Shadow,
}

/// What a rule measures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Measure {
    /// The number of events of `kinds` in the last `window` seconds.
    Count { kinds: Vec<Kind>, window: Ts },
    /// `cur - prev`: events of `kinds` in the last `window` seconds minus those in the `window` before;
    /// it counts only while `cur * ratio_den >= prev * ratio_num` (the ratio guard), else it is 0.
    Surge { kinds: Vec<Kind>, window: Ts, ratio_num: u64, ratio_den: u64 },
    /// A weighted score (加权评定) of several indicators, in thousandths:
    /// `floor(1000 * sum(weight_i * min(value_i, cap_i) / cap_i))`, computed exactly in integers. `kinds` is
    /// the union of the parts' kinds.
    Composite { kinds: Vec<Kind>, parts: Vec<Part> },
}

/// One indicator of a composite rule: a count (or a surge) of `kinds` over its own window, normalised by
/// `cap` and weighted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Part {
    pub kinds: Vec<Kind>,
    /// Window length in seconds.
    pub window: Ts,
    /// A surge's ratio guard `(num, den)`: the value is `cur - prev` while `cur * den >= prev * num`, else 0.
    /// `None`: a count.
    pub surge: Option<(u64, u64)>,
    /// The value at which the part counts in full.
    pub cap: u64,
    /// Weight in thousandths.
    pub weight: u64,
}

/// One windowed count a measure is made of: `(kinds, window, surge guard)`.
pub type Component<'a> = (&'a [Kind], Ts, Option<(u64, u64)>);

/// How far back an event still matters to a windowed count: `W`, or `2W` for a surge.
pub fn component_reach(&(_, window, surge): &Component<'_>) -> Ts {
    if surge.is_some() { 2 * window } else { window }
}

impl Measure {
    /// The kinds of events the rule counts.
    pub fn kinds(&self) -> &[Kind] {
        match self {
            Measure::Count { kinds, .. } | Measure::Surge { kinds, .. } | Measure::Composite { kinds, .. } => kinds,
        }
    }

    /// The window length in seconds (a composite rule's longest).
    pub fn window(&self) -> Ts {
        self.components().map(|(_, window, _)| window).max().unwrap_or(0)
    }

    /// How far back an event still matters to this rule: `W` for counts, `2W` for surges (a composite rule's
    /// longest).
    pub fn reach(&self) -> Ts {
        self.components().map(|c| component_reach(&c)).max().unwrap_or(0)
    }

    /// The windowed counts the measure is made of: one, or a composite rule's parts.
    pub fn components(&self) -> impl Iterator<Item = Component<'_>> {
        let (one, parts): (Option<Component<'_>>, &[Part]) = match self {
            Measure::Count { kinds, window } => (Some((kinds, *window, None)), &[]),
            Measure::Surge { kinds, window, ratio_num, ratio_den } => {
                (Some((kinds, *window, Some((*ratio_num, *ratio_den)))), &[])
            }
            Measure::Composite { parts, .. } => (None, parts),
        };
        one.into_iter().chain(parts.iter().map(|p| (p.kinds.as_slice(), p.window, p.surge)))
    }
}

/// Thousandths as a decimal: `650` is `0.650` (composite scores, weights).
pub fn milli_text(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{}.{:03}", v.unsigned_abs() / 1000, v.unsigned_abs() % 1000)
}

/// The names of the threshold-table slots ([`class_slot`]) as rule files write them.
pub const CLASS_SLOT_NAMES: [&str; 5] = ["A", "B", "C", "D", "unclassified"];

/// Index of a class in threshold tables: A, B, C, D, then unclassified.
pub fn class_slot(class: Option<Class>) -> usize {
    class.map_or(4, |c| c as usize)
}

/// The SPEC values of a profile's `domain`.
pub const DOMAINS: [&str; 4] = ["food", "drug", "special_equipment", "general"];

/// Which entities a rule applies to (`scope = { ... }`), from the profile and class in force at each instant.
/// Every key given must match: `domain` and `authority` exactly, `region` and `industry` by prefix, each
/// against any of its listed values; a key left out matches anything. An entity with no profile is in no
/// scope, whatever the keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scope {
    /// Domains in scope (empty: any).
    pub domains: Vec<String>,
    /// Region code prefixes in scope (empty: any).
    pub regions: Vec<String>,
    /// Industry code prefixes in scope (empty: any).
    pub industries: Vec<String>,
    /// Authorities in scope (empty: any).
    pub authorities: Vec<String>,
    /// Per class slot (A, B, C, D, unclassified: [`class_slot`]), whether it is in scope.
    pub classes: [bool; 5],
}

impl Scope {
    /// Whether a profile's region, industry, domain and authority match (the class aside).
    pub fn matches_profile(&self, [region, industry, domain, authority]: [Option<&str>; 4]) -> bool {
        let exact =
            |listed: &[String], v: Option<&str>| listed.is_empty() || v.is_some_and(|v| listed.iter().any(|l| l == v));
        let prefix = |listed: &[String], v: Option<&str>| {
            listed.is_empty() || v.is_some_and(|v| listed.iter().any(|l| v.starts_with(l.as_str())))
        };
        exact(&self.domains, domain)
            && prefix(&self.regions, region)
            && prefix(&self.industries, industry)
            && exact(&self.authorities, authority)
    }

    /// Whether the class in force is in scope.
    pub fn matches_class(&self, class: Option<Class>) -> bool {
        self.classes[class_slot(class)]
    }
}

/// One loaded rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, e.g. `penalties-3y`.
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub description: String,
    pub state: RuleState,
    pub measure: Measure,
    /// The entities it applies to (`None`: every entity, with a profile or not).
    pub scope: Option<Scope>,
    /// Effective thresholds: `[class_slot][action - 1]`, `None` where the action is not used.
    pub thresholds: [[Option<u64>; 4]; 5],
    /// Content hash of what decides the rule's alerts (measure, scope and effective thresholds).
    pub version: String,
    /// The file and line that defined it.
    pub origin: String,
}

impl Rule {
    /// The level a value reaches for a class: the highest action whose threshold it reaches.
    pub fn level(&self, class: Option<Class>, value: i64) -> u8 {
        let row = &self.thresholds[class_slot(class)];
        let mut level = 0;
        for (i, t) in row.iter().enumerate() {
            if let Some(t) = t
                && value >= 0
                && value as u64 >= *t
            {
                level = i as u8 + 1;
            }
        }
        level
    }

    /// The effective threshold of `action` for `class`.
    pub fn threshold(&self, class: Option<Class>, action: Action) -> Option<u64> {
        self.thresholds[class_slot(class)][action as usize - 1]
    }
}

/// The profile field an aggregate rule groups entities by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The administrative division code (`region` of the profile).
    Region,
    /// The industry code (`industry` of the profile).
    Industry,
    /// The supervision domain (`domain` of the profile: `food`, `drug`, ...).
    Domain,
}

impl GroupBy {
    /// `region`, `industry` or `domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Region => "region",
            GroupBy::Industry => "industry",
            GroupBy::Domain => "domain",
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One loaded `[[aggregate]]` rule: "at least N entities of one group at `min_action` or above within the
/// window" raises a regional alert (see `crate::aggregate`). It never changes the entity alert stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRule {
    /// Stable id, unique across rules and aggregates.
    pub id: String,
    /// Chinese name (the seed's wording).
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Free text.
    pub description: String,
    /// Enabled, disabled (not evaluated) or shadow (evaluated, alerts marked `shadow`).
    pub state: RuleState,
    /// The profile field that forms the groups.
    pub group_by: GroupBy,
    /// For region and industry: the group is the first `prefix` characters of the value (`None`: all of it).
    pub prefix: Option<usize>,
    /// An entity counts when one of its non-shadow entity alerts reaches this action or higher.
    pub min_action: Action,
    /// Window length in seconds: at instant `t` it holds alert times `t - window < at <= t`.
    pub window: Ts,
    /// Thresholds (distinct entities) per action, `[action - 1]`; `None` where the action is not used.
    pub thresholds: [Option<u64>; 4],
    /// Content hash of what decides its alerts (group, prefix, minimum action, window, thresholds).
    pub version: String,
    /// The file and line that defined it.
    pub origin: String,
}

impl AggregateRule {
    /// The level a count of entities reaches: the highest action whose threshold it reaches (0: none).
    pub fn level(&self, count: u64) -> u8 {
        let mut level = 0;
        for (i, t) in self.thresholds.iter().enumerate() {
            if t.is_some_and(|t| count >= t) {
                level = i as u8 + 1;
            }
        }
        level
    }

    /// The threshold of `action`.
    pub fn threshold(&self, action: Action) -> Option<u64> {
        self.thresholds[action as usize - 1]
    }

    /// The group of a profile value: its first `prefix` characters (all of it when shorter or no prefix);
    /// `None` for an empty value.
    pub fn group_of<'v>(&self, value: &'v str) -> Option<&'v str> {
        if value.is_empty() {
            return None;
        }
        let end = self.prefix.and_then(|n| value.char_indices().nth(n)).map_or(value.len(), |(i, _)| i);
        Some(&value[..end])
    }
}

/// A validated set of rules, in file order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Every rule defined, disabled ones included.
    pub all: Vec<Rule>,
    /// Indices into `all` of the rules the engine evaluates (enabled and shadow), in order.
    pub active: Vec<usize>,
    /// Every aggregate rule defined (disabled ones included), in file order. The engine ignores them.
    pub aggregates: Vec<AggregateRule>,
    /// The files it was loaded from.
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// Builds a set from rules, keeping the active ones in order (no aggregate rules: see
    /// [`RuleSet::with_aggregates`]).
    pub fn new(all: Vec<Rule>, files: Vec<PathBuf>) -> RuleSet {
        let active = all.iter().enumerate().filter(|(_, r)| r.state != RuleState::Disabled).map(|(i, _)| i).collect();
        RuleSet { all, active, aggregates: Vec::new(), files }
    }

    /// The same set with these aggregate rules.
    pub fn with_aggregates(mut self, aggregates: Vec<AggregateRule>) -> RuleSet {
        self.aggregates = aggregates;
        self
    }

    /// The same set, loaded from these files.
    pub fn with_files(mut self, files: Vec<PathBuf>) -> RuleSet {
        self.files = files;
        self
    }

    /// The same set with every disabled rule and aggregate defined under `path` (a rule file, or a folder such
    /// as a shipped domain set) enabled: what turning that set on would do. Versions do not change (a rule's
    /// state is not part of them). An error if no file of the set is under `path`.
    pub fn enabling(mut self, path: &Path) -> Result<RuleSet, String> {
        let root = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let under = |file: &Path| std::fs::canonicalize(file).is_ok_and(|f| f.starts_with(&root));
        if !self.files.iter().any(|f| under(f)) {
            return Err(format!("{}: no rule file of the set is there", path.display()));
        }
        let file_of = |origin: &str| PathBuf::from(origin.rsplit_once(':').map_or(origin, |(file, _)| file));
        for rule in self.all.iter_mut().filter(|r| r.state == RuleState::Disabled && under(&file_of(&r.origin))) {
            rule.state = RuleState::Enabled;
        }
        for a in self.aggregates.iter_mut().filter(|a| a.state == RuleState::Disabled && under(&file_of(&a.origin))) {
            a.state = RuleState::Enabled;
        }
        let aggregates = std::mem::take(&mut self.aggregates);
        Ok(RuleSet::new(self.all, self.files).with_aggregates(aggregates))
    }

    /// The aggregate rules evaluated (enabled and shadow), in order.
    pub fn active_aggregates(&self) -> impl Iterator<Item = &AggregateRule> {
        self.aggregates.iter().filter(|a| a.state != RuleState::Disabled)
    }

    /// The active rules, in evaluation order.
    pub fn active(&self) -> impl Iterator<Item = &Rule> {
        self.active.iter().map(|&i| &self.all[i])
    }

    /// Whether any active rule has a scope (the engine then keeps each entity's profile history).
    pub fn scoped(&self) -> bool {
        self.active().any(|r| r.scope.is_some())
    }

    /// The longest reach of any active rule that counts `kind`, or `None` if none does.
    pub fn reach(&self, kind: Kind) -> Option<Ts> {
        self.active()
            .flat_map(|r| r.measure.components())
            .filter(|(kinds, _, _)| kinds.contains(&kind))
            .map(|c| component_reach(&c))
            .max()
    }
}
