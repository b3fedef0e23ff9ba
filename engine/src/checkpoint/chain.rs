//! A heap backend's incremental checkpoint read back: its chain of shared files, a full
//! canonical file (the base) and delta files (spec/formats.md 3.11), replayed key group by key
//! group into the state of the last delta ([`ChainRestoreSource`]).

use std::collections::BTreeMap;

use flowstate_formats::checkpoint::KeyedHandleKind;
use flowstate_formats::snapshot::SnapshotReader;

use super::write::{encoded_state, state_metas};
use super::{CheckpointStorage, KeyedStateHandle};
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::{EncodedEntry, EncodedState, RestoreSource};
use crate::state::{CodecInfo, StateMeta};
use crate::storage::ReadableFile;

/// One file of a chain: its reader and, per state index of the file, the state's index in the
/// chain's last file.
struct Link {
    reader: SnapshotReader<Box<dyn ReadableFile>>,
    states: Vec<usize>,
}

/// The chain of a heap incremental checkpoint's handle as one [`RestoreSource`]: a key group
/// is read from the base, then from each delta in order (a changed entry replaces its
/// (state, key, namespace), a removal deletes it), and handed on in (state, key, namespace)
/// order. Only the key groups asked for are read, from every file of the chain.
pub struct ChainRestoreSource {
    links: Vec<Link>,
    metas: Vec<StateMeta>,
    key_codec: CodecInfo,
    range: KeyGroupRange,
}

impl std::fmt::Debug for ChainRestoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainRestoreSource")
            .field("files", &self.links.len())
            .field("range", &self.range)
            .finish()
    }
}

impl ChainRestoreSource {
    /// The meta block of the chain's last file, which lists every state of the chain (with its
    /// TTL).
    pub fn snapshot_meta(&self) -> &flowstate_formats::snapshot::SnapshotMeta {
        // `open` refuses a chain without files.
        self.links
            .last()
            .map(|l| l.reader.meta())
            .expect("a chain restore source holds at least one file")
    }

    /// Opens every file of the chain of `handle` (kind heap chain), checking each file's size
    /// and checksum, that the first is a full file and the others its deltas in order (the same
    /// base checkpoint, positions 1, 2, …), and that all agree on max parallelism, key codec,
    /// key-group range and the states they share.
    pub fn open(storage: &dyn CheckpointStorage, handle: &KeyedStateHandle) -> Result<Self> {
        if handle.kind() != KeyedHandleKind::HeapChain {
            return Err(Error::InvalidArgument(
                "a chain restore needs the handle of a heap incremental checkpoint".into(),
            ));
        }
        let chain = handle.shared_files();
        let mut readers = Vec::with_capacity(chain.len());
        let mut chain_base: Option<u64> = None;
        for (position, file) in chain.iter().enumerate() {
            let source = storage.open_state_file(file)?;
            let reader = SnapshotReader::open(source, file.path())?;
            file.check_origin(reader.origin())?;
            let bad = |reason: String| {
                Error::IncompatibleSnapshot(format!(
                    "{} (file {} of a chain of {}): {reason}",
                    file.path(),
                    position + 1,
                    chain.len()
                ))
            };
            match (position, reader.delta()) {
                (0, None) => {}
                (0, Some(_)) => return Err(bad("the chain starts with a delta file".into())),
                (_, None) => return Err(bad("a full file after the chain's base".into())),
                (_, Some(delta)) => {
                    if delta.position as usize != position {
                        return Err(bad(format!(
                            "delta number {} where the chain has number {position}",
                            delta.position
                        )));
                    }
                    let first = *chain_base.get_or_insert(delta.base_checkpoint);
                    if delta.base_checkpoint != first {
                        return Err(bad(format!(
                            "a delta of the base of checkpoint {}, the chain's is {first}",
                            delta.base_checkpoint
                        )));
                    }
                }
            }
            readers.push(reader);
        }
        let Some(last) = readers.last() else {
            return Err(Error::IncompatibleSnapshot(
                "a heap chain handle lists no file".into(),
            ));
        };
        let (metas, key_codec) = state_metas(last.meta());
        let range = KeyGroupRange::new(last.meta().key_group_start, last.meta().key_group_end)?;
        if range != handle.key_group_range() {
            return Err(Error::IncompatibleSnapshot(format!(
                "{} covers key groups {range}, its handle {}",
                last.file_name(),
                handle.key_group_range()
            )));
        }
        let max_parallelism = last.meta().max_parallelism;
        let mut links = Vec::with_capacity(readers.len());
        for reader in readers {
            let meta = reader.meta();
            let (file_metas, file_codec) = state_metas(meta);
            let same_frame = meta.max_parallelism == max_parallelism
                && file_codec == key_codec
                && KeyGroupRange::new(meta.key_group_start, meta.key_group_end)? == range;
            if !same_frame {
                return Err(Error::IncompatibleSnapshot(format!(
                    "{}: max parallelism, key codec or key-group range differ within the chain",
                    reader.file_name()
                )));
            }
            let mut states = Vec::with_capacity(file_metas.len());
            for m in &file_metas {
                let Some(index) = metas.iter().position(|n| n == m) else {
                    return Err(Error::IncompatibleSnapshot(format!(
                        "{}: state '{}' ({m}) is not in the chain's last file as it is here",
                        reader.file_name(),
                        m.name
                    )));
                };
                states.push(index);
            }
            links.push(Link { reader, states });
        }
        Ok(ChainRestoreSource {
            links,
            metas,
            key_codec,
            range,
        })
    }

    /// The number of files in the chain (the base and its deltas).
    pub fn chain_len(&self) -> usize {
        self.links.len()
    }
}

impl RestoreSource for ChainRestoreSource {
    fn max_parallelism(&self) -> u32 {
        self.links
            .first()
            .map_or(0, |l| l.reader.meta().max_parallelism)
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    fn key_codec(&self) -> &CodecInfo {
        &self.key_codec
    }
    fn state_metas(&self) -> Vec<StateMeta> {
        self.metas.clone()
    }
    fn read_key_group(
        &self,
        key_group: u16,
        visit: &mut dyn FnMut(usize, EncodedEntry),
    ) -> Result<()> {
        if !self.range.contains(key_group) {
            return Ok(());
        }
        let mut state: BTreeMap<(usize, Vec<u8>, Vec<u8>), EncodedState> = BTreeMap::new();
        for link in &self.links {
            link.reader.read_key_group::<Error>(key_group, |e| {
                let index = link
                    .states
                    .get(e.state_index as usize)
                    .copied()
                    .ok_or_else(|| {
                        Error::IncompatibleSnapshot(format!(
                            "{}: an entry of state {}, which the file does not list",
                            link.reader.file_name(),
                            e.state_index
                        ))
                    })?;
                let at = (index, e.key.to_vec(), e.namespace.to_vec());
                match encoded_state(&e.value) {
                    Some(s) => {
                        state.insert(at, s);
                    }
                    None => {
                        state.remove(&at);
                    }
                }
                Ok(())
            })?;
        }
        for ((index, key, namespace), state) in state {
            visit(
                index,
                EncodedEntry {
                    key,
                    namespace,
                    state,
                },
            );
        }
        Ok(())
    }
}
