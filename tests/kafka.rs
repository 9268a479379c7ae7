//! The daemon against a real Kafka-protocol broker: librdkafka's mock cluster (3 brokers, several partitions)
//! over TCP. Each test produces a generated stream (bad lines and duplicates included, sorted by time within
//! each partition), runs the daemon with the event clock, and checks the alert topic against `replay` of the
//! same lines: SPEC's "for every alert up to the smallest partition clock", here per partition (an alert of
//! an entity of partition `p` at an instant before `p`'s clock).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credit_sentinel::config::Config;
use credit_sentinel::daemon::{self, Handle};
use credit_sentinel::event::decode;
use credit_sentinel::generate::{GenOptions, generate};
use credit_sentinel::replay::{Input, replay};
use credit_sentinel::rules::{RuleSet, load_dir};
use credit_sentinel::time::parse_rfc3339;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use common::{default_rules_dir, http_get, metrics_addr};

const PARTITIONS: i32 = 4;

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("events", PARTITIONS, 3).unwrap();
    mock.create_topic("alerts", PARTITIONS, 3).unwrap();
    mock.create_topic("dlq", 1, 3).unwrap();
    mock
}

/// A generated stream with no late events: bad lines, duplicates, bursts reaching every action.
fn stream(seed: u64, events: u64) -> Vec<Vec<u8>> {
    let opts = GenOptions {
        seed,
        entities: 300,
        events,
        start: "2023-01-01T00:00:00+08:00".into(),
        days: 1095,
        bad: 0.02,
        duplicates: 0.02,
        late: 0.0,
        bursty: 0.05,
    };
    let mut out = Vec::new();
    generate(&opts, &mut out).unwrap();
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// The entity of a line, if it has a string `entity_id`.
fn entity_of(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get("entity_id")?.as_str().map(str::to_owned)
}

/// The test's partitioner: by entity (so an entity's events share a partition), bad lines by position.
fn partition_of(line: &[u8], index: usize) -> i32 {
    match entity_of(line) {
        Some(e) => (crc32fast::hash(e.as_bytes()) % PARTITIONS as u32) as i32,
        None => (index % PARTITIONS as usize) as i32,
    }
}

fn rules() -> Arc<RuleSet> {
    Arc::new(load_dir(&default_rules_dir()).unwrap())
}

/// The alert records `replay` prints for `lines`, limited to those before their partition's clock; and the
/// number of bad lines.
fn expected(lines: &[Vec<u8>]) -> (Vec<String>, u64) {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    let mut engine = credit_sentinel::engine::Engine::new(rules()).unwrap();
    let mut alerts = Vec::new();
    let summary = replay(
        &mut engine,
        vec![Input::from_bytes("stream", text)],
        None,
        &mut |e, a| {
            let r = credit_sentinel::alert::AlertRecord::new(a, e.rules());
            alerts.push(serde_json::to_string(&r).unwrap());
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.late, 0, "the stream must be sorted by time for the event clock to equal replay");
    let mut clock: HashMap<i32, i64> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Ok(e) = decode(l) {
            let c = clock.entry(partition_of(l, i)).or_insert(i64::MIN);
            *c = (*c).max(e.at);
        }
    }
    let mut kept: Vec<String> = alerts
        .into_iter()
        .filter(|a| {
            let v: serde_json::Value = serde_json::from_str(a).unwrap();
            let p = partition_of(a.as_bytes(), 0);
            v["at"].as_str().and_then(|t| parse_rfc3339(t).ok()).unwrap() < clock[&p]
        })
        .collect();
    kept.sort();
    (kept, summary.rejected_total())
}

fn produce(bootstrap: &str, lines: &[Vec<u8>], range: std::ops::Range<usize>) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").create().unwrap();
    for i in range {
        let line = &lines[i];
        let key = entity_of(line).unwrap_or_default();
        let mut record = BaseRecord::to("events").partition(partition_of(line, i)).payload(line).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every message of `topic` (payload, headers as pairs), partition by partition.
fn read_topic(bootstrap: &str, topic: &str) -> Vec<(String, Vec<(String, String)>)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "test-reader").create().unwrap();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for p in 0..n {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        if high <= 0 {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let mut next = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next < high && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                next = m.offset() + 1;
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_owned(), String::from_utf8_lossy(x.value.unwrap_or_default()).into()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((payload, headers));
            }
        }
    }
    out
}

