//! The notification policy through the dispatcher's API, with a wall clock of our own.

use std::sync::Arc;

use super::cli::sample_notice;
use super::config::{Notify, NotifyConfig};
use super::dispatch::{Dispatcher, FallNote, Mail, Op, State};
use super::notice::{Notice, Status};
use super::route::{Matchers, route};
use crate::engine::Profile;
use crate::rules::Action;
use crate::time::{Ts, parse_rfc3339};

const CONFIG: &str = r#"
[notify]
from = "预警 <alerts@amr.example.cn>"
[[notify.receivers]]
name = "reg"
to = ["reg@amr.example.cn"]
[[notify.receivers]]
name = "food"
to = ["food@amr.example.cn"]
[[notify.receivers]]
name = "insp"
to = ["insp@amr.example.cn"]
[[notify.time_intervals]]
name = "nights"
times = [{ start = "20:00", end = "08:00" }]
[notify.route]
receiver = "reg"
group_wait_secs = 30
group_interval_secs = 300
[[notify.route.routes]]
match = { action = ["inspect"] }
receiver = "insp"
group_wait_secs = 0
continue = true
[[notify.route.routes]]
match = { domain = ["food"] }
receiver = "food"
send_resolved = true
repeat_after_secs = 3600
[[notify.route.routes]]
match = { action = ["remind"] }
digest_at = "08:30"
group_by = []
mute_time_intervals = ["nights"]
[[notify.route.routes]]
match = { region = ["3606"], action = ["warn"] }
mute_time_intervals = ["nights"]
"#;

#[derive(serde::Deserialize)]
struct File {
    notify: toml::Spanned<NotifyConfig>,
}

fn notify(text: &str) -> Result<Notify, (usize, String)> {
    let file: File = toml::from_str(text).map_err(|e| (0, e.to_string()))?;
    file.notify.into_inner().check(text, None)
}

fn dispatcher() -> Dispatcher {
    Dispatcher::new(State::default(), Arc::new(notify(CONFIG).unwrap()))
}

/// The ops the notifier applies, as calls.
trait Ops {
    fn accept(&mut self, n: Notice, now: Ts);
    /// Due groups become e-mails, which are committed to the (imaginary) outbox at once.
    fn due(&mut self, now: Ts) -> Vec<Mail>;
    fn fall(&mut self, to: Option<Action>, at: Ts, entity: &str, rule: &str);
    fn silence(
        &mut self,
        m: Matchers,
        author: &str,
        comment: &str,
        from: Ts,
        to: Ts,
        now: Ts,
    ) -> Result<String, String>;
    fn expire(&mut self, id: &str, by: &str, now: Ts);
}

impl Ops for Dispatcher {
    fn accept(&mut self, n: Notice, now: Ts) {
        self.apply(&Op::Accept { notice: Box::new(n), now });
    }
    fn due(&mut self, now: Ts) -> Vec<Mail> {
        self.apply(&Op::Flush { now, everything: false });
        let mails = self.inflight().to_vec();
        self.apply(&Op::Commit { ids: mails.iter().map(|m| m.id.clone()).collect() });
        mails
    }
    fn fall(&mut self, to: Option<Action>, at: Ts, entity: &str, rule: &str) {
        let fall = FallNote { to, at, value: 0, class: None };
        self.apply(&Op::Fall { entity_id: entity.into(), rule: rule.into(), fall, now: at });
    }
    fn silence(
        &mut self,
        m: Matchers,
        author: &str,
        comment: &str,
        from: Ts,
        to: Ts,
        now: Ts,
    ) -> Result<String, String> {
        let silence = self.new_silence(m, author.into(), comment.into(), from, to, now)?;
        let id = silence.id.clone();
        self.apply(&Op::AddSilence { silence: Box::new(silence) });
        Ok(id)
    }
    fn expire(&mut self, id: &str, by: &str, now: Ts) {
        self.apply(&Op::ExpireSilence { id: id.into(), by: by.into(), now });
    }
}

/// 2025-03-03 (a Monday) at a local time.
fn at(hhmm: &str) -> Ts {
    parse_rfc3339(&format!("2025-03-03T{hhmm}:00+08:00")).unwrap()
}

fn profile(domain: &str, region: &str) -> Option<Profile> {
    Some(Profile { domain: Some(domain.into()), region: Some(region.into()), ..Default::default() })
}

