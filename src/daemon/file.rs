//! The embedded default source: JSON Lines from a file, followed as it grows like `tail -F`, or stdin.
//!
//! One state partition. Its checkpoint holds the byte offset after the last whole line handled, the number
//! of lines before it and the file's identity, so a restart resumes at the next line; a file replaced or
//! truncated since is read from its start (its events' ids are remembered, so lines read before count once).
//! Alerts are appended to a file whose length is part of the checkpoint: on restart the file is cut back
//! to that length and the alerts after it are raised again by the same input, so each alert is written
//! exactly once. Rejected lines go to a reject file (`file:line: reason: text`) and the log.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::Store;
use crate::config::{Config, FileConfig};
use crate::event::{MAX_LINE_BYTES, Reason, decode};
use crate::lines::Line;
use crate::rules::RuleSet;

use super::task::Task;
use super::{Chores, DaemonError, Handle, Stats, wall_now};

/// How long a renamed file must have stopped growing before the new one is read.
const ROTATION_GRACE: Duration = Duration::from_secs(1);

/// Lines handled per turn of the loop between looks at the clock and the handle.
const LINES_PER_TURN: usize = 4096;

pub fn run(config: &Config, source: &FileConfig, rules: Arc<RuleSet>, handle: &Handle) -> Result<(), DaemonError> {
    let stats = handle.stats();
    let state_dir = config.state_dir();
    let store = Store::open(state_dir.join("file"), config.checkpoint.keep)?;
    let (mut task, restored) =
        Task::open(store, &rules, &config.clock, config.limits.engine(), handle.notifier(), handle.regional())?;
    let mut alerts = AlertFile::open(source.alerts.as_ref().map(|p| state_dir.join(p)), task.meta.alerts_mark)?;
    let mut rejects = match &source.rejects {
        Some(p) => Some(open_append(&state_dir.join(p))?),
        None => None,
    };
    if !restored {
        for path in &config.bootstrap.files {
            bootstrap(&mut task, path, &mut alerts, stats)?;
        }
    }
    let mut tail = Tail::open(&source.path, &task.meta)?;
    stats.partitions.store(1, std::sync::atomic::Ordering::Relaxed);
    if !restored {
        // A first checkpoint at once: it names the file being read, so that after a crash a file rotated
        // away in the meantime is found and finished (and the history loaded is not loaded again).
        task.meta.file_id = tail.id;
        checkpoint(&mut task, &mut alerts, &mut rejects, stats)?;
    }
    let name: Arc<str> = Arc::from(source.path.display().to_string());
    handle.set_ready();
    tracing::info!(path = %name, follow = source.follow, restored, "reading events");
    let mut chores = Chores::new(config);
    let mut ended = false;
    let stdin_eof = tail.stdin_eof.clone();
    while !handle.stopping() && !ended {
        if let Some(new) = handle.take_reload() {
            if let Some(regional) = handle.regional() {
                regional.set_rules(&new);
            }
            task.set_rules(new)?;
            Stats::add(&stats.reloads_ok, 1);
            tracing::info!("rules reloaded");
            handle.audit_reload(Some(task.engine.rules()), None);
            // The new rules and the re-evaluation they start are checkpointed at once: a crash must not
            // replay the reload at another instant.
            checkpoint(&mut task, &mut alerts, &mut rejects, stats)?;
            chores.checkpointed();
        }
        let wall = wall_now();
        task.tick(wall, stats);
        let mut handled = 0;
        while handled < LINES_PER_TURN {
            let (number, line) = match tail.next_line().map_err(|error| io_error(&name, error))? {
                Some(line) => line,
                None if !source.follow && input_ended(&stdin_eof) => match tail.rest() {
                    Some(line) => {
                        ended = true;
                        line
                    }
                    None => {
                        ended = true;
                        break;
                    }
                },
                None => break,
            };
            handled += 1;
            stats.line(wall);
            let result = match line {
                Line::Text(bytes) => {
                    decode(bytes).and_then(|event| task.handle(event, wall, stats).map(|_| ())).map_err(|r| (r, bytes))
                }
                Line::TooLong => Err((Reason::TooLarge, &b""[..])),
            };
            if let Err((reason, bytes)) = result {
                stats.rejected(reason);
                // Bad input is shown in part; a valid event refused (over a limit, or from the future) whole, so
                // that it can be appended to the input again.
                let whole = matches!(reason, Reason::OverLimit(_) | Reason::Future);
                let text = String::from_utf8_lossy(if whole { bytes } else { &bytes[..bytes.len().min(200)] });
                tracing::debug!(location = %format!("{name}:{number}"), %reason, "rejected");
                if let Some(w) = &mut rejects {
                    writeln!(w, "{name}:{number}: {}: {reason}: {text}", reason.as_str())
                        .map_err(|error| io_error("reject file", error))?;
                }
            }
            if ended {
                break;
            }
        }
        task.meta.next_offset = tail.offset;
        task.meta.lines = tail.lines;
        task.meta.file_id = tail.id;
        alerts.write(&mut task)?;
        stats.entities.store(task.engine.entities() as u64, std::sync::atomic::Ordering::Relaxed);
        // A turn that did not fill up reached the end of what was written.
        stats.set_caught_up(handled < LINES_PER_TURN);
        chores.view(stats, std::iter::once(&task.engine));
        chores.ping(stats);
        if chores.checkpoint_due() {
            checkpoint(&mut task, &mut alerts, &mut rejects, stats)?;
            chores.checkpointed();
        }
        if handled == 0 && !ended {
            std::thread::sleep(Duration::from_millis(source.poll_ms));
            tail.notice_replacement().map_err(|error| io_error(&name, error))?;
        }
    }
    if ended {
        // A file that is not followed is the whole input: evaluate its last instant, as replay does.
        let mut raised = Vec::new();
        task.engine.flush(&mut |a| raised.push(a));
        task.emit(raised, stats);
        alerts.write(&mut task)?;
    }
    checkpoint(&mut task, &mut alerts, &mut rejects, stats)?;
    if ended && let Some(notifier) = handle.notifier() {
        tracing::info!("input ended: sending what waits");
        // The whole input is read: what waits in groups goes out now, and the outbox is tried once.
        notifier.finish()?;
    }
    tracing::info!(status = %stats.status_line(), "stopped");
    Ok(())
}

