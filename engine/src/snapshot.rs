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
    /// The number of (key, namespace) entries in the view (a count in memory for the heap
    /// backend; a scan of the view for the LSM backend, which may fail reading a table).
    fn entry_count(&self) -> Result<usize>;
    /// Calls `visit` with every entry of key group `key_group`, in no particular order.
    /// Key groups outside the backend's range have no entries. Fails if the view cannot be
    /// read (an LSM table that is damaged or unreadable).
    fn visit_key_group(&self, key_group: u16, visit: &mut dyn FnMut(EncodedEntry)) -> Result<()>;

    /// Appends every entry of `key_group` to `run`, encoded (the same content as
    /// [`visit_key_group`](Self::visit_key_group), without an allocation per entry where the
    /// implementation can avoid it). The asynchronous phase writes files through this.
    fn encode_key_group(&self, key_group: u16, run: &mut EncodedRun) -> Result<()> {
        self.visit_key_group(key_group, &mut |e| run.push_entry(e))
    }

    /// Lets go of the entries of `key_group`: the view may hold none of them afterwards. The
    /// asynchronous phase calls it for each key group it has written when it holds the view
    /// alone, so that the live state stops copying, on its writes, what only the view still
    /// needed (the heap backend's copy-on-write). Default: nothing.
    fn release_key_group(&self, key_group: u16) {
        let _ = key_group;
    }

    /// The state's time-to-live in milliseconds, recorded in a canonical file's meta block
    /// (spec/formats.md 3.3); `None` for a state without one.
    fn ttl_millis(&self) -> Option<std::num::NonZeroU64> {
        None
    }

    /// Whether [`changes_since`](Self::changes_since) can tell what changed since the
    /// backend's snapshot of epoch `epoch` (the heap backend's views with incremental
    /// checkpoints on can, back to the oldest epoch they keep removals for).
    #[doc(hidden)]
    fn tracks_changes_since(&self, epoch: u32) -> bool {
        let _ = epoch;
        false
    }

    /// Visits what changed in `key_group` since the backend's snapshot of epoch `epoch` (for
    /// which [`tracks_changes_since`](Self::tracks_changes_since) holds): each (key,
    /// namespace) written since, with its state, and each one removed since, in no particular
    /// order. The heap backend's incremental checkpoints write this as a delta file.
    #[doc(hidden)]
    fn changes_since(
        &self,
        epoch: u32,
        key_group: u16,
        visit: &mut dyn FnMut(Change),
    ) -> Result<()> {
        let _ = (epoch, key_group, visit);
        Err(crate::Error::InvalidArgument(format!(
            "the view of state '{}' does not track its changes",
            self.meta().name
        )))
    }
}

/// One change of a (key, namespace) entry between two views of a state
/// ([`StateTableSnapshot::changes_since`]).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry is new or its state changed: the whole entry as it is now.
    Changed(EncodedEntry),
    /// The entry was removed.
    Removed {
        /// The key's encoding.
        key: Vec<u8>,
        /// The namespace's encoding.
        namespace: Vec<u8>,
    },
}

/// The encoded entries of one state in one key group, in one buffer: what the asynchronous
/// phase sorts and writes. Reused from key group to key group, so writing a snapshot allocates
/// little per entry.
#[derive(Debug, Default)]
pub struct EncodedRun {
    bytes: Vec<u8>,
    entries: Vec<RunEntry>,
    lists: Vec<Vec<Vec<u8>>>,
    maps: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Scratch of [`sort`](Self::sort), kept between key groups.
    scratch: Vec<RunEntry>,
}

#[derive(Debug, Clone, Copy)]
struct RunEntry {
    /// The first eight key bytes, big-endian and zero-padded: most comparisons end here.
    prefix: u64,
    start: usize,
    key_end: usize,
    ns_end: usize,
    value: RunValue,
}

#[derive(Debug, Clone, Copy)]
enum RunValue {
    /// The value's bytes end here (they start at `ns_end`).
    Bytes(usize),
    List(usize),
    Map(usize),
}

/// One entry of an [`EncodedRun`], borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RunEntryRef<'a> {
    /// The key's encoding.
    pub key: &'a [u8],
    /// The namespace's encoding.
    pub namespace: &'a [u8],
    /// The state's encoding.
    pub state: RunStateRef<'a>,
}