fn alerts_in_topic(bootstrap: &str) -> Vec<String> {
    let mut a: Vec<String> = read_topic(bootstrap, "alerts").into_iter().map(|(p, _)| p).collect();
    a.sort();
    a
}

/// Polls the alert topic until it holds `n` alerts and stays so for a moment (or the time is up).
fn wait_for_alerts(bootstrap: &str, n: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let got = alerts_in_topic(bootstrap);
        if got.len() >= n || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(1500));
            return alerts_in_topic(bootstrap);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A `[notify]` section with one receiver and the embedded default transport (.eml files in state/mail).
const NOTIFY_EML: &str = r#"
[notify]
from = "预警 <alerts@amr.example.cn>"
[[notify.receivers]]
name = "reg"
to = ["reg@amr.example.cn"]
[notify.route]
receiver = "reg"
group_wait_secs = 1
group_interval_secs = 1
"#;

fn write_config(dir: &Path, bootstrap: &str) -> std::path::PathBuf {
    write_config_with(dir, bootstrap, "")
}

/// [`write_config`] with more sections (`extra`).
fn write_config_with(dir: &Path, bootstrap: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
rules = "{rules}"
state_dir = "{state}"

[clock]
mode = "event"

[checkpoint]
interval_secs = 1

[kafka]
brokers = "{bootstrap}"
group_id = "sentinel-test"
topics = ["events"]
alert_topic = "alerts"
dead_letter_topic = "dlq"
poll_ms = 50

[kafka.consumer_options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
{extra}
"#,
        rules = default_rules_dir().display(),
        state = dir.join("state").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the daemon in-process until `stop` is sent.
fn start_in_process(config: &Path) -> (Handle, std::thread::JoinHandle<Result<(), daemon::DaemonError>>) {
    let config = Config::load(config).unwrap();
    let handle = Handle::new();
    let h = handle.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let rules = Arc::new(load_dir(&config.rules).unwrap());
        rt.block_on(daemon::run(config, rules, h, std::future::pending()))
    });
    (handle, thread)
}

fn assert_same(got: &[String], want: &[String]) {
    if got != want {
        let missing: Vec<_> = want.iter().filter(|a| !got.contains(a)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|a| !want.contains(a)).take(3).collect();
        panic!(
            "alert topic differs from replay: {} alerts, want {}\nmissing (first 3): {missing:#?}\nextra (first 3): {extra:#?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn the_alert_topic_equals_replay_and_bad_messages_are_dead_lettered() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lines = stream(11, 20_000);
    let half = lines.len() / 2;
    let config = write_config(dir.path(), &bootstrap);

    // First half, then a graceful stop; the second half to a restarted daemon.
    produce(&bootstrap, &lines, 0..half);
    let (want, _) = expected(&lines[..half]);
    assert!(want.len() > 50, "the stream raises alerts ({})", want.len());
    let (handle, thread) = start_in_process(&config);
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(60));
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert_same(&got, &want);

    produce(&bootstrap, &lines, half..lines.len());
    let (want, bad) = expected(&lines);
    let (handle, thread) = start_in_process(&config);
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(60));
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert_same(&got, &want);

    // Every bad line, once, with its reason and origin.
    let dlq = read_topic(&bootstrap, "dlq");
    assert_eq!(dlq.len() as u64, bad);
    for (_, headers) in &dlq {
        let h: HashMap<_, _> = headers.iter().cloned().collect();
        assert!(!h["reason"].is_empty() && h["origin"].starts_with("events/"), "{h:?}");
    }
}

fn spawn_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_credit-sentinel"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "graceful stop exits 0, got {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the daemon did not stop within 30 s of SIGTERM");
}

