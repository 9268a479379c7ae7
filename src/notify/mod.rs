//! Notifications: the alert stream turned into e-mails to the supervisors who must act (SPEC
//! 谁审批、谁监管，谁主管、谁监管), never lost and never changing the alert stream.
//!
//! ```text
//! Task::emit ──alerts, falls──▶ Notifier ──▶ Dispatcher (route, silence, inhibit, group, digest, repeat)
//!                                   │                  │ due groups
//!                                   ▼                  ▼
//!              journal.jsonl + state.json      render (templates) ──▶ outbox/ ──▶ SMTP or mail/*.eml
//!                                                                       (durable)    (retries, dead/)
//! ```
//!
//! The daemon thread hands alerts over ([`Notifier::alert`]) and, before each engine checkpoint, makes the
//! journal of the dispatcher's ops durable ([`Notifier::sync`]). The notifier's own thread turns due groups into
//! e-mails, queues them durably, and sends the outbox. Everything is logged to the audit log.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod journal;
pub mod notice;
pub mod outbox;
pub mod render;
pub mod route;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::engine::{Alert, Engine, Fall};
use crate::limits::Limit;
use crate::time::Ts;
use config::Notify;
use dispatch::{Dispatcher, FallNote, Mail, Op};
use journal::Journal;
use notice::Notice;
use outbox::{Entry, Outbox, Transport_};
use render::Templates;

/// Why notifications cannot run.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: damaged notification state: {error}")]
    State { path: String, error: String },
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("receiver {0:?} is not in the configuration (the e-mail waits in flight)")]
    Receiver(String),
    #[error("the notifier's thread died")]
    Thread,
    #[error("an op was applied but not journaled ({0}); restart to replay the journal")]
    Journal(String),
}

/// Counters for logs and metrics.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// E-mails accepted by the server (or written, for the embedded default).
    pub sent: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// E-mails given up (moved to `outbox/dead/`).
    pub dead: AtomicU64,
    /// E-mails put in the outbox.
    pub queued: AtomicU64,
    pub outbox_waiting: AtomicU64,
    /// When the oldest e-mail waiting in the outbox was queued (Unix seconds; 0: none waits).
    pub outbox_oldest: AtomicU64,
    /// Limit hits: the outbox, silences, admin requests.
    pub limits: crate::limits::LimitHits,
}

/// The dispatcher and its journal, behind one lock: every op is applied and appended together.
struct Side {
    dispatcher: Dispatcher,
    journal: Journal,
}

impl Side {
    /// Applies `op`, writes its audit lines, then journals it: both reach the file at once (a process killed
    /// right after loses neither; `sync` makes them survive a power loss too). An audit line whose op was
    /// not journaled is written again when the op is applied again after a restart; never the reverse.
    fn apply(&mut self, op: Op, audit: &Mutex<audit::AuditLog>) -> Result<(), NotifyError> {
        self.dispatcher.apply(&op);
        let lines = self.dispatcher.take_audit();
        if !lines.is_empty() {
            let now = wall_now();
            let mut audit = audit.lock().unwrap_or_else(|p| p.into_inner());
            let io = |error| NotifyError::Io { path: "audit.jsonl".into(), error };
            for line in &lines {
                let who = match line {
                    dispatch::Audit::SilenceAdded { author, .. } => author.as_str(),
                    dispatch::Audit::SilenceExpired { by, .. } => by.as_str(),
                    _ => "daemon",
                };
                audit.write(now, who, line).map_err(io)?;
            }
            audit.flush(false).map_err(io)?;
        }
        self.journal.append(self.dispatcher.state.seq, &op)
    }
}

/// Where [`Notifier::queue`] put an e-mail.
enum Queued {
    Outbox,
    /// Over `[limits] outbox`: in `outbox/dead/`, unsent.
    Dead,
    /// It was there already (queued before a crash that came before it was recorded).
    Already,
}