/// The state of one [`RunEntryRef`].
#[derive(Debug, Clone, Copy)]
pub enum RunStateRef<'a> {
    /// A value, reducing value or accumulator.
    Value(&'a [u8]),
    /// The elements of a list.
    List(&'a [Vec<u8>]),
    /// The (user key, value) pairs of a map, ordered by user-key bytes.
    Map(&'a [(Vec<u8>, Vec<u8>)]),
}

impl EncodedRun {
    /// Empties the run, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.lists.clear();
        self.maps.clear();
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the run has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn offset(&self) -> usize {
        self.bytes.len()
    }

    /// Appends an entry whose parts `encode` writes into the buffer: key, then namespace, then
    /// (for value-like state) the value, calling `mark` after the key and after the namespace.
    /// Returns after pushing; `value` says what follows the namespace.
    pub fn push_with(
        &mut self,
        encode_key: impl FnOnce(&mut Vec<u8>),
        encode_namespace: impl FnOnce(&mut Vec<u8>),
        value: RunValueSource<'_>,
    ) {
        let start = self.offset();
        encode_key(&mut self.bytes);
        let key_end = self.offset();
        encode_namespace(&mut self.bytes);
        let ns_end = self.offset();
        let value = match value {
            RunValueSource::Encode(encode) => {
                encode(&mut self.bytes);
                RunValue::Bytes(self.offset())
            }
            RunValueSource::State(EncodedState::Value(v)) => {
                self.bytes.extend_from_slice(&v);
                RunValue::Bytes(self.offset())
            }
            RunValueSource::State(EncodedState::List(l)) => {
                self.lists.push(l);
                RunValue::List(self.lists.len() - 1)
            }
            RunValueSource::State(EncodedState::Map(m)) => {
                self.maps.push(m);
                RunValue::Map(self.maps.len() - 1)
            }
        };
        let key = &self.bytes[start..key_end];
        // A fixed-size copy for keys of eight bytes or more (most keys): it compiles to one
        // load, where a copy of a variable length is a call to `memcpy`.
        let prefix = match key.first_chunk::<8>() {
            Some(head) => u64::from_be_bytes(*head),
            None => {
                let mut head = [0u8; 8];
                head[..key.len()].copy_from_slice(key);
                u64::from_be_bytes(head)
            }
        };
        self.entries.push(RunEntry {
            prefix,
            start,
            key_end,
            ns_end,
            value,
        });
    }

    /// Appends an already encoded entry.
    pub fn push_entry(&mut self, entry: EncodedEntry) {
        let EncodedEntry {
            key,
            namespace,
            state,
        } = entry;
        self.push_with(
            |b| b.extend_from_slice(&key),
            |b| b.extend_from_slice(&namespace),
            RunValueSource::State(state),
        );
    }

    fn key(&self, e: &RunEntry) -> &[u8] {
        &self.bytes[e.start..e.key_end]
    }

    fn namespace(&self, e: &RunEntry) -> &[u8] {
        &self.bytes[e.key_end..e.ns_end]
    }

    /// Sorts the entries by (key bytes, namespace bytes), the order of the canonical file.
    pub fn sort(&mut self) {
        // Radix-sort the entries by their 8-byte key prefix, then order each run of equal
        // prefixes by the full key and namespace: most keys differ in their first eight bytes,
        // so most of the work is the radix passes, which read and write the entries in
        // sequence (a sort of (prefix, position) pairs followed by a gather would read them in
        // random order, a cache miss each once a key group outgrows the cache). The writer
        // then reads the entries in sequence too.
        let EncodedRun {
            bytes,
            entries,
            scratch,
            ..
        } = self;
        radix_sort_by_prefix(entries, scratch);
        let key = |e: &RunEntry| &bytes[e.start..e.key_end];
        let namespace = |e: &RunEntry| &bytes[e.key_end..e.ns_end];
        let mut start = 0;
        while start < entries.len() {
            let prefix = entries[start].prefix;
            let mut end = start + 1;
            while end < entries.len() && entries[end].prefix == prefix {
                end += 1;
            }
            if end - start > 1 {
                entries[start..end].sort_unstable_by(|x, y| {
                    key(x)
                        .cmp(key(y))
                        .then_with(|| namespace(x).cmp(namespace(y)))
                });
            }
            start = end;
        }
    }

    /// The entries, in the current order.
    pub fn iter(&self) -> impl Iterator<Item = RunEntryRef<'_>> + '_ {
        self.entries.iter().map(move |e| self.entry_ref(e))
    }

    /// Calls `f` with every entry in the current order until it fails: what
    /// [`iter`](Self::iter) gives, walked inside a loop the compiler inlines whole (the
    /// asynchronous phase's loop per entry).
    #[inline]
    pub fn try_for_each<'s, E>(
        &'s self,
        mut f: impl FnMut(RunEntryRef<'s>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for e in &self.entries {
            f(self.entry_ref(e))?;
        }
        Ok(())
    }

    #[inline]
    fn entry_ref<'a>(&'a self, e: &RunEntry) -> RunEntryRef<'a> {
        RunEntryRef {
            key: self.key(e),
            namespace: self.namespace(e),
            state: match e.value {
                RunValue::Bytes(end) => RunStateRef::Value(&self.bytes[e.ns_end..end]),
                RunValue::List(i) => RunStateRef::List(&self.lists[i]),
                RunValue::Map(i) => RunStateRef::Map(&self.maps[i]),
            },
        }
    }
}

