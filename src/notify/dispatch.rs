//! The notification policy, pure and synchronous like the engine: notices in, e-mails ([`Mail`]) out,
//! driven by a wall clock the caller passes in. It sits downstream of the alert stream and never changes it
//! (SPEC). What it does, in order, for a firing notice:
//!
//! 1. Drops a notice whose id it has already taken (an alert raised again after a restart).
//! 2. Routes it ([`super::route::route`]); for each route taking it:
//! 3. drops it if a silence matches (counted, audited, never mailed);
//! 4. inhibits: a notice of the same entity with a lower action still waiting in any group is withdrawn
//!    (the higher action supersedes it, whoever was to be told), and the new one is withdrawn if a higher
//!    one is waiting;
//! 5. puts it in its group (`group_by`); a new group goes out after `group_wait` (or at the next
//!    `digest_at`), later additions at most every `group_interval`. A group due in a muted interval waits
//!    for the interval's end.
//!
//! A notified level is remembered while it stands: it is notified again after `repeat_after`, and when it
//! falls to none a route with `send_resolved` sends a resolved notice.
//!
//! Every change is an [`Op`], applied by [`Dispatcher::apply`]: the caller journals each op and snapshots
//! the [`State`] now and then; replaying the journal over the snapshot rebuilds the same state, because
//! applying an op depends on nothing but the op and the state (the wall clock is in the op).
//!
//! **Architecture Invariant:** the ops are durable before the engine checkpoint that covers the alerts they
//! took, so a crash never loses a notice: the alerts after the checkpoint are raised again, and step 1 drops
//! those already taken.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use super::config::Notify;
use super::notice::{Notice, Status};
use super::route::{Matchers, route};
use crate::rules::Action;
use crate::time::Ts;

/// Notice ids remembered for step 1; older ones are forgotten first.
pub const SEEN_IDS: usize = 100_000;
/// Silences kept (active and recently expired); adding one more is refused.
pub const MAX_SILENCES: usize = 10_000;
/// Expired silences are listed for this long, then forgotten.
const EXPIRED_KEPT: Ts = 7 * 86_400;

/// A level fall as the dispatcher needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallNote {
    pub to: Option<Action>,
    pub at: Ts,
    pub value: i64,
    pub class: Option<crate::event::Class>,
}

/// One change of the dispatcher's state (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Accept {
        notice: Box<Notice>,
        now: Ts,
    },
    Fall {
        entity_id: String,
        rule: String,
        fall: FallNote,
        now: Ts,
    },
    /// Due groups (all groups, with `everything`) become e-mails in flight.
    Flush {
        now: Ts,
        everything: bool,
    },
    /// E-mails in flight are in the outbox.
    Commit {
        ids: Vec<String>,
    },
    AddSilence {
        silence: Box<Silence>,
    },
    ExpireSilence {
        id: String,
        by: String,
        now: Ts,
    },
}

/// An e-mail to send: one group's notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    /// Stable: the same group and notices give the same id (and Message-ID), so a mail made again after a
    /// crash replaces, not duplicates, its outbox entry.
    pub id: String,
    pub receiver: String,
    /// From a `digest_at` route: rendered as a table.
    pub digest: bool,
    pub notices: Vec<Notice>,
    pub created: Ts,
}

/// A silence: notices matching it are not mailed while it is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Matchers,
    pub author: String,
    pub comment: String,
    pub starts_at: Ts,
    pub ends_at: Ts,
    pub created_at: Ts,
}

impl Silence {
    pub fn active(&self, now: Ts) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// One line of the audit log (see [`super::audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Audit {
    /// A notice taken (an alert, a repeat, a resolved level).
    Notice {
        id: String,
        alert_id: String,
        status: Status,
        entity_id: String,
        rule: String,
        action: String,
    },
    /// Routed to a receiver.
    Routed {
        id: String,
        route: usize,
        receiver: String,
    },
    Silenced {
        id: String,
        receiver: String,
        silence: String,
    },
    Inhibited {
        id: String,
        receiver: String,
        by: String,
    },
    /// An e-mail made and queued in the outbox.
    Queued {
        mail: String,
        receiver: String,
        notices: Vec<String>,
        digest: bool,
    },
    SilenceAdded {
        silence: String,
        author: String,
        comment: String,
        matchers: String,
        ends_at: Ts,
    },
    SilenceExpired {
        silence: String,
        by: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    route: usize,
    receiver: String,
    pending: Vec<Notice>,
    flush_at: Option<Ts>,
    last_flush: Option<Ts>,
}

/// A level notified on routes that repeat it or resolve it: only those routes, only where it was queued,
/// each with when it was last notified there.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Standing {
    notice: Notice,
    routes: Vec<(usize, Ts)>,
}

