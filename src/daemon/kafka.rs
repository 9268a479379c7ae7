//! The Kafka source: a consumer group over the input topics, one state partition per input partition, alerts
//! and bad input produced to topics.
//!
//! # Exactly once, without transactions
//! - State partitions are co-partitioned like Kafka Streams' tasks: state partition `p` holds partition `p`
//!   of every input topic (the topics must have as many partitions and be keyed by `entity_id` with the same
//!   partitioner), so an entity's events from all topics meet in one engine. The `range` assignor keeps the
//!   partitions `p` of all topics on one instance.
//! - Offsets are ours: `enable.auto.commit=false`. A partition's positions are part of its checkpoint; on
//!   assignment the consumer starts at the checkpoint's offsets, and the group offsets are committed only
//!   after that checkpoint is durable (they are then only informational: lag, tooling).
//! - Before a checkpoint the producer is flushed, so every alert raised by the input before the checkpoint
//!   is in the alert topic, below the partition's **mark** (the alert partition's end offset, recorded in the
//!   checkpoint). Input partition `p` writes to alert partition `p mod n`.
//! - After a crash the input after the checkpoint is read again and, the engine being deterministic under
//!   the event clock, raises the same alerts with the same `alert_id`s. On assignment the alert partition is
//!   read from the mark to its end: the ids found there were produced by the run that crashed and are not
//!   produced again ([`Task::suppress`]). With the wall clock, re-read input is evaluated at the new `now`:
//!   alerts are then at least once.
//! - Duplicated input is dropped by `event_id` (the dedup memory is in the checkpoint too).
//! - Revocation checkpoints and commits the partitions before they are given up, inside the rebalance
//!   callback (which librdkafka runs on this thread, inside `poll`), so the next owner starts where this
//!   one stopped. Partitions' checkpoints live under `state_dir/kafka/partition-<p>`: instances that share a
//!   group must share that directory (one host, or shared storage).
//!
//! Bad messages are produced to the dead-letter topic with their reason and origin in headers (at least
//! once: after a crash a bad message may be dead-lettered again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::checkpoint::Store;
use crate::config::{ClockConfig, Config, KafkaConfig};
use crate::event::{Location, Reason, decode};
use crate::rules::RuleSet;

use super::task::Task;
use super::{Chores, DaemonError, Handle, Stats, wall_now};

/// How long to wait for broker answers (metadata, watermarks, flush) before trying again later.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages handled per turn of the loop between looks at the clock and the handle.
const MESSAGES_PER_TURN: usize = 4096;

type Producer_ = ThreadedProducer<Delivery>;

