//! The command line. Each command returns an `anyhow::Result`; only [`main`] chooses the exit code.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::aggregate::Aggregator;
use crate::alert::{AlertRecord, FallRecord};
use crate::engine::{Alert, Engine};
use crate::event::Rejection;
use crate::replay::{Input, Signal, replay_all};
use crate::rules::{Action, Measure, RuleSet, load_dir};
use crate::time::{Ts, parse_rfc3339};

/// Streaming early-warning monitor for market-entity credit risk (市场主体信用风险监测预警).
#[derive(Debug, Parser)]
#[command(name = "credit-sentinel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay JSON Lines events through the rules; print alert records on stdout, a summary on stderr.
    Replay {
        /// Rules directory (or one rule file).
        #[arg(long, default_value = "alert-rules")]
        rules: PathBuf,
        /// Evaluate up to this RFC 3339 time (or the last event time, if later).
        #[arg(long)]
        until: Option<String>,
        /// Do not print rejected lines (the summary still counts them).
        #[arg(long)]
        quiet: bool,
        /// Write every rejected line's location and reason to this file (`file:line: reason: text`).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Also write every level fall (never an alert: what "resolved" notices are made of) to this file,
        /// as JSON Lines.
        #[arg(long)]
        falls: Option<PathBuf>,
        /// Also write the regional alerts of the `[[aggregate]]` rules (counts of entities per region, industry or
        /// domain) to this file, as JSON Lines. The entity alerts on stdout are the same with or without it.
        #[arg(long)]
        regional: Option<PathBuf>,
        /// Turn on the disabled rules defined under this file or folder (e.g. a shipped domain set such as
        /// `alert-rules/food`). May be repeated.
        #[arg(long, value_name = "PATH")]
        enable: Vec<PathBuf>,
        /// Only read and decode the lines (the baseline of the throughput benchmark); no engine, no alerts.
        #[arg(long)]
        parse_only: bool,
        /// Event files in order; `-` is stdin.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Validate rule files and print what they define; exit 1 on any error.
    CheckRules {
        /// Rules directory (or one rule file).
        dir: PathBuf,
    },
    /// Run rule unit tests (`*.test.toml`): given events, expect exactly these alerts.
    TestRules {
        /// Test files, or directories searched for `*.test.toml`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Back-test a rule change: replay history under both rule sets and report alerts that differ.
    DiffRules {
        #[arg(long)]
        old: PathBuf,
        #[arg(long)]
        new: PathBuf,
        #[arg(long)]
        until: Option<String>,
        /// Print every differing alert, not only the counts.
        #[arg(long)]
        verbose: bool,
        /// Turn on, in the new set, the disabled rules defined under this file or folder (e.g. a shipped domain
        /// set such as `alert-rules/food`): the effect of enabling it. May be repeated.
        #[arg(long, value_name = "PATH")]
        enable: Vec<PathBuf>,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Generate synthetic events (JSON Lines on stdout), deterministic for a seed.
    Gen(crate::generate::GenOptions),
    /// Run the daemon: read the configured source, keep state, write alerts, checkpoint. SIGTERM/SIGINT stop
    /// it gracefully (a second one at once), SIGHUP reloads the rules.
    Run {
        /// Configuration file (see deploy/config.example.toml).
        #[arg(long)]
        config: PathBuf,
        /// History files (JSON Lines) to load before going live when no checkpoint exists.
        #[arg(long, num_args = 1..)]
        bootstrap: Vec<PathBuf>,
    },
    /// Check a configuration file and the rules it names; exit 1 with file:line and reason on any error.
    CheckConfig {
        /// Configuration file.
        config: PathBuf,
    },
    /// Show which routes and receivers an alert with the given labels reaches under a configuration.
    RouteTest {
        /// Configuration file with a [notify] section.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        labels: crate::notify::cli::AlertLabels,
    },
    /// Print a sample e-mail rendered through the templates (the configured ones, or the built-in ones).
    RenderEmail {
        /// Configuration file (its templates, time offset, From and first receiver).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A daily digest instead of an alert e-mail.
        #[arg(long)]
        digest: bool,
        #[arg(long, value_enum, default_value = "text")]
        part: crate::notify::cli::Part,
    },
    /// Add, list and expire silences on the running daemon (through its admin socket).
    #[command(subcommand)]
    Silence(crate::notify::cli::SilenceCommand),
}

/// Runs the command line; the exit code is 0 when the command did its job, 1 when it could not.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay { parse_only: true, files, .. } => cmd_parse_only(&files),
        Command::Replay { rules, until, quiet, rejects, falls, regional, enable, files, .. } => {
            let outputs =
                ReplayOutputs { rejects: rejects.as_deref(), falls: falls.as_deref(), regional: regional.as_deref() };
            load_rules(&rules, &enable).and_then(|rules| cmd_replay(rules, until.as_deref(), quiet, outputs, &files))
        }
        Command::CheckRules { dir } => cmd_check_rules(&dir),
        Command::TestRules { files } => crate::rule_tests::run_files(&files),
        Command::DiffRules { old, new, until, verbose, enable, files } => parse_until(until.as_deref())
            .and_then(|until| crate::diff::run(&old, &new, &enable, until, verbose, &files)),
        Command::Gen(opts) => crate::generate::run(&opts),
        Command::Run { config, bootstrap } => crate::daemon::service::run(&config, bootstrap),
        Command::CheckConfig { config } => crate::daemon::service::check_config(&config),
        Command::RouteTest { config, labels } => crate::notify::cli::route_test(&config, &labels),
        Command::RenderEmail { config, digest, part } => {
            crate::notify::cli::render_email(config.as_deref(), digest, part)
        }
        Command::Silence(cmd) => crate::notify::cli::silence(&cmd),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("credit-sentinel: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a rule set, with the path in the error.
/// Loads the rules under `dir`, with the disabled ones under each of `enable` turned on (`--enable`).
pub fn load_rules(dir: &Path, enable: &[PathBuf]) -> anyhow::Result<Arc<RuleSet>> {
    let mut rules = load_dir(dir)?;
    for path in enable {
        rules = rules.enabling(path).map_err(|e| anyhow::anyhow!("--enable {e}"))?;
    }
    Ok(Arc::new(rules))
}

pub(crate) fn parse_until(until: Option<&str>) -> anyhow::Result<Option<Ts>> {
    until.map(|u| parse_rfc3339(u).map_err(|e| anyhow::anyhow!("--until {u:?}: {e}"))).transpose()
}

/// Opens every input before reading any, so a missing file stops the command before it prints anything.
pub(crate) fn open_inputs(files: &[String]) -> anyhow::Result<Vec<Input>> {
    files.iter().map(|f| Input::open(f).with_context(|| format!("{f}: cannot open"))).collect()
}

/// Prints at most this many rejected lines; the summary counts them all.
const MAX_PRINTED_REJECTS: u64 = 100;

/// The files `replay` writes besides stdout.
struct ReplayOutputs<'a> {
    rejects: Option<&'a Path>,
    falls: Option<&'a Path>,
    regional: Option<&'a Path>,
}

fn cmd_replay(
    rules: Arc<RuleSet>,
    until: Option<&str>,
    quiet: bool,
    outputs: ReplayOutputs<'_>,
    files: &[String],
) -> anyhow::Result<bool> {
    let ReplayOutputs { rejects, falls, regional } = outputs;
    let until = parse_until(until)?;
    let inputs = open_inputs(files)?;
    let create = |path: &Path| -> anyhow::Result<io::BufWriter<std::fs::File>> {
        Ok(io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?,
        ))
    };
    let mut reject_file = rejects.map(create).transpose()?;
    let mut fall_file = falls.map(create).transpose()?;
    let mut fall_error: Option<io::Error> = None;
    let mut regional_file = regional.map(create).transpose()?;
    let mut regional_error: Option<io::Error> = None;
    let mut aggregator = Aggregator::new(&rules);
    let mut reject_error: Option<io::Error> = None;
    let mut engine = Engine::new(rules.clone())?;
    if fall_file.is_some() {
        engine.report_falls();
    }
    let mut printed = 0u64;
    let stderr = io::stderr();
    // Alert records are made and written to stdout on a thread of their own: with many alerts (a domain set on
    // a busy history) they are a large share of the engine thread's work, while the reader thread leaves part
    // of a core idle. Alerts go over in batches on a bounded channel: when the writer falls behind, the engine
    // waits (memory stays bounded); once writing failed, the writer is gone and the engine stops sending.
    let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Alert>>(ALERT_BATCHES);
    let (summary, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_alerts(received, &rules));
        let mut batch = Vec::with_capacity(ALERT_BATCH);
        let mut writer_gone = false;
        let summary = replay_all(
            std::slice::from_mut(&mut engine),
            inputs,
            until,
            &mut |_, engine, signal| match signal {
                Signal::Alert(alert) => {
                    if !writer_gone {
                        batch.push(alert.clone());
                        if batch.len() == ALERT_BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(ALERT_BATCH));
                            writer_gone = batches.send(full).is_err();
                        }
                    }
                    if let Some(file) = &mut regional_file
                        && regional_error.is_none()
                    {
                        aggregator.offer_engine_alert(engine, alert, &mut |record| {
                            if regional_error.is_none() {
                                let written = serde_json::to_writer(&mut *file, &record)
                                    .map_err(io::Error::from)
                                    .and_then(|()| file.write_all(b"\n"));
                                regional_error = written.err();
                            }
                        });
                    }
                }
                Signal::Fall(fall) => {
                    if let Some(file) = &mut fall_file
                        && fall_error.is_none()
                    {
                        let record = FallRecord::new(fall, engine.rules());
                        let written = serde_json::to_writer(&mut *file, &record)
                            .map_err(io::Error::from)
                            .and_then(|()| file.write_all(b"\n"));
                        fall_error = written.err();
                    }
                }
            },
            &mut |rejection: &Rejection| {
                if let Some(file) = &mut reject_file
                    && reject_error.is_none()
                {
                    let (reason, location) = (rejection.reason, &rejection.location);
                    reject_error = writeln!(file, "{location}: {}: {reason}", reason.as_str()).err();
                }
                if !quiet && printed < MAX_PRINTED_REJECTS {
                    printed += 1;
                    let _ = writeln!(stderr.lock(), "rejected {rejection}");
                }
            },
        );
        if !batch.is_empty() && !writer_gone {
            let _ = batches.send(batch);
        }
        drop(batches);
        let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("the alert writer panicked")));
        (summary, written)
    });
    let summary = summary?;
    match written {
        // The reader of stdout went away (`| head`): that is the end of the job, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(true),
        written => written.context("writing alerts")?,
    }
    if let Some(e) = reject_error {
        return Err(e).context("writing rejects");
    }
    if let Some(mut file) = reject_file {
        file.flush().context("writing rejects")?;
    }
    if let Some(e) = fall_error {
        return Err(e).context("writing falls");
    }
    if let Some(mut file) = fall_file {
        file.flush().context("writing falls")?;
    }
    if let Some(e) = regional_error {
        return Err(e).context("writing regional alerts");
    }
    if let Some(mut file) = regional_file {
        file.flush().context("writing regional alerts")?;
    }
    let rejected = summary.rejected_total();
    if !quiet && rejected > printed {
        eprintln!("({} more rejected lines not shown)", rejected - printed);
    }
    eprint!("{summary}");
    Ok(true)
}

