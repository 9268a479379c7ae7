//! End-to-end Kafka benchmark (BENCHMARKS.md): librdkafka's mock cluster (3 brokers, in this process, over TCP)
//! holds a generated stream; in the same run, alternating, it measures
//! - the baseline: a plain rdkafka `BaseConsumer` loop that reads every message and touches its payload;
//! - the daemon (event clock): consume, decode, engine, alerts produced to the alert topic, checkpoints;
//!
//! and then the latency from an event's production to its alert's arrival at a consumer of the alert topic
//! at a paced rate (an upper bound of consume-to-alert latency: it includes two broker hops).
//!
//! `cargo run --release --example kafka_bench -- [EVENTS] [ENTITIES] [ROUNDS] [RATE]`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use credit_sentinel::config::Config;
use credit_sentinel::daemon::{self, Handle};
use credit_sentinel::generate::{GenOptions, generate};
use credit_sentinel::rules::load_dir;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Enough partitions that no partition of the mock cluster, which keeps about 5 MB each, drops messages.
const PARTITIONS: i32 = 32;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let events = *args.first().unwrap_or(&1_000_000);
    let entities = *args.get(1).unwrap_or(&100_000) as u32;
    let rounds = *args.get(2).unwrap_or(&3);
    let rate = *args.get(3).unwrap_or(&50_000);

    let mock = MockCluster::new(3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    mock.create_topic("events", PARTITIONS, 1).unwrap();
    let lines = stream(events, entities, 0.0);
    let t = Instant::now();
    produce(&bootstrap, "events", &lines, None);
    eprintln!("produced {} messages in {:.1} s", lines.len(), t.elapsed().as_secs_f64());

    let mut base = Vec::new();
    let mut full = Vec::new();
    for round in 0..rounds {
        let b = plain_loop(&bootstrap, lines.len() as u64, round);
        let d = daemon_run(&mock, &bootstrap, lines.len() as u64, round);
        println!("round {round}: plain consume {b:.0} msg/s, daemon {d:.0} events/s, ratio {:.3}", d / b);
        base.push(b);
        full.push(d);
    }
    let (mb, md) = (median(&mut base), median(&mut full));
    println!("median: plain consume {mb:.0} msg/s, daemon {md:.0} events/s, daemon/plain {:.3}", md / mb);

    latency_plain(&mock, &bootstrap, entities, rate);
    latency(&mock, &bootstrap, entities, rate);
}

/// The baseline of the latency figure: paced production to a plain consumer, per message, same settings.
fn latency_plain(mock: &MockCluster<'static, DefaultProducerContext>, bootstrap: &str, entities: u32, rate: u64) {
    mock.create_topic("events-plain", PARTITIONS, 1).unwrap();
    let lines = stream(rate * 10, entities, 0.0);
    let reader = {
        let bootstrap = bootstrap.to_owned();
        let n = lines.len();
        std::thread::spawn(move || {
            let consumer = reader(&bootstrap, "latency-plain", "events-plain");
            let mut got = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.len() < n && Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    got.insert((m.partition(), m.offset()), Instant::now());
                }
            }
            got
        })
    };
    std::thread::sleep(Duration::from_secs(4)); // the reader's group join
    let sent = produce(bootstrap, "events-plain", &lines, Some(rate));
    let got = reader.join().unwrap();
    // Offsets per partition follow the order of sending.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut lat: Vec<f64> = Vec::new();
    for (line, s) in lines.iter().zip(&sent) {
        let p = (crc32fast::hash(entity_of(line)) % PARTITIONS as u32) as i32;
        let o = next.entry(p).or_insert(0);
        if let Some(r) = got.get(&(p, *o)) {
            lat.push(r.duration_since(*s).as_secs_f64() * 1000.0);
        }
        *o += 1;
    }
    print_latency(&format!("baseline latency at {rate} events/s (produce to plain consumer), messages"), lat);
}

/// A consumer of `topic` for latency measurements (both figures use the same settings).
fn reader(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

fn print_latency(label: &str, mut lat: Vec<f64>) {
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "{label}: {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn stream(events: u64, entities: u32, bad: f64) -> Vec<Vec<u8>> {
    let opts = GenOptions {
        seed: 7,
        entities,
        events,
        start: "2023-01-01T00:00:00+08:00".into(),
        days: 1095,
        bad,
        duplicates: 0.0,
        late: 0.0,
        bursty: 0.01,
    };
    let mut out = Vec::new();
    generate(&opts, &mut out).unwrap();
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

fn entity_of(line: &[u8]) -> &[u8] {
    // "entity_id":"<18 chars>"
    let key = b"\"entity_id\":\"";
    line.windows(key.len()).position(|w| w == key).map_or(&b""[..], |i| &line[i + key.len()..i + key.len() + 18])
}

/// Produces `lines` keyed by entity (partition by the key's hash); `pace` messages per second if given.
/// Returns the send instant of each line.
fn produce(bootstrap: &str, topic: &str, lines: &[Vec<u8>], pace: Option<u64>) -> Vec<Instant> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", if pace.is_some() { "0" } else { "5" })
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut sent = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if let Some(rate) = pace {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            // Sleep, not spin: this machine has two cores, shared with the brokers and the daemon.
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
        }
        let key = entity_of(line);
        let p = (crc32fast::hash(key) % PARTITIONS as u32) as i32;
        let mut record = BaseRecord::to(topic).partition(p).key(key).payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        sent.push(Instant::now());
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    sent
}

/// The baseline: every message consumed by a plain loop in a new group; messages per second.
fn plain_loop(bootstrap: &str, n: u64, round: u64) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("plain-{round}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["events"]).unwrap();
    let mut seen = 0;
    let mut bytes = 0usize;
    let mut start = None;
    let mut last = Instant::now();
    while seen < n {
        if last.elapsed() > Duration::from_secs(5) {
            eprintln!("  plain round {round}: {seen} of {n}");
            last = Instant::now();
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let Ok(m) = m else {
                eprintln!("  plain consumer error: {:?}", m.err());
                continue;
            };
            start.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, |p| p.len());
            seen += 1;
        }
    }
    std::hint::black_box(bytes);
    n as f64 / start.unwrap().elapsed().as_secs_f64()
}