/// Waits until the daemon's log shows `n` partition assignments in all.
fn wait_assigned(log: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches("partition assigned").count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no partition assignment within 60 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_repeats_nothing() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let lines = Arc::new(stream(23, 60_000));
    // With e-mail notifications (the embedded default: .eml files), which must lose nothing either.
    let config = write_config_with(dir.path(), &bootstrap, NOTIFY_EML);
    let (want, _) = expected(&lines);

    // The stream arrives in chunks while the daemon is killed (SIGKILL: no checkpoint, no commit) at random
    // moments after it got its partitions, and restarted.
    let producer = {
        let (bootstrap, lines) = (bootstrap.clone(), lines.clone());
        std::thread::spawn(move || {
            let chunks = 30;
            let size = lines.len().div_ceil(chunks);
            for c in 0..chunks {
                produce(&bootstrap, &lines, c * size..((c + 1) * size).min(lines.len()));
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut child = spawn_daemon(&config, &log);
    let kills = 5;
    for k in 0..kills {
        wait_assigned(&log, (k + 1) * PARTITIONS as usize);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 1500));
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn_daemon(&config, &log);
    }
    producer.join().unwrap();
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(90));
    terminate(&mut child);
    assert_same(&got, &want);
    let text = std::fs::read_to_string(&log).unwrap();
    let restores = text.matches("state restored from checkpoint").count();
    assert!(restores >= kills, "restarts restore state ({restores} restores); the log:\n{text}");

    // Every alert of the topic was mailed, or withdrawn by a higher one (audited), or still waits: in a
    // group, in flight, or in the outbox (sent at the next start).
    let state = dir.path().join("state");
    let mut kept = std::collections::HashSet::new();
    let emls = std::fs::read_dir(state.join("mail"))
        .unwrap()
        .chain(std::fs::read_dir(state.join("notify/outbox")).unwrap())
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|x| x == "eml"));
    for f in emls {
        let eml = std::fs::read_to_string(f.path()).unwrap();
        let mut lines = eml.lines().skip_while(|l| !l.starts_with("X-Credit-Sentinel-Alerts:"));
        let first = lines.next().unwrap_or_default().trim_start_matches("X-Credit-Sentinel-Alerts:").to_owned();
        let rest: String = lines.take_while(|l| l.starts_with([' ', '\t'])).collect();
        kept.extend((first + &rest).split_whitespace().map(str::to_owned));
    }
    for l in std::fs::read_to_string(state.join("notify/audit.jsonl")).unwrap().lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
            && v["event"] == "inhibited"
        {
            kept.insert(v["id"].as_str().unwrap().to_owned());
        }
    }
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("notify/state.json")).unwrap()).unwrap();
    let pending = snapshot["groups"].as_object().unwrap().values().map(|g| &g["pending"]);
    for notices in pending.chain(snapshot["inflight"].as_array().unwrap().iter().map(|m| &m["notices"])) {
        kept.extend(notices.as_array().unwrap().iter().map(|n| n["alert_id"].as_str().unwrap().to_owned()));
    }
    for record in &got {
        let v: serde_json::Value = serde_json::from_str(record).unwrap();
        let id = v["alert_id"].as_str().unwrap();
        if !kept.contains(id) {
            let audit = std::fs::read_to_string(state.join("notify/audit.jsonl")).unwrap();
            let entity = v["entity_id"].as_str().unwrap();
            let related: Vec<&str> = audit.lines().filter(|l| l.contains(id) || l.contains(entity)).collect();
            let dir = dir.keep();
            panic!(
                "alert {id} was neither mailed, inhibited nor waiting ({}); record {record}\naudit:\n{}",
                dir.display(),
                related.join("\n")
            );
        }
    }
}