pub fn run(config: &Config, kafka: &KafkaConfig, rules: Arc<RuleSet>, handle: &Handle) -> Result<(), DaemonError> {
    let stats = handle.stats();
    let base = kafka.client_properties().map_err(|error| DaemonError::Io { context: "kafka secret".into(), error })?;
    let producer = Arc::new(producer(kafka, &base)?);
    let alert_partitions = partitions_of(&producer, &kafka.alert_topic)?;
    if !config.bootstrap.files.is_empty() {
        bootstrap(config, kafka, &rules, &producer, alert_partitions, handle)?;
    }
    let ctx = Ctx {
        parts: Mutex::new(Parts { tasks: HashMap::new(), rules }),
        producer: producer.clone(),
        kafka: kafka.clone(),
        base: base.clone(),
        clock: config.clock.clone(),
        limits: config.limits.engine(),
        state: config.state_dir().join("kafka"),
        keep: config.checkpoint.keep,
        alert_partitions,
        handle: handle.clone(),
        fatal: Mutex::new(None),
        poisoned: std::sync::atomic::AtomicBool::new(false),
    };
    let mut cc = client_config(&base);
    cc.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range");
    // The lag metric and readiness come from the statistics; an operator's setting ([kafka.options] or
    // [kafka.consumer_options]) wins.
    if !base.iter().any(|(k, _)| k == "statistics.interval.ms") {
        cc.set("statistics.interval.ms", "5000");
    }
    for (k, v) in &kafka.consumer_options {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<Ctx> = cc.create_with_context(ctx).map_err(kafka_error)?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(kafka_error)?;
    // READY comes with the first assignment, once its partitions' state is restored (`Ctx::assign`).
    tracing::info!(brokers = %kafka.brokers, group = %kafka.group_id, topics = %kafka.topics.join(","), "consuming");

    let mut chores = Chores::new(config);
    let ready_max_lag = config.metrics.as_ref().map_or(0, |m| m.ready_max_lag);
    let mut last_lag = std::time::Instant::now();
    let result = (|| {
        while !handle.stopping() {
            if let Some(fatal) = consumer.context().take_fatal() {
                return Err(fatal);
            }
            if let Some(new) = handle.take_reload() {
                if let Some(regional) = handle.regional() {
                    regional.set_rules(&new);
                }
                {
                    let mut parts = consumer.context().lock();
                    for task in parts.tasks.values_mut() {
                        task.set_rules(new.clone())?;
                    }
                    parts.rules = new.clone();
                }
                Stats::add(&stats.reloads_ok, 1);
                tracing::info!("rules reloaded");
                handle.audit_reload(Some(&new), None);
                // The re-evaluation under the new rules is now part of each partition's pending batch; the
                // checkpoint holds it with the new rules, so a crash cannot replay the reload at another instant.
                if let Some(tpl) = consumer.context().checkpoint_all(None)? {
                    commit(&consumer, &tpl);
                }
            }
            let mut wait = Duration::from_millis(kafka.poll_ms);
            for _ in 0..MESSAGES_PER_TURN {
                let Some(message) = consumer.poll(wait) else { break };
                wait = Duration::ZERO;
                match message {
                    Ok(m) => consumer.context().handle(&m, stats)?,
                    Err(error) => tracing::warn!(%error, "kafka consumer error"),
                }
            }
            let ctx = consumer.context();
            {
                let mut parts = ctx.lock();
                let wall = wall_now();
                let mut entities = 0;
                for (p, task) in parts.tasks.iter_mut() {
                    task.tick(wall, stats);
                    ctx.produce_alerts(*p, task)?;
                    entities += task.engine.entities() as u64;
                }
                stats.entities.store(entities, Ordering::Relaxed);
                stats.partitions.store(parts.tasks.len() as u64, Ordering::Relaxed);
                chores.view(stats, parts.tasks.values().map(|t| &t.engine));
                if last_lag.elapsed() >= Duration::from_secs(1) {
                    update_lag(&kafka.topics, &parts, stats, ready_max_lag);
                    last_lag = std::time::Instant::now();
                }
            }
            chores.ping(stats);
            if chores.checkpoint_due() {
                if let Some(tpl) = ctx.checkpoint_all(None)? {
                    commit(&consumer, &tpl);
                }
                chores.checkpointed();
            }
        }
        Ok(())
    })();
    // A fatal error met in a callback also stopped the loop: it is the outcome.
    let fatal = || consumer.context().take_fatal().map_or(Ok(()), Err);
    // The last checkpoint and commit; then leaving the group revokes the partitions (nothing left to do).
    let result = result.and_then(|()| fatal()).and_then(|()| consumer.context().checkpoint_all(None));
    match result {
        Ok(last) => {
            match last {
                Some(tpl) => commit(&consumer, &tpl),
                None => tracing::warn!(
                    "output not acknowledged at shutdown: the restart resumes from the previous checkpoint"
                ),
            }
            consumer.unsubscribe();
            if let Err(error) = fatal() {
                consumer.context().poison();
                return Err(error);
            }
            tracing::info!(status = %stats.status_line(), "stopped");
            Ok(())
        }
        Err(error) => {
            // Output may be missing after the last checkpoint: no checkpoint or commit may follow (the revocation
            // when the consumer is dropped included); a restart resumes from the last good one.
            consumer.context().poison();
            Err(error)
        }
    }
}

/// Computes the lag of the owned partitions (the high watermark from the statistics minus the next offset the
/// state holds, or the low watermark when the state holds none or one below it: retention removed the rest)
/// and whether the source has caught up: every owned partition's watermarks known and the lag within `max` in
/// all. With no partition owned, there is nothing to catch up with.
fn update_lag(topics: &[String], parts: &Parts, stats: &Stats, max: u64) {
    let mut lag = std::collections::BTreeMap::new();
    let mut known = true;
    for (&p, task) in &parts.tasks {
        for topic in topics {
            let next = task.meta.offsets.get(topic).copied().unwrap_or(0);
            match stats.watermarks(topic, p) {
                Some((low, high)) => {
                    let position = next.max(low.max(0) as u64);
                    lag.insert((topic.clone(), p), (high.max(0) as u64).saturating_sub(position));
                }
                None => known = false,
            }
        }
    }
    let total: u64 = lag.values().sum();
    stats.set_caught_up(known && total <= max);
    stats.set_lag(lag);
}

fn commit(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
    if tpl.count() == 0 {
        return;
    }
    // The checkpoint is the position of record; a failed commit only makes the group's lag look larger.
    if let Err(error) = consumer.commit(tpl, CommitMode::Sync) {
        tracing::warn!(%error, "offset commit failed (the checkpoint holds the position)");
    }
}

fn kafka_error(e: KafkaError) -> DaemonError {
    DaemonError::Kafka(e.to_string())
}

fn client_config(base: &[(String, String)]) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in base {
        cc.set(k, v);
    }
    cc
}

