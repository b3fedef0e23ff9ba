//! Restoring the heap backend from snapshots, and the state it holds until it is registered.
//!
//! A restore reads, from every source, only the key groups the backend owns, and keeps each
//! state's entries in their canonical encoded form (a [`PendingState`]) until operator code
//! registers a descriptor with that name. Registration checks that the descriptor's kind and
//! codecs are the ones the snapshot recorded and decodes the entries into a typed table. A state
//! that is never registered stays encoded and is part of every later snapshot, so nothing
//! restored is lost by a job that does not touch some state.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::key_group::{key_group_for, KeyGroupRange};
use crate::snapshot::{EncodedEntry, RestoreSource, StateTableSnapshot};
use crate::state::{CodecInfo, Key, StateMeta};

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
    visit_sources::<K>(max_parallelism, range, sources, &mut sink)?;
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

/// Where [`visit_sources`] delivers what it reads.
pub(crate) trait RestoreSink {
    /// A state seen for the first time; the next one gets the next number.
    fn new_state(&mut self, meta: &StateMeta) -> Result<()>;
    /// An entry of state number `state` in owned key group `key_group`.
    fn entry(&mut self, state: usize, key_group: u16, entry: EncodedEntry) -> Result<()>;
}

/// Walks the owned key groups of every source, in source order, after checking that the
/// sources fit the backend: the same max parallelism and key codec, no key group covered twice,
/// states of one name with one meta in every source, entries in the key group of their key.
///
/// `sink.new_state(meta)` is called once per distinct state name, in order of first
/// appearance; states are then numbered from 0 in that order, and
/// `sink.entry(state number, key group, entry)` is called for every entry of an owned key group.
pub(crate) fn visit_sources<K: Key>(
    max_parallelism: u32,
    range: KeyGroupRange,
    sources: &[&dyn RestoreSource],
    sink: &mut dyn RestoreSink,
) -> Result<()> {
    let key_codec = CodecInfo::of::<K>();
    let mut metas: Vec<StateMeta> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // Which source each owned key group was read from: a key group covered twice is an error.
    let mut covered: Vec<Option<usize>> = vec![None; range.len()];
    for (source_index, source) in sources.iter().enumerate() {
        if source.max_parallelism() != max_parallelism {
            return Err(Error::IncompatibleSnapshot(format!(
                "source {source_index} was taken with max parallelism {}, the backend has {max_parallelism} \
                 (the max parallelism of a job cannot change)",
                source.max_parallelism()
            )));
        }
        if source.key_codec() != &key_codec {
            return Err(Error::IncompatibleSnapshot(format!(
                "source {source_index} has keys encoded with {}, the backend's key codec is {key_codec}",
                source.key_codec()
            )));
        }
        let overlap = source.key_group_range().intersection(&range);
        if overlap.is_empty() {
            continue;
        }
        // Map the source's state indexes to ours, merging states of the same name.
        let mut local = Vec::new();
        for meta in source.state_metas() {
            let index = match by_name.get(&meta.name) {
                Some(&i) => {
                    if metas[i] != meta {
                        return Err(Error::IncompatibleSnapshot(format!(
                            "state '{}' is {} in one source and {} in another",
                            meta.name, metas[i], meta
                        )));
                    }
                    i
                }
                None => {
                    sink.new_state(&meta)?;
                    by_name.insert(meta.name.clone(), metas.len());
                    metas.push(meta);
                    metas.len() - 1
                }
            };
            local.push(index);
        }
        for kg in overlap.iter() {
            let slot = range
                .index_of(kg)
                .expect("the overlap lies within the backend's range");
            if let Some(first) = covered[slot] {
                return Err(Error::IncompatibleSnapshot(format!(
                    "key group {kg} is covered by source {first} and by source {source_index}"
                )));
            }
            covered[slot] = Some(source_index);
            let mut failure = None;
            source.read_key_group(kg, &mut |state_index, e| {
                if failure.is_some() {
                    return;
                }
                let Some(&index) = local.get(state_index) else {
                    failure = Some(Error::IncompatibleSnapshot(format!(
                        "source {source_index} is inconsistent: an entry of key group {kg} names \
                         state {state_index}, which the source does not have"
                    )));
                    return;
                };
                let actual = key_group_for(&e.key, max_parallelism);
                if actual != kg {
                    failure = Some(Error::IncompatibleSnapshot(format!(
                        "source {source_index} is inconsistent: an entry of state '{}' stored in \
                         key group {kg} has a key of key group {actual}",
                        metas[index].name
                    )));
                    return;
                }
                if let Err(e) = sink.entry(index, kg, e) {
                    failure = Some(e);
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }
    Ok(())
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