/// The daemon's configuration; `linger` and `fetch_wait` are the producer's `linger.ms` and the consumer's
/// `fetch.wait.max.ms`.
fn config(dir: &std::path::Path, bootstrap: &str, group: &str, alerts: &str, linger: &str, fetch_wait: &str) -> Config {
    let text = format!(
        r#"rules = "{rules}"
state_dir = "{state}"
[clock]
mode = "event"
[checkpoint]
interval_secs = 30
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
topics = ["events"]
alert_topic = "{alerts}"
poll_ms = 10
[kafka.producer_options]
"linger.ms" = "{linger}"
[kafka.consumer_options]
"fetch.wait.max.ms" = "{fetch_wait}"
"#,
        rules = concat!(env!("CARGO_MANIFEST_DIR"), "/alert-rules"),
        state = dir.join("state").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

fn start(config: Config) -> (Handle, std::thread::JoinHandle<()>) {
    let handle = Handle::new();
    let h = handle.clone();
    let rules = Arc::new(load_dir(&config.rules).unwrap());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(daemon::run(config, rules, h, std::future::pending())).unwrap();
    });
    (handle, thread)
}

/// The daemon over every message in a new group, state and alert topic; events per second, from its first
/// message to its last (rebalance and restore excluded, like the baseline's).
fn daemon_run(mock: &MockCluster<'static, DefaultProducerContext>, bootstrap: &str, n: u64, round: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let alerts = format!("alerts-{round}");
    mock.create_topic(&alerts, PARTITIONS, 1).unwrap();
    // librdkafka's defaults for fetching, like the plain loop.
    let (handle, thread) = start(config(dir.path(), bootstrap, &format!("daemon-{round}"), &alerts, "5", "500"));
    let stats = handle.stats();
    while stats.lines.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let t = Instant::now();
    while stats.lines.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!("  daemon round {round}: {}", stats.status_line());
    handle.shutdown();
    thread.join().unwrap();
    n as f64 / secs
}

/// Paced production; for each alert, the time from the production of the newest event in its evidence to
/// the alert's arrival at a consumer of the alert topic. Prints percentiles.
fn latency(mock: &MockCluster<'static, DefaultProducerContext>, bootstrap: &str, entities: u32, rate: u64) {
    mock.create_topic("events-paced", PARTITIONS, 1).unwrap();
    mock.create_topic("alerts-paced", PARTITIONS, 1).unwrap();
    let lines = stream(rate * 10, entities, 0.0);
    let events: Vec<credit_sentinel::event::Event> =
        lines.iter().map(|l| credit_sentinel::event::decode(l).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    // The mock cluster answers a fetch only after fetch.wait.max.ms (500 by default) when a partition has no
    // new data; a real broker answers as soon as fetch.min.bytes (1) are there. Both latency figures use 5 ms.
    let mut cfg = config(dir.path(), bootstrap, "paced", "alerts-paced", "0", "5");
    if let Some(k) = cfg.kafka.as_mut() {
        k.get_mut().topics = vec!["events-paced".into()];
    }
    let (handle, thread) = start(cfg);
    // Wait for the assignment before producing, so that the rebalance is not in the figures.
    while handle.stats().partitions.load(Ordering::Relaxed) < PARTITIONS as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let reader = {
        let bootstrap = bootstrap.to_owned();
        std::thread::spawn(move || {
            let consumer = reader(&bootstrap, "latency-reader", "alerts-paced");
            let mut got = Vec::new();
            let mut idle = Instant::now();
            while idle.elapsed() < Duration::from_secs(5) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    got.push((Instant::now(), m.payload().unwrap_or_default().to_vec()));
                    idle = Instant::now();
                }
            }
            got
        })
    };
    let sent = produce(bootstrap, "events-paced", &lines, Some(rate));
    let got = reader.join().unwrap();
    let h = &handle.stats().alert_latency;
    println!(
        "in the daemon at {rate} events/s, consume to alert produced: {} messages with alerts, p50 < {} us, p99 < {} us, p99.9 < {} us",
        h.count(),
        h.quantile(0.5).as_micros(),
        h.quantile(0.99).as_micros(),
        h.quantile(0.999).as_micros()
    );
    handle.shutdown();
    thread.join().unwrap();
    let sent_at: HashMap<&str, (Instant, i64)> =
        events.iter().zip(sent.iter()).map(|(e, s)| (e.id.as_str(), (*s, e.at))).collect();
    // Alerts raised by an arrival: the newest event of the evidence occurred at the alert's instant. (Alerts
    // raised by time passing, such as a surge when old complaints leave, have no event to measure from.)
    let lat: Vec<f64> = got
        .iter()
        .filter_map(|(arrived, payload)| {
            let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
            let at = credit_sentinel::time::parse_rfc3339(v["at"].as_str()?).ok()?;
            let (sent, occurred) = v["evidence"].as_array()?.iter().filter_map(|e| sent_at.get(e.as_str()?)).max()?;
            (*occurred == at).then(|| arrived.duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    print_latency(
        &format!(
            "latency at {rate} events/s (produce to alert consumer), alerts raised by arrivals (of {})",
            got.len()
        ),
        lat,
    );
}
