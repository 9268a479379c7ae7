//! The notification commands: `route-test`, `render-email` and `silence`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::admin::{Request, call};
use super::config::Notify;
use super::dispatch::Mail;
use super::notice::{Item, Notice, Span, Status};
use super::render::Templates;
use super::route::{Matchers, route};
use crate::config::Config;
use crate::engine::Profile;
use crate::event::{Class, Kind};
use crate::rules::Action;
use crate::time::{DAY, Ts, parse_rfc3339};

/// The labels of an alert to route (`route-test`).
#[derive(Debug, clap::Args)]
pub struct AlertLabels {
    /// Action of the alert: remind, warn, interview, inspect.
    #[arg(long, value_parser = parse_action)]
    pub action: Action,
    /// Rule id.
    #[arg(long, default_value = "penalties-3y")]
    pub rule: String,
    /// Class A-D (absent: unclassified).
    #[arg(long, value_parser = parse_class)]
    pub class: Option<Class>,
    /// 6-digit division code of the entity.
    #[arg(long)]
    pub region: Option<String>,
    /// food, drug, special_equipment, general.
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long)]
    pub authority: Option<String>,
    #[arg(long)]
    pub industry: Option<String>,
    /// Credit code of the entity.
    #[arg(long, default_value = "91360402DEA06F185Q")]
    pub entity: String,
}

fn parse_action(s: &str) -> Result<Action, String> {
    Action::ALL
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("expected {}", super::config::action_names()))
}

fn parse_class(s: &str) -> Result<Class, String> {
    Class::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| "expected A, B, C or D".into())
}

fn load_notify(path: &Path) -> anyhow::Result<(Config, std::sync::Arc<Notify>)> {
    let config = Config::load(path)?;
    let Some(notify) = config.notifications.clone() else {
        bail!("{}: no [notify] section", path.display());
    };
    Ok((config, notify))
}

/// `route-test`: which routes and receivers an alert with these labels reaches.
pub fn route_test(config: &Path, labels: &AlertLabels) -> anyhow::Result<bool> {
    let (_, notify) = load_notify(config)?;
    let has_profile =
        labels.region.is_some() || labels.domain.is_some() || labels.authority.is_some() || labels.industry.is_some();
    let profile = has_profile.then(|| Profile {
        at: 0,
        name: None,
        region: labels.region.as_deref().map(Into::into),
        industry: labels.industry.as_deref().map(Into::into),
        domain: labels.domain.as_deref().map(Into::into),
        authority: labels.authority.as_deref().map(Into::into),
    });
    let mut notice = sample_notice(labels.action, profile);
    notice.rule = labels.rule.clone();
    notice.class = labels.class;
    notice.entity_id = labels.entity.clone();
    for r in route(&notify.routes, &notice) {
        let r = &notify.routes[r];
        let receiver = notify.config.receivers.iter().map(|x| x.get_ref()).find(|x| x.name == r.receiver);
        let (to, cc) = receiver.map_or((String::new(), String::new()), |x| (x.to.join(", "), x.cc.join(", ")));
        let when = match r.digest_at {
            Some(at) => format!("daily digest at {:02}:{:02}", at / 3600, at / 60 % 60),
            None => format!("group_wait {} s, group_interval {} s", r.group_wait, r.group_interval),
        };
        let mute: Vec<&str> = r.mute.iter().filter_map(|&i| notify.intervals.get(i)).map(|i| i.name.as_str()).collect();
        println!(
            "route #{} (line {}, match {}) -> receiver {}: to {to}{}; group_by {}; {when}; repeat {}; send_resolved {}; muted {}",
            r.index,
            r.line,
            r.matchers.describe(),
            r.receiver,
            if cc.is_empty() { String::new() } else { format!("; cc {cc}") },
            r.group_by.join(","),
            r.repeat_after.map_or("never".into(), |s| format!("after {s} s")),
            r.send_resolved,
            if mute.is_empty() { "never".into() } else { mute.join(",") },
        );
    }
    Ok(true)
}

/// What `render-email` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Part {
    /// Subject and text part.
    Text,
    /// The HTML part.
    Html,
    /// The whole message as sent (RFC 5322).
    Eml,
}

