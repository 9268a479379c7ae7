//! Soak test: the daemon (`credit-sentinel run`, a child process) against librdkafka's mock Kafka cluster (3
//! brokers in this process, over TCP) for a bounded time at a steady high rate with bad input mixed in, killed
//! and restarted; then the alert stream, memory, file descriptors, threads and tasks are checked.
//!
//! `cargo run --release --example soak -- [--seconds N] [--rate EVENTS_PER_SEC] [--entities N] [--kills K]
//! [--seed S] [--bin PATH] [--samples CSV]` (defaults 300 s, 10,000 events/s, 20,000 entities, 3 kills);
//! `scripts/soak.sh` builds and runs it. Exit 0 only when every check passes.
//!
//! # Phases (T = `--seconds`)
//!
//! 1. Setup (not timed): the whole stream is generated up front (`gen`: rate × T lines over 2,500 days, 2 % bad
//!    lines of every kind, 2 % duplicates, 5 % bursty entities, no late events) and replayed in this process for
//!    the expected alerts. The first daemon starts and takes its partitions.
//! 2. Kill phase, the first 40 % of T: the stream is produced at a steady rate (a batch every 10 ms) while the
//!    daemon is killed with SIGKILL `--kills` times at seeded random moments (a moment that comes while it is
//!    still restarting waits until it owns its partitions, plus 0.1-1.5 s) and restarted with the same
//!    configuration.
//! 3. Steady phase, from the moment the last incarnation owns its partitions to the end of production (about
//!    the last 55 % of T: a restart takes some 12 s, mostly the consumer group's rebalance): it runs
//!    undisturbed. The resource checks measure this phase; its first 25 % of samples are its warm-up (catch-up
//!    after the last kill, caches and buffers filling).
//! 4. Drain (up to 120 s): until the group has committed every input offset and the alert topic is read to its
//!    end. Then SIGTERM: the daemon must exit 0 within 30 s.
//!
//! Every second the daemon's VmRSS and Threads (`/proc/PID/status`), its open fds (`/proc/PID/fd`), and from
//! `/metrics` `credit_sentinel_lines_total`, accepted events and `credit_sentinel_tokio_tasks` (when exported)
//! are sampled, with the input lag (high watermarks minus the group's committed offsets).
//!
//! # Checks, and why these bounds
//!
//! - **Alerts equal replay**: the records read from the alert topic, as a multiset, equal `replay`'s (limited,
//!   as in `tests/kafka.rs`, to those before their partition's last event time: the event clock's horizon).
//!   Nothing lost, nothing repeated across the kills. With no late events the event clock equals replay's.
//! - **RSS flat after warm-up**: the median of the last 10 samples minus the median of the first 10 after
//!   warm-up is at most 64 MiB plus 16 bytes per event accepted in between. The stream spans 2,500 days, so
//!   the longest window (1,095 days) is full after 44 % of T: from then on as many events leave the windows as
//!   enter them. What still grows by design is the set of seen event ids: SPEC says a repeated id changes
//!   nothing however late, so ids are never forgotten. Each partition keeps 64-bit hashes in a hash set, 9
//!   bytes a slot at 44-87.5 % load: 10-21 bytes an id depending on where the table is between doublings, 16
//!   on average. The 64 MiB are for a doubling within the interval (in the default run each partition's set
//!   doubles to 2^20 slots at about 64 % of T: a step of some 20 MiB), the allocator, librdkafka's buffers.
//! - **No fd, thread or task leaks**: the maximum after warm-up is at most the maximum during warm-up plus 2
//!   fds (a checkpoint or state file open at the moment of a sample), plus 0 threads, plus 2 tokio tasks (a
//!   scrape's own connection tasks).
//! - The `--kills` kills happened, the producer kept at least 95 % of the rate, the daemon caught up.
//! - **The harness was valid**: the mock cluster keeps only 5 MB (or 100,000 batches) per partition and drops
//!   the oldest beyond, like a very short retention. Input is produced gzip-compressed, and the daemon's
//!   alerts too (`[kafka.producer_options]`), so that this holds over a minute at 10,000 events/s; an alert
//!   reader runs from the start. The soak then checks that the group's committed offset never fell below the
//!   first offset the cluster still held (else input that a restart re-reads was gone), that the reader saw
//!   every alert offset, and that the alert topic always held more than the longest restart's downtime plus
//!   2 s (a restart reads back the alerts produced since its last checkpoint so as not to produce them
//!   again). Were one of these to fail, lost or repeated alerts would be the harness's fault, not the daemon's.
//!
//! Not covered: e-mail notifications (no `[notify]`), several instances, broker outages (`tests/kafka.rs`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use credit_sentinel::alert::AlertRecord;
use credit_sentinel::engine::Engine;
use credit_sentinel::event::decode;
use credit_sentinel::generate::{GenOptions, generate};
use credit_sentinel::replay::{Input, replay};
use credit_sentinel::rules::load_dir;
use credit_sentinel::time::parse_rfc3339;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Soak test of the daemon against librdkafka's mock Kafka cluster (see the module documentation).
#[derive(Parser)]
struct Args {
    /// Seconds of production: kills in the first 40 %, the measured steady phase after.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Events (Kafka messages, bad lines and duplicates included) produced per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Entities of the generated stream.
    #[arg(long, default_value_t = 20_000)]
    entities: u32,
    /// SIGKILLs, each followed by a restart, in the first 40 % of the time.
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// Seed of the stream and of the kill moments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The daemon's binary [default: credit-sentinel in the directory above this example's].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Write every sample to this CSV file.
    #[arg(long)]
    samples: Option<PathBuf>,
}