/// Everything the dispatcher keeps: persisted as one JSON document.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    groups: BTreeMap<String, Group>,
    /// By `entity \x1f rule`.
    standing: BTreeMap<String, Standing>,
    seen: VecDeque<String>,
    silences: Vec<Silence>,
    /// E-mails made from due groups and not yet in the outbox.
    #[serde(default)]
    inflight: Vec<Mail>,
    /// The last op applied (the journal's sequence number).
    #[serde(default)]
    pub seq: u64,
    /// Counters since the state was created.
    pub counts: Counts,
}

impl State {
    /// Notices waiting in groups, or in e-mails made but not yet in the outbox.
    pub fn waiting_notices(&self) -> u64 {
        let grouped: usize = self.groups.values().map(|g| g.pending.len()).sum();
        let inflight: usize = self.inflight.iter().map(|m| m.notices.len()).sum();
        (grouped + inflight) as u64
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counts {
    pub notices: u64,
    pub duplicates: u64,
    pub silenced: u64,
    pub inhibited: u64,
    pub mails: u64,
}

/// The dispatcher: [`State`] plus the configuration it is read under.
pub struct Dispatcher {
    pub state: State,
    seen: HashSet<String>,
    /// Keys of the groups holding notices of each entity (inhibition looks there, not at every group).
    waiting_in: std::collections::HashMap<String, HashSet<String>>,
    notify: std::sync::Arc<Notify>,
    audit: Vec<Audit>,
}

fn hash(parts: &[&str]) -> String {
    format!("{:032x}", xxh3_128(parts.join("\u{1f}").as_bytes()))
}

impl Dispatcher {
    pub fn new(state: State, notify: std::sync::Arc<Notify>) -> Dispatcher {
        let seen = state.seen.iter().cloned().collect();
        let mut waiting_in: std::collections::HashMap<String, HashSet<String>> = Default::default();
        for (key, g) in &state.groups {
            for n in &g.pending {
                waiting_in.entry(n.entity_id.clone()).or_default().insert(key.clone());
            }
        }
        Dispatcher { state, seen, waiting_in, notify, audit: Vec::new() }
    }

    /// Audit lines since the last call.
    pub fn take_audit(&mut self) -> Vec<Audit> {
        std::mem::take(&mut self.audit)
    }

    /// Applies one op (see the module documentation).
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Accept { notice, now } => self.accept((**notice).clone(), *now),
            Op::Fall { entity_id, rule, fall, now } => self.fall(fall, entity_id, rule, *now),
            Op::Flush { now, everything } => self.flush(*now, *everything),
            Op::Commit { ids } => self.commit(ids),
            Op::AddSilence { silence } => self.add_silence((**silence).clone()),
            Op::ExpireSilence { id, by, now } => self.expire_silence(id, by, *now),
        }
        self.state.seq += 1;
    }

    /// Takes a firing notice at wall-clock `now`.
    fn accept(&mut self, notice: Notice, now: Ts) {
        if !self.remember(&notice.id) {
            self.state.counts.duplicates += 1;
            return;
        }
        self.state.counts.notices += 1;
        self.audit_notice(&notice);
        let mut kept = Vec::new();
        for r in route(&self.notify.routes, &notice) {
            let follow = self.notify.routes.get(r).is_some_and(|r| r.repeat_after.is_some() || r.send_resolved);
            if self.enqueue(notice.clone(), r, now) && follow {
                kept.push((r, now));
            }
        }
        let key = standing_key(&notice.entity_id, &notice.rule);
        if kept.is_empty() || notice.scope.is_some() {
            // (A regional level has no falls reported: it is neither repeated nor resolved.)
            // A rise on no following route replaces what an earlier rise left standing.
            self.state.standing.remove(&key);
        } else {
            self.state.standing.insert(key, Standing { notice, routes: kept });
        }
    }