/// The notifier. See the module documentation.
pub struct Notifier {
    side: Mutex<Side>,
    outbox: Mutex<Outbox>,
    outbox_dir: PathBuf,
    audit: Mutex<audit::AuditLog>,
    templates: Templates,
    /// Built-in templates: the fallback when an operator's template fails on some notice.
    fallback: Templates,
    notify: Arc<Notify>,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    /// Set when the notifier's thread died: the daemon stops at its next checkpoint.
    failed: AtomicBool,
    /// An error met on the daemon thread's path (a journal write), reported at the next sync.
    error: Mutex<Option<NotifyError>>,
    /// Held by [`Notifier::flush_due`]: the notifier's thread and `finish` never write the same e-mail at once.
    flushing: Mutex<()>,
    /// E-mails the outbox holds at most (`[limits] outbox`).
    outbox_limit: usize,
    pub stats: NotifyStats,
}

impl Notifier {
    /// Opens the notification folder under `state_dir`: state, outbox, audit log.
    pub fn open(notify: Arc<Notify>, state_dir: &Path, outbox_limit: usize) -> Result<Arc<Notifier>, NotifyError> {
        let shared = notify.clone();
        let c = &shared.config;
        let dir = state_dir.join(&c.dir);
        let ioe = |path: &Path| {
            let path = path.display().to_string();
            move |error| NotifyError::Io { path, error }
        };
        std::fs::create_dir_all(&dir).map_err(ioe(&dir))?;
        let (state, ops, mut journal) = Journal::open(&dir)?;
        let mut dispatcher = Dispatcher::new(state, notify.clone());
        for op in &ops {
            dispatcher.apply(op);
        }
        dispatcher.take_audit(); // written when the ops were first applied
        journal.compact(&dispatcher)?;
        let transport = match &c.smtp {
            Some(smtp) => Transport_::Smtp(smtp.clone()),
            None => Transport_::Files(state_dir.join(&c.mail_dir)),
        };
        let outbox_dir = dir.join("outbox");
        let outbox =
            Outbox::open(outbox_dir.clone(), transport, c.retry_min_secs, c.retry_max_secs, c.give_up_after_secs)?;
        let audit_path = dir.join("audit.jsonl");
        let audit = audit::AuditLog::open(&audit_path).map_err(ioe(&audit_path))?;
        let templates = Templates::load(c.templates.as_deref())?;
        let (waiting, oldest) = {
            let entries = outbox.entries();
            (entries.len() as u64, entries.first().map(|e| e.queued_at))
        };
        let n = Notifier {
            side: Mutex::new(Side { dispatcher, journal }),
            outbox: Mutex::new(outbox),
            outbox_dir,
            audit: Mutex::new(audit),
            templates,
            fallback: Templates::load(None)?,
            notify,
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            flushing: Mutex::new(()),
            outbox_limit,
            stats: NotifyStats::default(),
        };
        n.stats.outbox_waiting.store(waiting, Ordering::Relaxed);
        n.stats.outbox_oldest.store(oldest.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
        tracing::info!(dir = %dir.display(), waiting, smtp = c.smtp.is_some(), "notifications ready");
        Ok(Arc::new(n))
    }

    fn side(&self) -> MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands over an alert raised by `engine` (with its id): routed and grouped now, mailed when due.
    pub fn alert(&self, alert: &Alert, alert_id: &str, engine: &Engine) {
        let notice = Notice::of_alert(alert, alert_id, engine);
        self.op(Op::Accept { notice: Box::new(notice), now: wall_now() });
    }

    /// Hands over a regional alert (routed like any alert; never repeated or resolved).
    pub fn regional(&self, alert: &crate::aggregate::RegionalAlert, rules: &crate::rules::RuleSet) {
        let notice = Notice::of_regional(alert, rules);
        self.op(Op::Accept { notice: Box::new(notice), now: wall_now() });
    }

    /// Hands over a level fall (for resolved notices).
    pub fn fall(&self, fall: &Fall, engine: &Engine) {
        let rule = engine.rules().all[fall.rule].id.clone();
        let note = FallNote { to: fall.to, at: fall.at, value: fall.value, class: fall.class };
        self.op(Op::Fall { entity_id: fall.entity.to_string(), rule, fall: note, now: wall_now() });
    }

    /// Applies an op from the daemon thread; an error is kept for the next [`Notifier::sync`], which fails
    /// (so no engine checkpoint covers an op that was not journaled).
    fn op(&self, op: Op) {
        let mut side = self.side();
        let _ = self.apply(&mut side, op);
    }

    /// Applies and journals an op; a failure is also kept for the next [`Notifier::sync`], which then
    /// fails: the live state may be ahead of the journal, and only a restart (replaying the journal, the
    /// engine raising its alerts again) makes them agree.
    fn apply(&self, side: &mut Side, op: Op) -> Result<(), NotifyError> {
        side.apply(op, &self.audit).inspect_err(|e| {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(NotifyError::Journal(e.to_string()));
        })
    }

    /// Makes everything handed over so far durable: the journal and the audit log. The daemon calls it
    /// before each engine checkpoint; it fails if an op could not be journaled or the notifier's thread
    /// died.
    pub fn sync(&self) -> Result<(), NotifyError> {
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(NotifyError::Thread);
        }
        let mut side = self.side();
        side.journal.sync()?;
        if side.journal.wants_compaction() {
            let Side { dispatcher, journal } = &mut *side;
            journal.compact(dispatcher)?;
        }
        drop(side);
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        audit.flush(true).map_err(|error| NotifyError::Io { path: "audit.jsonl".into(), error })
    }

