//! Replay: JSON Lines files through the engine with SPEC's replay clock. Also the base of `test-rules`,
//! `diff-rules` and the benchmarks.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead};
use std::sync::{Arc, mpsc};

use crate::engine::{Alert, Dedup, Engine, Offer};
use crate::event::{Event, Location, Reason, Rejection, decode};
use crate::lines::{Line, Lines};
use crate::rules::Action;
use crate::time::Ts;

/// What a replay read and raised.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub accepted: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub duplicates: u64,
    pub late: u64,
    /// Alerts by (rule id, action).
    pub alerts: BTreeMap<(String, Action), u64>,
    /// Entities holding state at the end.
    pub entities: usize,
    /// Estimated bytes of engine state at the end.
    pub state_bytes: usize,
}

impl Summary {
    /// Lines rejected, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "events read: {}, accepted: {}, rejected: {}, duplicates: {}, late: {}",
            self.lines,
            self.accepted,
            self.rejected_total(),
            self.duplicates,
            self.late
        )?;
        for (reason, n) in &self.rejected {
            writeln!(f, "  rejected {reason}: {n}")?;
        }
        if self.entities > 0 {
            writeln!(f, "entities with state: {}, state: ~{} MiB", self.entities, self.state_bytes >> 20)?;
        }
        let total: u64 = self.alerts.values().sum();
        writeln!(f, "alerts: {total}")?;
        for ((rule, action), n) in &self.alerts {
            writeln!(f, "  {rule} {action}: {n}")?;
        }
        Ok(())
    }
}

/// A named input.
pub struct Input {
    /// Shown in locations; `-` for stdin.
    pub name: Arc<str>,
    pub reader: Box<dyn BufRead + Send>,
}

impl Input {
    /// Opens a file, or stdin for `-`.
    pub fn open(path: &str) -> io::Result<Input> {
        let reader: Box<dyn BufRead + Send> = if path == "-" {
            Box::new(io::BufReader::with_capacity(1 << 20, io::stdin()))
        } else {
            Box::new(io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?))
        };
        Ok(Input { name: path.into(), reader })
    }

    /// An in-memory input (tests, rule tests).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Input {
        Input { name: name.into(), reader: Box::new(io::Cursor::new(bytes)) }
    }
}

/// An I/O error with the input's name in front.
fn named(name: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{name}: {error}"))
}

/// Lines decoded per batch handed from the reader thread to the engine.
const BATCH_LINES: usize = 1024;
/// Events whose state the engine warms up together before offering them (see `Engine::warm`).
const WARM_AHEAD: usize = 16;
/// Batches in flight. When the engine falls behind, the channel fills and the reader thread blocks:
/// memory stays bounded at about `BATCH_LINES * CHANNEL_BATCHES` events.
const CHANNEL_BATCHES: usize = 16;

/// A line as the engine thread receives it.
enum Decoded {
    /// Valid and first seen.
    Event(Event),
    /// Valid, but its `event_id` was seen before.
    Duplicate,
    Bad(Reason),
}

/// Decoded lines of one input, with their line numbers.
struct Batch {
    file: Arc<str>,
    items: Vec<(u64, Decoded)>,
}

/// Reads, decodes and deduplicates every input in order, sending batches until the inputs end or the
/// receiver hangs up. Returns the memory of seen ids.
fn read_inputs(inputs: Vec<Input>, mut dedup: Dedup, tx: mpsc::SyncSender<Batch>) -> (Dedup, io::Result<()>) {
    let result = read_into(inputs, &mut dedup, tx);
    (dedup, result)
}