/// A firing notice for `entity` (a number), `action`, with a profile.
fn n(entity: u32, action: Action, profile: Option<Profile>, id: &str) -> Notice {
    let mut n = sample_notice(action, profile);
    n.entity_id = format!("E{entity}");
    n.id = id.into();
    n.alert_id = id.into();
    n
}

/// (receiver, notice ids) of each mail.
fn brief(mails: &[Mail]) -> Vec<(String, Vec<String>)> {
    let mut v: Vec<_> =
        mails.iter().map(|m| (m.receiver.clone(), m.notices.iter().map(|n| n.id.clone()).collect())).collect();
    v.sort();
    v
}

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn routes_follow_the_tree_with_continue_and_the_default_route() {
    let cfg = notify(CONFIG).unwrap();
    let r = |action, p| route(&cfg.routes, &n(1, action, p, "x"));
    assert_eq!(r(Action::Inspect, profile("food", "360502")), vec![1, 2], "inspect continues to the food route");
    assert_eq!(r(Action::Inspect, None), vec![1]);
    assert_eq!(r(Action::Warn, profile("food", "360502")), vec![2]);
    assert_eq!(r(Action::Remind, None), vec![3], "a remind with no profile goes to the digest");
    assert_eq!(r(Action::Warn, None), vec![0], "no profile: the default route");
    assert_eq!(r(Action::Warn, profile("general", "360602")), vec![4], "region matches by prefix");
    assert_eq!(r(Action::Warn, profile("general", "360502")), vec![0]);
}

#[test]
fn bad_configs_are_refused_with_their_line() {
    let err = |from: &str, to: &str| notify(&CONFIG.replace(from, to)).unwrap_err();
    assert_eq!(err("receiver = \"insp\"", "receiver = \"nobody\"").0, 20, "the line of the route");
    assert!(err("receiver = \"insp\"", "receiver = \"nobody\"").1.contains("\"nobody\" is not defined"));
    assert!(err("digest_at = \"08:30\"", "digest_at = \"8:30\"").1.contains("expected HH:MM"));
    assert!(err("domain = [\"food\"]", "domain = [\"foods\"]").1.contains("domain \"foods\""));
    assert!(
        err("[\"nights\"]\n[[notify.route.routes]]", "[\"night\"]\n[[notify.route.routes]]").1.contains("\"night\"")
    );
    assert!(err("group_by = []", "group_by = [\"name\"]").1.contains("group_by \"name\""));
    assert!(err("to = [\"reg@amr.example.cn\"]", "to = [\"not an address\"]").1.contains("not an e-mail address"));
    // A password is never sent in clear (THREAT-MODEL.md: SMTP).
    let smtp = |security: &str| {
        format!(
            "{CONFIG}[notify.smtp]\nhost = \"relay\"\nsecurity = \"{security}\"\nusername = \"u\"\npassword_file = \"/p\"\n"
        )
    };
    assert!(notify(&smtp("none")).unwrap_err().1.contains("AUTH without TLS"));
    assert!(notify(&smtp("starttls")).is_ok());
}

#[test]
fn groups_wait_then_go_out_at_most_once_per_interval() {
    let mut d = dispatcher();
    let t = at("10:00");
    d.accept(n(1, Action::Warn, None, "a"), t);
    d.accept(n(1, Action::Warn, None, "b"), t + 10);
    d.accept(n(2, Action::Warn, None, "c"), t + 20);
    assert!(d.due(t + 29).is_empty(), "group_wait is 30 s");
    assert_eq!(brief(&d.due(t + 30)), vec![(s("reg"), vec![s("a"), s("b")])]);
    assert_eq!(d.next_due(), Some(t + 50));
    assert_eq!(brief(&d.due(t + 50)), vec![(s("reg"), vec![s("c")])]);
    // A new alert of a group that just sent waits for its interval.
    d.accept(n(1, Action::Warn, None, "d"), t + 60);
    assert!(d.due(t + 329).is_empty());
    assert_eq!(brief(&d.due(t + 330)), vec![(s("reg"), vec![s("d")])]);
}