fn producer(kafka: &KafkaConfig, base: &[(String, String)]) -> Result<Producer_, DaemonError> {
    let mut cc = client_config(base);
    // Idempotent: retries never duplicate or reorder; no timeout: a broker outage is waited out.
    cc.set("enable.idempotence", "true").set("message.timeout.ms", "0").set("linger.ms", "5");
    for (k, v) in &kafka.producer_options {
        cc.set(k, v);
    }
    cc.create_with_context(Delivery { alert_topic: kafka.alert_topic.clone(), failed: AtomicU64::new(0) })
        .map_err(kafka_error)
}

/// The partition count of `topic`, waiting for the brokers if needed.
fn partitions_of(producer: &Producer_, topic: &str) -> Result<i32, DaemonError> {
    // Topic metadata can lag behind a topic's creation: a few attempts.
    let mut last = String::new();
    for _ in 0..6 {
        match producer.client().fetch_metadata(Some(topic), BROKER_TIMEOUT) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic)
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                {
                    return Ok(t.partitions().len() as i32);
                }
                last = format!("topic {topic} not found");
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(DaemonError::Kafka(format!("topic {topic}: {last}")))
}

/// Sends a record; when the producer's queue is full, waits for it to drain (backpressure on the
/// consumer loop, which then stops polling: nothing is dropped).
fn send<K, P>(producer: &Producer_, mut record: BaseRecord<'_, K, P>) -> Result<(), DaemonError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(kafka_error(error)),
        }
    }
}

/// The end offset of partition `q` of `topic`.
fn end_of(producer: &Producer_, topic: &str, q: i32) -> Result<u64, DaemonError> {
    let (_, high) = producer.client().fetch_watermarks(topic, q, BROKER_TIMEOUT).map_err(kafka_error)?;
    Ok(high.max(0) as u64)
}

/// Produces a task's pending alerts to alert partition `q`.
/// Produces a task's pending alerts to alert partition `q`, each with a header naming its input partition `p`.
fn produce_alerts(producer: &Producer_, topic: &str, q: i32, p: i32, task: &mut Task) -> Result<(), DaemonError> {
    let p_text = p.to_string();
    for out in task.take_output() {
        let headers = OwnedHeaders::new().insert(Header { key: INPUT_PARTITION, value: Some(&p_text) });
        send(producer, BaseRecord::to(topic).partition(q).key(&out.entity_id).payload(&out.json).headers(headers))?;
    }
    Ok(())
}

