//! The engine's state as bytes, for checkpoints: the clock, the active rules' ids (levels are stored per
//! rule), the dedup memory (secret and hashes), per entity its key, levels, timer, pending-batch flag and
//! stored events, then the profiles (the symbol table, and per entity its key, time, name and symbols), then
//! (version 3) a flag byte. Version 3 is written while some rule has a scope: a stored profile (kind
//! `profile`) is written with its four symbols where an event has its id. Otherwise version 2 is written, as by
//! the build before scopes (so it can still be rolled back to). Reading a version-2 snapshot under scoped rules
//! starts the stored profiles from the latest profiles, as at a reload that adds a scope.
//!
//! The reader trusts nothing: every length is checked against the bytes left, every key, kind and class is
//! validated, and events are re-inserted through the normal path, so a damaged snapshot is refused with a
//! [`SnapshotError`], never turned into inconsistent state. (Checkpoint files also carry a checksum; this is
//! the second line.)

use std::io::{self, Write};
use std::sync::Arc;

use compact_str::CompactString;

use super::dedup::SECRET_BYTES;
use super::state::{Entity, Rec, RecData};
use super::{Dedup, Engine, EngineError};
use crate::credit_code::EntityKey;
use crate::event::{Class, Kind};
use crate::rules::RuleSet;
use crate::time::Ts;