    /// Takes a level fall at `now`: forgets or lowers the standing level, and sends resolved notices.
    /// A fall older than the standing alert (evaluated before the rise) changes nothing.
    fn fall(&mut self, fall: &FallNote, entity_id: &str, rule: &str, now: Ts) {
        let key = standing_key(entity_id, rule);
        let Some(standing) = self.state.standing.get_mut(&key) else { return };
        if fall.at < standing.notice.at {
            return;
        }
        match fall.to {
            Some(to) => standing.notice.action = to.min(standing.notice.action),
            None => {
                let Some(standing) = self.state.standing.remove(&key) else { return };
                let Some(resolved) = Notice::of_fall(fall, &standing.notice) else { return };
                if !self.remember(&resolved.id) {
                    return;
                }
                let routes: Vec<usize> = standing
                    .routes
                    .iter()
                    .map(|&(r, _)| r)
                    .filter(|&r| self.notify.routes.get(r).is_some_and(|r| r.send_resolved))
                    .collect();
                if routes.is_empty() {
                    return;
                }
                self.audit_notice(&resolved);
                for r in routes {
                    self.enqueue(resolved.clone(), r, now);
                }
            }
        }
    }

    fn audit_notice(&mut self, n: &Notice) {
        self.audit.push(Audit::Notice {
            id: n.id.clone(),
            alert_id: n.alert_id.clone(),
            status: n.status,
            entity_id: n.entity_id.clone(),
            rule: n.rule.clone(),
            action: n.action.as_str().into(),
        });
    }

