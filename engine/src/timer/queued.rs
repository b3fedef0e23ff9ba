//! A pending timer as the in-memory queues hold it ([`Queued`]: timestamp, key and namespace
//! bytes, ordered as timers fire) and the queue that holds every pending timer of a domain in
//! memory ([`MemoryQueue`], the heap backend's).

use std::collections::BTreeSet;

/// Bytes of a queued timer kept inline up to this length (a `u64` key and a `TimeWindow`
/// namespace take 24), so that the ordered set compares them without following a pointer.
pub(super) const INLINE: usize = 32;

/// The key's and the namespace's bytes of a queued timer, inline when short.
#[derive(Debug, Clone)]
enum Packed {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Packed {
    fn new(key: &[u8], ns: &[u8]) -> Packed {
        let len = key.len() + ns.len();
        if len <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..key.len()].copy_from_slice(key);
            buf[key.len()..len].copy_from_slice(ns);
            Packed::Inline {
                len: len as u8,
                buf,
            }
        } else {
            Packed::Heap([key, ns].concat().into_boxed_slice())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, buf } => &buf[..usize::from(*len)],
            Packed::Heap(b) => b,
        }
    }
}

/// One pending timer, ordered as it fires: timestamp, then the key's length and bytes, then
/// the namespace's bytes (with keys of one length, as most key types have, that is key bytes
/// then namespace bytes). The first 16 bytes of key and namespace are also kept as one
/// integer, so that most comparisons compare integers.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub(super) timestamp: i64,
    key_len: u32,
    prefix: u128,
    bytes: Packed,
}

impl Queued {
    pub(super) fn new(timestamp: i64, key: &[u8], ns: &[u8]) -> Queued {
        let bytes = Packed::new(key, ns);
        let mut head = [0u8; 16];
        let all = bytes.bytes();
        let n = all.len().min(16);
        head[..n].copy_from_slice(&all[..n]);
        Queued {
            timestamp,
            key_len: key.len() as u32,
            prefix: u128::from_be_bytes(head),
            bytes,
        }
    }

    pub(super) fn key(&self) -> &[u8] {
        &self.bytes.bytes()[..self.key_len as usize]
    }

    pub(super) fn namespace(&self) -> &[u8] {
        &self.bytes.bytes()[self.key_len as usize..]
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp
            && self.key_len == other.key_len
            && self.bytes.bytes() == other.bytes.bytes()
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then(self.key_len.cmp(&other.key_len))
            .then(self.prefix.cmp(&other.prefix))
            .then_with(|| self.bytes.bytes().cmp(other.bytes.bytes()))
    }
}

/// The pending timers of one domain, all in memory, in firing order: an ordered set, which
/// deduplicates, deletes and pops the earliest in O(log n). (A binary heap with a set of live
/// timers beside it, Flink's `HeapPriorityQueueSet` idea, registered faster but fired slower
/// here: benches/README.md, "Timers".)
#[derive(Debug, Default)]
pub(super) struct MemoryQueue {
    set: BTreeSet<Queued>,
}

impl MemoryQueue {
    pub(super) fn insert(&mut self, q: Queued) {
        self.set.insert(q);
    }

    pub(super) fn contains(&self, q: &Queued) -> bool {
        self.set.contains(q)
    }

    pub(super) fn remove(&mut self, q: &Queued) -> bool {
        self.set.remove(q)
    }

    /// The earliest pending timer.
    pub(super) fn first(&self) -> Option<&Queued> {
        self.set.first()
    }

    pub(super) fn pop_first(&mut self) -> Option<Queued> {
        self.set.pop_first()
    }

    pub(super) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_timers_order_by_time_key_length_key_then_namespace_inline_or_not() {
        let long = vec![7u8; 40];
        let mut set = BTreeSet::new();
        for q in [
            Queued::new(2, b"a", b"z"),
            Queued::new(1, &long, b"b"),
            Queued::new(1, b"b", b""),
            Queued::new(1, b"ab", b"a"),
            Queued::new(1, b"a", &long),
            Queued::new(1, b"a", b"c"),
        ] {
            assert!(set.insert(q));
        }
        assert!(
            !set.insert(Queued::new(1, b"a", b"c")),
            "equal timers are one"
        );
        assert!(!set.insert(Queued::new(1, &long, b"b")), "inline or not");
        let order: Vec<(i64, Vec<u8>, Vec<u8>)> = set
            .iter()
            .map(|q| (q.timestamp, q.key().to_vec(), q.namespace().to_vec()))
            .collect();
        assert_eq!(
            order,
            vec![
                (1, b"a".to_vec(), long.clone()),
                (1, b"a".to_vec(), b"c".to_vec()),
                (1, b"b".to_vec(), vec![]),
                (1, b"ab".to_vec(), b"a".to_vec()),
                (1, long.clone(), b"b".to_vec()),
                (2, b"a".to_vec(), b"z".to_vec()),
            ]
        );
    }
}
