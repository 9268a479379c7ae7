//! E-mails from templates: a subject, a text part and an HTML part per kind of e-mail (`alert.*` for a
//! group's notices, `digest.*` for a daily digest), rendered by minijinja from files an operator can change
//! (`[notify] templates`; the built-in ones are `deploy/templates/`). HTML templates are auto-escaped.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use minijinja::Environment;
use serde::Serialize;

use super::config::{NotifyConfig, Receiver};
use super::dispatch::Mail;
use super::notice::{Notice, Status};
use crate::event::Kind;
use crate::rules::Action;
use crate::time::Ts;

/// The template files, all required in a templates folder.
pub const TEMPLATES: [&str; 6] =
    ["alert.subject", "alert.txt", "alert.html", "digest.subject", "digest.txt", "digest.html"];

const BUILT_IN: [(&str, &str); 6] = [
    ("alert.subject", include_str!("../../deploy/templates/alert.subject")),
    ("alert.txt", include_str!("../../deploy/templates/alert.txt")),
    ("alert.html", include_str!("../../deploy/templates/alert.html")),
    ("digest.subject", include_str!("../../deploy/templates/digest.subject")),
    ("digest.txt", include_str!("../../deploy/templates/digest.txt")),
    ("digest.html", include_str!("../../deploy/templates/digest.html")),
];

/// Why an e-mail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{path}: cannot read template: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("template {name}: {error}")]
    Template { name: String, error: String },
    #[error("e-mail: {0}")]
    Mail(String),
}

/// Loaded templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The templates of `dir`, or the built-in ones. Every template is compiled now, so a broken one is
    /// refused at startup (and by `check-config`), not at the first alert.
    pub fn load(dir: Option<&Path>) -> Result<Templates, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, text) in BUILT_IN {
            let text = match dir {
                Some(dir) => {
                    let path = dir.join(name);
                    std::fs::read_to_string(&path)
                        .map_err(|error| RenderError::Io { path: path.display().to_string(), error })?
                }
                None => text.to_owned(),
            };
            env.add_template_owned(name, text)
                .map_err(|e| RenderError::Template { name: name.into(), error: format!("{e:#}") })?;
        }
        Ok(Templates { env })
    }

    fn render(&self, name: &str, ctx: &Context<'_>) -> Result<String, RenderError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::Template { name: name.into(), error: e.to_string() })?;
        t.render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| RenderError::Template { name: name.into(), error: format!("{e:#}") })
    }

    /// Subject, text and HTML of `mail`, times shown at `offset` seconds east of UTC.
    pub fn render_parts(&self, mail: &Mail, offset: Ts) -> Result<(String, String, String), RenderError> {
        let ctx = Context::new(mail, offset);
        let kind = if mail.digest { "digest" } else { "alert" };
        let subject = self.render(&format!("{kind}.subject"), &ctx)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok((subject, self.render(&format!("{kind}.txt"), &ctx)?, self.render(&format!("{kind}.html"), &ctx)?))
    }

    /// The whole e-mail, with the stable Message-ID `<{mail.id}@credit-sentinel>` and the Date of its
    /// creation, so that the same mail is the same bytes however often it is made.
    pub fn message(
        &self,
        mail: &Mail,
        config: &NotifyConfig,
        receiver: &Receiver,
        offset: Ts,
    ) -> Result<Message, RenderError> {
        let (subject, text, html) = self.render_parts(mail, offset)?;
        let bad = |e: lettre::address::AddressError| RenderError::Mail(e.to_string());
        let mut b = Message::builder()
            .from(config.from.parse::<Mailbox>().map_err(bad)?)
            .subject(subject)
            .message_id(Some(message_id(&mail.id)))
            .date(UNIX_EPOCH + Duration::from_secs(mail.created.max(0) as u64));
        if let Some(r) = &config.reply_to {
            b = b.reply_to(r.parse::<Mailbox>().map_err(bad)?);
        }
        for to in &receiver.to {
            b = b.to(to.parse::<Mailbox>().map_err(bad)?);
        }
        for cc in &receiver.cc {
            b = b.cc(cc.parse::<Mailbox>().map_err(bad)?);
        }
        // The alerts behind the e-mail, for the bureau's own systems and the audit.
        let ids: Vec<&str> = mail.notices.iter().map(|n| n.alert_id.as_str()).collect();
        b = b.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str(ALERTS_HEADER), ids.join(" ")));
        b.multipart(MultiPart::alternative_plain_html(text, html)).map_err(|e| RenderError::Mail(e.to_string()))
    }
}

/// Header listing the ids of the alerts an e-mail is about, space-separated.
pub const ALERTS_HEADER: &str = "X-Credit-Sentinel-Alerts";

/// The Message-ID of a mail.
pub fn message_id(mail_id: &str) -> String {
    format!("<{mail_id}@credit-sentinel>")
}

/// What templates see.
#[derive(Serialize)]
struct Context<'a> {
    receiver: &'a str,
    digest: bool,
    count: usize,
    /// The highest action among the notices, in Chinese.
    highest_action_zh: &'static str,
    created: String,
    notices: Vec<NoticeView<'a>>,
    /// The notice with the highest action (the first of them), for subjects.
    top: usize,
}

