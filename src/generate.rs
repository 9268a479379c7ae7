//! `gen`: seeded synthetic events for demos, tests and benchmarks.
//!
//! The stream looks like a district's change feed: every entity has a profile and most a class; activity is
//! skewed (a few entities have most events); a share of entities have bursts that carry them through every
//! action of every default rule; some events arrive late, some twice, and some lines are bad in each of
//! SPEC's ways. The same options and seed always give the same bytes.

use std::io::{self, Write};

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::credit_code;
use crate::event::Kind;
use crate::time::{DAY, Ts, civil_from_days, parse_rfc3339};

/// Options of `gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenOptions {
    /// Random seed: the same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of entities.
    #[arg(long, default_value_t = 1000)]
    pub entities: u32,
    /// Number of lines to write, bad lines and duplicates included.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// First instant of the stream (RFC 3339).
    #[arg(long, default_value = "2023-01-01T00:00:00+08:00")]
    pub start: String,
    /// Length of the stream in days.
    #[arg(long, default_value_t = 1095)]
    pub days: i64,
    /// Share of bad lines (0..1).
    #[arg(long, default_value_t = 0.01)]
    pub bad: f64,
    /// Share of duplicated lines (0..1).
    #[arg(long, default_value_t = 0.01)]
    pub duplicates: f64,
    /// Share of late events (0..1): written up to 30 days after they occurred.
    #[arg(long, default_value_t = 0.02)]
    pub late: f64,
    /// Share of entities with bursts that reach every action (0..1).
    #[arg(long, default_value_t = 0.01)]
    pub bursty: f64,
}

/// Administrative division codes of Jiangxi used for regions (渝水区 first).
const REGIONS: [&str; 8] = ["360502", "360521", "360102", "360103", "360111", "360202", "360302", "360402"];
const DOMAINS: [&str; 4] = ["general", "food", "drug", "special_equipment"];
const INDUSTRIES: [&str; 6] = ["F5212", "H6210", "C1391", "F5251", "C3432", "L7212"];

/// One event to write, before formatting.
#[derive(Clone, Copy)]
struct Planned {
    /// When it is written (order of the stream).
    written: Ts,
    /// When it occurred (`occurred_at`); earlier than `written` for late events.
    occurred: Ts,
    entity: u32,
    kind: Kind,
    class: u8,
}

/// Writes the stream to stdout.
pub fn run(opts: &GenOptions) -> anyhow::Result<bool> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match generate(opts, &mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing events"),
        _ => Ok(true),
    }
}

fn entity_code(rng: &mut ChaCha8Rng, i: u32) -> String {
    const ORG: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    let region = REGIONS[i as usize % REGIONS.len()];
    let org: String = (0..9).map(|_| ORG[rng.random_range(0..ORG.len())] as char).collect();
    // Composed of alphabet characters only, so a check character always exists.
    credit_code::complete(&format!("91{region}{org}")).unwrap_or_default()
}