/// Header of alert records: the input (state) partition that raised the alert.
const INPUT_PARTITION: &str = "input_partition";

/// The input partition named in an alert record's header.
fn input_partition(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<i32> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == INPUT_PARTITION).and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
}

/// Loads history (`[bootstrap]`, `run --bootstrap`) into fresh state partitions before consuming, each
/// event into the partition its key maps to under the input producers' partitioner, and checkpoints them
/// (the input topics are then read from their beginning). Skipped when checkpoints exist. Alerts raised by
/// history go to the alert topic like any other.
fn bootstrap(
    config: &Config,
    kafka: &KafkaConfig,
    rules: &Arc<RuleSet>,
    producer: &Producer_,
    alert_partitions: i32,
    handle: &Handle,
) -> Result<(), DaemonError> {
    let stats = handle.stats();
    let root = config.state_dir().join("kafka");
    if root.join(BOOTSTRAP_DONE).exists() {
        tracing::info!(dir = %root.display(), "history was loaded before: not loaded again");
        return Ok(());
    }
    let started = root.join(BOOTSTRAP_STARTED);
    if started.exists() {
        // A load died before completing; no input was consumed after it (loading precedes consuming), so its
        // partial state is dropped and the load redone. Its alerts already produced are produced again.
        tracing::warn!(dir = %root.display(), "an earlier history load did not complete: loading it again");
        for entry in std::fs::read_dir(&root).into_iter().flatten().filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with("partition-") {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|error| DaemonError::Io { context: entry.path().display().to_string(), error })?;
            }
        }
    }
    let existing = std::fs::read_dir(&root)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_dir(e.path()).ok())
                .flatten()
                .filter_map(Result::ok)
                .any(|f| f.path().extension().is_some_and(|x| x == "ckpt"))
        })
        .unwrap_or(false);
    if existing {
        // Live state without a completed history load (a crash half-way, or history added later): loading it
        // under that state would count events twice. An empty state_dir/kafka loads it afresh.
        tracing::warn!(dir = %root.display(), "checkpoints exist but no completed history load: history not loaded");
        return Ok(());
    }
    std::fs::create_dir_all(&root)
        .and_then(|()| std::fs::write(&started, b""))
        .map_err(|error| DaemonError::Io { context: started.display().to_string(), error })?;
    let n = partitions_of(producer, &kafka.topics[0])?;
    for topic in &kafka.topics[1..] {
        let m = partitions_of(producer, topic)?;
        if m != n {
            return Err(DaemonError::Kafka(format!(
                "input topics must have as many partitions to share state partitions: {} has {n}, {topic} has {m}",
                kafka.topics[0]
            )));
        }
    }
    let mut tasks = Vec::with_capacity(n as usize);
    for p in 0..n {
        let store = Store::open(root.join(format!("partition-{p}")), config.checkpoint.keep)?;
        tasks.push(Task::open(store, rules, &config.clock, config.limits.engine(), None, handle.regional())?.0);
    }
    let q_of = |p: usize| (p as i32).rem_euclid(alert_partitions);
    for path in &config.bootstrap.files {
        super::read_history(path, |event, location| {
            let p = kafka.partitioner.partition(event.entity.to_string().as_bytes(), n) as usize;
            tasks[p].history(event, stats).map_err(|reason| DaemonError::History { location: location(), reason })?;
            produce_alerts(producer, &kafka.alert_topic, q_of(p), p as i32, &mut tasks[p])
        })?;
    }
    producer.flush(Duration::from_secs(300)).map_err(kafka_error)?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(DaemonError::Kafka(format!(
            "{failed} history alerts could not be delivered; nothing checkpointed"
        )));
    }
    for (p, task) in tasks.iter_mut().enumerate() {
        task.meta.alerts_mark = end_of(producer, &kafka.alert_topic, q_of(p))?;
        task.meta.alert_partitions = alert_partitions as u32;
        task.checkpoint(stats)?;
    }
    // Written last: a bootstrap that died half-way (some partitions checkpointed) is redone from the start.
    let done = root.join(BOOTSTRAP_DONE);
    std::fs::write(&done, b"").map_err(|error| DaemonError::Io { context: done.display().to_string(), error })?;
    Ok(())
}

