//! `[notify]`: receivers, the routing tree, grouping, quiet hours, SMTP and the outbox. Every key is
//! documented in `deploy/config.example.toml`. Parsing is strict; [`NotifyConfig::check`] refuses what a
//! parse cannot (unknown receivers and intervals, bad times, addresses lettre cannot parse) with the line.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::route::Matchers;
use crate::config::key_line;
use crate::rules::{Action, RuleSet};
use crate::time::Ts;

/// `[notify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `From:` of every e-mail, e.g. `"信用风险预警 <alerts@amr.example.gov.cn>"`.
    pub from: String,
    /// `Reply-To:`, e.g. the duty desk; absent: none.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Offset of the bureau's local time (`+08:00`): digest times, quiet hours and the times in e-mails.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// Folder of e-mail templates (see `deploy/templates/`); absent: the built-in ones.
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// Folder of notification state: groups, silences, the outbox, the audit log (relative to the state
    /// directory).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Without `[notify.smtp]`, e-mails are written here as `.eml` files instead (relative to the state
    /// directory): the embedded default, real e-mails with no mail server.
    #[serde(default = "default_mail_dir")]
    pub mail_dir: PathBuf,
    /// First wait before a failed send is retried; it doubles (with jitter) up to `retry_max_secs`.
    #[serde(default = "default_retry_min_secs")]
    pub retry_min_secs: u64,
    /// Longest wait between retries.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// An e-mail not accepted by the server this long after it was queued is moved to `dead/` in the
    /// outbox, counted and logged as an error (it is kept, never deleted).
    #[serde(default = "default_give_up_after_secs")]
    pub give_up_after_secs: u64,
    /// The admin socket (silences): a Unix socket, mode 0600, relative to the state directory.
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
    /// SMTP; absent: `.eml` files in `mail_dir`.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Who can be told.
    pub receivers: Vec<Spanned<Receiver>>,
    /// Named time intervals that routes can mute (nights, weekends, holidays).
    #[serde(default)]
    pub time_intervals: Vec<Spanned<TimeInterval>>,
    /// The routing tree's root: it catches every alert no child route takes (the default route).
    pub route: Spanned<RouteConfig>,
}

fn default_utc_offset() -> String {
    "+08:00".into()
}
fn default_dir() -> PathBuf {
    PathBuf::from("notify")
}
fn default_mail_dir() -> PathBuf {
    PathBuf::from("mail")
}
fn default_retry_min_secs() -> u64 {
    5
}
fn default_retry_max_secs() -> u64 {
    600
}
fn default_give_up_after_secs() -> u64 {
    3 * 86_400
}
fn default_admin_socket() -> PathBuf {
    PathBuf::from("admin.sock")
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on the same host.
    None,
}

/// `[notify.smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server name; with TLS, the name its certificate must carry.
    pub host: String,
    /// Port; absent: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default = "default_security")]
    pub security: Security,
    /// Connect to this address instead of resolving `host` (the certificate is still checked for `host`).
    #[serde(default)]
    pub connect_to: Option<String>,
    /// PEM file of extra CA certificates to trust (a bureau's own CA); the system's roots are trusted too.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Login name; absent: no AUTH.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (read at each connection, so it can be rotated); required with `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds before a connection or command times out.
    #[serde(default = "default_smtp_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_security() -> Security {
    Security::Starttls
}
fn default_smtp_timeout_secs() -> u64 {
    30
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        })
    }
}

/// `[[notify.receivers]]`: a unit that receives e-mail (a department, a county branch).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Name routes refer to.
    pub name: String,
    /// Addresses the e-mail goes to.
    pub to: Vec<String>,
    /// Addresses copied.
    #[serde(default)]
    pub cc: Vec<String>,
}

/// `[[notify.time_intervals]]`: an instant is inside when it matches every list given (an empty list
/// matches all); e.g. nights are `times = [{ start = "18:00", end = "08:00" }]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeInterval {
    pub name: String,
    /// `monday` .. `sunday`.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// Local times of day, `start` inclusive, `end` exclusive; an end before the start runs past midnight.
    #[serde(default)]
    pub times: Vec<TimeRange>,
    /// Local dates, `YYYY-MM-DD` (public holidays).
    #[serde(default)]
    pub dates: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