    /// Remembers a notice id; false if already seen.
    fn remember(&mut self, id: &str) -> bool {
        if !self.seen.insert(id.to_owned()) {
            return false;
        }
        self.state.seen.push_back(id.to_owned());
        while self.state.seen.len() > SEEN_IDS {
            if let Some(old) = self.state.seen.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Steps 3-5 for one route; false if the notice was silenced or inhibited.
    fn enqueue(&mut self, notice: Notice, r: usize, now: Ts) -> bool {
        let Some(route) = self.notify.routes.get(r) else { return false };
        let receiver = route.receiver.clone();
        self.audit.push(Audit::Routed { id: notice.id.clone(), route: r, receiver: receiver.clone() });
        if let Some(s) = self.state.silences.iter().find(|s| s.active(now) && s.matchers.matches(&notice)) {
            self.state.counts.silenced += 1;
            self.audit.push(Audit::Silenced { id: notice.id.clone(), receiver, silence: s.id.clone() });
            return false;
        }
        if notice.status != Status::Resolved {
            let mut inhibited_by = None;
            let keys = self.waiting_in.get(&notice.entity_id).cloned().unwrap_or_default();
            for key in keys {
                let Some(g) = self.state.groups.get_mut(&key).filter(|g| g.receiver == receiver) else { continue };
                let mut withdrawn = Vec::new();
                g.pending.retain(|p| {
                    let lower =
                        p.status != Status::Resolved && p.entity_id == notice.entity_id && p.action < notice.action;
                    if lower {
                        withdrawn.push(p.id.clone());
                    }
                    if p.status != Status::Resolved && p.entity_id == notice.entity_id && p.action > notice.action {
                        inhibited_by = Some(p.id.clone());
                    }
                    !lower
                });
                for id in withdrawn {
                    self.state.counts.inhibited += 1;
                    self.audit.push(Audit::Inhibited { id, receiver: g.receiver.clone(), by: notice.id.clone() });
                }
                if !g.pending.iter().any(|p| p.entity_id == notice.entity_id)
                    && let Some(set) = self.waiting_in.get_mut(&notice.entity_id)
                {
                    set.remove(&key);
                }
            }
            if let Some(by) = inhibited_by {
                self.state.counts.inhibited += 1;
                self.audit.push(Audit::Inhibited { id: notice.id.clone(), receiver, by });
                return false;
            }
        }
        let labels: Vec<&str> = route.group_by.iter().map(|l| notice.label(l).unwrap_or("")).collect();
        let mut parts = vec![r.to_string(), receiver.clone()];
        parts.extend(labels.iter().map(|s| s.to_string()));
        let key = hash(&parts.iter().map(String::as_str).collect::<Vec<_>>());
        self.waiting_in.entry(notice.entity_id.clone()).or_default().insert(key.clone());
        let group = self.state.groups.entry(key).or_insert_with(|| Group {
            route: r,
            receiver,
            pending: Vec::new(),
            flush_at: None,
            last_flush: None,
        });
        group.pending.push(notice);
        if group.flush_at.is_none() {
            let at = match (route.digest_at, group.last_flush) {
                (Some(at), _) => next_local(now, at, self.notify.offset),
                (None, Some(last)) if now < last.saturating_add(route.group_interval) => last + route.group_interval,
                (None, _) => now.saturating_add(route.group_wait),
            };
            group.flush_at = Some(at);
        }
        true
    }

    /// The next instant something is due (a group, a repeat), if any.
    pub fn next_due(&self) -> Option<Ts> {
        let groups = self.state.groups.values().filter_map(|g| g.flush_at);
        let repeats = self.state.standing.values().flat_map(|s| {
            s.routes.iter().filter_map(|&(r, at)| {
                self.notify.routes.get(r).and_then(|r| r.repeat_after).map(|after| at.saturating_add(after))
            })
        });
        groups.chain(repeats).min()
    }

    /// E-mails made and not yet committed to the outbox, oldest first.
    pub fn inflight(&self) -> &[Mail] {
        &self.state.inflight
    }

    /// The e-mails with these ids are in the outbox.
    fn commit(&mut self, ids: &[String]) {
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut audit = Vec::new();
        self.state.inflight.retain(|m| {
            let done = ids.contains(m.id.as_str());
            if done {
                audit.push(Audit::Queued {
                    mail: m.id.clone(),
                    receiver: m.receiver.clone(),
                    notices: m.notices.iter().map(|n| n.id.clone()).collect(),
                    digest: m.digest,
                });
            }
            !done
        });
        self.audit.extend(audit);
    }

    /// Everything due at `now` (every group with notices, with `everything`: the end of a finite input):
    /// repeats join their groups, and groups due and not muted become e-mails in flight.
    fn flush(&mut self, now: Ts, everything: bool) {
        self.repeats(now);
        self.state.silences.retain(|s| s.ends_at.saturating_add(EXPIRED_KEPT) > now);
        let mut mails = Vec::new();
        let notify = self.notify.clone();
        let mut audit = Vec::new();
        for (key, g) in self.state.groups.iter_mut() {
            let Some(at) = g.flush_at.filter(|&at| everything || at <= now) else { continue };
            // A group of a route the configuration no longer has is sent under the root (`check` always
            // makes the root route 0).
            let route = notify.routes.get(g.route).unwrap_or(&notify.routes[0]);
            if !everything && let Some(end) = mute_end(&notify, route, now) {
                g.flush_at = Some(end.max(at));
                continue;
            }
            // Every notice leaves the group now (in the e-mail, or silenced).
            for n in &g.pending {
                if let Some(set) = self.waiting_in.get_mut(&n.entity_id) {
                    set.remove(key);
                    if set.is_empty() {
                        self.waiting_in.remove(&n.entity_id);
                    }
                }
            }
            // A silence added while the notices waited applies too.
            g.pending.retain(|n| {
                let silenced = self.state.silences.iter().find(|s| s.active(now) && s.matchers.matches(n));
                if let Some(s) = silenced {
                    self.state.counts.silenced += 1;
                    audit.push(Audit::Silenced {
                        id: n.id.clone(),
                        receiver: g.receiver.clone(),
                        silence: s.id.clone(),
                    });
                }
                silenced.is_none()
            });
            g.flush_at = None;
            if g.pending.is_empty() {
                continue;
            }
            g.last_flush = Some(now);
            let notices = std::mem::take(&mut g.pending);
            let mut parts: Vec<&str> = vec![key.as_str()];
            parts.extend(notices.iter().map(|n| n.id.as_str()));
            let mail = Mail {
                id: hash(&parts),
                receiver: g.receiver.clone(),
                digest: route.digest_at.is_some(),
                notices,
                created: now,
            };
            mails.push(mail);
        }
        self.audit.extend(audit);
        self.state.counts.mails += mails.len() as u64;
        self.state.inflight.extend(mails);
        // Groups idle for longer than their interval are forgotten.
        self.state.groups.retain(|_, g| {
            g.flush_at.is_some()
                || g.last_flush
                    .is_some_and(|l| now < l.saturating_add(notify.routes.get(g.route).map_or(0, |r| r.group_interval)))
        });
    }

    fn repeats(&mut self, now: Ts) {
        let notify = self.notify.clone();
        let mut again = Vec::new();
        for s in self.state.standing.values_mut() {
            for (r, at) in &mut s.routes {
                let Some(after) = notify.routes.get(*r).and_then(|r| r.repeat_after) else { continue };
                if now >= at.saturating_add(after) {
                    let mut n = s.notice.clone();
                    n.status = Status::Repeat;
                    n.id = hash(&[&s.notice.alert_id, "repeat", &r.to_string(), &now.to_string()]);
                    again.push((n, *r));
                    *at = now;
                }
            }
        }
        for (n, r) in again {
            if self.remember(&n.id) {
                self.audit_notice(&n);
                self.enqueue(n, r, now);
            }
        }
    }

    /// Checks a new silence and gives it its id; apply it with [`Op::AddSilence`].
    pub fn new_silence(
        &self,
        matchers: Matchers,
        author: String,
        comment: String,
        starts_at: Ts,
        ends_at: Ts,
        now: Ts,
    ) -> Result<Silence, String> {
        if self.state.silences.len() >= MAX_SILENCES {
            return Err(format!("{MAX_SILENCES} silences already: expire some first"));
        }
        if matchers.is_empty() {
            return Err("a silence needs at least one matcher (it would silence everything)".into());
        }
        matchers.check(None)?;
        if author.trim().is_empty() || comment.trim().is_empty() {
            return Err("a silence needs an author and a comment".into());
        }
        if ends_at <= now || ends_at <= starts_at {
            return Err("a silence must end in the future and after it starts".into());
        }
        let id = hash(&[&matchers.describe(), &author, &comment, &now.to_string(), &self.state.seq.to_string()])[..16]
            .to_owned();
        Ok(Silence { id, matchers, author, comment, starts_at, ends_at, created_at: now })
    }

    fn add_silence(&mut self, s: Silence) {
        self.audit.push(Audit::SilenceAdded {
            silence: s.id.clone(),
            author: s.author.clone(),
            comment: s.comment.clone(),
            matchers: s.matchers.describe(),
            ends_at: s.ends_at,
        });
        self.state.silences.push(s);
    }

    /// Whether a silence with this id exists.
    pub fn has_silence(&self, id: &str) -> bool {
        self.state.silences.iter().any(|s| s.id == id)
    }

    /// Ends a silence now.
    fn expire_silence(&mut self, id: &str, by: &str, now: Ts) {
        if let Some(s) = self.state.silences.iter_mut().find(|s| s.id == id) {
            s.ends_at = s.ends_at.min(now);
            self.audit.push(Audit::SilenceExpired { silence: id.to_owned(), by: by.to_owned() });
        }
    }

    pub fn silences(&self) -> &[Silence] {
        &self.state.silences
    }
}

fn standing_key(entity_id: &str, rule: &str) -> String {
    format!("{entity_id}\u{1f}{rule}")
}

/// The first instant at or after `now` whose local time of day is `at` (seconds after local midnight).
pub fn next_local(now: Ts, at: Ts, offset: Ts) -> Ts {
    let local = now + offset;
    let midnight = local.div_euclid(86_400) * 86_400;
    let mut t = midnight + at;
    if t < local {
        t += 86_400;
    }
    t - offset
}

/// If `now` is inside one of `route`'s muted intervals, the first minute at which none holds.
fn mute_end(notify: &Notify, route: &super::config::Route, now: Ts) -> Option<Ts> {
    let muted =
        |t: Ts| route.mute.iter().filter_map(|&i| notify.intervals.get(i)).any(|i| i.contains(t + notify.offset));
    if !muted(now) {
        return None;
    }
    // Step to the next whole minute, then minute by minute (intervals are given in minutes), at most eight
    // days (intervals repeat weekly but for dates); still muted then, look again from there.
    let mut t = now - now.rem_euclid(60) + 60;
    for _ in 0..(8 * 24 * 60) {
        if !muted(t) {
            return Some(t);
        }
        t += 60;
    }
    Some(t)
}