#[test]
fn reminds_are_collected_into_a_daily_digest_and_a_higher_action_inhibits_a_lower_one_waiting() {
    let mut d = dispatcher();
    d.accept(n(1, Action::Remind, None, "r1"), at("10:00"));
    d.accept(n(2, Action::Remind, None, "r2"), at("11:00"));
    d.accept(n(3, Action::Remind, None, "r3"), at("12:00"));
    // Entity 3 rises to inspect, which goes to the inspection bureau only: registration still learns of
    // the remind (inhibition stays within a receiver).
    d.accept(n(3, Action::Inspect, None, "i3"), at("12:05"));
    assert_eq!(brief(&d.due(at("12:05"))), vec![(s("insp"), vec![s("i3")])]);
    assert_eq!(d.state.counts.inhibited, 0);
    // Entity 1 rises to warn, for the same receiver: its remind leaves the digest, and while the warn
    // waits a later remind of entity 1 is withdrawn at once.
    d.accept(n(1, Action::Warn, None, "w1"), at("12:10"));
    assert_eq!(d.state.counts.inhibited, 1);
    d.accept(n(1, Action::Remind, None, "r1b"), at("12:10"));
    assert_eq!(d.state.counts.inhibited, 2);
    assert_eq!(brief(&d.due(at("12:10") + 30)), vec![(s("reg"), vec![s("w1")])]);
    assert!(d.due(at("23:59")).is_empty());
    let next_morning = at("08:30") + 86_400;
    assert_eq!(d.next_due(), Some(next_morning));
    let digest = d.due(next_morning);
    assert_eq!(brief(&digest), vec![(s("reg"), vec![s("r2"), s("r3")])]);
    assert!(digest[0].digest);
}

#[test]
fn a_muted_route_holds_its_mail_until_the_interval_ends() {
    let mut d = dispatcher();
    d.accept(n(1, Action::Warn, profile("general", "360602"), "w"), at("21:00"));
    assert!(d.due(at("21:00") + 30).is_empty(), "nights are muted");
    assert!(d.due(at("07:59") + 86_400).is_empty());
    assert_eq!(d.next_due(), Some(at("08:00") + 86_400));
    assert_eq!(brief(&d.due(at("08:00") + 86_400)), vec![(s("reg"), vec![s("w")])]);
}

#[test]
fn standing_levels_repeat_and_resolve_on_routes_that_ask() {
    let mut d = dispatcher();
    let t = at("10:00");
    let warn = n(1, Action::Warn, profile("food", "360502"), "w");
    d.accept(warn.clone(), t);
    assert_eq!(brief(&d.due(t + 30)), vec![(s("food"), vec![s("w")])]);
    // Still standing an hour later: notified again.
    assert!(d.due(t + 3599).is_empty());
    assert!(d.due(t + 3600).is_empty(), "the repeat joins its group and waits group_wait");
    let mails = d.due(t + 3600 + 30);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].notices[0].status, Status::Repeat);
    // A partial fall sends nothing; a fall to none sends "resolved".
    d.fall(Some(Action::Remind), t + 4000, "E1", &warn.rule);
    assert!(d.due(t + 5000).is_empty());
    // A fall evaluated before the standing rise (handed over late) changes nothing.
    d.fall(None, warn.at - 1, "E1", &warn.rule);
    assert!(d.due(t + 5500).is_empty());
    d.fall(None, t + 6000, "E1", &warn.rule);
    let resolved = d.due(t + 6000 + 30);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].notices[0].status, Status::Resolved);
    assert!(d.due(t + 100_000).is_empty(), "a resolved level is not repeated");
}

#[test]
fn silences_stop_mail_while_active_and_are_counted() {
    let mut d = dispatcher();
    let t = at("10:00");
    let m = Matchers { rule: vec!["penalties-3y".into()], ..Default::default() };
    let id = d.silence(m, "张三", "整改期内", t, t + 3600, t).unwrap();
    d.accept(n(1, Action::Warn, None, "a"), t + 10);
    assert!(d.due(t + 100).is_empty());
    assert_eq!(d.state.counts.silenced, 1);
    // A silence added while an alert waits applies too.
    d.expire(&id, "李四", t + 200);
    d.accept(n(2, Action::Warn, None, "b"), t + 200);
    let m = Matchers { entity: vec![], region: vec![], action: vec![Action::Warn], ..Default::default() };
    d.silence(m, "王五", "测试", t + 210, t + 7200, t + 210).unwrap();
    assert!(d.due(t + 230).is_empty());
    assert_eq!(d.state.counts.silenced, 2);
    // Refused: no matcher, no comment, already ended.
    assert!(d.silence(Matchers::default(), "a", "b", t, t + 10, t).is_err());
    let any = Matchers { action: vec![Action::Remind], ..Default::default() };
    assert!(d.silence(any.clone(), "a", " ", t, t + 10, t).is_err());
    assert!(d.silence(any, "a", "b", t, t - 1, t).is_err());
}

