//! Frozen views of keyed state, taken in a snapshot's synchronous phase.
//!
//! [`StateSnapshot`] is what `KeyedStateBackend::snapshot_state` returns: a view of every
//! registered state as it was at that instant, `Send + Sync + 'static`, so that another thread
//! can write it out while the task thread keeps changing the live state. It is read per key
//! group, in the canonical encoded form every backend shares ([`EncodedEntry`]): the bytes of
//! the key, the namespace and the state, with map entries ordered by user-key bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::state::{CodecInfo, StateMeta};

/// The encoded state of one (key, namespace) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodedState {
    /// A value, reducing value or accumulator.
    Value(Vec<u8>),
    /// The elements of a list, in order.
    List(Vec<Vec<u8>>),
    /// The entries of a map as (user key, value), ordered by user-key bytes.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

/// One entry of a state in canonical encoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEntry {
    /// The key's encoding.
    pub key: Vec<u8>,
    /// The namespace's encoding.
    pub namespace: Vec<u8>,
    /// The state's encoding.
    pub state: EncodedState,
}

/// A frozen view of one state's table.
pub trait StateTableSnapshot: Send + Sync {
    /// What the state is.
    fn meta(&self) -> &StateMeta;
    /// The number of (key, namespace) entries in the view.
    fn entry_count(&self) -> usize;
    /// Calls `visit` with every entry of key group `key_group`, in no particular order.
    /// Key groups outside the backend's range have no entries.
    fn visit_key_group(&self, key_group: u16, visit: &mut dyn FnMut(EncodedEntry));
}

/// A frozen view of all keyed state of a backend.
///
/// Taking it costs O(number of states); later writes to the backend do not change it; dropping
/// it frees what only it still holds.
#[derive(Clone)]
pub struct StateSnapshot {
    max_parallelism: u32,
    key_group_range: KeyGroupRange,
    key_codec: CodecInfo,
    states: Vec<Arc<dyn StateTableSnapshot>>,
}

impl std::fmt::Debug for StateSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSnapshot")
            .field("max_parallelism", &self.max_parallelism)
            .field("key_group_range", &self.key_group_range)
            .field("key_codec", &self.key_codec)
            .field(
                "states",
                &self
                    .states
                    .iter()
                    .map(|s| &s.meta().name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Entries of one state keyed by (key group, key bytes, namespace bytes); see
/// [`StateSnapshot::canonical_entries`].
pub type CanonicalEntries = BTreeMap<(u16, Vec<u8>, Vec<u8>), EncodedState>;

impl StateSnapshot {
    /// A snapshot made of the given state views.
    pub fn new(
        max_parallelism: u32,
        key_group_range: KeyGroupRange,
        key_codec: CodecInfo,
        states: Vec<Arc<dyn StateTableSnapshot>>,
    ) -> Self {
        StateSnapshot {
            max_parallelism,
            key_group_range,
            key_codec,
            states,
        }
    }

    /// The codec of the backend's keys (a restore checks it against its own).
    pub fn key_codec(&self) -> &CodecInfo {
        &self.key_codec
    }

    /// The max parallelism of the backend the view was taken from.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key groups the view covers.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// The views of the states, in registration order.
    pub fn states(&self) -> &[Arc<dyn StateTableSnapshot>] {
        &self.states
    }

    /// The view of the state named `name`.
    pub fn state(&self, name: &str) -> Option<&Arc<dyn StateTableSnapshot>> {
        self.states.iter().find(|s| s.meta().name == name)
    }

    /// The total number of entries over all states.
    pub fn entry_count(&self) -> usize {
        self.states.iter().map(|s| s.entry_count()).sum()
    }

    /// All entries of state `name` in a sorted map, for comparisons in tests and tools.
    /// `None` if no state has that name.
    pub fn canonical_entries(&self, name: &str) -> Option<CanonicalEntries> {
        let state = self.state(name)?;
        let mut out = BTreeMap::new();
        for kg in self.key_group_range.iter() {
            state.visit_key_group(kg, &mut |e| {
                out.insert((kg, e.key, e.namespace), e.state);
            });
        }
        Some(out)
    }
}

/// Something keyed state can be restored from: a frozen view, or (with checkpoints) a snapshot
/// file. A restore reads only the key groups the new backend owns.
pub trait RestoreSource {
    /// The max parallelism the state was snapshotted with; a restore requires the same.
    fn max_parallelism(&self) -> u32;
    /// The key groups the source covers.
    fn key_group_range(&self) -> KeyGroupRange;
    /// The codec of the keys.
    fn key_codec(&self) -> &CodecInfo;
    /// What each state is; entries name a state by its index in this list.
    fn state_metas(&self) -> Vec<StateMeta>;
    /// Calls `visit(state index, entry)` for every entry of `key_group`.
    fn read_key_group(
        &self,
        key_group: u16,
        visit: &mut dyn FnMut(usize, EncodedEntry),
    ) -> Result<()>;
}

impl RestoreSource for StateSnapshot {
    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }
    fn key_codec(&self) -> &CodecInfo {
        &self.key_codec
    }
    fn state_metas(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta().clone()).collect()
    }
    fn read_key_group(
        &self,
        key_group: u16,
        visit: &mut dyn FnMut(usize, EncodedEntry),
    ) -> Result<()> {
        for (index, state) in self.states.iter().enumerate() {
            state.visit_key_group(key_group, &mut |entry| visit(index, entry));
        }
        Ok(())
    }
}