#[derive(Serialize)]
struct NoticeView<'a> {
    status: Status,
    status_zh: &'static str,
    entity_id: &'a str,
    name: &'a str,
    region: &'a str,
    industry: &'a str,
    domain: &'a str,
    domain_zh: &'static str,
    authority: &'a str,
    rule: &'a str,
    rule_name_zh: &'a str,
    rule_description: &'a str,
    action: &'static str,
    action_zh: &'static str,
    action_meaning: &'static str,
    previous_action_zh: &'static str,
    at: String,
    /// A composite rule's score (its `value` and `threshold` are decimals, `0.650`), not a count.
    score: bool,
    /// A count, or a composite rule's score as a decimal (`0.650`).
    value: String,
    threshold: String,
    class: &'static str,
    class_zh: &'static str,
    window_days: i64,
    windows: Vec<WindowView>,
    evidence: Vec<EvidenceView<'a>>,
    /// Events behind the alert in all, listed or not.
    evidence_total: u64,
    /// A regional alert's scope (`region`, `industry`, `domain`); absent for an entity's alert.
    scope: Option<&'a str>,
    /// A regional alert's counted entities.
    entities: Vec<&'a str>,
}

#[derive(Serialize)]
struct WindowView {
    from: String,
    to: String,
    count: u64,
}

#[derive(Serialize)]
struct EvidenceView<'a> {
    id: &'a str,
    kind: &'static str,
    kind_zh: &'static str,
    at: String,
}

impl<'a> Context<'a> {
    fn new(mail: &'a Mail, offset: Ts) -> Context<'a> {
        let highest = mail.notices.iter().filter(|n| n.status != Status::Resolved).map(|n| n.action).max();
        let top =
            mail.notices.iter().position(|n| n.status != Status::Resolved && Some(n.action) == highest).unwrap_or(0);
        Context {
            receiver: &mail.receiver,
            digest: mail.digest,
            count: mail.notices.len(),
            highest_action_zh: highest.map_or("解除", action_zh),
            created: local_time(mail.created, offset),
            notices: mail.notices.iter().map(|n| NoticeView::new(n, offset)).collect(),
            top,
        }
    }
}

impl<'a> NoticeView<'a> {
    fn new(n: &'a Notice, offset: Ts) -> NoticeView<'a> {
        let p = n.profile.as_ref();
        let field = |f: Option<&'a str>| f.unwrap_or("未登记");
        let domain = p.and_then(|p| p.domain.as_deref());
        NoticeView {
            status: n.status,
            status_zh: match n.status {
                Status::Firing => "预警",
                Status::Repeat => "持续预警",
                Status::Resolved => "已解除",
            },
            entity_id: &n.entity_id,
            name: field(p.and_then(|p| p.name.as_deref())),
            region: field(p.and_then(|p| p.region.as_deref())),
            industry: field(p.and_then(|p| p.industry.as_deref())),
            domain: domain.unwrap_or(""),
            domain_zh: match domain {
                Some("food") => "食品",
                Some("drug") => "药品",
                Some("special_equipment") => "特种设备",
                Some("general") => "一般",
                _ => "未登记",
            },
            authority: field(p.and_then(|p| p.authority.as_deref())),
            rule: &n.rule,
            rule_name_zh: &n.rule_name_zh,
            rule_description: &n.rule_description,
            action: n.action.as_str(),
            action_zh: action_zh(n.action),
            action_meaning: action_meaning(n.action),
            previous_action_zh: n.previous_action.map_or("无", action_zh),
            at: local_time(n.at, offset),
            score: n.score,
            value: if n.score { crate::rules::milli_text(n.value) } else { n.value.to_string() },
            threshold: if n.score { crate::rules::milli_text(n.threshold as i64) } else { n.threshold.to_string() },
            class: n.class.map_or("未分类", |c| c.as_str()),
            class_zh: match n.class.map(|c| c.as_str()) {
                Some("A") => "A类（信用风险低）",
                Some("B") => "B类（信用风险一般）",
                Some("C") => "C类（信用风险较高）",
                Some("D") => "D类（信用风险高）",
                _ => "未分类（按C类阈值）",
            },
            window_days: n.window_days,
            windows: n
                .windows
                .iter()
                .map(|w| WindowView { from: local_time(w.from, offset), to: local_time(w.to, offset), count: w.count })
                .collect(),
            evidence: n
                .evidence
                .iter()
                .map(|e| EvidenceView {
                    id: &e.id,
                    kind: e.kind.as_str(),
                    kind_zh: kind_zh(e.kind),
                    at: local_time(e.at, offset),
                })
                .collect(),
            evidence_total: n.evidence.len() as u64 + n.evidence_omitted,
            scope: n.scope.as_deref(),
            entities: n.entities.iter().map(String::as_str).collect(),
        }
    }
}

pub fn action_zh(a: Action) -> &'static str {
    match a {
        Action::Remind => "提醒",
        Action::Warn => "警示",
        Action::Interview => "约谈",
        Action::Inspect => "检查",
    }
}

/// What each action asks of the supervisor (seed 三(五): 提醒、警示、约谈、检查等措施，依法处置市场主体风险隐患).
pub fn action_meaning(a: Action) -> &'static str {
    match a {
        Action::Remind => "提醒：告知市场主体存在的风险隐患，督促其自查自纠。",
        Action::Warn => "警示：书面警示市场主体，责令其限期整改并报告整改情况。",
        Action::Interview => "约谈：约谈市场主体法定代表人或负责人，指出问题，督促落实整改。",
        Action::Inspect => "检查：将市场主体列入重点检查，依法开展现场检查，处置风险隐患。",
    }
}

pub fn kind_zh(k: Kind) -> &'static str {
    match k {
        Kind::AddressChange => "登记住所变更",
        Kind::Penalty => "行政处罚",
        Kind::Lawsuit => "诉讼",
        Kind::Complaint => "投诉举报",
        Kind::NegativeSentiment => "负面舆情",
        Kind::Classification => "信用风险分类",
        Kind::Profile => "主体信息",
    }
}

/// `2025-03-01 09:30:00 (UTC+08:00)`-style local time, as `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(t: Ts, offset: Ts) -> String {
    let local = t + offset;
    let (y, m, d) = crate::time::civil_from_days(local.div_euclid(86_400));
    let s = local.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
