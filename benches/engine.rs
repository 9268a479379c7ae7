//! Micro-benchmarks of the engine: the per-event path (decode, offer) and timers firing.
//!
//! Run with `cargo bench --bench engine`. The end-to-end benchmark (files, page cache, peak RSS) is
//! `scripts/bench.sh`.
//!
//! # Groups
//! - `per_event`: the second half (100k lines) of a generated stream of 200k lines (`gen --seed 7
//!   --entities 20000`), replayed into an engine that already holds the state of the first half.
//!   `decode_only` is the baseline; `decode_offer` is what `replay` does per line (minus I/O and alert
//!   output); `offer_predecoded` is the engine alone. All three are per line of that half (bad lines and
//!   duplicates included), so their ratios compare directly. `decode_one_line` is one typical line.
//! - `timers`: an engine holding 50k entities whose events all leave their windows, then one
//!   `advance_to` ten years later; throughput is per timer fired (each fire evaluates one entity).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

use credit_sentinel::credit_code::{self, EntityKey};
use credit_sentinel::engine::{Alert, Engine};
use credit_sentinel::event::{Event, Kind, decode};
use credit_sentinel::generate::{GenOptions, generate};
use credit_sentinel::rules::{RuleSet, load_dir};
use credit_sentinel::time::{DAY, Ts, parse_rfc3339};

const LINES: u64 = 200_000;
const ENTITIES: u32 = 20_000;
const SEED: u64 = 7;

fn rules() -> Arc<RuleSet> {
    Arc::new(load_dir(Path::new("alert-rules")).expect("alert-rules/ loads (run from the crate root)"))
}

/// The shipped rules with the three domain sets turned on (issue 7's target: within 20% of `rules()`).
fn domain_rules() -> Arc<RuleSet> {
    let mut set = load_dir(Path::new("alert-rules")).expect("alert-rules/ loads (run from the crate root)");
    for domain in ["alert-rules/food", "alert-rules/drug", "alert-rules/special_equipment"] {
        set = set.enabling(Path::new(domain)).expect("a shipped domain set");
    }
    Arc::new(set)
}

/// The generated stream, one `Vec<u8>` per line without its newline.
fn stream() -> Vec<Vec<u8>> {
    let opts = GenOptions {
        seed: SEED,
        entities: ENTITIES,
        events: LINES,
        start: "2023-01-01T00:00:00+08:00".into(),
        days: 1095,
        bad: 0.01,
        duplicates: 0.01,
        late: 0.02,
        bursty: 0.01,
    };
    let mut bytes = Vec::new();
    generate(&opts, &mut bytes).expect("generate");
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// An engine that has been offered `events` (and flushed), as replay would leave it.
fn loaded(rules: &Arc<RuleSet>, events: &[Event]) -> Engine {
    let mut engine = Engine::new(rules.clone()).expect("engine");
    let mut sink = |a: Alert| drop(black_box(a));
    for e in events {
        engine.offer(e.clone(), &mut sink);
    }
    engine.flush(&mut sink);
    engine
}

fn per_event(c: &mut Criterion) {
    let rules = rules();
    let lines = stream();
    let (warm_lines, timed_lines) = lines.split_at(lines.len() / 2);
    let warm: Vec<Event> = warm_lines.iter().filter_map(|l| decode(l).ok()).collect();
    let timed: Vec<Event> = timed_lines.iter().filter_map(|l| decode(l).ok()).collect();
    let probe = loaded(&rules, &warm);
    eprintln!(
        "per_event: {} lines generated; warm-up half: {} valid events -> {} entities, ~{} KiB of state; timed half: {} lines, {} valid",
        lines.len(),
        warm.len(),
        probe.entities(),
        probe.state_bytes() / 1024,
        timed_lines.len(),
        timed.len(),
    );
    drop(probe);

    let mut group = c.benchmark_group("per_event");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(timed_lines.len() as u64));

    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for line in timed_lines {
                ok += u64::from(black_box(decode(black_box(line))).is_ok());
            }
            ok
        })
    });
    group.bench_function("decode_offer", |b| {
        b.iter_batched(
            || loaded(&rules, &warm),
            |mut engine| {
                let mut alerts = 0u64;
                let mut sink = |a: Alert| {
                    alerts += 1;
                    drop(black_box(a));
                };
                for line in timed_lines {
                    if let Ok(event) = decode(black_box(line)) {
                        black_box(engine.offer(event, &mut sink));
                    }
                }
                black_box(alerts);
                engine // dropped outside the timing
            },
            BatchSize::PerIteration,
        )
    });
    let domains = domain_rules();
    for (name, rules) in [("offer_predecoded", &rules), ("offer_predecoded_domain_sets", &domains)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || (loaded(rules, &warm), timed.clone()),
                |(mut engine, events)| {
                    let mut alerts = 0u64;
                    let mut sink = |a: Alert| {
                        alerts += 1;
                        drop(black_box(a));
                    };
                    for event in events {
                        black_box(engine.offer(event, &mut sink));
                    }
                    black_box(alerts);
                    engine
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    // One typical line (a complaint), for the latency of the decoder alone.
    let one =
        lines.iter().find(|l| decode(l).is_ok_and(|e| e.kind == Kind::Complaint)).expect("a complaint line").clone();
    let mut group = c.benchmark_group("per_event_single");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    group.bench_function("decode_one_line", |b| b.iter(|| decode(black_box(&one))));
    group.finish();
}

/// Entities for the timer benchmark.
const TIMER_ENTITIES: u32 = 50_000;

fn entity_keys(n: u32) -> Vec<EntityKey> {
    (0..n)
        .map(|i| {
            let code = credit_code::complete(&format!("91360502{i:09}")).expect("check character");
            EntityKey::parse(&code).expect("valid code")
        })
        .collect()
}

/// How the loaded engine's events are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// Two penalties per entity, entities one second apart: one fire per entity, each its own instant.
    PenaltySpread,
    /// Two penalties per entity, all at one instant: one fire per entity, all in one batch.
    PenaltySameInstant,
    /// Enough events of each of the five indicator kinds to stand at remind for every default rule,
    /// entities one second apart: five fires per entity (after 30, 90, 180, 365 and 1095 days). (A departure
    /// that could only lower a level already at none sets no timer, so levels must stand for these to fire.)
    FiveKindsSpread,
}

