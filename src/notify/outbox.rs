//! The durable outbox: an e-mail is written to `outbox/` (its bytes as `<id>.eml`, then its envelope as
//! `<id>.json`, each fsynced and renamed into place) before any attempt to send it, and removed only after
//! the server accepted it. Sending retries with exponential backoff and jitter; an e-mail not accepted
//! within `give_up_after_secs` is moved to `outbox/dead/`, counted and logged, never deleted.
//!
//! The transport is SMTP (lettre, STARTTLS or implicit TLS through rustls, optional AUTH with the password
//! read from a file at each connection) or, with no `[notify.smtp]`, the embedded default: each e-mail
//! written as `<id>.eml` into the mail folder.
//!
//! **Architecture Invariant:** an outbox entry's bytes never change once written: the Message-ID is the
//! mail's stable id, so a resend after a crash (the server accepted, we died before removing the entry)
//! is the same message, recognisable by its Message-ID.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};

use super::audit::Delivery;
use super::config::{Security, SmtpConfig};
use crate::time::Ts;

/// The envelope and bookkeeping of a queued e-mail (`<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub message_id: String,
    pub receiver: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// When it was queued (wall clock).
    pub queued_at: Ts,
    /// Recipients the server has accepted it for (each recipient is sent its own copy, so that one bad
    /// address does not hold up the others).
    #[serde(default)]
    pub delivered: Vec<String>,
    /// Recipients the server refused for good (5xx to RCPT): logged as errors and not retried.
    #[serde(default)]
    pub refused: Vec<String>,
}

impl Entry {
    fn pending(&self) -> impl Iterator<Item = &String> {
        self.to.iter().filter(|r| !self.delivered.contains(r) && !self.refused.contains(r))
    }
}

/// A failed attempt: what the server or the connection said, and whether the connection itself failed
/// (then every other entry would fail alike, and the pass stops).
struct Failure {
    error: String,
    connection: bool,
}

/// Why the outbox failed (the disk; sending failures are retried, not errors).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct OutboxError {
    pub path: String,
    pub error: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |error| OutboxError { path: path.display().to_string(), error }
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    write_file(path, bytes)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` to `path` atomically, its content durable; the name is durable once the caller syncs the
/// folder ([`sync_dir`]), which a batch of writes does once.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

pub fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// How e-mails leave.
pub enum Transport_ {
    Smtp(SmtpConfig),
    /// The embedded default: `.eml` files in this folder.
    Files(PathBuf),
}

/// Retry bookkeeping of one entry (in memory: a restart retries at once).
#[derive(Debug, Clone, Copy, Default)]
struct Retry {
    attempts: u32,
    next_at: Ts,
}

/// The outbox folder and its sender.
pub struct Outbox {
    dir: PathBuf,
    transport: Transport_,
    retry_min: Ts,
    retry_max: Ts,
    give_up_after: Ts,
    retries: HashMap<String, Retry>,
    /// The entries as last read from the folder; read again after [`Outbox::changed`].
    cache: Option<Vec<Entry>>,
}

/// What one pass of [`Outbox::send_due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
    /// Entries still waiting.
    pub waiting: u64,
    /// When the oldest entry still waiting was queued.
    pub oldest: Option<Ts>,
}