#[test]
fn a_notice_taken_again_is_dropped_and_state_survives_a_restart() {
    let mut d = dispatcher();
    let t = at("10:00");
    d.accept(n(1, Action::Warn, None, "a"), t);
    let json = serde_json::to_vec(&d.state).unwrap();
    let mut back = Dispatcher::new(serde_json::from_slice(&json).unwrap(), Arc::new(notify(CONFIG).unwrap()));
    back.accept(n(1, Action::Warn, None, "a"), t + 5);
    assert_eq!(back.state.counts.duplicates, 1);
    let after_restart = back.due(t + 30);
    assert_eq!(brief(&after_restart), vec![(s("reg"), vec![s("a")])]);
    // Same group, same notices: the same mail id (so the same Message-ID) as without the restart.
    let without = d.due(t + 30);
    assert_eq!(after_restart[0].id, without[0].id);
}

#[test]
fn replaying_the_ops_over_a_snapshot_rebuilds_the_same_state() {
    let t = at("10:00");
    let ops = vec![
        Op::Accept { notice: Box::new(n(1, Action::Warn, profile("food", "360502"), "a")), now: t },
        Op::Accept { notice: Box::new(n(2, Action::Remind, None, "b")), now: t + 1 },
        Op::Flush { now: t + 30, everything: false },
        Op::Accept { notice: Box::new(n(1, Action::Inspect, profile("food", "360502"), "c")), now: t + 40 },
        Op::Fall {
            entity_id: "E1".into(),
            rule: "penalties-3y".into(),
            fall: FallNote { to: None, at: t + 50, value: 0, class: None },
            now: t + 50,
        },
        Op::Flush { now: t + 400, everything: true },
    ];
    let mut whole = dispatcher();
    for op in &ops {
        whole.apply(op);
    }
    // A snapshot after three ops, then the rest.
    let mut first = dispatcher();
    for op in &ops[..3] {
        first.apply(op);
    }
    let snapshot = serde_json::to_vec(&first.state).unwrap();
    let mut resumed = Dispatcher::new(serde_json::from_slice(&snapshot).unwrap(), Arc::new(notify(CONFIG).unwrap()));
    for op in &ops[3..] {
        resumed.apply(op);
    }
    assert_eq!(serde_json::to_value(&resumed.state).unwrap(), serde_json::to_value(&whole.state).unwrap());
    assert_eq!(whole.state.seq, 6);
    assert!(whole.inflight().len() >= 3, "{:?}", brief(whole.inflight()));
}

