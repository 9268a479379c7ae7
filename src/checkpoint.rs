//! Checkpoints: an engine snapshot plus the source and output positions it matches, written atomically.
//!
//! One directory per state partition (the file source has one, Kafka one per input partition). A checkpoint
//! is `<seq>.ckpt`: magic, the length and JSON of [`Meta`], the engine snapshot, and a CRC-32 of all of it.
//! It is written to a temporary file, fsynced, renamed into place and the directory fsynced, so a crash
//! leaves either the old or the new checkpoint, never a mix. On restore the newest one that passes its
//! checksum and parses is used; a damaged one is renamed `*.damaged` with a log line naming the reason, and
//! the one before it is tried.
//!
//! **Architecture Invariant:** a checkpoint's positions are only ever written together with the state that
//! includes exactly the input before them, and a source position is acknowledged upstream (Kafka commit)
//! only after the checkpoint holding it is durable.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, SnapshotError};
use crate::limits::EngineLimits;
use crate::rules::RuleSet;

const MAGIC: &[u8; 8] = b"CSCKPT\x00\x01";

/// Where a checkpoint's state stands in the input and the output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Sequence number, increasing per partition.
    pub seq: u64,
    /// Wall-clock Unix time it was written.
    pub written_at: i64,
    /// The next input position in the source file (bytes).
    #[serde(default)]
    pub next_offset: u64,
    /// Kafka: the next offset of each input topic's partition of this state partition.
    #[serde(default)]
    pub offsets: std::collections::BTreeMap<String, u64>,
    /// Lines read before `next_offset` (file source), for the line numbers of rejects.
    #[serde(default)]
    pub lines: u64,
    /// The source file's identity `(device, inode)`, to tell a replaced file from the one read.
    #[serde(default)]
    pub file_id: Option<(u64, u64)>,
    /// Where alert output stood: the alert file's length, or the next offset of the alert topic partition.
    pub alerts_mark: u64,
    /// Kafka: the alert topic's partition count when the mark was taken (the mark is an offset in partition
    /// `p mod alert_partitions`); 0 when unknown.
    #[serde(default)]
    pub alert_partitions: u32,
    /// Alert ids produced after the mark by an earlier run and not yet produced again by this one: they
    /// are not produced a second time (see `daemon::kafka`).
    #[serde(default)]
    pub suppress: Vec<String>,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("{path}: {reason}")]
    Damaged { path: String, reason: String },
    #[error("{path}: {error}")]
    Engine { path: String, error: crate::engine::EngineError },
}

/// The checkpoints of one state partition, owned: the store holds an exclusive lock on its directory
/// (`LOCK`) for as long as it lives, so two processes never write one partition's checkpoints.
pub struct Store {
    dir: PathBuf,
    keep: usize,
    _lock: File,
}

/// How long [`Store::open`] waits for another process to let go of a partition (a previous owner finishing its
/// revocation) before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A restored checkpoint.
pub struct Restored {
    pub meta: Meta,
    pub engine: Engine,
    pub path: PathBuf,
}

