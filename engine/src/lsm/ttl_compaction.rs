//! The LSM backend's TTL cleanup (spec/state-semantics.md R70): a compaction filter that drops
//! expired values, reducing values, accumulators and map entries, and the expired elements of
//! list values and list-append operands, as compaction rewrites the tables that hold them. A
//! compaction into the bottom level (a full compaction, say) leaves nothing expired behind.
//!
//! The filter knows each state's TTL from the backend (set when a descriptor `with_ttl` is
//! registered) and reads the clock once per compaction, as Flink's RocksDB filter reads it
//! every so many entries. Every stored value of a state with a TTL starts with its timestamp
//! (`TtlValue`), so nothing is decoded beyond that and the list framing.

use std::sync::Arc;

use parking_lot::RwLock;

use super::entry::Entry;
use super::key;
use super::merge::{push_list_element, ListElements};
use super::tree::{CompactionFilter, FilterDecision, FilterFn};
use crate::clock::Clock;
use crate::state::ttl_filter::bytes_live as live;
use crate::state::{StateId, StateKind, TtlConfig};

/// The TTL compaction filter of one LSM backend.
#[derive(Debug)]
pub(crate) struct TtlCompactionFilter {
    /// By state id: the kind and TTL of states registered with one.
    states: RwLock<Vec<Option<(StateKind, TtlConfig)>>>,
    clock: Arc<dyn Clock>,
}

impl TtlCompactionFilter {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        TtlCompactionFilter {
            states: RwLock::new(Vec::new()),
            clock,
        }
    }

    /// Records that state `id`, of `kind`, has `ttl`.
    pub(crate) fn set(&self, id: StateId, kind: StateKind, ttl: TtlConfig) {
        let mut states = self.states.write();
        let index = id.0 as usize;
        if states.len() <= index {
            states.resize(index + 1, None);
        }
        states[index] = Some((kind, ttl));
    }
}

/// The decision for a list value or operand: the elements still live.
fn filter_list(list: &[u8], ttl: &TtlConfig, now: u64, operand: bool) -> FilterDecision {
    let mut kept = Vec::with_capacity(list.len());
    let mut dropped = false;
    for element in ListElements::new(list) {
        match element {
            Ok(e) if live(e, ttl, now) => push_list_element(&mut kept, e),
            Ok(_) => dropped = true,
            // Damaged framing: leave the bytes for a read to report.
            Err(_) => return FilterDecision::Keep,
        }
    }
    match (dropped, kept.is_empty(), operand) {
        (false, _, _) => FilterDecision::Keep,
        // An operand that appends nothing is still an operand; a list value with no element
        // is no list (R22).
        (true, true, false) => FilterDecision::Remove,
        (true, _, true) => FilterDecision::Change(Entry::Merge(kept)),
        (true, false, false) => FilterDecision::Change(Entry::Put(kept)),
    }
}

impl CompactionFilter for TtlCompactionFilter {
    /// Active once a state with a TTL is registered.
    fn active(&self) -> bool {
        self.states.read().iter().any(Option::is_some)
    }

    fn begin(&self) -> FilterFn<'_> {
        let states = self.states.read().clone();
        let now = self.clock.now_millis();
        Box::new(move |k: &[u8], entry: &Entry| {
            let Some(header) = k.get(..key::HEADER_LEN).and_then(|h| h.try_into().ok()) else {
                return FilterDecision::Keep;
            };
            let (id, _) = key::split_header(header);
            let Some(Some((kind, ttl))) = states.get(id.0 as usize) else {
                return FilterDecision::Keep;
            };
            match (kind, entry) {
                (StateKind::List, Entry::Put(list)) => filter_list(list, ttl, now, false),
                (StateKind::List, Entry::Merge(ops)) => filter_list(ops, ttl, now, true),
                (_, Entry::Put(value)) if !live(value, ttl, now) => FilterDecision::Remove,
                _ => FilterDecision::Keep,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn stamped(ts: u64, v: u8) -> Vec<u8> {
        let mut b = ts.to_le_bytes().to_vec();
        b.push(v);
        b
    }

    fn list(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in elements {
            push_list_element(&mut out, e);
        }
        out
    }

    fn state_key(id: u32) -> Vec<u8> {
        let mut k = Vec::new();
        key::encode_state_key(&mut k, StateId(id), 3, b"key", b"");
        k
    }

    #[test]
    fn expired_values_and_elements_are_dropped_and_other_states_untouched() {
        let clock = Arc::new(ManualClock::new(100));
        let f = TtlCompactionFilter::new(clock);
        let ttl = TtlConfig::after(Duration::from_millis(10));
        f.set(StateId(0), StateKind::Value, ttl);
        f.set(StateId(2), StateKind::List, ttl);
        let mut decide = f.begin();
        let v = state_key(0);
        assert_eq!(
            decide(&v, &Entry::Put(stamped(95, 1))),
            FilterDecision::Keep
        );
        assert_eq!(
            decide(&v, &Entry::Put(stamped(90, 1))),
            FilterDecision::Remove
        );
        // State 1 has no TTL; state 7 is unknown to the filter.
        assert_eq!(
            decide(&state_key(1), &Entry::Put(stamped(0, 1))),
            FilterDecision::Keep
        );
        assert_eq!(
            decide(&state_key(7), &Entry::Put(stamped(0, 1))),
            FilterDecision::Keep
        );
        let l = state_key(2);
        let mixed = list(&[stamped(50, 1), stamped(99, 2), stamped(60, 3)]);
        assert_eq!(
            decide(&l, &Entry::Put(mixed.clone())),
            FilterDecision::Change(Entry::Put(list(&[stamped(99, 2)])))
        );
        assert_eq!(
            decide(&l, &Entry::Merge(mixed)),
            FilterDecision::Change(Entry::Merge(list(&[stamped(99, 2)])))
        );
        let old = list(&[stamped(1, 1)]);
        assert_eq!(decide(&l, &Entry::Put(old.clone())), FilterDecision::Remove);
        assert_eq!(
            decide(&l, &Entry::Merge(old)),
            FilterDecision::Change(Entry::Merge(Vec::new()))
        );
        // Damaged list framing is left for a read to report.
        assert_eq!(decide(&l, &Entry::Put(vec![0x80])), FilterDecision::Keep);
        assert_eq!(decide(b"x", &Entry::Put(vec![])), FilterDecision::Keep);
    }
}
