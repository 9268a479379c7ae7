//! Memory of seen `event_id`s.
//!
//! Each id is kept as its 64-bit XXH3 hash, not as a string: 8 bytes (plus table overhead) per event over
//! years of history instead of the id's length plus a heap allocation. Two distinct ids share a hash with
//! probability about n²/2⁶⁵ (n = ids seen): about 3·10⁻⁶ for ten million ids. That is the one
//! approximation in the engine, and it is stated in ARCHITECTURE.md.

use hashbrown::HashSet;
use nohash_hasher::BuildNoHashHasher;
use xxhash_rust::xxh3::xxh3_64;

/// The set of seen event ids.
#[derive(Default)]
pub struct Dedup {
    seen: HashSet<u64, BuildNoHashHasher<u64>>,
}

impl Dedup {
    /// Records `id`; false if it was seen before.
    pub fn insert(&mut self, id: &str) -> bool {
        self.seen.insert(xxh3_64(id.as_bytes()))
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        super::table_bytes(self.seen.capacity(), std::mem::size_of::<u64>())
    }
}