const PARTITIONS: i32 = 4;
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/alert-rules");
const GROUP: &str = "sentinel-soak";
/// The stream's first instant and length: 2,500 days, so that the 1,095-day windows are full after 44 % of it.
const START: &str = "2020-01-01T00:00:00+08:00";
const DAYS: i64 = 2500;
/// Share of the time in which the kills happen; the rest is the steady phase.
const KILL_SHARE: f64 = 0.4;
/// Share of the steady phase's samples that are its warm-up.
const WARMUP_SHARE: f64 = 0.25;
/// RSS growth allowed after warm-up: a constant plus this much per accepted event (seen ids are kept forever).
const RSS_SLACK: f64 = 64.0 * 1024.0 * 1024.0;
const RSS_PER_EVENT: f64 = 16.0;
/// Samples in each of the two RSS medians, and the fewest samples after warm-up the checks accept.
const MEDIAN_OF: usize = 10;
const MIN_STEADY_SAMPLES: usize = 2 * MEDIAN_OF;
/// Allowed rise of the maximum after warm-up over the maximum during warm-up.
const FD_SLACK: u64 = 2;
const THREAD_SLACK: u64 = 0;
const TASK_SLACK: u64 = 2;
/// The producer must achieve this share of `--rate`.
const MIN_RATE_SHARE: f64 = 0.95;
const BATCH_EVERY: Duration = Duration::from_millis(10);
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
const STOP_LIMIT: Duration = Duration::from_secs(30);
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    let bin = args.bin.clone().unwrap_or_else(default_bin);
    assert!(bin.is_file(), "no daemon binary at {}: run `cargo build --release` first, or pass --bin", bin.display());
    let dir = tempfile::Builder::new()
        .prefix("credit-sentinel-soak-")
        .tempdir()
        .expect("creating a temporary directory")
        .keep();
    eprintln!("soak: work directory {} (config, logs, state; removed when every check passes)", dir.display());

    let setup = Instant::now();
    let text = stream(&args);
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let want = expected(&text, &lines);
    eprintln!(
        "soak: {} lines generated and replayed in {:.1} s: {} alerts expected",
        lines.len(),
        setup.elapsed().as_secs_f64(),
        want.alerts.len()
    );

    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let config = write_config(&dir, &bootstrap);
    let watch = Watch::new(&bootstrap);
    let alerts = Mutex::new(AlertLog::default());
    let stop = AtomicBool::new(false);

    // The kill moments, drawn once: seconds into the run, and a delay after the incarnation's assignment.
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut moments: Vec<f64> =
        (0..args.kills).map(|_| rng.random_range(0.0..args.seconds as f64 * KILL_SHARE)).collect();
    moments.sort_by(f64::total_cmp);
    let mut pending: VecDeque<(f64, f64)> = moments.into_iter().map(|m| (m, rng.random_range(0.1..1.5))).collect();

    let run = std::thread::scope(|s| {
        // Dropped last in this scope, also when unwinding: the threads below then end.
        let _stop = StopOnDrop(&stop);
        s.spawn(|| read_alerts(&bootstrap, &alerts, &stop));
        let mut daemon = Daemon::spawn(&bin, &config, &dir, 0);
        daemon.wait_assigned(Duration::from_secs(60));

        let start = Instant::now();
        let producer = s.spawn(|| produce(&bootstrap, &lines, args.rate, &stop));
        let mut sampler = Sampler { start, next: Duration::ZERO, samples: Vec::new(), watch: &watch, alerts: &alerts };
        let mut restarts: Vec<Restart> = Vec::new();
        while !producer.is_finished() {
            daemon.poll_log();
            if let Some(r) = restarts.last_mut()
                && r.downtime.is_none()
                && let Some(assigned) = daemon.assigned
            {
                r.downtime = Some(assigned.duration_since(r.killed).as_secs_f64());
            }
            // Steady once the last incarnation owns its partitions (its restore is not part of it).
            sampler.tick(
                &daemon,
                if pending.is_empty() && daemon.assigned.is_some() { Phase::Steady } else { Phase::Kills },
            );
            if let Some(&(moment, delay)) = pending.front()
                && let Some(assigned) = daemon.assigned
            {
                let due = moment.max(assigned.saturating_duration_since(start).as_secs_f64() + delay);
                if start.elapsed().as_secs_f64() >= due {
                    let killed = daemon.kill();
                    eprintln!(
                        "soak: SIGKILL at {:.1} s (incarnation {})",
                        killed.duration_since(start).as_secs_f64(),
                        daemon.incarnation
                    );
                    restarts.push(Restart { at: killed.duration_since(start).as_secs_f64(), killed, downtime: None });
                    daemon = Daemon::spawn(&bin, &config, &dir, daemon.incarnation + 1);
                    pending.pop_front();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let produced = producer.join().expect("the producer thread panicked");
        eprintln!("soak: produced {} lines in {:.1} s; draining", produced.sent, produced.secs);

        // Drain: every input offset committed, and the alert topic read to its end.
        let drain = Instant::now();
        let drained = loop {
            daemon.poll_log();
            sampler.tick(&daemon, Phase::Drain);
            let input_done = watch.input().is_some_and(|i| i.lag == 0);
            if input_done && alerts_read_to_end(&watch, &alerts) {
                break Some(drain.elapsed().as_secs_f64());
            }
            if drain.elapsed() > DRAIN_LIMIT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let stopped = daemon.terminate();
        // Whatever the stop produced is read too (a graceful stop must not add alerts).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !alerts_read_to_end(&watch, &alerts) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let log_problems = (0..=daemon.incarnation).flat_map(|i| problems(&dir.join(log_name(i)))).collect();
        Run { samples: sampler.samples, restarts, produced, drained, stopped, log_problems }
    });

    let alerts = alerts.into_inner().expect("the alert reader panicked");
    let dead_letters = watch.watermarks("dlq", 0).map_or(0, |(_, high)| high);
    let ok = report(&args, &lines, &want, &run, alerts, dead_letters);
    if let Some(path) = &args.samples {
        write_samples(path, &run.samples);
    }
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
        ExitCode::SUCCESS
    } else {
        println!("work_dir: {} (kept: config, daemon logs, state)", dir.display());
        ExitCode::FAILURE
    }
}

/// target/release/credit-sentinel: this example runs from target/release/examples/.
fn default_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this executable");
    let release = exe.parent().and_then(Path::parent).expect("the example lives in target/<profile>/examples/");
    release.join("credit-sentinel")
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The stream and what replay says of it

/// The whole generated stream (JSON Lines).
fn stream(args: &Args) -> Vec<u8> {
    let opts = GenOptions {
        seed: args.seed,
        entities: args.entities,
        events: args.rate * args.seconds,
        start: START.into(),
        days: DAYS,
        bad: 0.02,
        duplicates: 0.02,
        late: 0.0,
        bursty: 0.05,
    };
    let mut out = Vec::new();
    generate(&opts, &mut out).expect("generating the stream");
    out
}

/// The `entity_id` text of a line (valid events, and the alert records raised for them), found by bytes so
/// that bad lines have one too when they name an entity; empty when there is none.
fn entity_of(line: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"entity_id\":\"";
    let Some(i) = line.windows(KEY.len()).position(|w| w == KEY) else { return b"" };
    let rest = &line[i + KEY.len()..];
    rest.iter().position(|&b| b == b'"').map_or(b"", |end| &rest[..end])
}

/// The input partition of line `index`: by entity, so that an entity's events (in time order) share one;
/// lines without an entity by position. An alert record maps to its entity's partition the same way.
fn partition_of(line: &[u8], index: usize) -> i32 {
    match entity_of(line) {
        [] => (index % PARTITIONS as usize) as i32,
        key => (crc32fast::hash(key) % PARTITIONS as u32) as i32,
    }
}

/// Replay's view of the stream.
struct Expected {
    /// The alert records (JSON, sorted) the alert topic must hold.
    alerts: Vec<String>,
    rejected: u64,
    duplicates: u64,
}

/// The alert records `replay` prints for the stream, limited to those before their partition's clock (the
/// latest event time of the partition: the event clock has not passed later instants), sorted.
fn expected(text: &[u8], lines: &[&[u8]]) -> Expected {
    let rules = Arc::new(load_dir(Path::new(RULES)).expect("loading alert-rules/"));
    let mut engine = Engine::new(rules).expect("creating the engine");
    let mut alerts = Vec::new();
    let summary = replay(
        &mut engine,
        vec![Input::from_bytes("stream", text.to_vec())],
        None,
        &mut |e, a| alerts.push(serde_json::to_string(&AlertRecord::new(a, e.rules())).expect("alert as JSON")),
        &mut |_| {},
    )
    .expect("replaying the stream");
    assert_eq!(summary.late, 0, "the stream must be in time order for the event clock to equal replay");
    assert_eq!(summary.lines, lines.len() as u64, "replay and the producer must see the same lines");
    let mut clock = [i64::MIN; PARTITIONS as usize];
    for (i, line) in lines.iter().enumerate() {
        if let Ok(e) = decode(line) {
            let c = &mut clock[partition_of(line, i) as usize];
            *c = (*c).max(e.at);
        }
    }
    #[derive(serde::Deserialize)]
    struct At {
        at: String,
    }
    alerts.retain(|a| {
        let at: At = serde_json::from_str(a).expect("an alert record has `at`");
        parse_rfc3339(&at.at).expect("`at` is RFC 3339") < clock[partition_of(a.as_bytes(), 0) as usize]
    });
    alerts.sort();
    Expected { alerts, rejected: summary.rejected_total(), duplicates: summary.duplicates }
}

// ---------------------------------------------------------------------------------------------------------------
// Kafka: the cluster, the producer, the alert reader, offsets

/// 3 brokers; `events` and `alerts` with 4 partitions, `dlq` with 1.
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(3).expect("starting the mock cluster");
    for (topic, partitions) in [("events", PARTITIONS), ("alerts", PARTITIONS), ("dlq", 1)] {
        mock.create_topic(topic, partitions, 3).unwrap_or_else(|e| panic!("creating topic {topic}: {e}"));
    }
    mock
}

/// What the producer did.
struct Produced {
    sent: u64,
    /// From the first send to the last (before the final flush).
    secs: f64,
    /// The most it was behind its schedule (`rate` × elapsed), in seconds.
    max_behind: f64,
}

/// Produces `lines` to `events` at `rate` lines per second, a batch every 10 ms, keyed by entity.
fn produce(bootstrap: &str, lines: &[&[u8]], rate: u64, stop: &AtomicBool) -> Produced {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        // Compressed, so that the mock cluster's 5 MB per partition hold about a minute (see the top).
        .set("compression.type", "gzip")
        .set("linger.ms", "50")
        .create()
        .expect("creating the producer");
    let start = Instant::now();
    let (mut next, mut max_behind) = (0, 0.0f64);
    while next < lines.len() && !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed().as_secs_f64();
        max_behind = max_behind.max(elapsed - next as f64 / rate as f64);
        let due = ((elapsed * rate as f64) as usize).min(lines.len());
        for (i, line) in lines.iter().enumerate().take(due).skip(next) {
            let mut record =
                BaseRecord::to("events").partition(partition_of(line, i)).key(entity_of(line)).payload(*line);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        // The queue is full: wait for deliveries.
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        next = due;
        std::thread::sleep(BATCH_EVERY);
    }
    let secs = start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60)).expect("the producer could not deliver its last messages within 60 s");
    Produced { sent: next as u64, secs, max_behind }
}