const MAGIC: &[u8; 8] = b"CSENG\x00\x00\x03";
/// The snapshot before stored profiles; still read.
const MAGIC_V2: &[u8; 8] = b"CSENG\x00\x00\x02";

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("damaged engine snapshot: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl Engine {
    /// Writes the state (see the module documentation). Pending events of `now` stay pending: their batch
    /// is evaluated after a restore exactly as it would have been without one.
    pub fn write_snapshot(&self, w: &mut impl Write) -> io::Result<()> {
        // Without scoped rules nothing of version 3 is needed: version 2, which the build before reads too.
        let v3 = self.plan.keeps(Kind::Profile);
        w.write_all(if v3 { MAGIC } else { MAGIC_V2 })?;
        w.write_all(&self.now.unwrap_or(Ts::MIN).to_le_bytes())?;
        w.write_all(&(self.rules.active.len() as u32).to_le_bytes())?;
        for rule in self.rules.active() {
            write_str(w, &rule.id)?;
            write_str(w, &rule.version)?;
        }
        let (secret, hashes) = self.dedup.parts();
        w.write_all(secret)?;
        w.write_all(&(self.dedup.len() as u64).to_le_bytes())?;
        for h in hashes {
            w.write_all(&h.to_le_bytes())?;
        }
        w.write_all(&(self.entities.len() as u64).to_le_bytes())?;
        for e in &self.entities {
            w.write_all(e.key.to_string().as_bytes())?;
            w.write_all(&e.levels.to_le_bytes())?;
            w.write_all(&e.due.to_le_bytes())?;
            w.write_all(&[u8::from(e.touched)])?;
            w.write_all(&(e.recs().count() as u64).to_le_bytes())?;
            for r in e.recs() {
                w.write_all(&[r.kind as u8, r.class.map_or(0, |c| c as u8 + 1)])?;
                w.write_all(&r.at().to_le_bytes())?;
                match &r.data {
                    RecData::Id(id) => write_str(w, id)?,
                    RecData::Profile { fields, .. } => {
                        for f in fields {
                            w.write_all(&f.to_le_bytes())?;
                        }
                    }
                }
            }
        }
        let profiles = &self.profiles;
        w.write_all(&(profiles.symbols.len() as u64).to_le_bytes())?;
        for s in &profiles.symbols {
            write_str(w, s)?;
        }
        w.write_all(&(profiles.map.len() as u64).to_le_bytes())?;
        for (key, p) in &profiles.map {
            w.write_all(key.to_string().as_bytes())?;
            w.write_all(&p.at.to_le_bytes())?;
            w.write_all(&[u8::from(p.name.is_some())])?;
            write_str(w, p.name.as_deref().unwrap_or_default())?;
            for f in p.fields {
                w.write_all(&f.to_le_bytes())?;
            }
        }
        if v3 {
            w.write_all(&[1])?;
        }
        Ok(())
    }

    /// Reads a snapshot written by [`Engine::write_snapshot`] into an engine for `rules`. When `rules`
    /// differ from the snapshot's, levels are kept for the rules whose id is still active and every entity
    /// is re-evaluated at the next flush (see [`Engine::set_rules`]).
    pub fn read_snapshot(rules: Arc<RuleSet>, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        Engine::read_snapshot_within(rules, bytes, crate::limits::EngineLimits::UNLIMITED)
    }

    /// [`Engine::read_snapshot`] into an engine with these limits: profiles started for scoped rules from a
    /// version-2 snapshot keep to them (see `Engine::seed_profiles`).
    pub fn read_snapshot_within(
        rules: Arc<RuleSet>,
        bytes: &[u8],
        limits: crate::limits::EngineLimits,
    ) -> Result<Engine, SnapshotError> {
        let mut r = Reader(bytes);
        let v2 = match r.take(MAGIC.len())? {
            m if m == MAGIC => false,
            m if m == MAGIC_V2 => true,
            _ => return Err(SnapshotError::Corrupt("not an engine snapshot")),
        };
        let now = r.i64()?;
        if now != Ts::MIN && !time_ok(now) {
            return Err(corrupt("clock out of range"));
        }
        let n_rules = r.u32()? as usize;
        if n_rules > super::MAX_ACTIVE_RULES {
            return Err(corrupt("more active rules than an engine evaluates"));
        }
        let mut old_rules: Vec<(String, String)> = Vec::with_capacity(n_rules);
        for _ in 0..n_rules {
            let (id, version) = (r.str()?.to_owned(), r.str()?.to_owned());
            if old_rules.iter().any(|(old, _)| *old == id) {
                return Err(corrupt("rule repeated"));
            }
            old_rules.push((id, version));
        }
        let secret: [u8; SECRET_BYTES] = r.take(SECRET_BYTES)?.try_into().map_err(|_| corrupt("secret"))?;
        let n_hashes = r.count(8)?;
        let hashes = r.take(n_hashes * 8)?;
        let dedup = Dedup::from_parts(
            secret,
            hashes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        let mut engine = Engine::new(rules)?;
        engine.set_limits(limits);
        engine.dedup = dedup;
        engine.now = (now != Ts::MIN).then_some(now);
        let n_entities = r.count(43)?;
        let mut any_profile = false;
        engine.entities.reserve_exact(n_entities);
        engine.index.reserve(n_entities);
        for _ in 0..n_entities {
            let key = std::str::from_utf8(r.take(18)?).ok().and_then(EntityKey::parse).ok_or(corrupt("entity key"))?;
            let levels = r.u64()?;
            let due = r.i64()?;
            // Three bits per rule, each a level of at most 4 (inspect), and only for the rules listed.
            let valid = (0..n_rules).all(|slot| super::state::level(levels, slot) <= 4);
            if !valid || (n_rules < 21 && levels >> (3 * n_rules) != 0) {
                return Err(corrupt("levels"));
            }
            if due != Ts::MAX && !time_ok(due) {
                return Err(corrupt("timer out of range"));
            }
            let touched = r.take(1)?[0] != 0;
            let n_recs = r.count(12)?;
            let mut entity = Entity::new(key);
            for _ in 0..n_recs {
                let kc = r.take(2)?;
                let kind = *Kind::ALL.get(kc[0] as usize).ok_or(corrupt("kind"))?;
                let class = match kc[1] {
                    0 => None,
                    c => Some(*Class::ALL.get(c as usize - 1).ok_or(corrupt("class"))?),
                };
                let at = r.i64()?;
                let data = if kind == Kind::Profile && !v2 {
                    // Symbols are checked once the symbol table is read (below); matches are computed then.
                    let mut fields = [0u32; 4];
                    for f in &mut fields {
                        *f = r.u32()?;
                    }
                    RecData::Profile { fields, matches: 0 }
                } else {
                    RecData::Id(CompactString::from(r.str()?))
                };
                if !time_ok(at) {
                    return Err(corrupt("event time out of range"));
                }
                if (kind == Kind::Profile && (v2 || class.is_some()))
                    || (kind == Kind::Classification) != class.is_some()
                {
                    return Err(corrupt("event"));
                }
                any_profile |= kind == Kind::Profile;
                // Profiles stored for scoped rules are dropped under rules without a scope.
                if engine.plan.keeps(kind) || kind != Kind::Profile {
                    entity.insert(Rec::from_parts(data, at, kind, class));
                }
            }
            let idx = engine.entities.len() as u32;
            if engine.index.insert(key, idx).is_some() {
                return Err(corrupt("entity repeated"));
            }
            entity.levels = levels;
            entity.due = due;
            if due != Ts::MAX {
                engine.timers.push(due, idx);
            }
            engine.entities.push(entity);
            if touched {
                engine.entities[idx as usize].touched = true;
                engine.touched.push(idx);
            }
        }
        let n_symbols = r.count(2)?;
        if n_symbols > super::profiles::MAX_SYMBOLS {
            return Err(corrupt("too many profile symbols"));
        }
        for _ in 0..n_symbols {
            if !engine.profiles.push_symbol(r.str()?) {
                return Err(corrupt("profile symbol repeated"));
            }
        }
        let n_profiles = r.count(45)?;
        engine.profiles.map.reserve(n_profiles);
        for _ in 0..n_profiles {
            let key = std::str::from_utf8(r.take(18)?).ok().and_then(EntityKey::parse).ok_or(corrupt("profile key"))?;
            let at = r.i64()?;
            let has_name = r.take(1)?[0];
            let name = r.str()?;
            let mut fields = [0u32; 4];
            for f in &mut fields {
                *f = r.u32()?;
                if *f as usize > n_symbols {
                    return Err(corrupt("profile symbol"));
                }
            }
            let name = match has_name {
                0 if name.is_empty() => None,
                1 => Some(CompactString::from(name)),
                _ => return Err(corrupt("profile name")),
            };
            if !time_ok(at) {
                return Err(corrupt("profile time out of range"));
            }
            let stored = super::profiles::Stored { at, name, fields };
            if engine.profiles.map.insert(key, stored).is_some() {
                return Err(corrupt("profile repeated"));
            }
        }
        if !v2 && r.take(1)? != [1] {
            return Err(corrupt("version 3 flag"));
        }
        if any_profile && v2 {
            return Err(corrupt("stored profiles in version 2"));
        }
        if !r.0.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let symbol_ok = |rec: &Rec| match rec.data {
            RecData::Profile { fields, .. } => fields.iter().all(|&f| f as usize <= n_symbols),
            RecData::Id(_) => true,
        };
        // Only a snapshot that held stored profiles needs the pass (none are kept without a scoped rule).
        if any_profile && !engine.entities.iter().all(|e| e.recs().all(symbol_ok)) {
            return Err(corrupt("stored profile symbol"));
        }
        if engine.plan.keeps(Kind::Profile) {
            if v2 { engine.seed_profiles() } else { engine.rematch_profiles() }
        }
        engine.adopt_levels(&old_rules);
        Ok(engine)
    }
}

/// Whether `t` is an instant events can have (years 0000-9999 with any offset, and the windows around them).
fn time_ok(t: Ts) -> bool {
    // 0000-01-01 minus a day and 9999-12-31 plus a day, with room for timers up to two windows of 100 years ahead.
    const MIN: Ts = -62_167_305_600;
    const MAX: Ts = 253_402_387_200 + 2 * 36_500 * 86_400;
    (MIN..=MAX).contains(&t)
}

fn corrupt(what: &'static str) -> SnapshotError {
    SnapshotError::Corrupt(what)
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| io::Error::other("string longer than 65535 bytes"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// A bounds-checked cursor.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if n > self.0.len() {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| corrupt("u32"))?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| corrupt("u64"))?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(self.u64()? as i64)
    }

    /// A count of items of at least `min_bytes` each, refused if the bytes left cannot hold them.
    fn count(&mut self, min_bytes: usize) -> Result<usize, SnapshotError> {
        let n = self.u64()?;
        if n > (self.0.len() / min_bytes) as u64 {
            return Err(corrupt("count larger than the data"));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| corrupt("length"))?);
        std::str::from_utf8(self.take(len as usize)?).map_err(|_| corrupt("string"))
    }
}
