//! The restore walker both backends share: it reads the owned key groups of any number of
//! [`RestoreSource`]s (canonical files, native LSM snapshots read in place, frozen views) after
//! checking that they fit the backend, and hands every entry to a backend's [`RestoreSink`].
//!
//! The heap backend keeps the entries as pending states until they are registered; the LSM
//! backend sorts them into table files. spec/key-groups.md states the rules of a rescale.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::key_group::{key_group_for, KeyGroupRange};
use crate::snapshot::{EncodedEntry, RestoreSource};
use crate::state::{CodecInfo, Key, StateMeta};

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
/// `preset` are states the backend has already (restored otherwise: the LSM backend's linked
/// tables), numbered from 0; `sink.new_state(meta)` is called once per other distinct state
/// name, in order of first appearance, and such states are numbered on from there;
/// `sink.entry(state number, key group, entry)` is called for every entry of an owned key
/// group. The key groups of `restored` were restored otherwise: a source covering one of them
/// too is an error, as two sources covering one key group are.
pub(crate) fn visit_sources<K: Key>(
    max_parallelism: u32,
    range: KeyGroupRange,
    preset: &[StateMeta],
    restored: &[KeyGroupRange],
    sources: &[&dyn RestoreSource],
    sink: &mut dyn RestoreSink,
) -> Result<()> {
    let key_codec = CodecInfo::of::<K>();
    let mut metas: Vec<StateMeta> = preset.to_vec();
    let mut by_name: HashMap<String, usize> = metas
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    // Which source each owned key group was read from: a key group covered twice is an error.
    // Key groups restored otherwise count as covered by a source numbered past the others.
    let mut covered: Vec<Option<usize>> = vec![None; range.len()];
    for r in restored {
        for kg in r.intersection(&range).iter() {
            if let Some(slot) = range.index_of(kg) {
                covered[slot] = Some(usize::MAX);
            }
        }
    }
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
                let first = if first == usize::MAX {
                    "a native snapshot restored by linking its tables".to_string()
                } else {
                    format!("source {first}")
                };
                return Err(Error::IncompatibleSnapshot(format!(
                    "key group {kg} is covered by {first} and by source {source_index}"
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