/// Alerts per batch sent to the writer thread of `replay`, and batches in flight at most.
const ALERT_BATCH: usize = 512;
const ALERT_BATCHES: usize = 16;

/// Writes the alert records of `batches` to stdout, one JSON line each, until the sender is done or writing
/// fails.
fn write_alerts(batches: std::sync::mpsc::Receiver<Vec<Alert>>, rules: &RuleSet) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    for batch in batches {
        for alert in &batch {
            serde_json::to_writer(&mut out, &AlertRecord::new(alert, rules))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

fn cmd_parse_only(files: &[String]) -> anyhow::Result<bool> {
    let summary = crate::replay::parse_only(open_inputs(files)?)?;
    eprint!("{summary}");
    Ok(true)
}

/// A scope as `check-rules` prints it: `scope: domain food; region 3605*; class C, D`.
fn scope_text(scope: &crate::rules::Scope) -> String {
    let list = |values: &[String], prefix: bool| {
        values.iter().map(|v| if prefix { format!("{v}*") } else { v.clone() }).collect::<Vec<_>>().join(" | ")
    };
    let mut keys = Vec::new();
    for (key, values, prefix) in [
        ("domain", &scope.domains, false),
        ("region", &scope.regions, true),
        ("industry", &scope.industries, true),
        ("authority", &scope.authorities, false),
    ] {
        if !values.is_empty() {
            keys.push(format!("{key} {}", list(values, prefix)));
        }
    }
    if scope.classes.contains(&false) {
        let names = crate::rules::CLASS_SLOT_NAMES.iter().zip(scope.classes);
        let classes: Vec<&str> = names.filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        keys.push(format!("class {}", classes.join(" | ")));
    }
    format!("scope: {} (entities with no profile: out of scope)", keys.join("; "))
}

fn cmd_check_rules(dir: &Path) -> anyhow::Result<bool> {
    use std::fmt::Write as _;
    let rules = load_dir(dir)?;
    Engine::new(Arc::new(rules.clone()))?;
    let mut text = String::new();
    writeln!(
        text,
        "{}: {} rules from {} files ({} active), {} aggregate rules ({} active)",
        dir.display(),
        rules.all.len(),
        rules.files.len(),
        rules.active.len(),
        rules.aggregates.len(),
        rules.active_aggregates().count(),
    )?;
    for rule in &rules.all {
        writeln!(
            text,
            "\n{} [{:?}] version {} ({})\n  {} / {}",
            rule.id, rule.state, rule.version, rule.origin, rule.name_zh, rule.name_en,
        )?;
        let component = |kinds: &[crate::event::Kind], window: i64, surge: Option<(u64, u64)>| {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            let (what, guard) = match surge {
                None => ("count", String::new()),
                Some((num, den)) => ("surge", format!(", guard cur*{den} >= prev*{num}")),
            };
            format!("{what} of {} over {} days{guard}", kinds.join("+"), window / crate::time::DAY)
        };
        match &rule.measure {
            Measure::Composite { parts, .. } => {
                writeln!(text, "  composite score (thousandths) = sum of weight x min(value, cap) / cap:")?;
                for p in parts {
                    let weight = crate::rules::milli_text(p.weight as i64);
                    writeln!(text, "    {weight} x {} (cap {})", component(&p.kinds, p.window, p.surge), p.cap)?;
                }
            }
            _ => {
                let (kinds, window, surge) = rule.measure.components().next().unwrap_or_default();
                writeln!(text, "  {}", component(kinds, window, surge))?;
            }
        }
        if let Some(scope) = &rule.scope {
            writeln!(text, "  {}", scope_text(scope))?;
        }
        writeln!(text, "  class         {}", Action::ALL.map(|a| format!("{a:>10}")).join(""))?;
        for (slot, name) in crate::rules::CLASS_SLOT_NAMES.iter().enumerate() {
            let row = rule.thresholds[slot].map(|t| t.map_or(format!("{:>10}", "-"), |t| format!("{t:>10}")));
            writeln!(text, "  {name:<13} {}", row.join(""))?;
        }
    }
    for aggregate in &rules.aggregates {
        let prefix = aggregate.prefix.map_or(String::new(), |n| format!(" (first {n} characters)"));
        writeln!(
            text,
            "\n{} [{:?}] aggregate version {} ({})\n  {} / {}\n  distinct entities by {}{prefix} with an alert at \
             {} or above over {} days",
            aggregate.id,
            aggregate.state,
            aggregate.version,
            aggregate.origin,
            aggregate.name_zh,
            aggregate.name_en,
            aggregate.group_by,
            aggregate.min_action,
            aggregate.window / crate::time::DAY,
        )?;
        writeln!(text, "  {:<13} {}", "", Action::ALL.map(|a| format!("{a:>10}")).join(""))?;
        let row = aggregate.thresholds.map(|t| t.map_or(format!("{:>10}", "-"), |t| format!("{t:>10}")));
        writeln!(text, "  {:<13} {}", "entities", row.join(""))?;
    }
    print_all(&text)?;
    Ok(true)
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print_all(text: &str) -> anyhow::Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