impl Store {
    /// The store in `dir` (created if missing), keeping `keep` good checkpoints.
    pub fn open(dir: PathBuf, keep: usize) -> Result<Store, CheckpointError> {
        fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        let path = dir.join("LOCK");
        let lock =
            File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| io_error(&path, e))?;
        let started = std::time::Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let error = io::Error::other("held by another process (another instance owns this partition)");
                    return Err(io_error(&path, error));
                }
                Err(fs::TryLockError::Error(error)) => return Err(io_error(&path, error)),
            }
        }
        Ok(Store { dir, keep: keep.max(1), _lock: lock })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a checkpoint atomically and drops the ones beyond `keep`. Returns its size in bytes.
    pub fn write(&self, meta: &Meta, engine: &Engine) -> Result<u64, CheckpointError> {
        let path = self.dir.join(format!("{:020}.ckpt", meta.seq));
        let tmp = self.dir.join(format!(".{:020}.ckpt.tmp", meta.seq));
        let bytes = self.write_file(&tmp, meta, engine).map_err(|error| io_error(&tmp, error))?;
        fs::rename(&tmp, &path).map_err(|error| io_error(&path, error))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|error| io_error(&self.dir, error))?;
        let all = self.list().map_err(|error| io_error(&self.dir, error))?;
        for old in all.iter().rev().skip(self.keep) {
            // A leftover is harmless (the newest good one wins), so a failed removal is only logged.
            if let Err(error) = fs::remove_file(old) {
                tracing::warn!(path = %old.display(), %error, "cannot remove an old checkpoint");
            }
        }
        Ok(bytes)
    }

    fn write_file(&self, tmp: &Path, meta: &Meta, engine: &Engine) -> io::Result<u64> {
        let file = File::create(tmp)?;
        let mut w = Crc { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new(), bytes: 0 };
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        w.write_all(MAGIC)?;
        w.write_all(&(json.len() as u32).to_le_bytes())?;
        w.write_all(&json)?;
        engine.write_snapshot(&mut w)?;
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(w.bytes + 4)
    }

    /// Checkpoint files, oldest first.
    fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ckpt") && !is_hidden(p))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The newest good checkpoint, read into an engine for `rules` with `limits`; `None` if there is none.
    /// Damaged ones are set aside (renamed `*.damaged`) with a log line, and the previous one is tried.
    pub fn restore(&self, rules: &Arc<RuleSet>, limits: EngineLimits) -> Result<Option<Restored>, CheckpointError> {
        let files = self.list().map_err(|error| io_error(&self.dir, error))?;
        for path in files.iter().rev() {
            match read(path, rules, limits) {
                Ok((meta, engine)) => return Ok(Some(Restored { meta, engine, path: path.clone() })),
                // A read error (disk, descriptors, shared storage) says nothing about the file: stop, retry later.
                Err(error @ (CheckpointError::Io { .. } | CheckpointError::Engine { .. })) => return Err(error),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "checkpoint damaged; trying the previous one");
                    let aside = path.with_extension("damaged");
                    if let Err(error) = fs::rename(path, &aside) {
                        tracing::warn!(path = %path.display(), %error, "cannot set a damaged checkpoint aside");
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Reads and checks one checkpoint file into an engine with `limits`.
pub fn read(path: &Path, rules: &Arc<RuleSet>, limits: EngineLimits) -> Result<(Meta, Engine), CheckpointError> {
    let bytes = fs::read(path).map_err(|error| io_error(path, error))?;
    decode_within(&path.display().to_string(), &bytes, rules, limits)
}

/// Checks and decodes the bytes of a checkpoint file (`path` is only used in messages). Nothing in them is
/// trusted: the checksum, the magic, every length and the engine snapshot are checked (`fuzz/` drives this
/// with arbitrary bytes).
pub fn decode(path: &str, bytes: &[u8], rules: &Arc<RuleSet>) -> Result<(Meta, Engine), CheckpointError> {
    decode_within(path, bytes, rules, EngineLimits::UNLIMITED)
}

/// [`decode`] into an engine with `limits` (see `Engine::read_snapshot_within`).
pub fn decode_within(
    path: &str,
    bytes: &[u8],
    rules: &Arc<RuleSet>,
    limits: EngineLimits,
) -> Result<(Meta, Engine), CheckpointError> {
    let damaged = |reason: String| CheckpointError::Damaged { path: path.to_owned(), reason };
    let (body, crc) = bytes.split_at_checked(bytes.len().wrapping_sub(4)).ok_or(damaged("truncated".into()))?;
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| damaged("truncated".into()))?);
    if crc32fast::hash(body) != crc {
        return Err(damaged("checksum mismatch (torn or corrupted write)".into()));
    }
    let rest = body.strip_prefix(MAGIC).ok_or(damaged("not a credit-sentinel checkpoint".into()))?;
    let (len, rest) = rest.split_at_checked(4).ok_or(damaged("truncated".into()))?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| damaged("truncated".into()))?) as usize;
    let (json, snapshot) = rest.split_at_checked(len).ok_or(damaged("truncated".into()))?;
    let meta: Meta = serde_json::from_slice(json).map_err(|e| damaged(format!("metadata: {e}")))?;
    let engine = Engine::read_snapshot_within(rules.clone(), snapshot, limits).map_err(|e| match e {
        SnapshotError::Corrupt(_) => damaged(e.to_string()),
        SnapshotError::Engine(error) => CheckpointError::Engine { path: path.to_owned(), error },
    })?;
    Ok((meta, engine))
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

fn io_error(path: &Path, error: io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.display().to_string(), error }
}

/// A writer that keeps a CRC-32 and a byte count of what passes through.
struct Crc<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;
    use crate::rules::load_dir;

    fn rules() -> Arc<RuleSet> {
        Arc::new(load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/alert-rules"))).unwrap())
    }

    fn engine(rules: &Arc<RuleSet>, n: usize) -> Engine {
        let mut e = Engine::new(rules.clone()).unwrap();
        for i in 0..n {
            let line = format!(
                r#"{{"event_id":"e{i}","entity_id":"91350100M000100Y43","kind":"penalty","occurred_at":"2024-01-{:02}T00:00:00Z"}}"#,
                1 + i % 28
            );
            e.offer(decode(line.as_bytes()).unwrap(), &mut |_| {});
        }
        e
    }

    #[test]
    fn the_newest_good_checkpoint_wins_and_damage_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules();
        let store = Store::open(dir.path().join("p0"), 2).unwrap();
        for seq in 1..=3 {
            let meta = Meta { seq, next_offset: seq * 10, ..Meta::default() };
            store.write(&meta, &engine(&rules, seq as usize)).unwrap();
        }
        assert_eq!(store.list().unwrap().len(), 2, "keeps two");
        let r = store.restore(&rules, EngineLimits::UNLIMITED).unwrap().unwrap();
        assert_eq!((r.meta.seq, r.meta.next_offset, r.engine.entities()), (3, 30, 1));

        // A torn write of the newest: its tail is lost. The previous one is used and the torn one set aside.
        let newest = r.path;
        let len = fs::metadata(&newest).unwrap().len();
        File::options().write(true).open(&newest).unwrap().set_len(len - 7).unwrap();
        let r = store.restore(&rules, EngineLimits::UNLIMITED).unwrap().unwrap();
        assert_eq!(r.meta.seq, 2);
        assert!(newest.with_extension("damaged").exists());

        // A flipped bit in the only one left: no checkpoint, never a trusted bad one.
        let mut bytes = fs::read(&r.path).unwrap();
        bytes[40] ^= 1;
        fs::write(&r.path, bytes).unwrap();
        assert!(store.restore(&rules, EngineLimits::UNLIMITED).unwrap().is_none());
    }
}
