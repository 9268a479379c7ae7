//! E-mail notifications end to end: the daemon as a process, a real SMTP server on a local port
//! (`tests/smtp/server.py`, aiosmtpd), and what the server received. Also the golden files of the
//! rendered e-mails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_credit-sentinel");

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The SMTP server, stopped when dropped.
struct Smtp {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    fn start(maildir: &Path, port: u16, extra: &[&str]) -> Smtp {
        std::fs::create_dir_all(maildir).unwrap();
        let mut child = Command::new("python3")
            .arg(manifest().join("tests/smtp/server.py"))
            .args(["--port", &port.to_string(), "--maildir"])
            .arg(maildir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 and tests/smtp/requirements.txt are needed (`.ci/run` installs them)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("PORT ").unwrap_or_else(|| panic!("server said {line:?}")).parse().unwrap();
        Smtp { child, port, maildir: maildir.to_owned() }
    }

    /// (Message-ID, recipients, alert ids) of every message received, in order.
    fn received(&self) -> Vec<Received> {
        let Ok(text) = std::fs::read_to_string(self.maildir.join("messages.jsonl")) else { return Vec::new() };
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let seq = v["seq"].as_u64().unwrap();
                let eml = std::fs::read_to_string(self.maildir.join(format!("{seq:06}.eml"))).unwrap();
                let alerts = alert_ids(&eml);
                Received {
                    message_id: v["message_id"].as_str().unwrap().to_owned(),
                    to: v["rcpt_tos"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect(),
                    alerts,
                    subject: v["subject"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
struct Received {
    message_id: String,
    to: Vec<String>,
    alerts: Vec<String>,
    subject: String,
}

/// The alert ids in an e-mail's `X-Credit-Sentinel-Alerts` header (folded over several lines when long).
fn alert_ids(eml: &str) -> Vec<String> {
    let mut lines = eml.lines().skip_while(|l| !l.starts_with("X-Credit-Sentinel-Alerts:"));
    let Some(first) = lines.next() else { return Vec::new() };
    let mut value = first["X-Credit-Sentinel-Alerts:".len()..].to_owned();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push_str(l);
    }
    value.split_whitespace().map(str::to_owned).collect()
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const RECEIVERS: &str = r#"
[[notify.receivers]]
name = "登记注册科"
to = ["reg@amr.example.cn"]
[[notify.receivers]]
name = "食品安全科"
to = ["food@amr.example.cn", "food2@amr.example.cn"]
[[notify.receivers]]
name = "药品医疗器械科"
to = ["drug@amr.example.cn"]
[[notify.receivers]]
name = "执法稽查局"
to = ["insp@amr.example.cn"]
cc = ["director@amr.example.cn"]
"#;

/// Routes: inspect to the inspection bureau (and on), food and drug to their departments, remind of the
/// rest into one digest, the rest to registration. `wait` is every group's wait.
fn routes(wait: u64) -> String {
    format!(
        r#"
[notify.route]
receiver = "登记注册科"
group_wait_secs = {wait}
group_interval_secs = 1
[[notify.route.routes]]
match = {{ action = ["inspect"] }}
receiver = "执法稽查局"
continue = true
[[notify.route.routes]]
match = {{ domain = ["food"] }}
receiver = "食品安全科"
[[notify.route.routes]]
match = {{ domain = ["drug"] }}
receiver = "药品医疗器械科"
[[notify.route.routes]]
match = {{ action = ["remind"] }}
group_by = []
digest_at = "08:30"
"#
    )
}

/// A configuration: the sample events (event clock), alerts to `state/alerts.jsonl`, `[notify]` with
/// `smtp` (a TOML table body, or nothing for .eml files).
fn config(dir: &Path, events: &Path, follow: bool, smtp: &str, wait: u64) -> PathBuf {
    let text = format!(
        r#"rules = "{rules}"
state_dir = "{state}"
[clock]
mode = "event"
[checkpoint]
interval_secs = 1
[file]
path = "{events}"
follow = {follow}
poll_ms = 20
alerts = "alerts.jsonl"
[notify]
from = "信用风险预警 <alerts@amr.example.cn>"
retry_min_secs = 1
retry_max_secs = 2
{smtp}
{RECEIVERS}
{routes}"#,
        rules = manifest().join("alert-rules").display(),
        state = dir.join("state").display(),
        events = events.display(),
        routes = routes(wait),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn smtp_table(port: u16, extra: &str) -> String {
    format!(
        "[notify.smtp]\nhost = \"localhost\"\nconnect_to = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout_secs = 5\n{extra}\n"
    )
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(BIN).args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit {status}");
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The audit log's lines.
fn audit(dir: &Path) -> Vec<serde_json::Value> {
    // The daemon may be writing: a torn last line is skipped.
    std::fs::read_to_string(dir.join("state/notify/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn audit_ids(dir: &Path, event: &str, field: &str) -> BTreeSet<String> {
    audit(dir).iter().filter(|l| l["event"] == event).map(|l| l[field].as_str().unwrap().to_owned()).collect()
}

/// Alert ids of the notices still waiting in their groups (a digest due tomorrow), from the persisted state.
fn waiting(dir: &Path) -> BTreeSet<String> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/notify/state.json")).unwrap()).unwrap();
    let groups = state["groups"].as_object().unwrap();
    groups
        .values()
        .flat_map(|g| g["pending"].as_array().unwrap().iter().map(|n| n["alert_id"].as_str().unwrap().to_owned()))
        .collect()
}

/// Entries still in the outbox.
fn outbox_len(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("state/notify/outbox"))
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

/// `alert_id -> (entity, action)` of the alerts the daemon wrote.
fn alerts(dir: &Path) -> BTreeMap<String, (String, String)> {
    std::fs::read_to_string(dir.join("state/alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            (s("alert_id"), (s("entity_id"), s("action")))
        })
        .collect()
}

/// `entity -> domain` from the sample's profile events.
fn domains(events: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "profile")
        .map(|v| (v["entity_id"].as_str().unwrap().to_owned(), v["data"]["domain"].as_str().unwrap().to_owned()))
        .collect()
}

const RANK: [&str; 4] = ["remind", "warn", "interview", "inspect"];

fn rank(a: &str) -> usize {
    RANK.iter().position(|x| *x == a).unwrap()
}

#[test]
fn alerts_reach_the_routed_receivers_grouped_inhibited_and_digested() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(&dir.path().join("mail"), 0, &[]);
    let events = manifest().join("samples/events.jsonl");
    // Groups wait an hour: nothing goes out before the (finite) input ends and everything waiting is sent.
    let config = config(dir.path(), &events, false, &smtp_table(smtp.port, ""), 3600);
    let out = Command::new(BIN).args(["run", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // What the test expects, computed independently: each alert goes to the receivers of its routes; all
    // alerts waited together, so for each entity and receiver only those at the highest action the
    // receiver got for the entity survive inhibition.
    let mut alerts = alerts(dir.path());
    // The regional alerts of the shipped aggregate rules, from replay (one partition, event clock: the same
    // as the daemon's): their notices' entity label is `scope:group`, and they have no domain.
    let regional = dir.path().join("regional.jsonl");
    let o = Command::new(BIN)
        .args(["replay", "--quiet", "--rules"])
        .arg(manifest().join("alert-rules"))
        .arg("--regional")
        .arg(&regional)
        .arg(&events)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut regional_ids = Vec::new();
    for l in std::fs::read_to_string(&regional).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        regional_ids.push(s("alert_id"));
        alerts.insert(s("alert_id"), (format!("{}:{}", s("scope"), s("group")), s("action")));
    }
    assert!(!regional_ids.is_empty(), "the sample raises regional alerts");
    let domains = domains(&events);
    let receivers = |entity: &str, action: &str| -> Vec<&'static str> {
        let mut r = Vec::new();
        if action == "inspect" {
            r.push("insp");
        }
        match domains.get(entity).map(String::as_str) {
            Some("food") => r.push("food"),
            Some("drug") => r.push("drug"),
            _ if action == "inspect" => {}
            _ => r.push("reg"),
        }
        r
    };
    let addresses = |receiver: &str| -> Vec<&'static str> {
        match receiver {
            "insp" => vec!["insp@amr.example.cn", "director@amr.example.cn"],
            "food" => vec!["food@amr.example.cn", "food2@amr.example.cn"],
            "drug" => vec!["drug@amr.example.cn"],
            _ => vec!["reg@amr.example.cn"],
        }
    };
    let mut top: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (entity, action) in alerts.values() {
        for r in receivers(entity, action) {
            let t = top.entry((entity, r)).or_default();
            *t = (*t).max(rank(action));
        }
    }
    let mut want: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (id, (entity, action)) in &alerts {
        for r in receivers(entity, action) {
            if rank(action) == top[&(entity.as_str(), r)] {
                want.entry(id.clone()).or_default().extend(addresses(r));
            }
        }
    }
    let received = smtp.received();
    let mut got: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for m in &received {
        for a in &m.alerts {
            got.entry(a.clone()).or_default().extend(m.to.iter().map(String::as_str));
        }
    }
    assert!(want.len() > 20, "the sample raises alerts worth mailing");
    assert_eq!(got, want);
    // Each e-mail once per recipient; one e-mail per (route, entity), the reminds of the rest in one digest.
    let copies: BTreeSet<(&str, &str)> =
        received.iter().flat_map(|m| m.to.iter().map(|t| (m.message_id.as_str(), t.as_str()))).collect();
    assert_eq!(copies.len(), received.iter().map(|m| m.to.len()).sum::<usize>());
    let ids: BTreeSet<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
    let digests: Vec<&Received> = received.iter().filter(|m| m.subject.contains("日报")).collect();
    assert_eq!(digests.len(), 1, "{:?}", received.iter().map(|m| &m.subject).collect::<Vec<_>>());
    assert!(digests[0].alerts.len() > 1);
    for m in received.iter().filter(|m| !m.subject.contains("日报")) {
        let entities: BTreeSet<&str> = m.alerts.iter().map(|a| alerts[a].0.as_str()).collect();
        assert_eq!(entities.len(), 1, "grouped by entity: {m:?}");
    }
    // The audit log tells who was told what.
    let sent = audit_ids(dir.path(), "sent", "message_id");
    assert_eq!(sent, ids.iter().map(|s| s.to_string()).collect());
    let inhibited = audit(dir.path()).iter().filter(|l| l["event"] == "inhibited").count();
    let routed: usize = alerts.values().map(|(e, a)| receivers(e, a).len()).sum();
    let mailed: usize = want
        .keys()
        .map(|id| {
            receivers(&alerts[id].0, &alerts[id].1)
                .iter()
                .filter(|r| rank(&alerts[id].1) == top[&(alerts[id].0.as_str(), **r)])
                .count()
        })
        .sum();
    assert_eq!(inhibited, routed - mailed, "every withdrawn notice is audited");
}

#[test]
fn an_smtp_outage_delays_but_loses_nothing_and_sends_each_mail_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let events = manifest().join("samples/events.jsonl");
    let config = config(dir.path(), &events, true, &smtp_table(port, ""), 1);
    let daemon = spawn(&config, &dir.path().join("daemon.log"));
    // The server is down: mails are queued and retried.
    wait_for("failed attempts", 60, || audit(dir.path()).iter().filter(|l| l["event"] == "failed").count() >= 3);
    let queued = audit_ids(dir.path(), "queued", "mail");
    assert!(!queued.is_empty());
    assert!(outbox_len(dir.path()) > 0);
    let smtp = Smtp::start(&dir.path().join("mail"), port, &[]);
    wait_for("the outbox to empty", 60, || outbox_len(dir.path()) == 0 && smtp.received().len() >= queued.len());
    stop(daemon);
    let queued = audit_ids(dir.path(), "queued", "mail");
    let received = smtp.received();
    let copies: Vec<(String, String)> =
        received.iter().flat_map(|m| m.to.iter().map(|t| (m.message_id.clone(), t.clone()))).collect();
    let unique: BTreeSet<(String, String)> = copies.iter().cloned().collect();
    assert_eq!(copies.len(), unique.len(), "each e-mail exactly once per recipient");
    let ids: BTreeSet<String> = received.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids, queued.iter().map(|q| format!("<{q}@credit-sentinel>")).collect());
    // Nothing lost: every alert was mailed or knowingly withdrawn (inhibited).
    let mailed: BTreeSet<String> = received.iter().flat_map(|m| m.alerts.clone()).collect();
    let (inhibited, waiting) = (audit_ids(dir.path(), "inhibited", "id"), waiting(dir.path()));
    assert!(!waiting.is_empty(), "reminds wait for tomorrow's digest");
    for id in alerts(dir.path()).keys() {
        let kept = mailed.contains(id) || inhibited.contains(id) || waiting.contains(id);
        assert!(kept, "alert {id} neither mailed, inhibited nor waiting");
    }
}

#[test]
fn a_daemon_killed_while_sending_loses_nothing_and_resends_with_the_same_message_id() {
    let dir = tempfile::tempdir().unwrap();
    // Each DATA is stored, then answered after 0.3 s: a kill lands between "accepted" and "marked done".
    let smtp = Smtp::start(&dir.path().join("mail"), 0, &["--delay-data-secs", "0.3"]);
    let events = manifest().join("samples/events.jsonl");
    let config = config(dir.path(), &events, true, &smtp_table(smtp.port, ""), 1);
    let log = dir.path().join("daemon.log");
    for round in 0..3 {
        let mut daemon = spawn(&config, &log);
        let before = smtp.received().len();
        wait_for("a message during the round", 60, || {
            smtp.received().len() > before || round > 0 && outbox_len(dir.path()) == 0
        });
        std::thread::sleep(Duration::from_millis(150 * round));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    let daemon = spawn(&config, &log);
    wait_for("the outbox to empty", 90, || {
        outbox_len(dir.path()) == 0 && !audit_ids(dir.path(), "queued", "mail").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    wait_for("the outbox to stay empty", 30, || outbox_len(dir.path()) == 0);
    stop(daemon);
    let received = smtp.received();
    // Duplicates only as the same message: same Message-ID, same alerts.
    let mut by_id: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
    for m in &received {
        if let Some(prev) = by_id.insert(&m.message_id, &m.alerts) {
            assert_eq!(prev, &m.alerts, "a resend is the same message");
        }
    }
    let queued = audit_ids(dir.path(), "queued", "mail");
    let got: BTreeSet<String> = by_id.keys().map(|s| s.to_string()).collect();
    assert_eq!(got, queued.iter().map(|q| format!("<{q}@credit-sentinel>")).collect::<BTreeSet<_>>());
    let mailed: BTreeSet<String> = received.iter().flat_map(|m| m.alerts.clone()).collect();
    let (inhibited, waiting) = (audit_ids(dir.path(), "inhibited", "id"), waiting(dir.path()));
    let all = alerts(dir.path());
    assert!(all.len() > 100);
    for id in all.keys() {
        let kept = mailed.contains(id) || inhibited.contains(id) || waiting.contains(id);
        assert!(kept, "alert {id} neither mailed, inhibited nor waiting");
    }
}

#[test]
fn starttls_with_a_trusted_private_ca_and_a_refused_login_retried_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = Command::new("bash").arg(manifest().join("tests/smtp/make_cert.sh")).arg(&certs).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(dir.path().join("server-password"), "s3cret\n").unwrap();
    let client_password = dir.path().join("smtp-password");
    std::fs::write(&client_password, "wrong\n").unwrap();
    let c = |f: &str| certs.join(f).display().to_string();
    let server_pw = dir.path().join("server-password").display().to_string();
    let smtp = Smtp::start(
        &dir.path().join("mail"),
        0,
        &[
            "--tls-cert",
            &c("cert.pem"),
            "--tls-key",
            &c("key.pem"),
            "--require-starttls",
            "--auth-user",
            "sentinel",
            "--auth-password-file",
            &server_pw,
        ],
    );
    let table = format!(
        "[notify.smtp]\nhost = \"localhost\"\nconnect_to = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nca_file = \"{}\"\nusername = \"sentinel\"\npassword_file = \"{}\"\ntimeout_secs = 5\n",
        smtp.port,
        c("ca.pem"),
        client_password.display()
    );
    let events = manifest().join("samples/events.jsonl");
    let config = config(dir.path(), &events, true, &table, 1);
    let log = dir.path().join("daemon.log");
    let daemon = spawn(&config, &log);
    wait_for("a refused login", 60, || {
        audit(dir.path()).iter().any(|l| l["event"] == "failed" && l["error"].as_str().unwrap().contains("535"))
    });
    assert!(smtp.received().is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("e-mail not sent; will retry") && text.contains("535"), "{text}");
    // The operator fixes the password file: the next attempt logs in, over TLS, and everything goes out.
    std::fs::write(&client_password, "s3cret\n").unwrap();
    wait_for("the outbox to empty", 60, || outbox_len(dir.path()) == 0 && !smtp.received().is_empty());
    stop(daemon);
    let queued = audit_ids(dir.path(), "queued", "mail");
    let got: BTreeSet<String> = smtp.received().iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(got, queued.iter().map(|q| format!("<{q}@credit-sentinel>")).collect());
}

#[test]
fn implicit_tls_delivers_every_mail_of_a_finite_input() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = Command::new("bash").arg(manifest().join("tests/smtp/make_cert.sh")).arg(&certs).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let c = |f: &str| certs.join(f).display().to_string();
    // One of the food department's two addresses no longer exists: the other still gets every e-mail.
    let smtp = Smtp::start(
        &dir.path().join("mail"),
        0,
        &[
            "--implicit-tls",
            "--tls-cert",
            &c("cert.pem"),
            "--tls-key",
            &c("key.pem"),
            "--refuse-rcpt",
            "food2@amr.example.cn",
        ],
    );
    let table = format!(
        "[notify.smtp]\nhost = \"localhost\"\nconnect_to = \"127.0.0.1\"\nport = {}\nsecurity = \"tls\"\nca_file = \"{}\"\n",
        smtp.port,
        c("ca.pem")
    );
    let config = config(dir.path(), &manifest().join("samples/events.jsonl"), false, &table, 3600);
    let out = Command::new(BIN).args(["run", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queued = audit_ids(dir.path(), "queued", "mail");
    assert!(queued.len() > 10);
    assert_eq!(outbox_len(dir.path()), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let got: BTreeSet<String> = smtp.received().iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(got, queued.iter().map(|q| format!("<{q}@credit-sentinel>")).collect());
    let food: BTreeSet<String> = smtp
        .received()
        .iter()
        .filter(|m| m.to.contains(&"food@amr.example.cn".to_owned()))
        .map(|m| m.message_id.clone())
        .collect();
    let refused = audit_ids(dir.path(), "recipient_refused", "message_id");
    assert!(!food.is_empty());
    assert_eq!(refused, food, "each food e-mail: delivered to food@, refused for food2@ (audited)");
    assert!(smtp.received().iter().all(|m| !m.to.contains(&"food2@amr.example.cn".to_owned())));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recipient refused by the server"));
}

#[test]
fn silences_are_managed_on_the_running_daemon_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    // No [notify.smtp]: the embedded default writes .eml files.
    let config = config(dir.path(), &events, true, "", 1);
    let log = dir.path().join("daemon.log");
    let daemon = spawn(&config, &log);
    let socket = dir.path().join("state/admin.sock");
    wait_for("the admin socket", 30, || socket.exists());
    // Only the daemon's own user may talk to it (THREAT-MODEL.md: the admin interface).
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    let cli = |args: &[&str]| {
        let o = Command::new(BIN).args(["silence"]).args(args).arg("--config").arg(&config).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, id, err) = cli(&[
        "add",
        "--match",
        "rule=penalties-3y",
        "--author",
        "张三",
        "--comment",
        "整改期内暂停提醒",
        "--duration",
        "2h",
    ]);
    assert!(ok, "{err}");
    let id = id.trim().to_owned();
    let (ok, _, err) = cli(&["add", "--match", "domain=fish", "--comment", "x", "--duration", "1h"]);
    assert!(!ok && err.contains("domain \"fish\""), "{err}");
    // Events arrive: penalty alerts are silenced, the rest mailed.
    let sample = std::fs::read(manifest().join("samples/events.jsonl")).unwrap();
    std::fs::OpenOptions::new().append(true).open(&events).unwrap().write_all(&sample).unwrap();
    wait_for("mail", 60, || {
        std::fs::read_dir(dir.path().join("state/mail")).is_ok_and(|d| d.count() > 5) && outbox_len(dir.path()) == 0
    });
    std::thread::sleep(Duration::from_secs(2));
    stop(daemon);
    let silenced = audit(dir.path()).iter().filter(|l| l["event"] == "silenced" && l["silence"] == id.as_str()).count();
    assert!(silenced > 0);
    let penalty_alerts: BTreeSet<String> = std::fs::read_to_string(dir.path().join("state/alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["rule"] == "penalties-3y")
        .map(|v| v["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!penalty_alerts.is_empty());
    for f in std::fs::read_dir(dir.path().join("state/mail")).unwrap().flatten() {
        let ids = alert_ids(&std::fs::read_to_string(f.path()).unwrap());
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|a| !penalty_alerts.contains(a)), "a silenced alert was mailed");
    }
    // The silence is kept across a restart, listed, and can be expired.
    let daemon = spawn(&config, &log);
    wait_for("the admin socket", 30, || cli(&["list"]).0);
    let (_, list, _) = cli(&["list"]);
    assert!(
        list.contains(&id) && list.contains("active") && list.contains("rule=penalties-3y") && list.contains("张三"),
        "{list}"
    );
    let (ok, _, err) = cli(&["expire", &id, "--author", "李四"]);
    assert!(ok, "{err}");
    assert!(cli(&["list"]).1.contains("expired"));
    // A rule reload is audited too.
    assert!(Command::new("kill").arg("-HUP").arg(daemon.id().to_string()).status().unwrap().success());
    wait_for("the reload in the audit log", 30, || audit(dir.path()).iter().any(|l| l["event"] == "rules_reloaded"));
    stop(daemon);
    let who: Vec<String> = audit(dir.path())
        .iter()
        .filter(|l| l["event"] == "silence_added" || l["event"] == "silence_expired")
        .map(|l| format!("{} {}", l["event"].as_str().unwrap(), l["who"].as_str().unwrap()))
        .collect();
    assert_eq!(who, ["silence_added 张三", "silence_expired 李四"]);
}

#[test]
fn rendered_emails_match_their_golden_files() {
    let golden = manifest().join("tests/golden");
    let mut failed = Vec::new();
    for (name, args) in [
        ("alert.txt", vec!["render-email"]),
        ("alert.html", vec!["render-email", "--part", "html"]),
        ("digest.txt", vec!["render-email", "--digest"]),
        ("digest.html", vec!["render-email", "--digest", "--part", "html"]),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let path = golden.join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &out.stdout).unwrap();
        }
        let want = std::fs::read(&path).unwrap_or_default();
        if want != out.stdout {
            failed.push(format!("{name}:\n{}", String::from_utf8_lossy(&out.stdout)));
        }
    }
    assert!(
        failed.is_empty(),
        "rendered e-mails differ from tests/golden (UPDATE_GOLDEN=1 rewrites them):\n{}",
        failed.join("\n")
    );
}