impl Outbox {
    pub fn open(
        dir: PathBuf,
        transport: Transport_,
        retry_min: u64,
        retry_max: u64,
        give_up_after: u64,
    ) -> Result<Outbox, OutboxError> {
        fs::create_dir_all(dir.join("dead")).map_err(io(&dir))?;
        if let Transport_::Files(mail_dir) = &transport {
            fs::create_dir_all(mail_dir).map_err(io(mail_dir))?;
        }
        // Leftovers of a write cut short by a crash: the entry was never queued (its mail is made again).
        for e in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Outbox {
            dir,
            transport,
            retry_min: retry_min as Ts,
            retry_max: retry_max as Ts,
            give_up_after: give_up_after as Ts,
            retries: HashMap::new(),
            cache: None,
        })
    }

    /// Queues an e-mail in outbox folder `dir`: its bytes, then its envelope, each written and synced
    /// (the caller syncs the folder once for a batch). Queuing the same id again replaces the entry (the
    /// bytes are the same but for the Date of a mail made again after a crash). False when it was there.
    pub fn queue(dir: &Path, entry: &Entry, eml: &[u8]) -> Result<bool, OutboxError> {
        // Queued before (a crash came between writing and recording it): the entry on disk, with the
        // recipients it was already delivered to, stands.
        if dir.join(format!("{}.json", entry.id)).exists() {
            return Ok(false);
        }
        write_file(&dir.join(format!("{}.eml", entry.id)), eml)?;
        let json = serde_json::to_vec_pretty(entry).unwrap_or_default();
        write_file(&dir.join(format!("{}.json", entry.id)), &json)?;
        Ok(true)
    }

    /// Entries queued, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let bytes = fs::read(e.path()).ok()?;
                match serde_json::from_slice::<Entry>(&bytes) {
                    Ok(entry) => Some(entry),
                    Err(error) => {
                        tracing::error!(path = %e.path().display(), %error, "unreadable outbox entry left in place");
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| (a.queued_at, &a.id).cmp(&(b.queued_at, &b.id)));
        out
    }

    /// Says that entries were queued: the next pass reads the folder again (during an outage, passes
    /// otherwise work from memory instead of re-reading every waiting entry).
    pub fn changed(&mut self) {
        self.cache = None;
    }

    /// Tries every entry that is due; `log` gets each attempt and result for the audit log. The pass stops
    /// early when the connection fails (the others would wait out the same timeout), when `stop` is set,
    /// or after [`MAX_PASS`], so that due groups keep being queued during an outage.
    pub fn send_due(
        &mut self,
        now: Ts,
        stop: &std::sync::atomic::AtomicBool,
        log: &mut dyn FnMut(&Delivery<'_>),
    ) -> Pass {
        let mut pass = Pass::default();
        let mut entries = match self.cache.take() {
            Some(entries) => entries,
            None => self.entries(),
        };
        let started = std::time::Instant::now();
        let mut smtp: Option<Result<SmtpTransport, String>> = None;
        let mut cut = false;
        let mut sent: Vec<usize> = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            let retry = self.retries.get(&entry.id).copied().unwrap_or_default();
            if cut || retry.next_at > now {
                pass.waiting += 1;
                continue;
            }
            // Given up only after at least one attempt since this start (a long downtime alone is not a
            // reason), and once the time is up.
            if retry.attempts > 0 && now.saturating_sub(entry.queued_at) >= self.give_up_after {
                self.give_up(entry, retry.attempts, log);
                pass.dead += 1;
                continue;
            }
            let attempt = retry.attempts + 1;
            log(&Delivery::Attempt {
                mail: &entry.id,
                message_id: &entry.message_id,
                receiver: &entry.receiver,
                to: &entry.to,
                attempt,
            });
            match self.send(entry, &mut smtp, log) {
                Ok(_) if entry.delivered.is_empty() => {
                    // Every recipient refused: nobody got it. Kept aside like an e-mail given up.
                    self.give_up(entry, attempt, log);
                    pass.dead += 1;
                }
                Ok(via) => {
                    log(&Delivery::Sent {
                        mail: &entry.id,
                        message_id: &entry.message_id,
                        receiver: &entry.receiver,
                        to: &entry.delivered,
                        via,
                    });
                    self.retries.remove(&entry.id);
                    sent.push(i);
                    pass.sent += 1;
                }
                Err(Failure { error, connection }) => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(mail = %entry.id, receiver = %entry.receiver, attempt, retry_in_secs = wait, %error, "e-mail not sent; will retry");
                    log(&Delivery::Failed {
                        mail: &entry.id,
                        message_id: &entry.message_id,
                        receiver: &entry.receiver,
                        attempt,
                        error: &error,
                        retry_in_secs: wait as u64,
                    });
                    self.retries.insert(entry.id.clone(), Retry { attempts: attempt, next_at: now + wait });
                    pass.failed += 1;
                    pass.waiting += 1;
                    cut |= connection;
                }
            }
            cut |= stop.load(std::sync::atomic::Ordering::Acquire) || started.elapsed() > MAX_PASS;
        }
        // Sent entries leave the outbox once what was sent is durable: the .eml files of the embedded
        // default are synced (one folder sync for the pass) before the entries are removed.
        if let (Transport_::Files(dir), false) = (&self.transport, sent.is_empty())
            && let Err(error) = sync_dir(dir)
        {
            tracing::error!(%error, "cannot sync the mail folder; the e-mails stay in the outbox");
            sent.clear();
        }
        for &i in &sent {
            self.remove(&entries[i]);
        }
        if !sent.is_empty() {
            let _ = sync_dir(&self.dir);
        }
        if !sent.is_empty() || pass.dead > 0 {
            entries.retain(|e| self.dir.join(format!("{}.json", e.id)).exists());
            let ids: std::collections::HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            self.retries.retain(|id, _| ids.contains(id.as_str()));
        }
        // Entries are in queueing order.
        pass.oldest = entries.first().map(|e| e.queued_at);
        self.cache = Some(entries);
        pass
    }

    /// Seconds to wait after failed attempt `n` (1-based): `retry_min * 2^(n-1)`, at most `retry_max`,
    /// minus up to a quarter at random so that many daemons do not retry in step.
    fn backoff(&self, n: u32) -> Ts {
        let base = self.retry_min.saturating_mul(1 << (n - 1).min(30)).min(self.retry_max);
        let jitter = if base >= 4 { rand::random_range(0..=base / 4) } else { 0 };
        (base - jitter).max(1)
    }

    /// Sends `entry` to each recipient still pending, recording each acceptance (and each recipient refused
    /// for good) in its envelope file as it happens.
    fn send(
        &self,
        entry: &mut Entry,
        smtp: &mut Option<Result<SmtpTransport, String>>,
        log: &mut dyn FnMut(&Delivery<'_>),
    ) -> Result<&'static str, Failure> {
        let whole = |error: String| Failure { error, connection: false };
        let eml_path = self.dir.join(format!("{}.eml", entry.id));
        let eml = fs::read(&eml_path).map_err(|e| whole(format!("{}: {e}", eml_path.display())))?;
        match &self.transport {
            Transport_::Files(dir) => {
                write_file(&dir.join(format!("{}.eml", entry.id)), &eml).map_err(|e| whole(e.to_string()))?;
                entry.delivered = entry.to.clone();
                Ok("file")
            }
            Transport_::Smtp(config) => {
                let transport = smtp
                    .get_or_insert_with(|| smtp_transport(config))
                    .as_ref()
                    .map_err(|e| Failure { error: e.clone(), connection: true })?;
                let parse = |a: &String| a.parse::<Address>().map_err(|e| whole(format!("address {a:?}: {e}")));
                let from = parse(&entry.from)?;
                let pending: Vec<String> = entry.pending().cloned().collect();
                for rcpt in pending {
                    let envelope =
                        Envelope::new(Some(from.clone()), vec![parse(&rcpt)?]).map_err(|e| whole(e.to_string()))?;
                    match transport.send_raw(&envelope, &eml) {
                        Ok(_) => entry.delivered.push(rcpt),
                        Err(e) if recipient_refused(&e) => {
                            let error = smtp_error(&e);
                            tracing::error!(mail = %entry.id, receiver = %entry.receiver, recipient = %rcpt, %error, "recipient refused by the server: not retried (fix the receiver's address)");
                            log(&Delivery::RecipientRefused {
                                mail: &entry.id,
                                message_id: &entry.message_id,
                                recipient: &rcpt,
                                error: &error,
                            });
                            entry.refused.push(rcpt);
                        }
                        Err(e) => return Err(Failure { error: smtp_error(&e), connection: !e.is_response() }),
                    }
                    let json = serde_json::to_vec_pretty(&*entry).unwrap_or_default();
                    write_file(&self.dir.join(format!("{}.json", entry.id)), &json)
                        .map_err(|e| whole(e.to_string()))?;
                }
                Ok("smtp")
            }
        }
    }

    fn remove(&self, entry: &Entry) {
        for ext in ["json", "eml"] {
            let path = self.dir.join(format!("{}.{ext}", entry.id));
            if let Err(error) = fs::remove_file(&path) {
                tracing::error!(path = %path.display(), %error, "cannot remove a sent e-mail from the outbox");
            }
        }
    }

    fn give_up(&mut self, entry: &Entry, attempts: u32, log: &mut dyn FnMut(&Delivery<'_>)) {
        let dead = self.dir.join("dead");
        for ext in ["eml", "json"] {
            let name = format!("{}.{ext}", entry.id);
            if let Err(error) = fs::rename(self.dir.join(&name), dead.join(&name)) {
                tracing::error!(path = %self.dir.join(&name).display(), %error, "cannot move an undelivered e-mail aside");
            }
        }
        let _ = sync_dir(&self.dir);
        let kept_in = dead.display().to_string();
        tracing::error!(mail = %entry.id, receiver = %entry.receiver, attempts, kept_in = %kept_in, "e-mail given up: never accepted by the server");
        log(&Delivery::GaveUp {
            mail: &entry.id,
            message_id: &entry.message_id,
            receiver: &entry.receiver,
            attempts,
            kept_in: &kept_in,
        });
        self.retries.remove(&entry.id);
    }
}