/// A route of the tree. Unset keys are inherited from the parent (the root's defaults are named below).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Which alerts the route takes (all matchers must hold; within one, any value). The root takes all.
    #[serde(default, rename = "match")]
    pub matchers: Matchers,
    /// Receiver of the alerts the route takes.
    pub receiver: Option<String>,
    /// After a match, go on to the next sibling routes too (default: stop at the first match).
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Labels whose values split alerts into groups, one e-mail per group: `entity`, `rule`, `action`,
    /// `class`, `region`, `domain`, `authority`, `industry`. Default: `["entity"]`.
    pub group_by: Option<Vec<String>>,
    /// Seconds a new group waits for more alerts before its first e-mail (default 30).
    pub group_wait_secs: Option<u64>,
    /// Seconds between two e-mails of one group (default 300).
    pub group_interval_secs: Option<u64>,
    /// Local time (`HH:MM`) at which the route's alerts go out as one daily digest, instead of after
    /// `group_wait_secs`. Typical for `remind`.
    pub digest_at: Option<String>,
    /// Seconds after which a level still standing is notified again (0: never; default 0).
    pub repeat_after_secs: Option<u64>,
    /// Also send a notice when a notified level falls to none (default false).
    pub send_resolved: Option<bool>,
    /// Names of time intervals during which the route's e-mails wait; they go out when the interval ends.
    pub mute_time_intervals: Option<Vec<String>>,
    /// Child routes, tried in order.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
}

/// Labels `group_by` accepts.
pub const GROUP_LABELS: [&str; 8] = ["entity", "rule", "action", "class", "region", "domain", "authority", "industry"];

/// A route with everything inherited resolved.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree, depth first, the root 0: part of group keys.
    pub index: usize,
    /// 1-based line in the config file (for `route-test`).
    pub line: usize,
    pub matchers: Matchers,
    pub receiver: String,
    pub continue_: bool,
    pub group_by: Vec<String>,
    pub group_wait: Ts,
    pub group_interval: Ts,
    /// Seconds after local midnight.
    pub digest_at: Option<Ts>,
    pub repeat_after: Option<Ts>,
    pub send_resolved: bool,
    pub mute: Vec<usize>,
    pub children: Vec<usize>,
}

/// A checked `[notify]`: the tree flattened, intervals parsed.
#[derive(Debug, Clone)]
pub struct Notify {
    pub config: NotifyConfig,
    /// Seconds east of UTC.
    pub offset: Ts,
    pub routes: Vec<Route>,
    pub intervals: Vec<Interval>,
}

/// Longest duration any `*_secs` key accepts: ten years.
pub const MAX_SECS: u64 = 10 * 366 * 86_400;

/// A parsed time interval.
#[derive(Debug, Clone)]
pub struct Interval {
    pub name: String,
    /// Bit `d` for weekday `d` (0 = Monday); 0: any.
    pub weekdays: u8,
    /// `(start, end)` in seconds after local midnight.
    pub times: Vec<(Ts, Ts)>,
    /// Local days since the epoch.
    pub dates: Vec<i64>,
}

const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

impl Interval {
    /// Whether local instant `t` (UTC seconds + offset) is inside.
    pub fn contains(&self, local: Ts) -> bool {
        let day = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let weekday = (day + 3).rem_euclid(7); // 1970-01-01 was a Thursday
        (self.weekdays == 0 || self.weekdays & (1 << weekday) != 0)
            && (self.dates.is_empty() || self.dates.contains(&day))
            && (self.times.is_empty()
                || self.times.iter().any(|&(s, e)| if s <= e { s <= secs && secs < e } else { secs >= s || secs < e }))
    }
}

/// A checked `[notify]` error: a line and a message.
pub type Problem = (usize, String);