#[test]
fn the_journal_tolerates_a_torn_last_record_and_refuses_damage_in_the_middle() {
    use super::journal::Journal;
    let dir = tempfile::tempdir().unwrap();
    let t = at("10:00");
    let (state, ops, mut journal) = Journal::open(dir.path()).unwrap();
    assert!(ops.is_empty());
    let mut d = Dispatcher::new(state, Arc::new(notify(CONFIG).unwrap()));
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let op = Op::Accept { notice: Box::new(n(i as u32, Action::Warn, None, id)), now: t };
        d.apply(&op);
        journal.append(d.state.seq, &op).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let path = dir.path().join("journal.jsonl");
    let whole = std::fs::read(&path).unwrap();
    // Cut inside the last record, in the middle of a character of the rule's Chinese name: not UTF-8.
    let last_start = whole[..whole.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let zh = whole[last_start..].windows(3).position(|w| w == "三".as_bytes()).unwrap() + last_start + 1;
    std::fs::write(&path, &whole[..zh]).unwrap();
    let (state, ops, _) = Journal::open(dir.path()).unwrap();
    assert_eq!((state.seq, ops.len()), (0, 2), "the torn third record is ignored");
    // A damaged record followed by good ones is refused, not skipped.
    let mut damaged = whole.clone();
    damaged[5] = b'#';
    std::fs::write(&path, &damaged).unwrap();
    assert!(Journal::open(dir.path()).is_err());
    // So is a gap in the sequence.
    let lines: Vec<&[u8]> = whole.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    std::fs::write(&path, [lines[0], lines[2]].join(&b'\n')).unwrap();
    assert!(Journal::open(dir.path()).is_err());
}

#[test]
fn each_route_repeats_a_standing_level_on_its_own_schedule() {
    let text = CONFIG.replace(
        "receiver = \"insp\"\ngroup_wait_secs = 0\ncontinue = true",
        "receiver = \"insp\"\ngroup_wait_secs = 0\ncontinue = true\nrepeat_after_secs = 7200",
    );
    let mut d = Dispatcher::new(State::default(), Arc::new(notify(&text).unwrap()));
    let t = at("10:00");
    d.accept(n(1, Action::Inspect, profile("food", "360502"), "i"), t);
    assert_eq!(brief(&d.due(t + 30)).len(), 2, "the inspection bureau and the food department");
    let mut repeats: Vec<(String, Ts)> = Vec::new();
    for step in 1..=16 {
        let now = t + 30 + step * 900;
        for m in d.due(now) {
            repeats.extend(m.notices.iter().filter(|n| n.status == Status::Repeat).map(|_| (m.receiver.clone(), now)));
        }
    }
    let count = |r: &str| repeats.iter().filter(|(x, _)| x == r).count();
    // Four hours: the food route (hourly) repeats about four times, the inspection route (two-hourly) twice.
    assert!(count("food") >= 3, "{repeats:?}");
    assert_eq!(count("insp"), 2, "{repeats:?}");
}

#[test]
fn over_the_outbox_limit_an_email_is_kept_in_dead_unsent_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    // No [notify.smtp]: the embedded transport (.eml files), with an outbox of one e-mail.
    let notifier = super::Notifier::open(Arc::new(notify(CONFIG).unwrap()), dir.path(), 1).unwrap();
    let t = at("10:00");
    for e in 1..=3 {
        notifier.op(Op::Accept { notice: Box::new(n(e, Action::Warn, None, &format!("a{e}"))), now: t });
    }
    // One e-mail per entity: the first fills the outbox, the other two go to dead/ without being sent.
    assert_eq!(notifier.flush_due(t + 30, false).unwrap(), 3);
    let count = |sub: &str| {
        std::fs::read_dir(dir.path().join("notify/outbox").join(sub))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
            .count()
    };
    assert_eq!((count(""), count("dead")), (1, 2));
    assert_eq!(notifier.stats.limits.count(crate::limits::Limit::Outbox), 2);
    let audit = std::fs::read_to_string(dir.path().join("notify/audit.jsonl")).unwrap();
    assert_eq!(audit.lines().filter(|l| l.contains("\"outbox_full\"")).count(), 2, "{audit}");
    // The one in the outbox is delivered; the two kept aside are not retried.
    notifier.deliver(t + 31);
    assert_eq!((count(""), count("dead")), (0, 2));
}

#[test]
fn an_admin_request_over_its_limit_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let notifier = super::Notifier::open(Arc::new(notify(CONFIG).unwrap()), dir.path(), 10).unwrap();
    let long = format!(r#"{{"op":"list","x":"{}"}}"#, "x".repeat(super::admin::MAX_REQUEST as usize));
    let response = super::admin::answer(&notifier, long.as_bytes());
    assert!(!response.ok && response.error.unwrap().contains("longer than 65536 bytes"));
    assert_eq!(notifier.stats.limits.count(crate::limits::Limit::AdminRequest), 1);
    assert!(super::admin::answer(&notifier, br#"{"op":"list"}"#).ok);
}

#[test]
fn a_composite_rules_score_is_shown_as_a_decimal() {
    let mut mail = super::cli::sample_mail(false);
    let n = &mut mail.notices[0];
    (n.score, n.value, n.threshold) = (true, 650, 600);
    let templates = super::render::Templates::load(None).unwrap();
    let (_, text, _) = templates.render_parts(&mail, 8 * 3600).unwrap();
    assert!(text.contains("指标值：0.650（") && text.contains("阈值 0.600，加权评分）"), "{text}");
    mail.notices[0].score = false;
    let (_, text, _) = templates.render_parts(&mail, 8 * 3600).unwrap();
    assert!(text.contains("指标值：650（"), "{text}");
}
