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
    let key_codec = CodecInfo::of::<K>();
    let mut states: Vec<(StateMeta, Vec<Vec<EncodedEntry>>)> = Vec::new();
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
                    if states[i].0 != meta {
                        return Err(Error::IncompatibleSnapshot(format!(
                            "state '{}' is {} in one source and {} in another",
                            meta.name, states[i].0, meta
                        )));
                    }
                    i
                }
                None => {
                    by_name.insert(meta.name.clone(), states.len());
                    states.push((meta, vec![Vec::new(); range.len()]));
                    states.len() - 1
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
            source.read_key_group(kg, &mut |state_index, entry| {
                if failure.is_some() {
                    return;
                }
                let Some(&index) = local.get(state_index) else {
                    failure = Some(format!(
                        "an entry of key group {kg} names state {state_index}, which the source does not have"
                    ));
                    return;
                };
                let actual = key_group_for(&entry.key, max_parallelism);
                if actual != kg {
                    failure = Some(format!(
                        "an entry of state '{}' stored in key group {kg} has a key of key group {actual}",
                        states[index].0.name
                    ));
                    return;
                }
                states[index].1[slot].push(entry);
            })?;
            if let Some(reason) = failure {
                return Err(Error::IncompatibleSnapshot(format!(
                    "source {source_index} is inconsistent: {reason}"
                )));
            }
        }
    }
    Ok(states
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