impl NotifyConfig {
    /// Checks what a parse cannot and resolves the routing tree. `text` is the file (for lines).
    pub fn check(self, text: &str, rules: Option<&RuleSet>) -> Result<Notify, Problem> {
        let line = |span: std::ops::Range<usize>| crate::rules::line_of(text, span.start);
        let offset = parse_offset(&self.utc_offset).ok_or_else(|| {
            (key_line(text, "utc_offset"), format!("utc_offset {:?}: expected +HH:MM or -HH:MM", self.utc_offset))
        })?;
        for (key, addr) in std::iter::once(("from", &self.from)).chain(self.reply_to.iter().map(|r| ("reply_to", r))) {
            addr.parse::<lettre::message::Mailbox>()
                .map_err(|e| (key_line(text, key), format!("{key} {addr:?} is not an e-mail address: {e}")))?;
        }
        if self.retry_min_secs == 0 || self.retry_max_secs < self.retry_min_secs {
            return Err((key_line(text, "retry_min_secs"), "need 1 <= retry_min_secs <= retry_max_secs".into()));
        }
        for (key, v) in [("retry_max_secs", self.retry_max_secs), ("give_up_after_secs", self.give_up_after_secs)] {
            if v > MAX_SECS {
                return Err((key_line(text, key), format!("{key} is more than ten years")));
            }
        }
        if self.give_up_after_secs < self.retry_min_secs {
            return Err((
                key_line(text, "give_up_after_secs"),
                "give_up_after_secs is shorter than retry_min_secs".into(),
            ));
        }
        if let Some(smtp) = &self.smtp {
            if smtp.username.is_some() != smtp.password_file.is_some() {
                return Err((key_line(text, "username"), "smtp username and password_file go together".into()));
            }
            if smtp.username.is_some() && smtp.security == Security::None {
                return Err((
                    key_line(text, "security"),
                    "AUTH without TLS would send the password in clear: use starttls or tls".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.receivers {
            let l = line(r.span());
            let r = r.get_ref();
            if !names.insert(r.name.as_str()) {
                return Err((l, format!("receiver {:?} defined twice", r.name)));
            }
            if r.to.is_empty() {
                return Err((l, format!("receiver {:?} has no `to` address", r.name)));
            }
            for addr in r.to.iter().chain(&r.cc) {
                addr.parse::<lettre::message::Mailbox>()
                    .map_err(|e| (l, format!("receiver {:?}: {addr:?} is not an e-mail address: {e}", r.name)))?;
            }
        }
        let mut intervals = Vec::new();
        for i in &self.time_intervals {
            let l = line(i.span());
            let i = i.get_ref();
            if intervals.iter().any(|x: &Interval| x.name == i.name) {
                return Err((l, format!("time interval {:?} defined twice", i.name)));
            }
            let mut weekdays = 0u8;
            for d in &i.weekdays {
                let n = WEEKDAYS
                    .iter()
                    .position(|w| w == d)
                    .ok_or_else(|| (l, format!("weekday {d:?}: expected one of {}", WEEKDAYS.join(", "))))?;
                weekdays |= 1 << n;
            }
            let mut times = Vec::new();
            for t in &i.times {
                let parse = |s: &str| parse_hhmm(s).ok_or_else(|| (l, format!("time {s:?}: expected HH:MM")));
                times.push((parse(&t.start)?, parse(&t.end)?));
            }
            let mut dates = Vec::new();
            for d in &i.dates {
                dates.push(parse_date(d).ok_or_else(|| (l, format!("date {d:?}: expected YYYY-MM-DD")))?);
            }
            intervals.push(Interval { name: i.name.clone(), weekdays, times, dates });
        }
        let mut routes = Vec::new();
        let root = Inherited {
            receiver: None,
            group_by: vec!["entity".into()],
            group_wait: 30,
            group_interval: 300,
            digest_at: None,
            repeat_after: None,
            send_resolved: false,
            mute: Vec::new(),
        };
        let ctx = Ctx { text, receivers: &names, intervals: &intervals, rules };
        flatten(&self.route, &root, &ctx, &mut routes, true)?;
        Ok(Notify { config: self, offset, routes, intervals })
    }
}

#[derive(Clone)]
struct Inherited {
    receiver: Option<String>,
    group_by: Vec<String>,
    group_wait: Ts,
    group_interval: Ts,
    digest_at: Option<Ts>,
    repeat_after: Option<Ts>,
    send_resolved: bool,
    mute: Vec<usize>,
}

struct Ctx<'a> {
    text: &'a str,
    receivers: &'a std::collections::HashSet<&'a str>,
    intervals: &'a [Interval],
    rules: Option<&'a RuleSet>,
}

fn flatten(
    node: &Spanned<RouteConfig>,
    parent: &Inherited,
    ctx: &Ctx<'_>,
    out: &mut Vec<Route>,
    root: bool,
) -> Result<usize, Problem> {
    let line = crate::rules::line_of(ctx.text, node.span().start);
    let r = node.get_ref();
    let err = |m: String| (line, m);
    for (key, v) in [
        ("group_wait_secs", r.group_wait_secs),
        ("group_interval_secs", r.group_interval_secs),
        ("repeat_after_secs", r.repeat_after_secs),
    ] {
        if v.is_some_and(|v| v > MAX_SECS) {
            return Err(err(format!("{key} is more than ten years")));
        }
    }
    if root && !r.matchers.is_empty() {
        return Err(err("the root route takes every alert: it cannot have `match`".into()));
    }
    r.matchers.check(ctx.rules).map_err(err)?;
    let mut inh = parent.clone();
    if let Some(x) = &r.receiver {
        if !ctx.receivers.contains(x.as_str()) {
            return Err(err(format!("receiver {x:?} is not defined in [[notify.receivers]]")));
        }
        inh.receiver = Some(x.clone());
    }
    if let Some(g) = &r.group_by {
        for label in g {
            if !GROUP_LABELS.contains(&label.as_str()) {
                return Err(err(format!("group_by {label:?}: expected one of {}", GROUP_LABELS.join(", "))));
            }
        }
        inh.group_by = g.clone();
    }
    if let Some(x) = r.group_wait_secs {
        inh.group_wait = x as Ts;
    }
    if let Some(x) = r.group_interval_secs {
        inh.group_interval = x.max(1) as Ts;
    }
    if let Some(x) = &r.digest_at {
        inh.digest_at = Some(parse_hhmm(x).ok_or_else(|| err(format!("digest_at {x:?}: expected HH:MM")))?);
    }
    if let Some(x) = r.repeat_after_secs {
        inh.repeat_after = (x > 0).then_some(x as Ts);
    }
    if let Some(x) = r.send_resolved {
        inh.send_resolved = x;
    }
    if let Some(names) = &r.mute_time_intervals {
        inh.mute = names
            .iter()
            .map(|n| {
                ctx.intervals
                    .iter()
                    .position(|i| i.name == *n)
                    .ok_or_else(|| err(format!("time interval {n:?} is not defined in [[notify.time_intervals]]")))
            })
            .collect::<Result<_, _>>()?;
    }
    let Some(receiver) = inh.receiver.clone() else {
        return Err(err("the root route needs a `receiver` (the default route)".into()));
    };
    let index = out.len();
    out.push(Route {
        index,
        line,
        matchers: r.matchers.clone(),
        receiver,
        continue_: r.continue_,
        group_by: inh.group_by.clone(),
        group_wait: inh.group_wait,
        group_interval: inh.group_interval,
        digest_at: inh.digest_at,
        repeat_after: inh.repeat_after,
        send_resolved: inh.send_resolved,
        mute: inh.mute.clone(),
        children: Vec::new(),
    });
    let mut children = Vec::new();
    for child in &r.routes {
        children.push(flatten(child, &inh, ctx, out, false)?);
    }
    out[index].children = children;
    Ok(index)
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<Ts> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let secs = parse_hhmm(rest)?;
    (secs <= 23 * 3600 + 59 * 60).then_some(sign * secs)
}

/// `HH:MM` as seconds after midnight.
pub fn parse_hhmm(s: &str) -> Option<Ts> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (Ts, Ts) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

/// `YYYY-MM-DD` as days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let t = crate::time::parse_rfc3339(&format!("{s}T00:00:00Z")).ok()?;
    Some(t.div_euclid(86_400))
}

/// Actions a route or silence can name, for messages.
pub fn action_names() -> String {
    Action::ALL.map(|a| a.as_str()).join(", ")
}