/// `render-email`: a sample e-mail through the configured (or built-in) templates.
pub fn render_email(config: Option<&Path>, digest: bool, part: Part) -> anyhow::Result<bool> {
    let (templates, offset, notify) = match config {
        Some(c) => {
            let (_, notify) = load_notify(c)?;
            (Templates::load(notify.config.templates.as_deref())?, notify.offset, Some(notify))
        }
        None => (Templates::load(None)?, 8 * 3600, None),
    };
    let mail = sample_mail(digest);
    match part {
        Part::Text => {
            let (subject, text, _) = templates.render_parts(&mail, offset)?;
            println!("Subject: {subject}\n\n{text}");
        }
        Part::Html => println!("{}", templates.render_parts(&mail, offset)?.2),
        Part::Eml => {
            let (from, receiver) = match &notify {
                Some(n) => match n.config.receivers.first() {
                    Some(r) => (n.config.clone(), r.get_ref().clone()),
                    None => bail!("no receivers in [notify]"),
                },
                None => bail!("--part eml needs --config (From and the receiver's addresses)"),
            };
            let message = templates.message(&mail, &from, &receiver, offset)?;
            print!("{}", String::from_utf8_lossy(&message.formatted()));
        }
    }
    Ok(true)
}

/// A sample notice: a food company in Yushui district with three penalties in three years.
pub fn sample_notice(action: Action, profile: Option<Profile>) -> Notice {
    let at = parse_rfc3339("2025-03-01T09:30:00+08:00").unwrap_or_default();
    Notice {
        id: "0f6c2a4e9b1d3c5a7e8f90a1b2c3d4e5".into(),
        alert_id: "0f6c2a4e9b1d3c5a7e8f90a1b2c3d4e5".into(),
        status: Status::Firing,
        entity_id: "91360402DEA06F185Q".into(),
        rule: "penalties-3y".into(),
        rule_name_zh: "三年内受到行政处罚次数".into(),
        rule_description: "行政处罚决定（penalty）在最近 1095 天内的次数。".into(),
        action,
        previous_action: Some(Action::Warn).filter(|&w| w < action),
        at,
        value: 3,
        threshold: 3,
        class: Some(Class::C),
        windows: vec![Span { from: at - 1095 * DAY, to: at, count: 3 }],
        evidence: vec![
            Item { id: "court-2023-0412".into(), kind: Kind::Penalty, at: at - 600 * DAY },
            Item { id: "amr-cf-2024-0077".into(), kind: Kind::Penalty, at: at - 200 * DAY },
            Item { id: "amr-cf-2025-0015".into(), kind: Kind::Penalty, at },
        ],
        evidence_omitted: 0,
        score: false,
        profile,
        window_days: 1095,
        scope: None,
        entities: Vec::new(),
    }
}

fn sample_profile() -> Profile {
    Profile {
        at: 0,
        name: Some("新余市示例食品有限公司".into()),
        region: Some("360502".into()),
        industry: Some("H6210".into()),
        domain: Some("food".into()),
        authority: Some("渝水区市场监督管理局".into()),
    }
}

/// The sample e-mail of `render-email` and the golden tests.
pub fn sample_mail(digest: bool) -> Mail {
    let created: Ts = parse_rfc3339("2025-03-02T08:30:00+08:00").unwrap_or_default();
    let mut notices = vec![sample_notice(Action::Warn, Some(sample_profile()))];
    if digest {
        let mut second = sample_notice(Action::Remind, None);
        second.id = "1a2b3c4d5e6f708192a3b4c5d6e7f809".into();
        second.entity_id = "91360100MA00000012".into();
        second.rule = "sentiment-1m".into();
        second.rule_name_zh = "一个月内负面舆情条数".into();
        second.value = 2;
        second.threshold = 2;
        second.class = None;
        notices.push(second);
        let mut third = sample_notice(Action::Inspect, Some(sample_profile()));
        third.id = "2b3c4d5e6f708192a3b4c5d6e7f8091a".into();
        third.status = Status::Resolved;
        notices.push(third);
    }
    Mail {
        id: "5d41402abc4b2a76b9719d911017c592".into(), receiver: "渝水区局食品科".into(), digest, notices, created
    }
}

