//! Entity master data from `profile` events (name, region, industry, domain, authority), for routing and
//! e-mail. An entity's profile is its latest `profile` event by `occurred_at` (the later read wins a tie),
//! like its class. Kept compactly: region, industry, domain and authority repeat across millions of
//! entities, so each distinct value is stored once and entities hold 32-bit symbols; only the name is per
//! entity.

use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashMap;

use crate::credit_code::EntityKey;
use crate::event::Event;
use crate::time::Ts;

/// Distinct values kept across all symbol fields; a new value beyond this is not stored (the field reads as
/// absent), so a producer sending ever new industries cannot grow memory without bound.
pub const MAX_SYMBOLS: usize = 1 << 20;

/// An entity's master data, as handed to routing and templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// `occurred_at` of the profile event.
    pub at: Ts,
    pub name: Option<CompactString>,
    pub region: Option<Arc<str>>,
    pub industry: Option<Arc<str>>,
    pub domain: Option<Arc<str>>,
    pub authority: Option<Arc<str>>,
}

/// One entity's stored profile: 48 bytes.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub at: Ts,
    pub name: Option<CompactString>,
    /// Symbols (0: absent) of region, industry, domain, authority.
    pub fields: [u32; 4],
}

/// The profiles of all entities.
#[derive(Debug, Default)]
pub(super) struct Profiles {
    pub map: HashMap<EntityKey, Stored>,
    /// `symbols[i - 1]` is symbol `i`.
    pub symbols: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    /// Values not stored since the engine was made because the table was full ([`MAX_SYMBOLS`]).
    pub refused: u64,
}

impl Profiles {
    /// Keeps `event`'s profile if it is the entity's latest by `occurred_at`; returns its field symbols
    /// ([`Profiles::intern`], done only when kept unless `always`).
    pub fn offer(&mut self, event: &Event, always: bool) -> [u32; 4] {
        let Some(data) = &event.profile else { return [0; 4] };
        let latest = self.map.get(&event.entity).is_none_or(|s| s.at <= event.at);
        if !latest && !always {
            return [0; 4];
        }
        let fields = self.intern(event);
        if latest {
            self.map.insert(event.entity, Stored { at: event.at, name: data.name.clone(), fields });
        }
        fields
    }

    /// The symbols of `event`'s region, industry, domain and authority, added if new and there is room.
    fn intern(&mut self, event: &Event) -> [u32; 4] {
        let Some(data) = &event.profile else { return [0; 4] };
        [&data.region, &data.industry, &data.domain, &data.authority].map(|f| self.symbol(f.as_deref()))
    }

    /// The values of field symbols (0: absent), borrowed.
    pub fn resolve(&self, fields: [u32; 4]) -> [Option<&str>; 4] {
        fields.map(|id| match id {
            0 => None,
            id => self.symbols.get(id as usize - 1).map(|s| &**s),
        })
    }

    /// The symbol of `value`, added if new and there is room; 0 for none.
    fn symbol(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else { return 0 };
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        if self.symbols.len() >= MAX_SYMBOLS {
            self.refused += 1;
            return 0;
        }
        let value: Arc<str> = Arc::from(value);
        self.symbols.push(value.clone());
        let id = self.symbols.len() as u32;
        self.ids.insert(value, id);
        id
    }

    /// Adds a symbol read back from a snapshot; `false` if it repeats one.
    pub fn push_symbol(&mut self, value: &str) -> bool {
        let value: Arc<str> = Arc::from(value);
        self.symbols.push(value.clone());
        self.ids.insert(value, self.symbols.len() as u32).is_none()
    }

    pub fn get(&self, entity: &EntityKey) -> Option<Profile> {
        let s = self.map.get(entity)?;
        let sym = |i: usize| match s.fields[i] {
            0 => None,
            id => self.symbols.get(id as usize - 1).cloned(),
        };
        Some(Profile {
            at: s.at,
            name: s.name.clone(),
            region: sym(0),
            industry: sym(1),
            domain: sym(2),
            authority: sym(3),
        })
    }

    /// An entity's region, industry, domain and authority, borrowed (no allocation).
    pub fn fields(&self, entity: &EntityKey) -> [Option<&str>; 4] {
        self.map.get(entity).map_or([None; 4], |s| self.resolve(s.fields))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `entity` has a profile.
    pub fn contains(&self, entity: &EntityKey) -> bool {
        self.map.contains_key(entity)
    }

    /// A rough count of the bytes held.
    pub fn bytes(&self) -> usize {
        let names: usize = self
            .map
            .values()
            .filter_map(|s| s.name.as_ref())
            .filter(|n| n.is_heap_allocated())
            .map(|n| n.capacity())
            .sum();
        let symbols: usize = self.symbols.iter().map(|s| s.len() + 16 + 40).sum();
        super::table_bytes(self.map.capacity(), std::mem::size_of::<(EntityKey, Stored)>()) + names + symbols
    }
}