impl Layout {
    fn fires_per_entity(self) -> u64 {
        match self {
            Layout::PenaltySpread | Layout::PenaltySameInstant => 1,
            Layout::FiveKindsSpread => 5,
        }
    }

    fn events(self, keys: &[EntityKey], t0: Ts) -> Vec<Event> {
        let kinds: &[Kind] = match self {
            Layout::PenaltySpread | Layout::PenaltySameInstant => &[Kind::Penalty, Kind::Penalty],
            Layout::FiveKindsSpread => &[
                Kind::AddressChange,
                Kind::AddressChange,
                Kind::Penalty,
                Kind::Penalty,
                Kind::Lawsuit,
                Kind::Lawsuit,
                Kind::Lawsuit,
                Kind::Complaint,
                Kind::Complaint,
                Kind::Complaint,
                Kind::Complaint,
                Kind::Complaint,
                Kind::NegativeSentiment,
                Kind::NegativeSentiment,
            ],
        };
        let mut events = Vec::with_capacity(keys.len() * kinds.len());
        for (i, &entity) in keys.iter().enumerate() {
            let at = match self {
                Layout::PenaltySameInstant => t0,
                _ => t0 + i as Ts,
            };
            for (j, &kind) in kinds.iter().enumerate() {
                let id = CompactString::from(format!("bench-{i}-{j}"));
                events.push(Event { id, entity, kind, at, class: None, profile: None });
            }
        }
        events
    }
}

fn timers(c: &mut Criterion) {
    let rules = rules();
    let keys = entity_keys(TIMER_ENTITIES);
    let t0 = parse_rfc3339("2023-01-01T00:00:00+08:00").expect("t0");
    let far = t0 + 10 * 365 * DAY;
    let layouts = [
        ("penalty_spread", Layout::PenaltySpread),
        ("penalty_same_instant", Layout::PenaltySameInstant),
        ("five_kinds_spread", Layout::FiveKindsSpread),
    ];

    // Not timed: check that the fires happen, so the throughput is per real fire. Each entity's two
    // penalties raise "remind" at load; when they leave the window the level falls silently, so two new
    // penalties far in the future raise it again, which they would not had the timer not fired.
    {
        let events = Layout::PenaltySpread.events(&keys, t0);
        let mut engine = loaded(&rules, &events);
        engine.advance_to(far, &mut |_| {});
        let mut again = 0u64;
        for (i, &entity) in keys.iter().enumerate() {
            for j in 0..2 {
                let id = CompactString::from(format!("again-{i}-{j}"));
                engine.offer(
                    Event { id, entity, kind: Kind::Penalty, at: far + 1, class: None, profile: None },
                    &mut |_| {},
                );
            }
        }
        engine.flush(&mut |a| again += u64::from(is_penalty_alert(&rules, &a)));
        assert_eq!(again, u64::from(TIMER_ENTITIES), "every entity's timer fired and re-armed its level");
    }

    let mut group = c.benchmark_group("timers");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, layout) in layouts {
        let events = layout.events(&keys, t0);
        group.throughput(Throughput::Elements(u64::from(TIMER_ENTITIES) * layout.fires_per_entity()));
        group.bench_function(name, |b| {
            b.iter_batched(
                || loaded(&rules, &events),
                |mut engine| {
                    let mut alerts = 0u64;
                    engine.advance_to(far, &mut |a| {
                        alerts += 1;
                        drop(black_box(a));
                    });
                    black_box(alerts);
                    engine
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn is_penalty_alert(rules: &RuleSet, alert: &Alert) -> bool {
    rules.all[alert.rule].measure.kinds() == [Kind::Penalty]
}

criterion_group!(benches, per_event, timers);
criterion_main!(benches);