/// Marks, in `state_dir/kafka`, a history load that completed...
const BOOTSTRAP_DONE: &str = "bootstrap.done";
/// ...and one that started.
const BOOTSTRAP_STARTED: &str = "bootstrap.started";

/// A partition with no checkpoint whose group offsets are past the start: the state directory is not the one
/// the group's previous owner used (not shared between instances, or lost). The partition is read from the
/// beginning all the same (state needs the whole retained input); the operator is told.
fn warn_if_group_moved_on(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList, p: i32) {
    let mut mine = TopicPartitionList::new();
    for e in tpl.elements().iter().filter(|e| e.partition() == p) {
        mine.add_partition(e.topic(), p);
    }
    let Ok(committed) = consumer.committed_offsets(mine, BROKER_TIMEOUT) else { return };
    if committed.elements().iter().any(|e| matches!(e.offset(), Offset::Offset(o) if o > 0)) {
        tracing::warn!(
            partition = p,
            "no checkpoint for this partition, but the group has committed offsets for it: is state_dir shared \
             by all instances? Reading it from the beginning (alerts already produced may be produced again)"
        );
    }
}

/// Delivery reports of the producer.
pub struct Delivery {
    /// The alert topic: only its failures make output incomplete (dead letters are best effort).
    alert_topic: String,
    failed: AtomicU64,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            if message.topic() == self.alert_topic {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, topic = message.topic(), "alert not delivered");
            } else {
                tracing::error!(%error, topic = message.topic(), "dead letter not delivered (best effort)");
            }
        }
    }
}

/// The state partitions owned now, and the rules they use.
struct Parts {
    /// By partition number (co-partitioned over the input topics).
    tasks: HashMap<i32, Task>,
    rules: Arc<RuleSet>,
}

/// The consumer's context: owns the partitions' tasks so that rebalance callbacks can checkpoint and restore
/// them. Callbacks run inside `poll` on the daemon's thread, so the lock is never contended.
struct Ctx {
    parts: Mutex<Parts>,
    producer: Arc<Producer_>,
    kafka: KafkaConfig,
    base: Vec<(String, String)>,
    clock: ClockConfig,
    limits: crate::limits::EngineLimits,
    state: PathBuf,
    keep: usize,
    alert_partitions: i32,
    handle: Handle,
    /// An error met inside a callback, for the loop to stop on.
    fatal: Mutex<Option<DaemonError>>,
    /// Set on an error after which the state may be ahead of the output: nothing is checkpointed any more.
    poisoned: std::sync::atomic::AtomicBool,
}