    /// Writes an audit line now (rule reloads).
    pub fn audit<T: serde::Serialize>(&self, who: &str, what: &T) {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = audit.write(wall_now(), who, what).and_then(|()| audit.flush(true)) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }

    /// Turns the groups due at `now` (all groups, with `everything`) into e-mails, renders them and writes
    /// them to the outbox without holding the dispatcher's lock, then records them as queued. An e-mail
    /// that cannot be written stays in flight and is tried again at the next call. Returns the e-mails
    /// queued.
    pub fn flush_due(&self, now: Ts, everything: bool) -> Result<usize, NotifyError> {
        let _single = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let mails: Vec<Mail> = {
            let mut side = self.side();
            let due = everything || side.dispatcher.next_due().is_some_and(|t| t <= now);
            if due {
                self.apply(&mut side, Op::Flush { now, everything })?;
                // The e-mails' groups are gone from the state: durable before the e-mails can be sent.
                side.journal.sync()?;
            }
            side.dispatcher.inflight().to_vec()
        };
        if mails.is_empty() {
            return Ok(0);
        }
        let mut queued = Vec::new();
        let (mut waiting, mut dead) = (0, 0);
        let mut result = Ok(());
        for mail in &mails {
            match self.queue(mail) {
                Ok(into) => {
                    queued.push(mail.id.clone());
                    match into {
                        Queued::Outbox | Queued::Already => waiting += 1,
                        Queued::Dead => dead += 1,
                    }
                }
                Err(e) => {
                    tracing::error!(mail = %mail.id, error = %e, "cannot queue an e-mail; it is tried again");
                    result = Err(e);
                }
            }
        }
        if !queued.is_empty() {
            // One folder sync makes the batch's names durable before the batch is recorded as queued.
            outbox::sync_dir(&self.outbox_dir)?;
            if dead > 0 {
                outbox::sync_dir(&self.outbox_dir.join("dead"))?;
            }
            let mut side = self.side();
            self.apply(&mut side, Op::Commit { ids: queued })?;
            // Recorded as queued before they can be sent: a restart does not make them again.
            side.journal.sync()?;
            drop(side);
            self.stats.queued.fetch_add(waiting, Ordering::Relaxed);
            self.outbox.lock().unwrap_or_else(|p| p.into_inner()).changed();
            self.wake();
        }
        result.map(|()| mails.len())
    }

