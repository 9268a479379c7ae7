//! Memory of seen `event_id`s.
//!
//! Each id is kept as its 64-bit XXH3 hash, not as a string: over years of history that is 8 bytes per event
//! instead of the id's length plus a heap allocation. Two distinct ids share a hash with probability about
//! n²/2⁶⁵ (n = ids seen): about 3·10⁻⁶ for ten million ids. That is the one approximation in the engine,
//! and ARCHITECTURE.md states it.
//!
//! The hashes live in 65,536 sorted vectors chosen by their top 16 bits, each grown by about an eighth at a
//! time: about 9 bytes per id, and no moment where a whole table is copied into one twice its size (a
//! hash set would hold 9-18 bytes per id, plus a transient copy on every doubling). A lookup is a binary
//! search in a vector of about n/65,536 hashes; an insert moves half of one such vector.

use xxhash_rust::xxh3::xxh3_64;

const SHARD_BITS: u32 = 16;

/// The set of seen event ids.
pub struct Dedup {
    shards: Vec<Vec<u64>>,
    len: usize,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup { shards: (0..1usize << SHARD_BITS).map(|_| Vec::new()).collect(), len: 0 }
    }
}

impl Dedup {
    /// Records `id`; false if it was seen before.
    pub fn insert(&mut self, id: &str) -> bool {
        self.insert_hash(xxh3_64(id.as_bytes()))
    }

    fn insert_hash(&mut self, hash: u64) -> bool {
        let shard = &mut self.shards[(hash >> (64 - SHARD_BITS)) as usize];
        match shard.binary_search(&hash) {
            Ok(_) => false,
            Err(pos) => {
                if shard.len() == shard.capacity() {
                    shard.reserve_exact(shard.len() / 8 + 4);
                }
                shard.insert(pos, hash);
                self.len += 1;
                true
            }
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.capacity() * 8 + 24).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_every_id_once() {
        let mut d = Dedup::default();
        for i in 0..20_000 {
            assert!(d.insert(&format!("id-{i}")));
        }
        for i in 0..20_000 {
            assert!(!d.insert(&format!("id-{i}")), "id-{i} taken for new");
        }
        assert_eq!(d.len(), 20_000);
        // Hashes that share a shard, in any order.
        for h in [5u64, 3, 4, 1, 2] {
            assert!(d.insert_hash(h));
        }
        assert!(!d.insert_hash(3));
        assert!(d.shards[0].windows(2).all(|w| w[0] < w[1]));
    }
}