/// Sorts `entries` by their prefix (stable): a least-significant-digit radix sort over the
/// bytes in which the prefixes differ (keys of one key group often share their high bytes),
/// with `scratch` as the second buffer; a comparison sort for a few entries.
fn radix_sort_by_prefix(entries: &mut Vec<RunEntry>, scratch: &mut Vec<RunEntry>) {
    if entries.len() <= 64 {
        entries.sort_by_key(|e| e.prefix);
        return;
    }
    let mut counts = [[0usize; 256]; 8];
    for e in entries.iter() {
        for (byte, count) in counts.iter_mut().enumerate() {
            count[((e.prefix >> (8 * byte)) & 0xff) as usize] += 1;
        }
    }
    let n = entries.len();
    for (byte, count) in counts.iter().enumerate() {
        // Every prefix has the same value in this byte: the pass would not move anything.
        if count.contains(&n) {
            continue;
        }
        let mut offsets = [0usize; 256];
        let mut sum = 0;
        for (offset, &c) in offsets.iter_mut().zip(count.iter()) {
            *offset = sum;
            sum += c;
        }
        // Every element is overwritten below: only the length matters.
        if scratch.len() != n {
            scratch.clear();
            scratch.resize(n, entries[0]);
        }
        for e in entries.iter() {
            let digit = ((e.prefix >> (8 * byte)) & 0xff) as usize;
            scratch[offsets[digit]] = *e;
            offsets[digit] += 1;
        }
        std::mem::swap(entries, scratch);
    }
}

/// What follows the namespace of an entry pushed with [`EncodedRun::push_with`].
pub enum RunValueSource<'a> {
    /// A value-like state, encoded into the run's buffer by the closure.
    Encode(&'a mut dyn FnMut(&mut Vec<u8>)),
    /// A state already encoded.
    State(EncodedState),
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
    pub fn entry_count(&self) -> Result<usize> {
        self.states.iter().map(|s| s.entry_count()).sum()
    }

    /// All entries of state `name` in a sorted map, for comparisons in tests and tools.
    /// `Ok(None)` if no state has that name.
    pub fn canonical_entries(&self, name: &str) -> Result<Option<CanonicalEntries>> {
        let Some(state) = self.state(name) else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        for kg in self.key_group_range.iter() {
            state.visit_key_group(kg, &mut |e| {
                out.insert((kg, e.key, e.namespace), e.state);
            })?;
        }
        Ok(Some(out))
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
            state.visit_key_group(key_group, &mut |entry| visit(index, entry))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_sorts_by_key_then_namespace_bytes_at_every_size() {
        // Keys of every length around the 8-byte prefix, many sharing it (ties decided by the
        // rest of the key and by the namespace), in sizes below and above the comparison-sort
        // cut-off; the radix passes skip bytes all prefixes share.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [0usize, 1, 2, 63, 64, 65, 300, 5000] {
            let mut run = EncodedRun::default();
            let mut expected = Vec::new();
            for i in 0..n {
                let r = next();
                let len = (r % 12) as usize;
                let key: Vec<u8> = (0..len)
                    .map(|j| [0u8, 1, 0xff][(r >> (j * 2)) as usize % 3])
                    .collect();
                let ns = vec![(i % 3) as u8];
                if expected.iter().any(|(k, n, _)| *k == key && *n == ns) {
                    continue;
                }
                expected.push((key.clone(), ns.clone(), i.to_be_bytes().to_vec()));
                run.push_entry(EncodedEntry {
                    key,
                    namespace: ns,
                    state: EncodedState::Value(i.to_be_bytes().to_vec()),
                });
            }
            expected.sort();
            // Twice, so that the kept scratch buffers are reused.
            for _ in 0..2 {
                run.sort();
                let sorted: Vec<_> = run
                    .iter()
                    .map(|e| match e.state {
                        RunStateRef::Value(v) => (e.key.to_vec(), e.namespace.to_vec(), v.to_vec()),
                        _ => unreachable!("only values were pushed"),
                    })
                    .collect();
                assert_eq!(sorted, expected, "{n} entries");
            }
        }
    }
}
