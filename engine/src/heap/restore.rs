//! Restoring the heap backend from snapshots, and the state it holds until it is registered.
//!
//! A restore reads, from every source, only the key groups the backend owns, and keeps each
//! state's entries in their canonical encoded form (a [`PendingState`]) until operator code
//! registers a descriptor with that name. Registration checks that the descriptor's kind and
//! codecs are the ones the snapshot recorded and decodes the entries into a typed table. A state
//! that is never registered stays encoded and is part of every later snapshot, so nothing
//! restored is lost by a job that does not touch some state.

use std::sync::Arc;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::restore::{visit_sources, RestoreSink};
use crate::snapshot::{EncodedEntry, RestoreSource, StateTableSnapshot};
use crate::state::{Key, StateMeta};

/// A restored state not registered yet: its entries, encoded, per owned key group.
#[derive(Clone)]
pub(crate) struct PendingState {
    pub(crate) meta: Arc<StateMeta>,
    pub(crate) range: KeyGroupRange,
    pub(crate) key_groups: Arc<Vec<Vec<EncodedEntry>>>,
}

impl StateTableSnapshot for PendingState {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    /// A restored state not registered yet never changes.
    fn tracks_changes_since(&self, _epoch: u32) -> bool {
        true
    }
    fn changes_since(
        &self,
        _epoch: u32,
        _key_group: u16,
        _visit: &mut dyn FnMut(crate::snapshot::Change),
    ) -> Result<()> {
        Ok(())
    }
    fn entry_count(&self) -> Result<usize> {
        Ok(self.key_groups.iter().map(Vec::len).sum())
    }
    fn visit_key_group(&self, key_group: u16, visit: &mut dyn FnMut(EncodedEntry)) -> Result<()> {
        if let Some(index) = self.range.index_of(key_group) {
            for entry in &self.key_groups[index] {
                visit(entry.clone());
            }
        }
        Ok(())
    }
}

/// Reads the owned key groups of every source into pending states, in source order.
pub(crate) fn read_sources<K: Key>(
    max_parallelism: u32,
    range: KeyGroupRange,
    sources: &[&dyn RestoreSource],
) -> Result<Vec<PendingState>> {
    struct Sink {
        range: KeyGroupRange,
        states: Vec<(StateMeta, Vec<Vec<EncodedEntry>>)>,
    }
    impl RestoreSink for Sink {
        fn new_state(&mut self, meta: &StateMeta) -> Result<()> {
            self.states
                .push((meta.clone(), vec![Vec::new(); self.range.len()]));
            Ok(())
        }
        fn entry(&mut self, state: usize, key_group: u16, entry: EncodedEntry) -> Result<()> {
            let slot = self
                .range
                .index_of(key_group)
                .expect("visit_sources passes owned key groups only");
            self.states[state].1[slot].push(entry);
            Ok(())
        }
    }
    let mut sink = Sink {
        range,
        states: Vec::new(),
    };
    visit_sources::<K>(max_parallelism, range, &[], &[], sources, &mut sink)?;
    Ok(sink
        .states
        .into_iter()
        .map(|(meta, key_groups)| PendingState {
            meta: Arc::new(meta),
            range,
            key_groups: Arc::new(key_groups),
        })
        .collect())
}

/// Decodes the parts of an encoded entry with the registered types.
pub(crate) fn decode_part<T: Codec>(
    bytes: &[u8],
    state: &str,
    key_group: u16,
    part: &str,
) -> Result<T> {
    T::decode(bytes).map_err(|source| Error::Codec {
        what: format!("the {part} of an entry of state '{state}' in key group {key_group}"),
        source,
    })
}