#[test]
fn three_instances_share_the_partitions_through_a_kill_and_a_join() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lines = Arc::new(stream(31, 40_000));
    let config = write_config(dir.path(), &bootstrap);
    let (want, _) = expected(&lines);
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let assigned = |names: &[&str]| -> usize {
        names
            .iter()
            .map(|n| std::fs::read_to_string(log(n)).unwrap_or_default().matches("partition assigned").count())
            .sum()
    };

    let producer = {
        let (bootstrap, lines) = (bootstrap.clone(), lines.clone());
        std::thread::spawn(move || {
            let chunks = 20;
            let size = lines.len().div_ceil(chunks);
            for c in 0..chunks {
                produce(&bootstrap, &lines, c * size..((c + 1) * size).min(lines.len()));
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let mut a = spawn_daemon(&config, &log("a"));
    let mut b = spawn_daemon(&config, &log("b"));
    let mut c = spawn_daemon(&config, &log("c"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(&["a", "b", "c"]) < PARTITIONS as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // One instance dies without a word; another joins. Their partitions move with their state.
    b.kill().unwrap();
    b.wait().unwrap();
    let mut d = spawn_daemon(&config, &log("d"));
    producer.join().unwrap();
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(90));
    for child in [&mut a, &mut c, &mut d] {
        terminate(child);
    }
    assert_same(&got, &want);
    assert!(assigned(&["d"]) > 0, "the instance that joined got partitions");
}

#[test]
fn broker_outages_request_errors_and_a_slow_broker_are_waited_out() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;

    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lines = stream(41, 20_000);
    let config = write_config(dir.path(), &bootstrap);
    let (want, _) = expected(&lines);
    let third = lines.len() / 3;

    produce(&bootstrap, &lines, 0..third);
    let (handle, thread) = start_in_process(&config);
    std::thread::sleep(Duration::from_secs(2));
    // Two brokers go away for a while (leaders among them), then come back.
    mock.broker_down(2).unwrap();
    mock.broker_down(3).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    mock.broker_up(2).unwrap();
    mock.broker_up(3).unwrap();
    // Requests fail with retriable errors, and one broker answers slowly.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT],
    );
    mock.request_errors(RDKafkaApiKey::Fetch, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION]);
    mock.broker_round_trip_time(1, Duration::from_millis(300)).unwrap();
    produce(&bootstrap, &lines, third..lines.len());
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(90));
    assert!(!thread.is_finished(), "the daemon is still running");
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert_same(&got, &want);
}

#[test]
fn an_entitys_events_from_several_topics_meet_in_one_state_partition() {
    let mock = cluster();
    mock.create_topic("events-court", PARTITIONS, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &bootstrap);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(r#"topics = ["events"]"#, r#"topics = ["events", "events-court"]"#);
    std::fs::write(&config, text).unwrap();
    let x = common::code(0);
    let ev = |id: &str, kind: &str, at: &str| common::event(id, &x, kind, at, None).into_bytes();
    // Two penalties of one entity, one per topic (same key, same partition): together they reach remind.
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let p = (crc32fast::hash(x.as_bytes()) % PARTITIONS as u32) as i32;
    let send = |topic: &str, line: Vec<u8>| {
        producer.send(BaseRecord::to(topic).partition(p).key(&x).payload(&line)).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    let (handle, thread) = start_in_process(&config);
    for (topic, line) in [
        ("events", ev("p1", "penalty", "2025-01-01T00:00:00Z")),
        ("events-court", ev("p2", "penalty", "2025-01-01T00:00:00Z")),
        ("events", ev("m1", "negative_sentiment", "2025-06-01T00:00:00Z")),
        ("events-court", ev("m2", "negative_sentiment", "2025-06-02T00:00:00Z")),
        ("events-court", b"{\"event_id\": 7}".to_vec()),
        ("events", ev("m3", "fraud", "2025-06-03T00:00:00Z")),
    ] {
        send(topic, line);
    }
    // The topics are read in no set order between them; once all is read, a later event moves the clock on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.stats().lines.load(std::sync::atomic::Ordering::Relaxed) < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    send("events", ev("m9", "negative_sentiment", "2025-12-01T00:00:00Z"));
    let got = wait_for_alerts(&bootstrap, 1, Duration::from_secs(30));
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert!(got.iter().any(|a| a.contains("\"rule\":\"penalties-3y\"") && a.contains(&x)), "{got:?}");
    // Bad messages of either topic are dead-lettered with their reason and origin.
    let mut dead: Vec<(String, String)> = read_topic(&bootstrap, "dlq")
        .into_iter()
        .map(|(_, h)| {
            let h: HashMap<_, _> = h.into_iter().collect();
            (h["reason"].clone(), h["origin"].split('/').next().unwrap().to_owned())
        })
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        vec![("unknown_kind".to_owned(), "events".to_owned()), ("wrong_type".to_owned(), "events-court".to_owned())]
    );
    assert!(dir.path().join(format!("state/kafka/partition-{p}")).is_dir());
}

#[test]
fn history_loaded_with_bootstrap_then_live_input_equals_replay_of_both() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lines = stream(53, 20_000);
    let half = lines.len() / 2;
    let history = dir.path().join("history.jsonl");
    std::fs::write(&history, lines[..half].join(&b'\n')).unwrap();
    let config = write_config(dir.path(), &bootstrap);
    let text = std::fs::read_to_string(&config).unwrap();
    // `[bootstrap]` must come before the [kafka] tables.
    let text = text.replacen("[clock]", &format!("[bootstrap]\nfiles = [\"{}\"]\n\n[clock]", history.display()), 1);
    std::fs::write(&config, text).unwrap();

    // Kafka holds only the recent half; the history file the older one.
    produce(&bootstrap, &lines, half..lines.len());
    let (want, _) = expected(&lines);
    let (handle, thread) = start_in_process(&config);
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(60));
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert_same(&got, &want);

    // A restart does not load the history again.
    let (handle, thread) = start_in_process(&config);
    std::thread::sleep(Duration::from_secs(8));
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert_same(&alerts_in_topic(&bootstrap), &want);
}

