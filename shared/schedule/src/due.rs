//! The due-index: what fires next, across schedules and leases.
//!
//! A binary min-heap ordered by (due time, key) answers "what is due by now" in
//! O(k log n) for k due items, instead of scanning every schedule each minute. Heap
//! entries cannot be updated or removed in place, so each key carries a generation
//! in a side map: re-scheduling pushes a new entry with a new generation, removing
//! drops the map entry, and stale heap entries are discarded when they surface
//! (lazy invalidation). Both operations are O(log n); the heap is rebuilt from the
//! map when stale entries outnumber live ones, which keeps memory bounded and costs
//! O(n) amortised over at least n updates.

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Utc};

/// What an entry stands for. The derived order (schedules before leases, then by
/// id) is the tie-break at equal due times, which puts schedules of one instance in
/// creation order as the collision rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DueKey {
    /// A VM schedule, by schedule id (ids grow in creation order).
    Schedule(u64),
    /// An instance lease, by instance id.
    Lease(u64),
}

/// Keys are packed into one word: the lease flag in the top bit, so that the packed
/// order is the `DueKey` order. Store ids are SQLite row ids, below 2^63.
const LEASE_BIT: u64 = 1 << 63;

impl DueKey {
    fn pack(self) -> u64 {
        match self {
            DueKey::Schedule(id) => {
                debug_assert!(id < LEASE_BIT, "schedule id {id} too large");
                id & !LEASE_BIT
            }
            DueKey::Lease(id) => {
                debug_assert!(id < LEASE_BIT, "instance id {id} too large");
                id | LEASE_BIT
            }
        }
    }

    fn unpack(packed: u64) -> DueKey {
        if packed & LEASE_BIT == 0 {
            DueKey::Schedule(packed)
        } else {
            DueKey::Lease(packed & !LEASE_BIT)
        }
    }
}

/// A key that fell due, with the time it was due at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueItem {
    pub key: DueKey,
    pub at: DateTime<Utc>,
}

/// (seconds, nanoseconds, packed key, generation): 32 bytes, so a 200k-entry heap
/// stays small and one comparison is integer compares only.
type Entry = Reverse<(i64, u32, u64, u64)>;

fn split(at: DateTime<Utc>) -> (i64, u32) {
    (at.timestamp(), at.timestamp_subsec_nanos())
}

fn join(secs: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nanos).unwrap_or_default()
}

/// Multiplicative hash of the packed key. The keys are our own row ids, not
/// attacker-chosen, so SipHash's flooding resistance buys nothing here and its cost
/// showed in the tick profile.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type Live = HashMap<u64, (DateTime<Utc>, u64), BuildHasherDefault<KeyHasher>>;

/// Min-heap of due times with lazy invalidation. See the module documentation.
#[derive(Debug, Default)]
pub struct DueIndex {
    heap: BinaryHeap<Entry>,
    live: Live,
    next_generation: u64,
}

/// Below this size a rebuild is not worth it.
const COMPACT_FLOOR: usize = 1024;

impl DueIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        DueIndex {
            heap: BinaryHeap::with_capacity(n),
            live: Live::with_capacity_and_hasher(n, Default::default()),
            next_generation: 0,
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Heap entries including stale ones (for tests and metrics).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// When `key` is due, if it is in the index.
    pub fn due_at(&self, key: DueKey) -> Option<DateTime<Utc>> {
        self.live.get(&key.pack()).map(|&(at, _)| at)
    }

    /// Sets (or moves) `key` to fall due at `at`. O(log n).
    pub fn upsert(&mut self, key: DueKey, at: DateTime<Utc>) {
        let packed = key.pack();
        let generation = self.next_generation;
        match self.live.entry(packed) {
            MapEntry::Occupied(e) if e.get().0 == at => return,
            MapEntry::Occupied(mut e) => {
                e.insert((at, generation));
            }
            MapEntry::Vacant(e) => {
                e.insert((at, generation));
            }
        }
        self.next_generation += 1;
        let (secs, nanos) = split(at);
        self.heap.push(Reverse((secs, nanos, packed, generation)));
        self.maybe_compact();
    }

    /// Takes `key` out of the index; returns when it was due. O(1) now, its heap
    /// entry is dropped when it surfaces.
    pub fn remove(&mut self, key: DueKey) -> Option<DateTime<Utc>> {
        let removed = self.live.remove(&key.pack()).map(|(at, _)| at);
        self.maybe_compact();
        removed
    }

    /// The earliest live entry, without taking it (stale entries on top are dropped).
    pub fn peek(&mut self) -> Option<DueItem> {
        self.drop_stale_top();
        self.heap
            .peek()
            .map(|&Reverse((secs, nanos, packed, _))| DueItem {
                key: DueKey::unpack(packed),
                at: join(secs, nanos),
            })
    }