/// `silence` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SilenceCommand {
    /// Add a silence: alerts matching every `--match` are counted, not mailed, until it ends.
    Add {
        #[command(flatten)]
        target: Target,
        /// `label=value`, repeatable: action, rule, class, region (prefix), domain, authority, industry
        /// (prefix), entity. Several values of one label: any of them.
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// Who adds it (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Why.
        #[arg(long)]
        comment: String,
        /// How long: e.g. `90m`, `8h`, `3d`.
        #[arg(long, conflicts_with = "ends_at")]
        duration: Option<String>,
        /// End time, RFC 3339.
        #[arg(long)]
        ends_at: Option<String>,
    },
    /// List silences (active and recently expired).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        target: Target,
        id: String,
        #[arg(long)]
        author: Option<String>,
    },
}

/// Which daemon: its configuration file (the socket is found from it) or the socket itself.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The daemon's configuration file.
    #[arg(long, required_unless_present = "socket")]
    pub config: Option<PathBuf>,
    /// The admin socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        let path = self.config.as_ref().context("--config or --socket")?;
        let (config, notify) = load_notify(path)?;
        Ok(config.state_dir().join(&notify.config.admin_socket))
    }
}

fn author(given: &Option<String>) -> String {
    given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// `90m`, `8h`, `3d`, `45s` as seconds.
pub fn parse_duration(s: &str) -> Option<Ts> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: Ts = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&d| d > 0 && d <= super::config::MAX_SECS as Ts)
}

/// Parses `label=value` pairs into matchers.
pub fn parse_matchers(pairs: &[String]) -> anyhow::Result<Matchers> {
    let mut m = Matchers::default();
    for pair in pairs {
        let (k, v) = pair.split_once('=').with_context(|| format!("--match {pair:?}: expected label=value"))?;
        let v = v.to_owned();
        match k {
            "action" => m.action.push(parse_action(&v).map_err(|e| anyhow::anyhow!("action {v:?}: {e}"))?),
            "rule" => m.rule.push(v),
            "class" => m.class.push(v),
            "region" => m.region.push(v),
            "domain" => m.domain.push(v),
            "authority" => m.authority.push(v),
            "industry" => m.industry.push(v),
            "entity" => m.entity.push(v),
            _ => bail!("--match {pair:?}: unknown label {k:?}"),
        }
    }
    m.check(None).map_err(anyhow::Error::msg)?;
    Ok(m)
}

/// `silence ...`.
pub fn silence(cmd: &SilenceCommand) -> anyhow::Result<bool> {
    let (socket, request) = match cmd {
        SilenceCommand::Add { target, matchers, author: who, comment, duration, ends_at } => {
            let ends_at = match (duration, ends_at) {
                (Some(d), None) => {
                    let secs =
                        parse_duration(d).with_context(|| format!("--duration {d:?}: expected e.g. 90m, 8h, 3d"))?;
                    let end = crate::daemon::wall_now().checked_add(secs).context("--duration too long")?;
                    crate::time::format_rfc3339(end)
                }
                (None, Some(t)) => t.clone(),
                _ => bail!("give --duration or --ends-at"),
            };
            let request = Request::Add {
                matchers: Box::new(parse_matchers(matchers)?),
                author: author(who),
                comment: comment.clone(),
                starts_at: None,
                ends_at,
            };
            (target.socket()?, request)
        }
        SilenceCommand::List { target } => (target.socket()?, Request::List),
        SilenceCommand::Expire { target, id, author: who } => {
            (target.socket()?, Request::Expire { id: id.clone(), author: author(who) })
        }
    };
    let response = call(&socket, &request)?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_default());
    }
    if let Some(list) = response.silences {
        for s in list {
            println!(
                "{}  {}  {}  until {}  by {}: {}",
                s.id,
                if s.active { "active " } else { "expired" },
                s.matchers,
                s.ends_at,
                s.author,
                s.comment
            );
        }
    } else if let Some(id) = response.id {
        println!("{id}");
    }
    Ok(true)
}