    /// Renders and durably queues one e-mail: in the outbox, or over its limit in `dead/`.
    fn queue(&self, mail: &Mail) -> Result<Queued, NotifyError> {
        let receivers = || self.notify.config.receivers.iter().map(|r| r.get_ref());
        let receiver = receivers()
            .find(|r| r.name == mail.receiver)
            .or_else(|| receivers().find(|r| r.name == self.notify.routes[0].receiver));
        let Some(receiver) = receiver else {
            // `check` guarantees the root's receiver exists; a state from another configuration may not.
            return Err(NotifyError::Receiver(mail.receiver.clone()));
        };
        let message = match self.templates.message(mail, &self.notify.config, receiver, self.notify.offset) {
            Ok(m) => m,
            Err(error) => {
                tracing::error!(mail = %mail.id, %error, "template failed; the built-in templates are used for this e-mail");
                self.fallback.message(mail, &self.notify.config, receiver, self.notify.offset)?
            }
        };
        let envelope = message.envelope();
        let entry = Entry {
            id: mail.id.clone(),
            message_id: render::message_id(&mail.id),
            receiver: receiver.name.clone(),
            from: envelope.from().map(|a| a.to_string()).unwrap_or_default(),
            to: envelope.to().iter().map(|a| a.to_string()).collect(),
            subject: message.headers().get_raw("Subject").unwrap_or_default().to_owned(),
            queued_at: mail.created,
            delivered: Vec::new(),
            refused: Vec::new(),
        };
        // Over the limit the e-mail is kept, undelivered, beside the given-up ones: the alerts are in the
        // alert output, and a long outage does not make every later e-mail wait behind a growing queue that
        // each delivery pass reads again. `dead/` is the operators' to empty. An e-mail already in the outbox
        // (queued before a crash that came before it was recorded) stays there, whatever the count.
        let queued_before = self.outbox_dir.join(format!("{}.json", entry.id)).exists();
        if !queued_before && self.stats.outbox_waiting.load(Ordering::Relaxed) >= self.outbox_limit as u64 {
            let dead = self.outbox_dir.join("dead");
            if !Outbox::queue(&dead, &entry, &message.formatted())? {
                return Ok(Queued::Already);
            }
            self.stats.limits.hit(Limit::Outbox, "an e-mail put in outbox/dead/ unsent");
            self.stats.dead.fetch_add(1, Ordering::Relaxed);
            let kept_in = dead.display().to_string();
            let (mail, message_id, receiver) = (&entry.id, &entry.message_id, &entry.receiver);
            self.audit("daemon", &audit::Delivery::OutboxFull { mail, message_id, receiver, kept_in: &kept_in });
            return Ok(Queued::Dead);
        }
        if !Outbox::queue(&self.outbox_dir, &entry, &message.formatted())? {
            return Ok(Queued::Already);
        }
        // Counted at once, for the next e-mail's check (the delivery pass then stores the true count).
        self.stats.outbox_waiting.fetch_add(1, Ordering::Relaxed);
        Ok(Queued::Outbox)
    }

    /// One pass over the outbox; returns what it did.
    pub fn deliver(&self, now: Ts) -> outbox::Pass {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        // Audit lines are collected while sending and written after, so the audit lock is never held
        // across an SMTP exchange.
        let mut lines: Vec<serde_json::Value> = Vec::new();
        let pass = outbox.send_due(now, &self.stop, &mut |d| lines.push(serde_json::to_value(d).unwrap_or_default()));
        drop(outbox);
        if !lines.is_empty() {
            let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
            for line in &lines {
                let _ = audit.write(now, "daemon", line);
            }
            if let Err(error) = audit.flush(true) {
                tracing::error!(%error, "cannot write the audit log");
            }
        }
        self.stats.sent.fetch_add(pass.sent, Ordering::Relaxed);
        self.stats.failed.fetch_add(pass.failed, Ordering::Relaxed);
        self.stats.dead.fetch_add(pass.dead, Ordering::Relaxed);
        self.stats.outbox_waiting.store(pass.waiting, Ordering::Relaxed);
        self.stats.outbox_oldest.store(pass.oldest.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
        if pass.sent + pass.failed + pass.dead > 0 {
            tracing::info!(
                sent = pass.sent,
                failed = pass.failed,
                given_up = pass.dead,
                waiting = pass.waiting,
                "outbox pass"
            );
        }
        pass
    }

    fn wake(&self) {
        let (flag, cv) = &self.wake;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// Starts the notifier's thread: due groups to the outbox, the outbox to the server, until [`Notifier::stop`].
    pub fn start(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new().name("notifier".into()).spawn(move || me.run())
    }

    fn run(&self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work()));
        if result.is_err() {
            tracing::error!("the notifier's thread panicked: no more e-mail; the daemon stops at its next checkpoint");
            self.failed.store(true, Ordering::Release);
        }
    }