    /// Takes every entry due at or before `now`, earliest first (ties: schedules by
    /// id, then leases). Taken keys leave the index; re-`upsert` the next occurrence.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<DueItem> {
        let mut out = Vec::new();
        self.pop_due_into(now, &mut out);
        out
    }

    /// As [`pop_due`](Self::pop_due), appending to `out` so a tick loop can reuse
    /// one buffer.
    pub fn pop_due_into(&mut self, now: DateTime<Utc>, out: &mut Vec<DueItem>) {
        let limit = split(now);
        while let Some(&Reverse((secs, nanos, packed, generation))) = self.heap.peek() {
            if (secs, nanos) > limit {
                break;
            }
            self.heap.pop();
            if let MapEntry::Occupied(e) = self.live.entry(packed) {
                if e.get().1 == generation {
                    let (at, _) = e.remove();
                    out.push(DueItem {
                        key: DueKey::unpack(packed),
                        at,
                    });
                }
            }
        }
    }

    pub fn clear(&mut self) {
        self.heap.clear();
        self.live.clear();
    }

    fn drop_stale_top(&mut self) {
        while let Some(&Reverse((_, _, packed, generation))) = self.heap.peek() {
            if self
                .live
                .get(&packed)
                .is_some_and(|&(_, g)| g == generation)
            {
                break;
            }
            self.heap.pop();
        }
    }

    fn maybe_compact(&mut self) {
        if self.heap.len() > COMPACT_FLOOR && self.heap.len() > 2 * self.live.len() {
            let entries: Vec<Entry> = self
                .live
                .iter()
                .map(|(&packed, &(at, generation))| {
                    let (secs, nanos) = split(at);
                    Reverse((secs, nanos, packed, generation))
                })
                .collect();
            self.heap = BinaryHeap::from(entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(min)
    }

    #[test]
    fn pops_in_time_then_key_order() {
        let mut idx = DueIndex::new();
        idx.upsert(DueKey::Lease(1), t(5));
        idx.upsert(DueKey::Schedule(9), t(5));
        idx.upsert(DueKey::Schedule(2), t(5));
        idx.upsert(DueKey::Schedule(1), t(3));
        idx.upsert(DueKey::Schedule(3), t(7));
        let due = idx.pop_due(t(5));
        let keys: Vec<DueKey> = due.iter().map(|d| d.key).collect();
        assert_eq!(
            keys,
            vec![
                DueKey::Schedule(1),
                DueKey::Schedule(2),
                DueKey::Schedule(9),
                DueKey::Lease(1)
            ]
        );
        assert_eq!(due[0].at, t(3));
        assert_eq!(idx.len(), 1);
        assert!(idx.pop_due(t(6)).is_empty());
        assert_eq!(idx.peek().map(|d| d.key), Some(DueKey::Schedule(3)));
    }

    #[test]
    fn updates_and_removals_invalidate_old_entries() {
        let mut idx = DueIndex::new();
        idx.upsert(DueKey::Schedule(1), t(1));
        idx.upsert(DueKey::Schedule(1), t(10)); // moved later
        idx.upsert(DueKey::Schedule(2), t(2));
        assert_eq!(idx.remove(DueKey::Schedule(2)), Some(t(2)));
        assert!(idx.pop_due(t(5)).is_empty(), "stale entries must not fire");
        assert_eq!(idx.due_at(DueKey::Schedule(1)), Some(t(10)));
        let due = idx.pop_due(t(10));
        assert_eq!(
            due,
            vec![DueItem {
                key: DueKey::Schedule(1),
                at: t(10)
            }]
        );
        assert!(idx.is_empty());
        assert_eq!(idx.remove(DueKey::Schedule(1)), None);
    }

    #[test]
    fn moving_earlier_fires_once() {
        let mut idx = DueIndex::new();
        idx.upsert(DueKey::Lease(4), t(10));
        idx.upsert(DueKey::Lease(4), t(1));
        assert_eq!(idx.pop_due(t(20)).len(), 1);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut idx = DueIndex::new();
        for round in 0..50 {
            for id in 0..100 {
                idx.upsert(DueKey::Schedule(id), t(round * 100 + id as i64));
            }
        }
        assert_eq!(idx.len(), 100);
        assert!(idx.heap_len() <= COMPACT_FLOOR.max(2 * idx.len()) + 1);
        let due = idx.pop_due(t(1_000_000));
        assert_eq!(due.len(), 100);
        assert!(due.iter().all(|d| d.at >= t(4900)));
    }
}
