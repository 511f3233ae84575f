//! A weighted least-recently-used map, bounded by total weight (bytes), that can refuse to evict
//! entries in use.
//!
//! Written here rather than taken from a cache crate because the store needs two things those
//! do not offer together: strict LRU order (no admission policy that refuses new entries) and
//! pinning (a blob being read is never evicted).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A weighted LRU map.
#[derive(Debug)]
pub struct Lru<K, V> {
    entries: HashMap<K, Slot<V>>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: u64,
    capacity: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    weight: u64,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` total weight.
    pub fn new(capacity: u64) -> Lru<K, V> {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            weight: 0,
            capacity,
        }
    }

    /// The value for `key`, marking it most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.entries.get_mut(key)?;
        self.order.remove(&slot.tick);
        self.order.insert(tick, key.clone());
        slot.tick = tick;
        Some(&slot.value)
    }

    /// The value for `key`, without changing the order.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|slot| &slot.value)
    }

    /// Inserts (or replaces) `key` as the most recently used entry, then evicts least recently
    /// used entries that `pinned` does not protect until the total weight fits. Returns what was
    /// evicted. An entry that cannot fit even with every unpinned entry gone (heavier than the
    /// capacity, or than what the pinned ones leave) is refused alone: it is the only entry
    /// returned, and nothing else is evicted for it.
    pub fn insert(
        &mut self,
        key: K,
        value: V,
        weight: u64,
        pinned: impl Fn(&K, &V) -> bool,
    ) -> Vec<(K, V)> {
        self.remove(&key);
        if !self.can_make_room(weight, &pinned) {
            return vec![(key, value)];
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Slot {
                value,
                weight,
                tick: self.tick,
            },
        );
        self.weight += weight;
        self.evict(pinned)
    }

    /// Whether evicting unpinned entries, least recently used first, can make room for `weight`
    /// more. Walks only as far as the eviction itself would.
    fn can_make_room(&self, weight: u64, pinned: &impl Fn(&K, &V) -> bool) -> bool {
        if weight > self.capacity {
            return false;
        }
        let mut excess = (self.weight + weight).saturating_sub(self.capacity);
        for key in self.order.values() {
            if excess == 0 {
                break;
            }
            if let Some(slot) = self.entries.get(key)
                && !pinned(key, &slot.value)
            {
                excess = excess.saturating_sub(slot.weight);
            }
        }
        excess == 0
    }

    /// The total weight the map may hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.tick);
        self.weight -= slot.weight;
        Some(slot.value)
    }

    /// Evicts least recently used, unpinned entries while the total weight is over capacity.
    pub fn evict(&mut self, pinned: impl Fn(&K, &V) -> bool) -> Vec<(K, V)> {
        let mut evicted = Vec::new();
        if self.weight <= self.capacity {
            return evicted;
        }
        // Pinned entries are rare (blobs being read), so skipping over them stays cheap.
        let mut skipped = 0;
        while self.weight > self.capacity {
            let Some(key) = self.order.values().nth(skipped).cloned() else {
                break;
            };
            let is_pinned = self
                .entries
                .get(&key)
                .is_some_and(|slot| pinned(&key, &slot.value));
            if is_pinned {
                skipped += 1;
            } else if let Some(value) = self.remove(&key) {
                evicted.push((key, value));
            }
        }
        evicted
    }

    /// The total weight held.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &&str, _: &u32) -> bool {
        false
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let mut lru = Lru::new(3);
        lru.insert("a", 1, 1, never);
        lru.insert("b", 2, 1, never);
        lru.insert("c", 3, 1, never);
        lru.get(&"a");
        let evicted = lru.insert("d", 4, 1, never);
        assert_eq!(evicted, vec![("b", 2)]);
    }

    #[test]
    fn weight_bounds_the_map() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 6, never);
        lru.insert("b", 2, 6, never);
        assert_eq!((lru.len(), lru.weight()), (1, 6));
    }

    #[test]
    fn pinned_entries_are_not_evicted() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1, 1, never);
        lru.insert("b", 2, 1, never);
        let evicted = lru.insert("c", 3, 1, |k, _| *k == "a");
        assert_eq!(evicted, vec![("b", 2)]);
    }

    #[test]
    fn an_entry_larger_than_the_capacity_evicts_itself() {
        let mut lru: Lru<&str, u32> = Lru::new(2);
        let evicted = lru.insert("big", 1, 5, never);
        assert_eq!((evicted, lru.len()), (vec![("big", 1)], 0));
    }

    #[test]
    fn an_entry_larger_than_the_capacity_evicts_nothing_else() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 4, never);
        lru.insert("b", 2, 4, never);
        let evicted = lru.insert("big", 3, 11, never);
        assert_eq!((evicted, lru.len(), lru.weight()), (vec![("big", 3)], 2, 8));
    }

    #[test]
    fn an_entry_that_only_fits_in_place_of_pinned_ones_evicts_nothing_else() {
        let mut lru = Lru::new(10);
        lru.insert("pinned", 1, 6, never);
        lru.insert("b", 2, 3, never);
        // 6 pinned + 5 > 10, whatever else goes: "b" stays.
        let evicted = lru.insert("new", 3, 5, |k, _| *k == "pinned");
        assert_eq!(
            (evicted, lru.peek(&"b"), lru.weight()),
            (vec![("new", 3)], Some(&2), 9)
        );
    }

    #[test]
    fn replacing_an_entry_updates_the_weight() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 4, never);
        lru.insert("a", 2, 7, never);
        assert_eq!((lru.weight(), lru.peek(&"a")), (7, Some(&2)));
    }
}