fn checkpoint(
    task: &mut Task,
    alerts: &mut AlertFile,
    rejects: &mut Option<BufWriter<File>>,
    stats: &Stats,
) -> Result<(), DaemonError> {
    if let Some(w) = rejects {
        w.flush().map_err(|error| io_error("reject file", error))?;
    }
    task.meta.alerts_mark = alerts.sync()?;
    task.checkpoint(stats)?;
    Ok(())
}

/// Whether the input has ended when no line is there: a file at each end; stdin once closed (`eof`).
fn input_ended(eof: &Option<Arc<std::sync::atomic::AtomicBool>>) -> bool {
    eof.as_ref().is_none_or(|eof| eof.load(std::sync::atomic::Ordering::Acquire))
}

/// Loads a history file through the event clock before the live source starts (`[bootstrap]`).
fn bootstrap(task: &mut Task, path: &Path, alerts: &mut AlertFile, stats: &Stats) -> Result<(), DaemonError> {
    super::read_history(path, |event, location| {
        task.history(event, stats).map_err(|reason| DaemonError::History { location: location(), reason })?;
        alerts.write(task)
    })?;
    Ok(())
}

fn io_error(context: &str, error: io::Error) -> DaemonError {
    DaemonError::Io { context: context.to_owned(), error }
}

fn open_append(path: &Path) -> Result<BufWriter<File>, DaemonError> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| io_error(&path.display().to_string(), error))?;
    Ok(BufWriter::new(file))
}

/// Where alert records go: a file cut back to the checkpoint's mark on start, or stdout.
enum AlertFile {
    File { path: PathBuf, w: BufWriter<File>, len: u64 },
    Stdout,
}

impl AlertFile {
    fn open(path: Option<PathBuf>, mark: u64) -> Result<AlertFile, DaemonError> {
        let Some(path) = path else { return Ok(AlertFile::Stdout) };
        let err = |error| io_error(&path.display().to_string(), error);
        let file = File::options().create(true).truncate(false).read(true).write(true).open(&path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if len > mark {
            tracing::info!(path = %path.display(), cut = len - mark, "alerts after the checkpoint are raised again");
            file.set_len(mark).map_err(err)?;
        }
        let len = len.min(mark);
        let mut file = file;
        file.seek(SeekFrom::Start(len)).map_err(err)?;
        Ok(AlertFile::File { path, w: BufWriter::new(file), len })
    }

    fn write(&mut self, task: &mut Task) -> Result<(), DaemonError> {
        if !task.has_output() {
            return Ok(()); // called after every event of a history load: nothing to lock or flush
        }
        match self {
            AlertFile::File { path, w, len } => {
                for out in task.take_output() {
                    w.write_all(&out.json).and_then(|()| w.write_all(b"\n")).map_err(|e| file_error(path, e))?;
                    *len += out.json.len() as u64 + 1;
                }
            }
            AlertFile::Stdout => {
                let mut stdout = io::stdout().lock();
                for out in task.take_output() {
                    // A closed stdout (a pipe whose reader left) must not stop the daemon.
                    let _ = stdout.write_all(&out.json).and_then(|()| stdout.write_all(b"\n"));
                }
                let _ = stdout.flush();
            }
        }
        Ok(())
    }

    /// Makes what was written durable; the length to record as the mark.
    fn sync(&mut self) -> Result<u64, DaemonError> {
        match self {
            AlertFile::File { path, w, len } => {
                w.flush().map_err(|e| file_error(path, e))?;
                w.get_ref().sync_data().map_err(|e| file_error(path, e))?;
                Ok(*len)
            }
            AlertFile::Stdout => Ok(0),
        }
    }
}

fn file_error(path: &Path, error: io::Error) -> DaemonError {
    io_error(&path.display().to_string(), error)
}

/// A file in `path`'s folder with identity `id` and at least `len` bytes: where a rotated file went.
fn find_rotated(path: &Path, id: (u64, u64), len: u64) -> Option<(PathBuf, (u64, u64))> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|entry| {
        let md = entry.metadata().ok()?;
        ((md.dev(), md.ino()) == id && md.is_file() && md.len() >= len).then(|| (entry.path(), id))
    })
}