/// The longest an outbox pass runs before the notifier queues due groups again.
pub const MAX_PASS: Duration = Duration::from_secs(30);

/// Whether the server refused the recipient itself, for good: a 550, 551 or 553 reply with an addressing
/// status (`5.1.x`, RFC 3463). Other failures (the sender, the message, the login) are retried.
fn recipient_refused(e: &lettre::transport::smtp::Error) -> bool {
    e.is_permanent()
        && e.status().is_some_and(|c| matches!(c.to_string().as_str(), "550" | "551" | "553"))
        && e.to_string().contains(" 5.1.")
}

/// An SMTP error with what an operator needs: the server's reply when there is one.
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    if e.is_permanent() && !recipient_refused(e) {
        s.push_str(" (permanent reply; retried anyway until give_up_after_secs: a login problem needs an operator)");
    }
    s
}

/// An SMTP client for `config` (the password file is read now, so a rotated password is picked up at the
/// next pass).
pub fn smtp_transport(config: &SmtpConfig) -> Result<SmtpTransport, String> {
    let server = config.connect_to.clone().unwrap_or_else(|| config.host.clone());
    let tls = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(config.host.clone());
        if let Some(ca) = &config.ca_file {
            let pem = fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|e| format!("TLS settings: {e}"))
    };
    let tls = match config.security {
        Security::Starttls => Tls::Required(tls()?),
        Security::Tls => Tls::Wrapper(tls()?),
        Security::None => Tls::None,
    };
    let mut builder = SmtpTransport::builder_dangerous(server)
        .port(config.port())
        .tls(tls)
        .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
    if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
        let password = fs::read_to_string(file).map_err(|e| format!("password_file {}: {e}", file.display()))?;
        builder =
            builder.credentials(Credentials::new(user.clone(), password.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(builder.build())
}