#[test]
fn an_alert_that_cannot_be_delivered_stops_the_daemon_and_the_restart_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lines = stream(61, 10_000);
    let config = write_config(dir.path(), &bootstrap);
    let (want, _) = expected(&lines);
    produce(&bootstrap, &lines, 0..lines.len());

    // Every produce request is now refused for good: alerts cannot be delivered.
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 500]);
    let (_handle, thread) = start_in_process(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the daemon stops on an undeliverable alert");
        std::thread::sleep(Duration::from_millis(100));
    }
    let error = thread.join().unwrap().expect_err("it stops with an error (exit status 1)");
    let error = error.to_string();
    assert!(error.contains("authorization") || error.contains("not be delivered"), "{error}");

    // The broker accepts again: the restart resumes from a checkpoint that claims no undelivered alert.
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let (handle, thread) = start_in_process(&config);
    let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(60));
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert_same(&got, &want);
}

/// `/metrics`, parsed by a Prometheus text-format parser: `(name, labels) -> value`.
fn scrape(addr: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            (s.metric, s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), v)
        })
        .collect()
}

/// The sum of the samples of `name` with all of `labels`.
fn sum(samples: &[(String, HashMap<String, String>, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
        .sum()
}

/// The metric names the operators' Prometheus rules and Grafana dashboard use.
fn names_used_by_deploy() -> std::collections::BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut names = std::collections::BTreeSet::new();
    for file in ["prometheus/credit-sentinel.rules.yml", "grafana/credit-sentinel.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (i, _) in text.match_indices("credit_sentinel_") {
            let name: String =
                text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            names.insert(name);
        }
    }
    names
}