/// Writes the generated stream to `out`.
pub fn generate(opts: &GenOptions, out: &mut impl Write) -> io::Result<()> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let start = parse_rfc3339(&opts.start).map_err(|e| invalid(format!("--start: {e}")))?;
    if opts.entities == 0 || opts.days <= 0 {
        return Err(invalid("--entities and --days must be positive".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let n = opts.entities;
    let span = opts.days * DAY;
    let codes: Vec<String> = (0..n).map(|i| entity_code(&mut rng, i)).collect();
    let target = opts.events;
    let valid_target = ((target as f64) * (1.0 - opts.bad - opts.duplicates)).max(0.0) as u64;

    let mut plan: Vec<Planned> = Vec::with_capacity(valid_target as usize + 16);
    let push = |plan: &mut Vec<Planned>, at: Ts, entity: u32, kind: Kind, class: u8| {
        plan.push(Planned { written: at, occurred: at, entity, kind, class });
    };
    // Master data first: a profile for every entity, a class for most.
    for e in 0..n {
        if plan.len() as u64 >= valid_target {
            break;
        }
        push(&mut plan, start + rng.random_range(0..DAY), e, Kind::Profile, 0);
        if rng.random_bool(0.8) && (plan.len() as u64) < valid_target {
            let class = [0, 1, 1, 2, 2, 3][rng.random_range(0..6)];
            push(&mut plan, start + rng.random_range(0..30 * DAY), e, Kind::Classification, class);
        }
    }
    // Bursts: enough events of one kind, close together, to pass every action for any class.
    let bursty = ((f64::from(n) * opts.bursty).ceil() as u32).min(n);
    for b in 0..bursty {
        let e = rng.random_range(0..n);
        let (kind, count, spread) = match b % 5 {
            0 => (Kind::AddressChange, 12, 300 * DAY),
            1 => (Kind::Penalty, 16, 700 * DAY),
            2 => (Kind::Lawsuit, 40, 700 * DAY),
            3 => (Kind::Complaint, 80, 60 * DAY),
            _ => (Kind::NegativeSentiment, 20, 25 * DAY),
        };
        let at0 = start + rng.random_range(0..(span - spread).max(1));
        for _ in 0..count {
            if (plan.len() as u64) < valid_target {
                push(&mut plan, at0 + rng.random_range(0..spread), e, kind, 0);
            }
        }
        if rng.random_bool(0.5) && (plan.len() as u64) < valid_target {
            // A class change in the middle of the burst moves the thresholds.
            push(&mut plan, at0 + spread / 2, e, Kind::Classification, rng.random_range(0..4));
        }
    }
    // Background activity, skewed over entities: entity index ~ n * u^2, so entity k gets a share of about
    // (sqrt(k+1) - sqrt(k)) / sqrt(n): with a million entities the busiest get thousands of events and
    // most get a handful.
    while (plan.len() as u64) < valid_target {
        let u: f64 = rng.random();
        let e = ((f64::from(n) * u * u) as u32).min(n - 1);
        let kind = match rng.random_range(0..100) {
            0..45 => Kind::Complaint,
            45..65 => Kind::NegativeSentiment,
            65..73 => Kind::AddressChange,
            73..85 => Kind::Penalty,
            85..97 => Kind::Lawsuit,
            _ => Kind::Classification,
        };
        push(&mut plan, start + rng.random_range(0..span), e, kind, rng.random_range(0..4));
    }
    for p in &mut plan {
        if p.kind != Kind::Profile && rng.random_bool(opts.late.clamp(0.0, 1.0)) {
            p.occurred = p.written - rng.random_range(1..30 * DAY);
        }
    }
    plan.sort_by_key(|p| p.written);

    let mut line = String::with_capacity(512);
    let mut written: Vec<u32> = Vec::new(); // indices into plan of lines already written, for duplicates
    let extra = target.saturating_sub(plan.len() as u64);
    let share_dup = if opts.bad + opts.duplicates > 0.0 { opts.duplicates / (opts.bad + opts.duplicates) } else { 0.0 };
    let mut extras_left = extra;
    for (i, p) in plan.iter().enumerate() {
        format_event(&mut line, p, i as u64, &codes, &mut rng);
        out.write_all(line.as_bytes())?;
        written.push(i as u32);
        // Spread the extra lines (duplicates, bad lines) evenly through the stream.
        let due = extra * (i as u64 + 1) / plan.len().max(1) as u64;
        while extras_left > extra - due {
            extras_left -= 1;
            if rng.random_bool(share_dup.clamp(0.0, 1.0)) {
                let j = written[rng.random_range(0..written.len())] as usize;
                format_event(&mut line, &plan[j], j as u64, &codes, &mut rng);
            } else {
                line.clear();
                out.write_all(&bad_line(&codes, &mut rng))?;
            }
            out.write_all(line.as_bytes())?;
        }
    }
    Ok(())
}

fn format_time(t: Ts, out: &mut String) {
    use std::fmt::Write as _;
    let local = t + 8 * 3600;
    let (days, secs) = (local.div_euclid(DAY), local.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+08:00", secs / 3600, secs % 3600 / 60, secs % 60);
}

fn format_event(line: &mut String, p: &Planned, seq: u64, codes: &[String], rng: &mut ChaCha8Rng) {
    use std::fmt::Write as _;
    line.clear();
    let source = match p.kind {
        Kind::Complaint => "12315",
        Kind::Lawsuit => "court",
        Kind::NegativeSentiment => "media",
        Kind::Penalty => "penalty",
        _ => "registration",
    };
    let code = &codes[p.entity as usize];
    let _ = write!(
        line,
        r#"{{"event_id":"{source}-{seq:010}","entity_id":"{code}","kind":"{}","occurred_at":""#,
        p.kind.as_str()
    );
    format_time(p.occurred, line);
    let _ = write!(line, r#"","source":"{source}""#);
    match p.kind {
        Kind::Classification => {
            let _ = write!(line, r#","data":{{"class":"{}"}}"#, ["A", "B", "C", "D"][usize::from(p.class & 3)]);
        }
        Kind::Profile => {
            let e = p.entity as usize;
            let _ = write!(
                line,
                r#","data":{{"name":"新余市示例商贸有限公司{e}","region":"{}","industry":"{}","domain":"{}","authority":"渝水区市场监督管理局"}}"#,
                REGIONS[e % REGIONS.len()],
                INDUSTRIES[rng.random_range(0..INDUSTRIES.len())],
                DOMAINS[e % DOMAINS.len()],
            );
        }
        _ => {}
    }
    line.push_str("}\n");
}

/// A line that is bad input in one of SPEC's ways.
fn bad_line(codes: &[String], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut text = String::new();
    let line = &mut text;
    let code = &codes[rng.random_range(0..codes.len())];
    let id = rng.random_range(0..u32::MAX);
    let ok = |line: &mut String, id: &str, code: &str, kind: &str, at: &str, extra: &str| {
        line.push_str(&format!(
            r#"{{"event_id":{id},"entity_id":"{code}","kind":"{kind}","occurred_at":"{at}"{extra}}}"#
        ));
    };
    let qid = format!("\"bad-{id}\"");
    let at = "2024-06-01T10:00:00+08:00";
    match rng.random_range(0..13) {
        0 => line.push_str(r#"{"event_id": "#),
        1 => line.push_str("[1,2,3]"),
        2 => line.push_str("   "),
        3 => line.push_str(&format!(r#"{{"event_id":{qid},"kind":"penalty","occurred_at":"{at}"}}"#)),
        4 => ok(line, "42", code, "penalty", at, ""),
        5 => ok(line, &qid, code, "fraud", at, ""),
        6 => {
            let mut wrong = code.clone();
            let last = if wrong.ends_with('0') { "1" } else { "0" };
            wrong.replace_range(17.., last);
            ok(line, &qid, &wrong, "penalty", at, "");
        }
        7 => ok(line, &qid, &code.to_lowercase(), "complaint", at, ""),
        8 => ok(line, &qid, code, "complaint", "2023-02-29T10:00:00+08:00", ""),
        9 => ok(line, &qid, code, "classification", at, r#","data":{"class":"E"}"#),
        10 => ok(line, &qid, code, "lawsuit", at, r#","kind":"lawsuit""#),
        11 => {
            // A Latin-1 byte where UTF-8 is required.
            ok(line, &qid, code, "penalty", at, r#","source":"@""#);
            let mut bytes = text.into_bytes();
            if let Some(p) = bytes.iter().position(|&b| b == b'@') {
                bytes[p] = 0xff;
            }
            bytes.push(b'\n');
            return bytes;
        }
        _ => {
            if rng.random_bool(0.01) {
                ok(line, &qid, code, "penalty", at, &format!(r#","data":{{"pad":"{}"}}"#, "x".repeat(70_000)));
            } else {
                ok(line, &qid, code, "penalty", "2024-06-01 10:00:00", "");
            }
        }
    }
    text.push('\n');
    text.into_bytes()
}