fn read_into(inputs: Vec<Input>, dedup: &mut Dedup, tx: mpsc::SyncSender<Batch>) -> io::Result<()> {
    for input in inputs {
        let mut lines = Lines::new(input.reader);
        let mut items = Vec::with_capacity(BATCH_LINES);
        while let Some(line) = lines.next_line().map_err(|e| named(&input.name, e))? {
            let decoded = match line {
                Line::Text(bytes) => decode(bytes),
                Line::TooLong => Err(Reason::TooLarge),
            };
            let decoded = match decoded {
                Ok(event) if dedup.insert(&event.id) => Decoded::Event(event),
                Ok(_) => Decoded::Duplicate,
                Err(reason) => Decoded::Bad(reason),
            };
            items.push((lines.number, decoded));
            if items.len() == BATCH_LINES {
                let full = std::mem::replace(&mut items, Vec::with_capacity(BATCH_LINES));
                if tx.send(Batch { file: input.name.clone(), items: full }).is_err() {
                    return Ok(());
                }
            }
        }
        if !items.is_empty() && tx.send(Batch { file: input.name.clone(), items }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Replays `inputs` in order through `engine`, then ends at the horizon (`until` or the last event time).
/// Each alert goes to `on_alert`, each rejected line to `on_reject`. Only I/O errors stop it.
///
/// Reading, decoding and deduplication run on a second thread (with the engine's memory of seen ids, lent
/// for the duration), so the engine works while the next lines are parsed; the engine sees the events in
/// input order all the same.
pub fn replay(
    engine: &mut Engine,
    inputs: Vec<Input>,
    until: Option<Ts>,
    on_alert: &mut dyn FnMut(&Engine, &Alert),
    on_reject: &mut dyn FnMut(&Rejection),
) -> io::Result<Summary> {
    let on_alert = &mut |_, engine: &Engine, signal: Signal<'_>| {
        if let Signal::Alert(alert) = signal {
            on_alert(engine, alert)
        }
    };
    replay_all(std::slice::from_mut(engine), inputs, until, on_alert, on_reject)
}

/// What an engine reports: a level rise (an alert) or, when the engine reports them, a fall.
#[derive(Debug, Clone, Copy)]
pub enum Signal<'a> {
    Alert(&'a Alert),
    Fall(&'a crate::engine::Fall),
}

/// [`replay`] through several engines at once (a back-test: the same history under several rule sets),
/// reading and decoding every line once. `on_signal` gets the index of the engine that raised the alert
/// (and its falls, for an engine that reports them: after the alerts of the same event).
/// Whether an event is first seen does not depend on rules, so it is decided once, with the first engine's
/// memory of seen ids; the other engines' memories are left as they were. The summary counts lines and
/// events once and the alerts of every engine.
pub fn replay_all(
    engines: &mut [Engine],
    inputs: Vec<Input>,
    until: Option<Ts>,
    on_alert: &mut dyn FnMut(usize, &Engine, Signal<'_>),
    on_reject: &mut dyn FnMut(&Rejection),
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let Some(first) = engines.first_mut() else { return Ok(summary) };
    let dedup = first.take_dedup();
    let mut pending: Vec<Alert> = Vec::new();
    let (tx, rx) = mpsc::sync_channel::<Batch>(CHANNEL_BATCHES);
    let read = std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_inputs(inputs, dedup, tx));
        let mut keys = Vec::with_capacity(BATCH_LINES);
        for batch in rx {
            keys.clear();
            keys.extend(batch.items.iter().map(|(_, d)| match d {
                Decoded::Event(e) => Some(e.entity),
                _ => None,
            }));
            for (i, (number, decoded)) in batch.items.into_iter().enumerate() {
                summary.lines += 1;
                if i % WARM_AHEAD == 0 {
                    for engine in engines.iter() {
                        engine.warm(keys[i..].iter().take(WARM_AHEAD).flatten());
                    }
                }
                match decoded {
                    Decoded::Event(event) => {
                        let last = engines.len() - 1;
                        let mut event = Some(event);
                        for (e, engine) in engines.iter_mut().enumerate() {
                            let Some(ev) = (if e == last { event.take() } else { event.clone() }) else { break };
                            let offer = engine.offer_first_seen(ev, &mut |a| pending.push(a));
                            // Replay's engines have no limits (`Engine::set_limits`): every event is accepted.
                            if let (0, Offer::Accepted { late }) = (e, offer) {
                                summary.accepted += 1;
                                summary.late += u64::from(late);
                            }
                            drain(e, engine, &mut pending, &mut summary, on_alert);
                        }
                    }
                    Decoded::Duplicate => summary.duplicates += 1,
                    Decoded::Bad(reason) => {
                        *summary.rejected.entry(reason.as_str()).or_default() += 1;
                        let location = Location::File { file: batch.file.clone(), line: number };
                        on_reject(&Rejection { location, reason });
                    }
                }
            }
        }
        reader.join()
    });
    let Ok((dedup, result)) = read else {
        return Err(io::Error::other("the reader thread panicked"));
    };
    engines[0].put_dedup(dedup);
    result?;
    for (e, engine) in engines.iter_mut().enumerate() {
        engine.finish(until, &mut |a| pending.push(a));
        drain(e, engine, &mut pending, &mut summary, on_alert);
        summary.entities += engine.entities();
        summary.state_bytes += engine.state_bytes();
    }
    Ok(summary)
}

/// The benchmark baseline: reads and decodes every line like [`replay`], but gives nothing to an engine.
pub fn parse_only(inputs: Vec<Input>) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for input in inputs {
        let mut lines = Lines::new(input.reader);
        while let Some(line) = lines.next_line().map_err(|e| named(&input.name, e))? {
            summary.lines += 1;
            let decoded = match line {
                Line::Text(bytes) => decode(bytes),
                Line::TooLong => Err(Reason::TooLarge),
            };
            match decoded {
                Ok(_) => summary.accepted += 1,
                Err(reason) => *summary.rejected.entry(reason.as_str()).or_default() += 1,
            }
        }
    }
    Ok(summary)
}

fn drain(
    index: usize,
    engine: &mut Engine,
    pending: &mut Vec<Alert>,
    summary: &mut Summary,
    on_alert: &mut dyn FnMut(usize, &Engine, Signal<'_>),
) {
    for alert in pending.drain(..) {
        let rule = &engine.rules().all[alert.rule].id;
        *summary.alerts.entry((rule.clone(), alert.action)).or_default() += 1;
        on_alert(index, engine, Signal::Alert(&alert));
    }
    for fall in engine.take_falls() {
        on_alert(index, engine, Signal::Fall(&fall));
    }
}