    fn work(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let now = wall_now();
            if let Err(error) = self.flush_due(now, false) {
                // The disk: nothing is marked done, so the same groups are tried again.
                tracing::error!(%error, "cannot queue due e-mails; retrying");
            }
            self.deliver(now);
            // Times are whole seconds: a tick of half a second is on time for groups and retries alike.
            let (flag, cv) = &self.wake;
            let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
            let (mut guard, _) = cv
                .wait_timeout_while(guard, TICK, |woken| !*woken && !self.stop.load(Ordering::Acquire))
                .unwrap_or_else(|p| p.into_inner());
            *guard = false;
        }
    }

    /// Asks the thread to stop (e-mails not yet sent stay in the outbox for the next start).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// After the thread has stopped: folds the journal into a fresh snapshot, so the next start reads one
    /// file (and `state.json` shows what waits).
    pub fn close(&self) -> Result<(), NotifyError> {
        let mut side = self.side();
        let Side { dispatcher, journal } = &mut *side;
        journal.compact(dispatcher)?;
        drop(side);
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush(true)
            .map_err(|error| NotifyError::Io { path: "audit.jsonl".into(), error })
    }

    /// The end of a finite input: every waiting group goes out now, and the outbox is tried once; what
    /// is left waits in the outbox for the next start (logged).
    pub fn finish(&self) -> Result<(), NotifyError> {
        let now = wall_now();
        self.flush_due(now, true)?;
        let pass = self.deliver(now);
        self.sync()?;
        if pass.waiting > 0 {
            tracing::warn!(
                waiting = pass.waiting,
                "e-mails not sent wait in the outbox; they are sent at the next start"
            );
        }
        Ok(())
    }

    /// Silences: add (durable before this returns).
    pub fn add_silence(
        &self,
        matchers: route::Matchers,
        author: String,
        comment: String,
        starts_at: Ts,
        ends_at: Ts,
    ) -> Result<String, String> {
        let mut side = self.side();
        let full = side.dispatcher.silences().len() >= dispatch::MAX_SILENCES;
        let silence = side
            .dispatcher
            .new_silence(matchers, author, comment, starts_at, ends_at, wall_now())
            .inspect_err(|_| {
                if full {
                    self.stats.limits.hit(Limit::Silences, "a silence refused")
                }
            })?;
        let id = silence.id.clone();
        self.apply(&mut side, Op::AddSilence { silence: Box::new(silence) }).map_err(|e| e.to_string())?;
        side.journal.sync().map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// Silences: expire (durable before this returns).
    pub fn expire_silence(&self, id: &str, by: &str) -> Result<(), String> {
        let mut side = self.side();
        if !side.dispatcher.has_silence(id) {
            return Err(format!("no silence {id:?}"));
        }
        self.apply(&mut side, Op::ExpireSilence { id: id.to_owned(), by: by.to_owned(), now: wall_now() })
            .map_err(|e| e.to_string())?;
        side.journal.sync().map_err(|e| e.to_string())
    }

    /// Silences: list.
    pub fn silences(&self) -> Vec<dispatch::Silence> {
        self.side().dispatcher.silences().to_vec()
    }

    /// Counters of the dispatcher.
    pub fn counts(&self) -> dispatch::Counts {
        self.side().dispatcher.state.counts.clone()
    }

    /// Notices waiting in groups (for their group wait, digest or mute interval) or in e-mails being made.
    pub fn waiting_notices(&self) -> u64 {
        self.side().dispatcher.state.waiting_notices()
    }
}

/// How often the notifier's thread looks for due groups and retries when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

fn wall_now() -> Ts {
    crate::daemon::wall_now()
}