#[test]
fn operators_scrape_the_daemon_process_fed_through_kafka_and_every_counter_moves_as_it_should() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let lines = stream(31, 8_000);
    let half = lines.len() / 2;
    let extra = format!(
        r#"
"statistics.interval.ms" = "200"

[metrics]
listen = "127.0.0.1:0"
ready_max_lag = 0
view_interval_secs = 1
{NOTIFY_EML}"#
    );
    let config = write_config_with(dir.path(), &bootstrap, &extra);
    produce(&bootstrap, &lines, 0..half);
    let mut child = spawn_daemon(&config, &log);
    let addr = metrics_addr(&log);
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    // Each half: /readyz says caught up (lag 0 here) only once every message is consumed; then the counters
    // equal what the input and replay say.
    for (round, upto) in [(1, half), (2, lines.len())] {
        if round == 2 {
            produce(&bootstrap, &lines, half..upto);
        }
        let (want, bad) = expected(&lines[..upto]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let s = loop {
            let s = scrape(&addr);
            let ready = http_get(&addr, "/readyz").0 == 200;
            if ready && sum(&s, "credit_sentinel_lines_total", &[]) == upto as f64 {
                break s;
            }
            assert!(Instant::now() < deadline, "round {round}: not caught up within 60 s:\n{s:?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let got = wait_for_alerts(&bootstrap, want.len(), Duration::from_secs(30));
        assert_same(&got, &want);
        let s = if sum(&s, "credit_sentinel_alerts_total", &[]) == want.len() as f64 { s } else { scrape(&addr) };
        assert_eq!(sum(&s, "credit_sentinel_ready", &[]), 1.0);
        assert_eq!(sum(&s, "credit_sentinel_rejected_lines_total", &[]), bad as f64, "round {round}");
        assert_eq!(sum(&s, "credit_sentinel_events_total", &[]), (upto as u64 - bad) as f64, "round {round}");
        assert!(
            sum(&s, "credit_sentinel_events_total", &[("outcome", "duplicate")]) > 0.0,
            "the stream has duplicates"
        );
        let mut by_rule: HashMap<(String, String), f64> = HashMap::new();
        for a in &want {
            let v: serde_json::Value = serde_json::from_str(a).unwrap();
            *by_rule.entry((v["rule"].as_str().unwrap().into(), v["action"].as_str().unwrap().into())).or_default() +=
                1.0;
        }
        for ((rule, action), n) in &by_rule {
            assert_eq!(sum(&s, "credit_sentinel_alerts_total", &[("rule", rule), ("action", action)]), *n);
        }
        assert_eq!(sum(&s, "credit_sentinel_alerts_total", &[]), want.len() as f64, "round {round}");
        assert_eq!(sum(&s, "credit_sentinel_partitions", &[]), PARTITIONS as f64);
        for p in 0..PARTITIONS {
            let lag: Vec<_> = s
                .iter()
                .filter(|(n, l, _)| n == "credit_sentinel_consumer_lag" && l["partition"] == p.to_string())
                .collect();
            assert_eq!(lag.len(), 1, "one lag sample for partition {p}");
            assert_eq!(lag[0].2, 0.0, "caught up: no lag on partition {p}");
        }
        assert!(sum(&s, "credit_sentinel_alert_latency_seconds_count", &[]) > 0.0);
        assert!(sum(&s, "credit_sentinel_entities", &[]) > 0.0);
    }

    // Notifications: every alert became a notice; e-mails were queued and written (the embedded default).
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = scrape(&addr);
        let queued = sum(&s, "credit_sentinel_notifications_total", &[("result", "queued")]);
        if queued > 0.0 && queued == sum(&s, "credit_sentinel_notifications_total", &[("result", "sent")]) {
            break s;
        }
        assert!(Instant::now() < deadline, "e-mails not all sent:\n{s:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let emls = std::fs::read_dir(dir.path().join("state/mail")).unwrap().count() as f64;
    assert_eq!(sum(&s, "credit_sentinel_notifications_total", &[("result", "sent")]), emls);
    assert_eq!(sum(&s, "credit_sentinel_notifications_total", &[("result", "failed")]), 0.0);
    assert_eq!(sum(&s, "credit_sentinel_outbox_messages", &[]), 0.0);
    assert_eq!(sum(&s, "credit_sentinel_outbox_oldest_age_seconds", &[]), 0.0);
    let alerts = sum(&s, "credit_sentinel_alerts_total", &[]);
    let notices = sum(&s, "credit_sentinel_notices_total", &[("outcome", "taken")]);
    assert!(notices >= alerts, "every alert is a notice ({notices} notices, {alerts} alerts; falls add more)");

    // Every metric the operators' alerting rules and dashboard query is exported by the daemon.
    let exported: std::collections::BTreeSet<&str> = s.iter().map(|(n, _, _)| n.as_str()).collect();
    let base = |n: &str| ["_bucket", "_sum", "_count"].iter().find_map(|x| n.strip_suffix(x)).unwrap_or(n).to_owned();
    let exported: std::collections::BTreeSet<String> = exported.iter().map(|n| base(n)).collect();
    // Exported once the first such alert is raised (no regional rule fires on this stream).
    let on_first_sample = ["credit_sentinel_regional_alerts_total"];
    for name in names_used_by_deploy() {
        assert!(
            exported.contains(&base(&name)) || on_first_sample.contains(&name.as_str()),
            "deploy/ uses {name}, which the daemon does not export"
        );
    }
    terminate(&mut child);
}
