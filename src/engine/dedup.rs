//! Memory of seen `event_id`s.
//!
//! Each id is kept as a 64-bit hash, not as a string: 8 bytes (plus table overhead) per event over years of
//! history instead of the id's length plus a heap allocation. The hash is XXH3 under a random 192-byte secret
//! drawn when the set is created, so ids cannot be chosen to collide (with an unkeyed hash a producer can
//! make a valid event look like a duplicate of another). Two distinct ids share a hash with probability about n²/2⁶⁵
//! (n = ids seen): about 3·10⁻⁶ for ten million ids. That is the one approximation in the engine, and it
//! is stated in ARCHITECTURE.md.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashSet;
use nohash_hasher::BuildNoHashHasher;
use xxhash_rust::xxh3::xxh3_64_with_secret;

/// Bytes of the hash secret (XXH3's default secret size).
pub(super) const SECRET_BYTES: usize = 192;

/// The set of seen event ids.
pub struct Dedup {
    /// The secret of the id hash, random per set.
    secret: Box<[u8; SECRET_BYTES]>,
    seen: HashSet<u64, BuildNoHashHasher<u64>>,
}

impl Default for Dedup {
    fn default() -> Self {
        // The standard library seeds `RandomState` from the operating system's random source.
        let random = RandomState::new();
        let mut secret = Box::new([0u8; SECRET_BYTES]);
        for (i, chunk) in secret.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&random.hash_one(i).to_le_bytes());
        }
        Dedup { secret, seen: HashSet::default() }
    }
}

impl Dedup {
    /// Records `id`; false if it was seen before.
    pub fn insert(&mut self, id: &str) -> bool {
        self.seen.insert(self.hash(id))
    }

    /// The keyed hash an id is remembered by.
    pub fn hash(&self, id: &str) -> u64 {
        xxh3_64_with_secret(id.as_bytes(), &self.secret[..])
    }

    /// Whether the id of `hash` ([`Dedup::hash`]) is remembered.
    pub fn contains_hash(&self, hash: u64) -> bool {
        self.seen.contains(&hash)
    }

    /// Remembers the id of `hash` ([`Dedup::hash`]); false if it was remembered already.
    pub fn insert_hash(&mut self, hash: u64) -> bool {
        self.seen.insert(hash)
    }

    /// The secret and the hashes, for a checkpoint.
    pub(super) fn parts(&self) -> (&[u8; SECRET_BYTES], impl Iterator<Item = u64> + '_) {
        (&self.secret, self.seen.iter().copied())
    }

    /// A set read back from a checkpoint.
    pub(super) fn from_parts(secret: [u8; SECRET_BYTES], hashes: impl ExactSizeIterator<Item = u64>) -> Dedup {
        let mut seen = HashSet::with_capacity_and_hasher(hashes.len(), BuildNoHashHasher::default());
        seen.extend(hashes);
        Dedup { secret: Box::new(secret), seen }
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