/// Everything read from the alert topic.
#[derive(Default)]
struct AlertLog {
    payloads: Vec<String>,
    /// Per partition, when each offset was read (index = offset).
    read_at: [Vec<Instant>; PARTITIONS as usize],
    /// Offsets the cluster dropped before the reader got them.
    missed: u64,
}

/// Reads every partition of `alerts` from the beginning, as records arrive, until `stop`.
fn read_alerts(bootstrap: &str, log: &Mutex<AlertLog>, stop: &AtomicBool) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "soak-alert-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the alert reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("alerts", p, Offset::Beginning).expect("alert partition list");
    }
    consumer.assign(&tpl).expect("assigning the alert partitions");
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                let mut log = log.lock().expect("alert log");
                let offset = m.offset() as usize;
                let read_at = &mut log.read_at[m.partition() as usize];
                if offset < read_at.len() {
                    continue; // read already
                }
                let missed = offset - read_at.len();
                read_at.resize(offset + 1, now);
                log.missed += missed as u64;
                log.payloads.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            Some(Err(e)) => eprintln!("soak: alert reader: {e}"),
            None => {}
        }
    }
}

/// Whether the reader has read every alert partition up to its current end.
fn alerts_read_to_end(watch: &Watch, log: &Mutex<AlertLog>) -> bool {
    (0..PARTITIONS).all(|p| {
        let read = log.lock().expect("alert log").read_at[p as usize].len() as i64;
        watch.watermarks("alerts", p).is_some_and(|(_, high)| read >= high)
    })
}

