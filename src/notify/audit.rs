//! The audit log: `audit.jsonl` in the notification folder, append-only JSON Lines of every notice,
//! routing decision, e-mail queued, send attempt and result, silence change and rule reload, each with
//! its time (`ts`) and who did it (`who`: `daemon`, or the author of a silence), so that a bureau can
//! answer "who was told what, when". Lines are flushed as written and fsynced with each state sync.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::time::{Ts, format_rfc3339};

pub struct AuditLog {
    file: BufWriter<File>,
}

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    ts: String,
    who: &'a str,
    #[serde(flatten)]
    what: &'a T,
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog { file: BufWriter::new(file) })
    }

    /// Appends one line.
    pub fn write<T: Serialize>(&mut self, now: Ts, who: &str, what: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, &Line { ts: format_rfc3339(now), who, what })?;
        self.file.write_all(b"\n")
    }

    /// Writes what is buffered to the file (and, with `durable`, to the disk).
    pub fn flush(&mut self, durable: bool) -> std::io::Result<()> {
        self.file.flush()?;
        if durable {
            self.file.get_ref().sync_data()?;
        }
        Ok(())
    }
}

/// Send attempts and their results, logged by the outbox.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Delivery<'a> {
    Attempt {
        mail: &'a str,
        message_id: &'a str,
        receiver: &'a str,
        to: &'a [String],
        attempt: u32,
    },
    Sent {
        mail: &'a str,
        message_id: &'a str,
        receiver: &'a str,
        to: &'a [String],
        via: &'a str,
    },
    Failed {
        mail: &'a str,
        message_id: &'a str,
        receiver: &'a str,
        attempt: u32,
        error: &'a str,
        retry_in_secs: u64,
    },
    GaveUp {
        mail: &'a str,
        message_id: &'a str,
        receiver: &'a str,
        attempts: u32,
        kept_in: &'a str,
    },
    /// Not sent: the outbox was full (`[limits] outbox`).
    OutboxFull {
        mail: &'a str,
        message_id: &'a str,
        receiver: &'a str,
        kept_in: &'a str,
    },
    RecipientRefused {
        mail: &'a str,
        message_id: &'a str,
        recipient: &'a str,
        error: &'a str,
    },
}

/// A rule reload, logged by the daemon.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Reload<'a> {
    RulesReloaded { rules: &'a [String] },
    RulesRefused { error: &'a str },
}