/// A followed file (or stdin), read in whole lines.
struct Tail {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    /// `(device, inode)` of the open file; `None` for stdin.
    id: Option<(u64, u64)>,
    /// Byte offset after the last whole line returned.
    offset: u64,
    /// Lines returned so far (the 1-based number of the last one).
    lines: u64,
    buf: Vec<u8>,
    start: usize,
    /// Inside a line longer than the limit: its bytes are dropped up to the next newline.
    skipping: bool,
    /// Bytes of that line dropped so far (added to `offset` when it ends).
    skipped: u64,
    /// The path names another file (or this one shrank): read this one to its end, then switch.
    switch_pending: bool,
    /// This one is read to its end: switch at the next call.
    switch_now: bool,
    /// When a read last returned data (a replaced file is switched from once it stopped growing).
    last_data: std::time::Instant,
    /// Stdin: set when it is closed (before that, no data is not the end).
    stdin_eof: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Tail {
    fn open(path: &Path, meta: &crate::checkpoint::Meta) -> Result<Tail, DaemonError> {
        let name = path.display().to_string();
        if path.as_os_str() == "-" {
            if meta.next_offset > 0 {
                tracing::warn!("stdin has no position to resume at: reading it from its start (ids seen count once)");
            }
            let (reader, eof) = StdinReader::spawn(Duration::from_millis(200));
            let mut tail = Tail::new(path, Box::new(reader), None, 0, 0);
            tail.stdin_eof = Some(eof);
            return Ok(tail);
        }
        let file = File::open(path).map_err(|error| io_error(&name, error))?;
        let md = file.metadata().map_err(|error| io_error(&name, error))?;
        let id = Some((md.dev(), md.ino()));
        let (mut file, id, offset, lines) = if meta.file_id == id && md.len() >= meta.next_offset {
            (file, id, meta.next_offset, meta.lines)
        } else if let Some((rotated, old)) = meta.file_id.and_then(|old| find_rotated(path, old, meta.next_offset)) {
            // The checkpoint's file was rotated away: finish it, then go on with the new one (`tail -F`).
            tracing::info!(path = %rotated.display(), "finishing the rotated file of the checkpoint first");
            let file = File::open(&rotated).map_err(|error| io_error(&rotated.display().to_string(), error))?;
            (file, Some(old), meta.next_offset, meta.lines)
        } else {
            if meta.file_id.is_some() {
                tracing::warn!(path = %name, "not the file of the checkpoint (replaced or truncated): reading it from its start");
            }
            (file, id, 0, 0)
        };
        file.seek(SeekFrom::Start(offset)).map_err(|error| io_error(&name, error))?;
        Ok(Tail::new(path, Box::new(file), id, offset, lines))
    }

    fn new(path: &Path, reader: Box<dyn Read + Send>, id: Option<(u64, u64)>, offset: u64, lines: u64) -> Tail {
        Tail {
            path: path.to_owned(),
            reader,
            id,
            offset,
            lines,
            buf: Vec::new(),
            start: 0,
            skipping: false,
            skipped: 0,
            switch_pending: false,
            switch_now: false,
            last_data: std::time::Instant::now(),
            stdin_eof: None,
        }
    }

    /// The next whole line with its number, or `None` if none is complete yet.
    fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        loop {
            if self.switch_now && !self.switch()? {
                return Ok(None); // the new file is not there yet
            }
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..]) {
                let (from, to) = (self.start, self.start + i);
                self.start = to + 1;
                self.offset += (to + 1 - from) as u64 + std::mem::take(&mut self.skipped);
                self.lines += 1;
                if std::mem::take(&mut self.skipping) || to - from > MAX_LINE_BYTES {
                    return Ok(Some((self.lines, Line::TooLong)));
                }
                return Ok(Some((self.lines, Line::Text(&self.buf[from..to]))));
            }
            // No newline in what is buffered: keep the partial line and read more.
            self.buf.drain(..self.start);
            self.start = 0;
            if self.buf.len() > MAX_LINE_BYTES {
                // Too long already: keep counting its bytes (for the offset) without holding them.
                self.skipping = true;
                self.skipped += self.buf.len() as u64;
                self.buf.clear();
            }
            let len = self.buf.len();
            self.buf.resize(len + 64 * 1024, 0);
            let n = loop {
                match self.reader.read(&mut self.buf[len..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
            if n.as_ref().is_ok_and(|&n| n > 0) {
                self.last_data = std::time::Instant::now();
            }
            if n? == 0 {
                // A renamed file may still be written by a writer that has not reopened yet: it is read until
                // it stopped growing for a while, and only then is its last, unterminated line taken as whole.
                if !self.switch_pending || self.last_data.elapsed() < ROTATION_GRACE {
                    return Ok(None);
                }
                // The replaced file is read to its end; a last line without a newline ends with it.
                self.switch_now = true;
                if self.start < self.buf.len() || self.skipping {
                    return Ok(self.rest());
                }
            }
        }
    }

    /// At the end of a file that is not followed: its last line if it has no newline.
    fn rest(&mut self) -> Option<(u64, Line<'_>)> {
        if self.start >= self.buf.len() && !self.skipping {
            return None;
        }
        self.offset += (self.buf.len() - self.start) as u64 + std::mem::take(&mut self.skipped);
        self.lines += 1;
        let from = std::mem::replace(&mut self.start, self.buf.len());
        if std::mem::take(&mut self.skipping) || self.buf.len() - from > MAX_LINE_BYTES {
            return Some((self.lines, Line::TooLong));
        }
        Some((self.lines, Line::Text(&self.buf[from..])))
    }

    /// `tail -F`: notices that the path now names another file, or that the file shrank below what was read.
    /// The open file is then read to its end (lines appended before the rename are not lost) before the new
    /// one is read from its start.
    fn notice_replacement(&mut self) -> io::Result<()> {
        let Some(id) = self.id else { return Ok(()) };
        if self.switch_pending {
            return Ok(());
        }
        let md = match std::fs::metadata(&self.path) {
            Ok(md) => md,
            // Between a rename and the new file's creation: look again later.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let consumed = self.offset + self.skipped + (self.buf.len() - self.start) as u64;
        if (md.dev(), md.ino()) != id {
            self.switch_pending = true;
        } else if md.len() < consumed {
            // Truncated in place (copytruncate): what is left to read is new content, from its start; a
            // partial line buffered from before is dropped.
            self.switch_now = true;
        }
        Ok(())
    }

    /// Opens the file the path names now, from its start; false if there is none yet.
    fn switch(&mut self) -> io::Result<bool> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let md = file.metadata()?;
        tracing::info!(path = %self.path.display(), "file replaced or truncated; reading the new one from its start");
        *self = Tail::new(&self.path.clone(), Box::new(file), Some((md.dev(), md.ino())), 0, 0);
        Ok(true)
    }
}

/// Stdin read on its own thread, so that the daemon's loop never blocks on it (signals, timers, checkpoints
/// and watchdog pings go on while no line comes). `read` returns 0 when nothing arrived within `wait`.
struct StdinReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Set once the reading thread is gone and every chunk it sent was taken: the true end of stdin.
    eof: Arc<std::sync::atomic::AtomicBool>,
    wait: Duration,
    pending: Vec<u8>,
    at: usize,
}

impl StdinReader {
    fn spawn(wait: Duration) -> (StdinReader, Arc<std::sync::atomic::AtomicBool>) {
        let eof = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Bounded: when the daemon falls behind, the thread waits and stdin's writer is held back.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let mut chunk = vec![0u8; 64 * 1024];
                match stdin.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(chunk).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        tracing::error!(%error, "reading stdin");
                        break;
                    }
                }
            }
        });
        (StdinReader { rx, eof: eof.clone(), wait, pending: Vec::new(), at: 0 }, eof)
    }
}

impl Read for StdinReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.pending.len() {
            match self.rx.recv_timeout(self.wait) {
                Ok(chunk) => (self.pending, self.at) = (chunk, 0),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Ok(0),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    self.eof.store(true, std::sync::atomic::Ordering::Release);
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.pending.len() - self.at);
        out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