/// Offsets as the cluster and the daemon's group see them (a consumer that never joins the group).
struct Watch {
    consumer: BaseConsumer,
}

/// The input topic's state.
struct InputState {
    /// Messages not yet committed by the group, over all partitions.
    lag: i64,
    /// Partitions whose committed offset lies below the first offset the cluster still holds.
    dropped_uncommitted: Vec<i32>,
    /// The least, over partitions the cluster has dropped messages of, of the committed offset minus the first
    /// offset still held: how far retention is from input a restart would need. `None` while nothing is dropped.
    headroom: Option<i64>,
}

impl Watch {
    fn new(bootstrap: &str) -> Watch {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .create()
            .expect("creating the offset watcher");
        Watch { consumer }
    }

    /// (low, high) watermarks of a partition.
    fn watermarks(&self, topic: &str, p: i32) -> Option<(i64, i64)> {
        self.consumer.fetch_watermarks(topic, p, BROKER_TIMEOUT).ok()
    }

    fn input(&self) -> Option<InputState> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition("events", p);
        }
        let committed = self.consumer.committed_offsets(tpl, BROKER_TIMEOUT).ok()?;
        let mut state = InputState { lag: 0, dropped_uncommitted: Vec::new(), headroom: None };
        for p in 0..PARTITIONS {
            let (low, high) = self.watermarks("events", p)?;
            // No commit yet: the group starts from the beginning.
            let done = committed.find_partition("events", p).and_then(|e| e.offset().to_raw()).unwrap_or(0).max(0);
            state.lag += high - done;
            if done < low {
                state.dropped_uncommitted.push(p);
            }
            if low > 0 {
                state.headroom = Some(state.headroom.map_or(done - low, |h| h.min(done - low)));
            }
        }
        Some(state)
    }

    /// How long the alert topic holds records now: the age (by the reader's clock) of the oldest record the
    /// cluster still holds, least over the partitions that have dropped any; `None` when none has.
    fn alert_retention(&self, log: &Mutex<AlertLog>) -> Option<f64> {
        let now = Instant::now();
        let mut least: Option<f64> = None;
        for p in 0..PARTITIONS {
            let (low, _) = self.watermarks("alerts", p)?;
            if low > 0 {
                let log = log.lock().expect("alert log");
                let held =
                    log.read_at[p as usize].get(low as usize).map_or(0.0, |t| now.duration_since(*t).as_secs_f64());
                least = Some(least.map_or(held, |l| l.min(held)));
            }
        }
        least
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The daemon process

/// The daemon's configuration: the event clock, the Kafka source against the mock cluster, checkpoints every
/// second, metrics on a free loopback port.
fn write_config(dir: &Path, bootstrap: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"rules = "{RULES}"
state_dir = "{state}"

[clock]
mode = "event"

[checkpoint]
interval_secs = 1

[kafka]
brokers = "{bootstrap}"
group_id = "{GROUP}"
topics = ["events"]
alert_topic = "alerts"
dead_letter_topic = "dlq"
poll_ms = 50

[kafka.consumer_options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[kafka.producer_options]
# The mock cluster keeps 5 MB per partition: compressed alerts stay longer (see examples/soak.rs).
"compression.type" = "gzip"

[metrics]
listen = "127.0.0.1:0"
"#,
        state = dir.join("state").display(),
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

fn log_name(incarnation: usize) -> String {
    format!("daemon-{incarnation}.log")
}

/// One incarnation of the daemon. Killed when dropped while running (so a panic leaves no process behind).
struct Daemon {
    child: Child,
    incarnation: usize,
    log: PathBuf,
    /// The metrics endpoint, once its log says where.
    addr: Option<String>,
    /// When its log showed every partition assigned.
    assigned: Option<Instant>,
}

impl Daemon {
    fn spawn(bin: &Path, config: &Path, dir: &Path, incarnation: usize) -> Daemon {
        let log = dir.join(log_name(incarnation));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Daemon { child, incarnation, log, addr: None, assigned: None }
    }

    /// Learns the metrics address and the assignment from the log; panics (with the log) if the daemon died.
    fn poll_log(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "daemon incarnation {} exited by itself ({status}); its log:\n{}",
                self.incarnation,
                self.log_tail()
            );
        }
        if self.addr.is_some() && self.assigned.is_some() {
            return;
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if self.addr.is_none() {
            self.addr = text
                .split("metrics listening")
                .nth(1)
                .and_then(|rest| rest.split("addr=").nth(1)?.split_whitespace().next().map(str::to_owned));
        }
        if self.assigned.is_none() && text.matches("partition assigned").count() >= PARTITIONS as usize {
            self.assigned = Some(Instant::now());
        }
    }

    fn wait_assigned(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.assigned.is_none() || self.addr.is_none() {
            assert!(
                Instant::now() < deadline,
                "no metrics address and assignment within {limit:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
            self.poll_log();
        }
    }

    /// SIGKILL, reaped; the instant of the kill.
    fn kill(&mut self) -> Instant {
        let at = Instant::now();
        self.child.kill().expect("SIGKILL to the daemon");
        self.child.wait().expect("reaping the killed daemon");
        at
    }

    /// SIGTERM; the exit status and how long the stop took, or `None` if it had not exited within 30 s.
    fn terminate(&mut self) -> Option<(std::process::ExitStatus, f64)> {
        let at = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM to the daemon");
        while at.elapsed() < STOP_LIMIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, at.elapsed().as_secs_f64()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The last 40 lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// WARN and ERROR lines of a daemon log.
fn problems(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Samples

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// The kill phase, up to the last incarnation owning its partitions.
    Kills,
    /// The last incarnation while the stream is produced: what the resource checks measure.
    Steady,
    /// After production.
    Drain,
}

struct Sample {
    /// Seconds since production started.
    t: f64,
    incarnation: usize,
    phase: Phase,
    rss: u64,
    fds: u64,
    threads: u64,
    /// From /metrics (counters start at 0 in each incarnation); `None` when the scrape failed.
    lines: Option<f64>,
    accepted: Option<f64>,
    /// `credit_sentinel_tokio_tasks`, when exported.
    tasks: Option<f64>,
    input_lag: Option<i64>,
    /// Partitions whose committed offset the cluster's retention had passed.
    dropped_uncommitted: Vec<i32>,
    input_headroom: Option<i64>,
    alert_retention: Option<f64>,
}

/// Takes a sample every second.
struct Sampler<'a> {
    /// When production started.
    start: Instant,
    /// When the next sample is due, from `start`.
    next: Duration,
    samples: Vec<Sample>,
    watch: &'a Watch,
    alerts: &'a Mutex<AlertLog>,
}

impl Sampler<'_> {
    /// Samples `daemon` if a sample is due; a progress line on stderr every 30 s.
    fn tick(&mut self, daemon: &Daemon, phase: Phase) {
        if self.start.elapsed() < self.next {
            return;
        }
        self.samples.extend(sample(daemon, self.start, phase, self.watch, self.alerts));
        if self.next.as_secs().is_multiple_of(30)
            && let Some(s) = self.samples.last()
        {
            eprintln!(
                "soak: {:.0} s, incarnation {}, {:?}: RSS {:.1} MiB, {} fds, {} threads, input lag {:?}",
                s.t,
                s.incarnation,
                s.phase,
                s.rss as f64 / MIB,
                s.fds,
                s.threads,
                s.input_lag
            );
        }
        self.next += Duration::from_secs(1);
    }
}

/// A sample of the running daemon; `None` when its /proc entry is gone (killed in between).
fn sample(daemon: &Daemon, start: Instant, phase: Phase, watch: &Watch, alerts: &Mutex<AlertLog>) -> Option<Sample> {
    let pid = daemon.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let rss = field("VmRSS:")? * 1024;
    let threads = field("Threads:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let body = daemon.addr.as_deref().and_then(|addr| http_get(addr, "/metrics"));
    let metric = |name: &str, label: &str| body.as_deref().and_then(|b| metric_sum(b, name, label));
    let input = watch.input();
    Some(Sample {
        t: start.elapsed().as_secs_f64(),
        incarnation: daemon.incarnation,
        phase,
        rss,
        fds,
        threads,
        lines: metric("credit_sentinel_lines_total", ""),
        accepted: metric("credit_sentinel_events_total", "outcome=\"accepted\""),
        tasks: metric("credit_sentinel_tokio_tasks", ""),
        input_lag: input.as_ref().map(|i| i.lag),
        input_headroom: input.as_ref().and_then(|i| i.headroom),
        dropped_uncommitted: input.map(|i| i.dropped_uncommitted).unwrap_or_default(),
        alert_retention: watch.alert_retention(alerts),
    })
}

/// GET `path` (HTTP/1.0) and the body when the status is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// The sum of the samples of metric `name` whose labels contain `label` (Prometheus text format).
fn metric_sum(body: &str, name: &str, label: &str) -> Option<f64> {
    let mut sum = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some((labels, value)) = rest.rsplit_once(' ') else { continue };
        if (rest.starts_with(' ') || rest.starts_with('{'))
            && labels.contains(label)
            && let Ok(v) = value.parse::<f64>()
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

fn write_samples(path: &Path, samples: &[Sample]) {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let mut csv = String::from(
        "t_secs,incarnation,phase,rss_bytes,fds,threads,tokio_tasks,lines_total,events_accepted,input_lag,\
         input_headroom,alert_retention_secs\n",
    );
    for s in samples {
        csv.push_str(&format!(
            "{:.1},{},{:?},{},{},{},{},{},{},{},{},{}\n",
            s.t,
            s.incarnation,
            s.phase,
            s.rss,
            s.fds,
            s.threads,
            opt(s.tasks),
            opt(s.lines),
            opt(s.accepted),
            s.input_lag.map_or(String::new(), |l| l.to_string()),
            s.input_headroom.map_or(String::new(), |h| h.to_string()),
            s.alert_retention.map_or(String::new(), |r| format!("{r:.1}")),
        ));
    }
    std::fs::write(path, csv).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------------------------
// Checks and the summary

struct Restart {
    /// Seconds since production started.
    at: f64,
    killed: Instant,
    /// Seconds from the kill to the new incarnation owning every partition.
    downtime: Option<f64>,
}

struct Run {
    samples: Vec<Sample>,
    restarts: Vec<Restart>,
    produced: Produced,
    /// Seconds the drain took, `None` if it did not finish in time.
    drained: Option<f64>,
    /// The exit status after SIGTERM and the seconds it took.
    stopped: Option<(std::process::ExitStatus, f64)>,
    log_problems: Vec<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints the summary (`key: value` lines) and each check; whether all passed.
fn report(args: &Args, lines: &[&[u8]], want: &Expected, run: &Run, alerts: AlertLog, dead_letters: i64) -> bool {
    let mut checks: Vec<(&str, bool, String)> = Vec::new();
    let p = |key: &str, value: String| println!("{key}: {value}");

    p("seconds", args.seconds.to_string());
    p("rate_requested", format!("{} events/s", args.rate));
    p("entities", args.entities.to_string());
    p("lines_generated", lines.len().to_string());
    p("bad_lines", want.rejected.to_string());
    p("duplicates", want.duplicates.to_string());
    p("dead_letters_produced", format!("{dead_letters} (at least once: lines re-read after a kill are sent again)"));
    let achieved = run.produced.sent as f64 / run.produced.secs;
    p("events_produced", run.produced.sent.to_string());
    p("throughput_achieved", format!("{achieved:.0} events/s over {:.1} s", run.produced.secs));
    p("producer_max_behind_schedule", format!("{:.2} s", run.produced.max_behind));
    checks.push((
        "producer kept the rate",
        run.produced.sent == lines.len() as u64 && achieved >= MIN_RATE_SHARE * args.rate as f64,
        format!(
            "{} of {} lines at {achieved:.0} events/s, need >= {:.0}",
            run.produced.sent,
            lines.len(),
            MIN_RATE_SHARE * args.rate as f64
        ),
    ));

    let at: Vec<String> = run.restarts.iter().map(|r| format!("{:.1}", r.at)).collect();
    p("kills", format!("{} (at {} s)", run.restarts.len(), at.join(", ")));
    checks.push((
        "kills happened",
        run.restarts.len() == args.kills,
        format!("{} of {} kills before production ended", run.restarts.len(), args.kills),
    ));
    let downtimes: Vec<f64> = run.restarts.iter().filter_map(|r| r.downtime).collect();
    let max_downtime = downtimes.iter().copied().fold(0.0, f64::max);
    p("restart_downtime_max", format!("{max_downtime:.1} s (kill to every partition assigned)"));

    // The alert stream.
    let mut got = alerts.payloads;
    got.sort();
    let (missing, extra) = differences(&want.alerts, &got);
    p("alerts_expected", want.alerts.len().to_string());
    p("alerts_received", got.len().to_string());
    p("alerts_missing", missing.len().to_string());
    p("alerts_extra_or_repeated", extra.len().to_string());
    let clip = |v: &[&String]| v.iter().take(3).map(|a| a.chars().take(300).collect::<String>()).collect::<Vec<_>>();
    checks.push((
        "alert topic equals replay",
        missing.is_empty() && extra.is_empty(),
        format!("missing (first 3): {:?}; extra or repeated (first 3): {:?}", clip(&missing), clip(&extra)),
    ));
    p("drain", run.drained.map_or("not caught up within 120 s".into(), |d| format!("{d:.1} s")));
    checks.push(("caught up after production", run.drained.is_some(), "input lag or unread alerts after 120 s".into()));
    match run.stopped {
        Some((status, secs)) => {
            p("sigterm_stop", format!("{status} after {secs:.1} s"));
            checks.push(("graceful stop exits 0", status.success(), format!("exit status {status}")));
        }
        None => {
            p("sigterm_stop", "still running after 30 s".into());
            checks.push(("graceful stop exits 0", false, "still running 30 s after SIGTERM".into()));
        }
    }

    // The steady phase: the last incarnation while producing.
    let last = run.restarts.len();
    let steady: Vec<&Sample> =
        run.samples.iter().filter(|s| s.phase == Phase::Steady && s.incarnation == last).collect();
    let warmup = (steady.len() as f64 * WARMUP_SHARE).ceil() as usize;
    let (during, after) = steady.split_at(warmup.min(steady.len()));
    p(
        "steady_phase",
        format!(
            "{} samples from {:.1} s: warm-up {} samples, measured {} samples from {:.1} s",
            steady.len(),
            steady.first().map_or(0.0, |s| s.t),
            during.len(),
            after.len(),
            after.first().map_or(0.0, |s| s.t)
        ),
    );
    if after.len() < MIN_STEADY_SAMPLES {
        checks.push((
            "steady phase long enough",
            false,
            format!("{} samples after warm-up, need {MIN_STEADY_SAMPLES}: run longer", after.len()),
        ));
    }
    if after.len() >= 2 {
        // Medians of 10 samples (fewer, for the figures only, when the phase is too short: a failed check).
        let n = MEDIAN_OF.min(after.len() / 2);
        let rss: Vec<f64> = after.iter().map(|s| s.rss as f64).collect();
        let first = median(rss[..n].to_vec());
        let last = median(rss[rss.len() - n..].to_vec());
        let accepted = match (after.iter().find_map(|s| s.accepted), after.iter().rev().find_map(|s| s.accepted)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        p(
            "rss_after_warmup",
            format!(
                "min {:.1} MiB, median {:.1} MiB, max {:.1} MiB",
                rss.iter().copied().fold(f64::INFINITY, f64::min) / MIB,
                median(rss.clone()) / MIB,
                rss.iter().copied().fold(0.0, f64::max) / MIB
            ),
        );
        p("rss_warmup_max", format!("{:.1} MiB", during.iter().map(|s| s.rss as f64).fold(0.0, f64::max) / MIB));
        match accepted {
            Some(events) => {
                let bound = RSS_SLACK + RSS_PER_EVENT * events;
                let growth = last - first;
                p("events_accepted_after_warmup", format!("{events:.0}"));
                p(
                    "rss_growth",
                    format!(
                        "{:.1} MiB (median of last {n} {:.1} MiB - median of first {n} {:.1} MiB), bound {:.1} MiB",
                        growth / MIB,
                        last / MIB,
                        first / MIB,
                        bound / MIB
                    ),
                );
                checks.push((
                    "RSS flat after warm-up",
                    growth <= bound,
                    format!(
                        "grew {:.1} MiB, bound {:.0} MiB + {RSS_PER_EVENT} B x {events:.0} events = {:.1} MiB",
                        growth / MIB,
                        RSS_SLACK / MIB,
                        bound / MIB
                    ),
                ));
            }
            None => checks.push(("RSS flat after warm-up", false, "no accepted-events count from /metrics".into())),
        }
        for (name, key, slack, get) in [
            ("fds", "no fd leak", FD_SLACK, (|s: &Sample| Some(s.fds as f64)) as fn(&Sample) -> Option<f64>),
            ("threads", "no thread leak", THREAD_SLACK, |s: &Sample| Some(s.threads as f64)),
            ("tokio_tasks", "no task leak", TASK_SLACK, |s: &Sample| s.tasks),
        ] {
            let max = |v: &[&Sample]| v.iter().filter_map(|s| get(s)).reduce(f64::max);
            match (max(during), max(after)) {
                (Some(d), Some(a)) => {
                    p(name, format!("warm-up max {d:.0}, after warm-up max {a:.0} (allowed +{slack})"));
                    checks.push((
                        key,
                        a <= d + slack as f64,
                        format!("{name}: {a:.0} after warm-up > {d:.0} + {slack}"),
                    ));
                }
                _ => p(name, "not exported (skipped)".into()),
            }
        }
        let lag = after.iter().filter_map(|s| s.input_lag).max().unwrap_or(0);
        p("input_lag_max_after_warmup", format!("{lag} messages (uncommitted; commits follow 1 s checkpoints)"));
    }

    // Was the harness valid?
    let dropped: Vec<String> = run
        .samples
        .iter()
        .filter(|s| !s.dropped_uncommitted.is_empty())
        .map(|s| format!("{:.0} s: partitions {:?}", s.t, s.dropped_uncommitted))
        .collect();
    checks.push((
        "harness: mock retention kept all uncommitted input",
        dropped.is_empty(),
        format!("committed offset below the first held offset at {}: lower --rate", dropped.join("; ")),
    ));
    let headroom = run.samples.iter().filter_map(|s| s.input_headroom).min();
    p(
        "input_retention_headroom_min",
        headroom.map_or("nothing dropped".into(), |h| format!("{h} messages (committed minus first held offset)")),
    );
    p("alert_reader_missed_offsets", alerts.missed.to_string());
    checks.push((
        "harness: alert reader saw every offset",
        alerts.missed == 0,
        format!("{} alerts dropped before read", alerts.missed),
    ));
    let retention = run.samples.iter().filter_map(|s| s.alert_retention).reduce(f64::min);
    p("alert_topic_retention_min", retention.map_or("nothing dropped".into(), |r| format!("{r:.1} s")));
    checks.push((
        "harness: alert retention exceeded restart downtime",
        retention.is_none_or(|r| r > max_downtime + 2.0),
        format!("alert topic held {:.1} s, longest restart {max_downtime:.1} s (+2 s)", retention.unwrap_or(0.0)),
    ));

    p("daemon_log_warnings_and_errors", run.log_problems.len().to_string());
    for line in run.log_problems.iter().take(5) {
        p("daemon_log", line.clone());
    }
    let mut ok = true;
    for (name, passed, why) in &checks {
        if *passed {
            println!("check: {name}: ok");
        } else {
            ok = false;
            println!("check: {name}: FAILED: {why}");
        }
    }
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
    ok
}

/// Records of `want` not in `got` and records of `got` not in `want` (both sorted), counted with multiplicity:
/// a record received twice is once extra.
fn differences<'a>(want: &'a [String], got: &'a [String]) -> (Vec<&'a String>, Vec<&'a String>) {
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < got.len() {
        if i < want.len() && j < got.len() && want[i] == got[j] {
            (i, j) = (i + 1, j + 1);
        } else if j == got.len() || (i < want.len() && want[i] < got[j]) {
            missing.push(&want[i]);
            i += 1;
        } else {
            extra.push(&got[j]);
            j += 1;
        }
    }
    (missing, extra)
}