impl ClientContext for Ctx {
    /// librdkafka's statistics (every `statistics.interval.ms`, served inside `poll`): the partitions' high
    /// watermarks, from which the loop computes the lag of the partitions it owns.
    fn stats(&self, statistics: rdkafka::Statistics) {
        // Only partitions being fetched: librdkafka keeps reporting the last watermarks it saw of the others.
        let marks = statistics.topics.into_iter().flat_map(|(topic, t)| {
            t.partitions
                .into_values()
                .filter(|p| p.partition >= 0 && p.fetch_state == "active" && p.hi_offset >= 0)
                .map(move |p| ((topic.clone(), p.partition), (p.lo_offset.max(0), p.hi_offset)))
        });
        self.handle.stats().set_watermarks(marks);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let result = self.assign(consumer, tpl).and_then(|start| consumer.assign(&start).map_err(kafka_error));
                if let Err(error) = result {
                    self.set_fatal(error);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if self.poisoned() || consumer.assignment_lost() => {
                // Either our output may be incomplete, or the group already gave the partitions to another
                // instance: checkpointing now could overwrite its newer state. Drop them as they are.
                let mut parts = self.lock();
                for e in tpl.elements() {
                    parts.tasks.remove(&e.partition());
                }
                tracing::warn!(
                    partitions = tpl.count(),
                    "partitions dropped without a checkpoint (lost or after an error)"
                );
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassign failed");
                }
                // Alerts still queued would land after the next owner read the alert topic back: drop them
                // and stop (the restart resumes from the last checkpoint).
                self.producer.purge(rdkafka::producer::PurgeConfig::default().queue());
                if !self.poisoned() {
                    self.set_fatal(DaemonError::Kafka("partition assignment lost (session timed out)".into()));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                match self.checkpoint_all(Some(tpl)) {
                    Ok(Some(done)) => {
                        if let Err(error) = consumer.commit(&done, CommitMode::Sync) {
                            tracing::warn!(%error, "offset commit at revocation failed (the checkpoint holds it)");
                        }
                    }
                    Ok(None) => self.set_fatal(DaemonError::Kafka(
                        "partitions revoked while output was not acknowledged: stopping without handing over a checkpoint"
                            .into(),
                    )),
                    Err(error) => self.set_fatal(error),
                }
                let mut parts = self.lock();
                for e in tpl.elements() {
                    parts.tasks.remove(&e.partition());
                }
                tracing::info!(partitions = tpl.count(), "partitions revoked after their checkpoint");
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassign failed");
                }
            }
            other => tracing::error!(error = ?RDKafkaErrorCode::from(other), "rebalance error"),
        }
    }
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, Parts> {
        // A poisoned lock means a panic while holding it, which the daemon does not recover from anyway.
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn set_fatal(&self, error: DaemonError) {
        tracing::error!(%error, "stopping: error in a rebalance");
        self.poison();
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(error);
        }
        self.handle.shutdown();
    }

    fn take_fatal(&self) -> Option<DaemonError> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }

    fn alert_partition(&self, p: i32) -> i32 {
        p.rem_euclid(self.alert_partitions)
    }

    /// Restores (or creates) the tasks of newly assigned partitions; the positions to start from.
    fn assign(
        &self,
        consumer: &BaseConsumer<Ctx>,
        tpl: &TopicPartitionList,
    ) -> Result<TopicPartitionList, DaemonError> {
        let mut start = TopicPartitionList::new();
        let mut parts = self.lock();
        // New partitions are behind until the loop has measured their lag from statistics about them.
        self.handle.stats().set_caught_up(false);
        for e in tpl.elements() {
            self.handle.stats().forget_watermarks(e.partition());
        }
        let rules = parts.rules.clone();
        for e in tpl.elements() {
            let (topic, p) = (e.topic(), e.partition());
            if let std::collections::hash_map::Entry::Vacant(slot) = parts.tasks.entry(p) {
                let store = Store::open(self.state.join(format!("partition-{p}")), self.keep)?;
                let (mut task, restored) = Task::open(
                    store,
                    &rules,
                    &self.clock,
                    self.limits,
                    self.handle.notifier(),
                    self.handle.regional(),
                )?;
                let q = self.alert_partition(p);
                let n = self.alert_partitions as u32;
                if restored && task.meta.alert_partitions != 0 && task.meta.alert_partitions != n {
                    return Err(DaemonError::Kafka(format!(
                        "the alert topic had {} partitions when partition {p} was checkpointed and has {n} now: its \
                         output mark no longer applies (restore the partition count, or start this state afresh)",
                        task.meta.alert_partitions
                    )));
                }
                task.meta.alert_partitions = n;
                if restored && self.clock.mode == crate::config::ClockMode::Wall {
                    // Re-read input is evaluated at a new `now`: its alerts get new ids, so there is nothing to
                    // match (with the wall clock the alert output is at least once).
                } else if restored {
                    let ids = self.produced_since(q, p, task.meta.alerts_mark)?;
                    if !ids.is_empty() {
                        tracing::info!(
                            partition = p,
                            alerts = ids.len(),
                            "alerts already produced after the checkpoint will not be produced again"
                        );
                    }
                    task.suppress(ids);
                } else {
                    warn_if_group_moved_on(consumer, tpl, p);
                    // A first checkpoint at once, so that a crash before the next one still knows the mark.
                    task.meta.alerts_mark = self.end_of(q)?;
                    task.checkpoint(self.handle.stats())?;
                }
                tracing::info!(partition = p, restored, entities = task.engine.entities(), "partition assigned");
                slot.insert(task);
            }
            let offset = parts.tasks.get(&p).and_then(|t| t.meta.offsets.get(topic).copied()).unwrap_or(0);
            let from = if offset == 0 { Offset::Beginning } else { Offset::Offset(offset as i64) };
            start.add_partition_offset(topic, p, from).map_err(kafka_error)?;
        }
        self.handle.set_ready();
        Ok(start)
    }

    /// The end offset of alert partition `q`.
    fn end_of(&self, q: i32) -> Result<u64, DaemonError> {
        end_of(&self.producer, &self.kafka.alert_topic, q)
    }

    /// The `alert_id`s of input partition `p`'s alerts in alert partition `q`, from `mark` to its end.
    fn produced_since(&self, q: i32, p: i32, mark: u64) -> Result<Vec<String>, DaemonError> {
        let (low, high) =
            self.producer.client().fetch_watermarks(&self.kafka.alert_topic, q, BROKER_TIMEOUT).map_err(kafka_error)?;
        let (end, mark) = (high.max(0) as u64, mark.max(low.max(0) as u64));
        let mut ids = Vec::new();
        if end <= mark {
            return Ok(ids);
        }
        let mut cc = client_config(&self.base);
        cc.set("group.id", format!("{}-readback", self.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let reader: BaseConsumer = cc.create().map_err(kafka_error)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.kafka.alert_topic, q, Offset::Offset(mark as i64)).map_err(kafka_error)?;
        reader.assign(&tpl).map_err(kafka_error)?;
        let deadline = std::time::Instant::now() + 6 * BROKER_TIMEOUT;
        let mut next = mark;
        while next < end {
            if std::time::Instant::now() > deadline {
                return Err(DaemonError::Kafka(format!("reading back alert partition {q}: timed out")));
            }
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    next = m.offset() as u64 + 1;
                    if input_partition(&m) != Some(p) {
                        continue; // another input partition's alert (alert partitions are shared `p mod n`)
                    }
                    #[derive(serde::Deserialize)]
                    struct Id {
                        alert_id: String,
                    }
                    if let Some(Ok(id)) = m.payload().map(serde_json::from_slice::<Id>) {
                        ids.push(id.alert_id);
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "reading back the alert topic"),
                None => {}
            }
        }
        Ok(ids)
    }

    /// Handles one input message.
    fn handle(&self, m: &rdkafka::message::BorrowedMessage<'_>, stats: &Stats) -> Result<(), DaemonError> {
        let mut parts = self.lock();
        let p = m.partition();
        let Some(task) = parts.tasks.get_mut(&p) else { return Ok(()) };
        let offset = m.offset() as u64;
        match task.meta.offsets.get_mut(m.topic()) {
            Some(next) if offset < *next => return Ok(()), // already in the restored state
            Some(next) => *next = offset + 1,
            None => {
                task.meta.offsets.insert(m.topic().to_owned(), offset + 1);
            }
        }
        let wall = wall_now();
        stats.line(wall);
        let payload = m.payload().unwrap_or_default();
        let result = decode(payload).and_then(|event| task.handle(event, wall, stats).map(|_| ()));
        if let Err(reason) = result {
            stats.rejected(reason);
            let location = Location::Kafka { topic: Arc::from(m.topic()), partition: p, offset: offset as i64 };
            tracing::debug!(%location, %reason, "rejected");
            self.dead_letter(m, &location, reason)?;
        }
        if task.has_output() {
            self.produce_alerts(p, task)?;
        }
        Ok(())
    }

    /// Produces the task's pending alerts to its alert partition, and records their latency: from handing in
    /// the first event of the batch that raised them (with the wall clock, the batch waits for its second to
    /// end) to handing them to the producer.
    fn produce_alerts(&self, p: i32, task: &mut Task) -> Result<(), DaemonError> {
        let since = task.take_output_since();
        produce_alerts(&self.producer, &self.kafka.alert_topic, self.alert_partition(p), p, task)?;
        if let Some(since) = since {
            self.handle.stats().alert_latency.record(since.elapsed());
        }
        Ok(())
    }

    fn dead_letter(
        &self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        location: &Location,
        reason: Reason,
    ) -> Result<(), DaemonError> {
        let Some(topic) = &self.kafka.dead_letter_topic else { return Ok(()) };
        let text = reason.to_string();
        let origin = location.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(reason.as_str()) })
            .insert(Header { key: "reason_text", value: Some(&text) })
            .insert(Header { key: "origin", value: Some(&origin) });
        let payload = m.payload().unwrap_or_default();
        let mut record = BaseRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        // Dead letters are at least once and best effort: one that cannot be produced (too large for the
        // producer, say) is logged with its origin, and the stream goes on.
        if let Err(error) = send(&self.producer, record) {
            tracing::error!(%error, %origin, reason = reason.as_str(), "bad message could not be dead-lettered");
        }
        Ok(())
    }

    /// Checkpoints the tasks (all, or those in `only`) after making their output durable. The positions to
    /// commit, or `None` if the brokers did not answer in time (the checkpoint is then tried again later).
    fn checkpoint_all(&self, only: Option<&TopicPartitionList>) -> Result<Option<TopicPartitionList>, DaemonError> {
        if self.poisoned() {
            return Ok(None);
        }
        // Before a revocation the partitions must not be handed over with output in flight: wait longer.
        let wait = if only.is_some() { 6 * BROKER_TIMEOUT } else { BROKER_TIMEOUT };
        if let Err(error) = self.producer.flush(wait) {
            tracing::warn!(%error, "output not yet acknowledged; checkpoint postponed");
            return Ok(None);
        }
        // Sticky: once a message is lost, no later checkpoint may claim the output before it.
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(DaemonError::Kafka(format!(
                "{failed} messages could not be delivered; restarting from the last checkpoint"
            )));
        }
        let mut parts = self.lock();
        let mut done = TopicPartitionList::new();
        let mut marks: HashMap<i32, u64> = HashMap::new();
        for (p, task) in parts.tasks.iter_mut() {
            if only.is_some_and(|tpl| !tpl.elements().iter().any(|e| e.partition() == *p)) {
                continue;
            }
            let q = self.alert_partition(*p);
            let mark = match marks.get(&q) {
                Some(&m) => m,
                None => match self.end_of(q) {
                    Ok(m) => *marks.entry(q).or_insert(m),
                    Err(error) => {
                        tracing::warn!(%error, "alert topic end unknown; checkpoint postponed");
                        return Ok(None);
                    }
                },
            };
            task.meta.alerts_mark = mark;
            task.meta.alert_partitions = self.alert_partitions as u32;
            task.checkpoint(self.handle.stats())?;
            for (topic, next) in &task.meta.offsets {
                done.add_partition_offset(topic, *p, Offset::Offset(*next as i64)).map_err(kafka_error)?;
            }
        }
        Ok(Some(done))
    }
}
