//! The dispatcher's persistence: `state.json`, a snapshot of [`State`] with the sequence number of the last
//! op it includes, and `journal.jsonl`, the ops applied since, one JSON line each (`{"seq":N,...op}`).
//! Appending an op costs its own bytes, not the state's; when the journal has grown to twice the last
//! snapshot (at least [`MIN_COMPACT_BYTES`]), a new snapshot is written and the journal started afresh.
//!
//! Opening replays the journal's ops with a sequence number above the snapshot's, so a crash between
//! "snapshot written" and "journal truncated" applies nothing twice; a torn last line (a crash in the
//! middle of an append) ends the replay.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NotifyError;
use super::dispatch::{Dispatcher, Op, State};
use super::outbox::write_atomic;

/// The journal is compacted once it exceeds twice the snapshot and at least this many bytes.
pub const MIN_COMPACT_BYTES: u64 = 16 << 20;

#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    #[serde(flatten)]
    op: &'a Op,
}

#[derive(Deserialize)]
struct LineIn {
    seq: u64,
    #[serde(flatten)]
    op: Op,
}

pub struct Journal {
    dir: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
    snapshot_bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NotifyError + '_ {
    move |error| NotifyError::Io { path: path.display().to_string(), error }
}

impl Journal {
    /// Loads the state of `dir` (snapshot, then the journal's newer ops) and starts a fresh journal.
    pub fn open(dir: &Path) -> Result<(State, Vec<Op>, Journal), NotifyError> {
        let snapshot = dir.join("state.json");
        let state = match std::fs::read(&snapshot) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|e| NotifyError::State { path: snapshot.display().to_string(), error: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&snapshot)(e)),
        };
        let path = dir.join("journal.jsonl");
        let mut ops = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let records: Vec<&[u8]> = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
                let mut next = state.seq + 1;
                for (n, record) in records.iter().enumerate() {
                    match serde_json::from_slice::<LineIn>(record) {
                        Ok(l) if l.seq < next => {}
                        Ok(l) if l.seq == next => {
                            ops.push(l.op);
                            next += 1;
                        }
                        Ok(l) => {
                            return Err(NotifyError::State {
                                path: path.display().to_string(),
                                error: format!(
                                    "line {}: op {} follows op {} (a gap: the journal is damaged)",
                                    n + 1,
                                    l.seq,
                                    next - 1
                                ),
                            });
                        }
                        // A process killed in the middle of an append leaves a torn last record.
                        Err(error) if n + 1 == records.len() => {
                            tracing::warn!(path = %path.display(), line = n + 1, %error, "the journal ends with a torn record (a crash while appending): ignored");
                        }
                        Err(error) => {
                            return Err(NotifyError::State {
                                path: path.display().to_string(),
                                error: format!(
                                    "line {}: {error} (a damaged record in the middle of the journal)",
                                    n + 1
                                ),
                            });
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        let journal = Journal { dir: dir.to_owned(), file: BufWriter::new(file), bytes: 0, snapshot_bytes: 0 };
        Ok((state, ops, journal))
    }

    /// Appends an op applied as number `seq`, written to the file at once (a killed process loses none);
    /// durable against a power loss at the next [`Journal::sync`].
    pub fn append(&mut self, seq: u64, op: &Op) -> Result<(), NotifyError> {
        let mut line = serde_json::to_vec(&LineOut { seq, op }).unwrap_or_default();
        line.push(b'\n');
        self.bytes += line.len() as u64;
        let path = self.dir.join("journal.jsonl");
        self.file.write_all(&line).map_err(io(&path))?;
        self.file.flush().map_err(io(&path))
    }

    /// Makes every op appended so far durable.
    pub fn sync(&mut self) -> Result<(), NotifyError> {
        let path = self.dir.join("journal.jsonl");
        self.file.flush().map_err(io(&path))?;
        self.file.get_ref().sync_data().map_err(io(&path))
    }

    /// Whether the journal has grown enough to be folded into a new snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.bytes > MIN_COMPACT_BYTES.max(2 * self.snapshot_bytes)
    }

    /// Writes `dispatcher`'s state as the snapshot and starts an empty journal.
    pub fn compact(&mut self, dispatcher: &Dispatcher) -> Result<(), NotifyError> {
        self.sync()?;
        let json = serde_json::to_vec(&dispatcher.state).unwrap_or_default();
        write_atomic(&self.dir.join("state.json"), &json)?;
        let path = self.dir.join("journal.jsonl");
        let tmp = self.dir.join("journal.jsonl.tmp");
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&tmp).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        // The new (empty) journal is open before it replaces the old one: appends never go to a file that
        // is no longer in the folder.
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.file = BufWriter::new(file);
        super::outbox::sync_dir(&self.dir)?;
        self.snapshot_bytes = json.len() as u64;
        self.bytes = 0;
        Ok(())
    }
}
