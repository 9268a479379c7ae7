//! credit-sentinel: a streaming early-warning monitor for market-entity credit risk.
//!
//! # Layout
//! - [`event`]: the input schema, decoding of one JSON line, typed reasons for bad input.
//! - [`credit_code`]: the unified social credit code check and its 12-byte key form.
//! - [`time`]: strict RFC 3339 parsing and formatting, epoch seconds.
//! - [`rules`]: rule files (`alert-rules/`), validated into an immutable [`rules::RuleSet`].
//! - [`engine`]: events in, the exact alert stream out; window state, levels, timers, dedup. Pure and
//!   synchronous: it knows nothing of files, Kafka, SMTP or wall clocks.
//! - [`alert`]: the JSON record of an alert.
//! - [`aggregate`]: regional alerts (`[[aggregate]]` rules) derived from the entity alert stream.
//! - [`lines`], [`replay`]: bounded line reading and the replay driver over files.
//! - [`rule_tests`], [`diff`]: `test-rules` and `diff-rules`.
//! - [`generate`]: the seeded synthetic event generator (`gen`).
//! - [`cli`]: the commands; `main.rs` only calls [`cli::main`].

pub mod aggregate;
pub mod alert;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod credit_code;
pub mod daemon;
pub mod diff;
pub mod engine;
pub mod event;
pub mod generate;
pub mod limits;
pub mod lines;
pub mod metrics;
pub mod notify;
pub mod replay;
pub mod rule_tests;
pub mod rules;
pub mod time;
