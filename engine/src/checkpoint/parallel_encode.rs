//! The key groups of a canonical snapshot file, encoded on several threads and written in
//! order by one.
//!
//! A key group's blocks depend only on its entries (spec/formats.md section 3: no offset in a
//! block, each block's CRC covers the block alone), so worker threads each take the next key
//! group, gather its entries from the frozen view, sort them and encode them into finished
//! blocks ([`KeyGroupEncoder`]), while the calling thread appends the finished key groups to
//! the file in ascending order ([`SnapshotWriter::add_key_group`]). The file is the same, byte
//! for byte, whatever the number of threads.
//!
//! At most a bounded number of key groups are encoded ahead of the one being written, so the
//! memory held is a few key groups' worth, whatever the size of the state.

use std::io::Write;

use flowstate_formats::snapshot::{EncodedKeyGroup, EntryValue, KeyGroupEncoder, SnapshotWriter};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::snapshot::{EncodedRun, RunStateRef, StateSnapshot};

/// Key groups each worker may encode ahead of the one being written.
const AHEAD_PER_THREAD: usize = 2;

/// The number of threads an asynchronous phase encodes on by default: the machine's available
/// parallelism, at most 2 (an embedder runs many tasks on one machine, each with its own
/// asynchronous phases; the thread that writes the file is one more). 1 means the calling
/// thread encodes and writes alone.
pub fn default_encode_threads() -> usize {
    // Asked once per process: on Linux the answer reads the cgroup's CPU quota from files (tens
    // of microseconds). A pending snapshot asks in its asynchronous phase, never in the
    // synchronous one.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 2)
    })
}

/// Gathers, sorts and encodes the entries of key group `key_group` of every state of `view`
/// into `buffer` (reused), through the per-state `runs`.
fn encode_key_group(
    view: &StateSnapshot,
    key_group: u16,
    runs: &mut [EncodedRun],
    encoder: &mut KeyGroupEncoder,
    buffer: Vec<u8>,
) -> Result<EncodedKeyGroup> {
    encoder.begin(key_group, buffer);
    for (index, (state, run)) in view.states().iter().zip(runs.iter_mut()).enumerate() {
        run.clear();
        state.encode_key_group(key_group, run)?;
        run.sort();
        // The run is sorted by (key, namespace) and holds each pair once (it comes from one
        // map), so the encoder need not compare neighbours.
        let mut sorted = encoder.sorted(index as u32);
        run.try_for_each(|e| {
            let value = match e.state {
                RunStateRef::Value(v) => EntryValue::Value(v),
                RunStateRef::List(l) => EntryValue::List(l),
                RunStateRef::Map(m) => EntryValue::Map(m),
            };
            sorted.push(e.key, e.namespace, value)
        })?;
    }
    Ok(encoder.finish()?)
}

/// Writes every key group of `view` with entries to `writer`, in ascending order, encoding
/// them on `threads` threads (on this thread alone for 1) with encoders made by
/// `new_encoder`, which must match `writer`'s meta and options. Returns the number of key
/// groups written. On an error no new key group starts encoding, the workers stop, and the
/// error of the lowest key group (or of the writer) is returned.
///
/// With `release`, each key group's entries are let go of in the view once written
/// ([`StateTableSnapshot::release_key_group`](crate::StateTableSnapshot::release_key_group)):
/// for a caller that holds the view alone and drops it after.
pub(crate) fn write_key_groups<W: Write>(
    view: &StateSnapshot,
    writer: &mut SnapshotWriter<W>,
    threads: usize,
    release: bool,
    new_encoder: impl Fn() -> Result<KeyGroupEncoder>,
) -> Result<u64> {
    let released = |group: &EncodedKeyGroup| {
        if release && group.entries() > 0 {
            for state in view.states() {
                state.release_key_group(group.key_group());
            }
        }
    };
    let key_groups: Vec<u16> = view.key_group_range().iter().collect();
    let new_runs = || -> Vec<EncodedRun> {
        view.states()
            .iter()
            .map(|_| EncodedRun::default())
            .collect()
    };
    let threads = threads.clamp(1, key_groups.len().max(1));
    if threads == 1 {
        let mut encoder = new_encoder()?;
        let mut runs = new_runs();
        let mut buffer = Vec::new();
        let mut written = 0;
        for &kg in &key_groups {
            let group = encode_key_group(view, kg, &mut runs, &mut encoder, buffer)?;
            if group.entries() > 0 {
                writer.add_key_group(&group)?;
                written += 1;
            }
            released(&group);
            buffer = group.into_bytes();
        }
        return Ok(written);
    }
    let encoders = (0..threads)
        .map(|_| new_encoder())
        .collect::<Result<Vec<_>>>()?;
    let shared = Shared {
        state: Mutex::new(Progress {
            next_claim: 0,
            next_write: 0,
            done: key_groups.iter().map(|_| None).collect(),
            free: Vec::new(),
            stop: false,
            panicked: false,
        }),
        changed: Condvar::new(),
        ahead: threads * AHEAD_PER_THREAD,
    };
    std::thread::scope(|scope| {
        for mut encoder in encoders {
            let (shared, key_groups) = (&shared, &key_groups);
            let mut runs = new_runs();
            scope.spawn(move || {
                let _guard = PanicGuard(shared);
                while let Some((index, buffer)) = shared.claim(key_groups.len()) {
                    let result =
                        encode_key_group(view, key_groups[index], &mut runs, &mut encoder, buffer);
                    shared.finish(index, result);
                }
            });
        }
        let result = write_in_order(&shared, key_groups.len(), writer, released);
        if result.is_err() {
            shared.stop();
        }
        result
    })
}

/// Takes the encoded key groups in order from the workers and appends them to `writer`.
/// Calls `released` with each once written.
fn write_in_order<W: Write>(
    shared: &Shared,
    count: usize,
    writer: &mut SnapshotWriter<W>,
    released: impl Fn(&EncodedKeyGroup),
) -> Result<u64> {
    let mut written = 0;
    for index in 0..count {
        let group = shared.take(index)??;
        if group.entries() > 0 {
            writer.add_key_group(&group)?;
            written += 1;
        }
        released(&group);
        shared.recycle(group.into_bytes());
    }
    Ok(written)
}

/// What the workers and the writing thread share.
struct Shared {
    state: Mutex<Progress>,
    /// Signalled whenever `state` changes.
    changed: Condvar,
    /// How many key groups may be claimed beyond the one being written.
    ahead: usize,
}

struct Progress {
    /// The index of the next key group to encode.
    next_claim: usize,
    /// The index of the next key group to write.
    next_write: usize,
    /// Encoded key groups (or their errors) not yet written, by index.
    done: Vec<Option<Result<EncodedKeyGroup>>>,
    /// Buffers of written key groups, for the workers to reuse.
    free: Vec<Vec<u8>>,
    /// Whether to start no further key group (an error, or the writer gave up).
    stop: bool,
    /// Whether a worker panicked (its key group will never come).
    panicked: bool,
}

impl Shared {
    /// The next key group to encode and a buffer for it, once it is within reach of the
    /// writer; `None` when there is none left or the work stopped.
    fn claim(&self, count: usize) -> Option<(usize, Vec<u8>)> {
        let mut state = self.state.lock();
        loop {
            if state.stop || state.next_claim >= count {
                return None;
            }
            if state.next_claim < state.next_write + self.ahead {
                let index = state.next_claim;
                state.next_claim += 1;
                let buffer = state.free.pop().unwrap_or_default();
                return Some((index, buffer));
            }
            self.changed.wait(&mut state);
        }
    }

    /// Hands over the result of key group `index`.
    fn finish(&self, index: usize, result: Result<EncodedKeyGroup>) {
        let mut state = self.state.lock();
        if result.is_err() {
            state.stop = true;
        }
        state.done[index] = Some(result);
        self.changed.notify_all();
    }

    /// Waits for key group `index` (every key group before it was taken) and takes it. A
    /// claimed key group always comes: a worker finishes what it claimed before it stops.
    fn take(&self, index: usize) -> Result<Result<EncodedKeyGroup>> {
        let mut state = self.state.lock();
        loop {
            if let Some(result) = state.done[index].take() {
                state.next_write = index + 1;
                self.changed.notify_all();
                return Ok(result);
            }
            if state.panicked {
                // The scope passes the worker's panic on once this thread returns.
                return Err(Error::Io {
                    path: "(snapshot encoder thread)".into(),
                    source: std::io::Error::other("a thread encoding key groups panicked"),
                });
            }
            self.changed.wait(&mut state);
        }
    }

    /// Returns a written key group's buffer for reuse.
    fn recycle(&self, buffer: Vec<u8>) {
        self.state.lock().free.push(buffer);
    }

    /// Starts no further key group.
    fn stop(&self) {
        self.state.lock().stop = true;
        self.changed.notify_all();
    }
}

/// Tells the writing thread that a worker panicked, so that it stops waiting for the key
/// group the worker held (the scope then passes the panic on).
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.state.lock();
            state.stop = true;
            state.panicked = true;
            self.0.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use flowstate_formats::checkpoint::FileOrigin;
    use flowstate_formats::snapshot::{SnapshotWriter, SnapshotWriterOptions};
    use flowstate_formats::Compression;

    use crate::checkpoint::{add_run, snapshot_meta, write_canonical_on};
    use crate::error::Error;
    use crate::snapshot::{EncodedRun, StateSnapshot};
    use crate::*;

    /// The file as the writer streamed it before key groups were encoded apart: each key
    /// group's runs gathered, sorted and added entry by entry, every rule checked.
    fn streamed(view: &StateSnapshot, compression: Compression) -> Vec<u8> {
        let meta = snapshot_meta(view);
        let options = SnapshotWriterOptions {
            compression,
            file_name: "f".into(),
            origin: None,
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut writer = SnapshotWriter::with_options(&mut out, &meta, options).unwrap();
        let mut runs: Vec<EncodedRun> = view
            .states()
            .iter()
            .map(|_| EncodedRun::default())
            .collect();
        for kg in view.key_group_range().iter() {
            for (state, run) in view.states().iter().zip(runs.iter_mut()) {
                run.clear();
                state.encode_key_group(kg, run).unwrap();
                run.sort();
            }
            if runs.iter().all(EncodedRun::is_empty) {
                continue;
            }
            writer.begin_key_group(kg).unwrap();
            for (index, run) in runs.iter().enumerate() {
                add_run(&mut writer, index as u32, run).unwrap();
            }
            writer.end_key_group().unwrap();
        }
        writer.finish().unwrap();
        out
    }

    #[test]
    fn any_number_of_threads_writes_the_bytes_of_the_single_threaded_file() {
        // 64 key groups, 40 keys: many key groups are empty, others hold several keys; three
        // states of the three shapes, with namespaces, so entries share key prefixes.
        let config = BackendConfig::heap()
            .max_parallelism(64)
            .key_group_range(KeyGroupRange::new(0, 63).unwrap());
        let mut b = Backend::<u64>::open(config).unwrap();
        let value = b
            .register(ValueStateDescriptor::<u64>::new("value").with_namespace::<u8>())
            .unwrap();
        let list = b
            .register(ListStateDescriptor::<String>::new("list"))
            .unwrap();
        let map = b
            .register(MapStateDescriptor::<u32, u64>::new("map"))
            .unwrap();
        for k in 0..40u64 {
            b.set_current_key(&(k * 1_000_003));
            for ns in 0..(k % 4) as u8 {
                b.value(&value)
                    .namespace(&ns)
                    .update(k * 7 + u64::from(ns))
                    .unwrap();
            }
            if k % 3 == 0 {
                b.list(&list).add(format!("element {k}")).unwrap();
                b.list(&list).add(String::new()).unwrap();
            }
            for uk in (0..(k % 5) as u32).rev() {
                b.map(&map).put(uk * 1000, k).unwrap();
            }
        }
        let view = b.snapshot_state().unwrap();
        let empty = view
            .key_group_range()
            .iter()
            .filter(|&kg| {
                view.states().iter().all(|s| {
                    let mut run = EncodedRun::default();
                    s.encode_key_group(kg, &mut run).unwrap();
                    run.is_empty()
                })
            })
            .count();
        assert!(empty > 0 && empty < 60, "{empty} empty key groups");
        for compression in [Compression::None, Compression::Lz4] {
            let expected = streamed(&view, compression);
            for threads in [0, 1, 2, 3, 8, 100] {
                let mut out = Vec::new();
                let stats =
                    write_canonical_on(&view, &mut out, compression, "f", None, threads).unwrap();
                assert_eq!(out, expected, "{threads} threads, {compression:?}");
                assert_eq!(stats.key_groups, 64 - empty as u64);
                assert_eq!(stats.bytes, expected.len() as u64);
            }
        }
        // With an origin too (the meta block grows; the key groups move, unchanged).
        let origin = FileOrigin {
            kind: flowstate_formats::checkpoint::OriginKind::Checkpoint,
            id: 7,
            name: "task-0".into(),
        };
        let (mut one, mut two) = (Vec::new(), Vec::new());
        write_canonical_on(
            &view,
            &mut one,
            Compression::None,
            "f",
            Some(origin.clone()),
            1,
        )
        .unwrap();
        write_canonical_on(&view, &mut two, Compression::None, "f", Some(origin), 2).unwrap();
        assert_eq!(one, two);
    }

    #[test]
    fn a_failing_output_is_an_error_with_every_thread_count() {
        struct Failing(usize);
        impl std::io::Write for Failing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 < buf.len() {
                    return Err(std::io::Error::other("disk full"));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let config = BackendConfig::heap()
            .max_parallelism(128)
            .key_group_range(KeyGroupRange::new(0, 127).unwrap());
        let mut b = Backend::<u64>::open(config).unwrap();
        let value = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in 0..5_000u64 {
            b.set_current_key(&k);
            b.value(&value).update(k).unwrap();
        }
        let view = b.snapshot_state().unwrap();
        for threads in [1, 2, 4] {
            for room in [0, 100, 20_000] {
                let err =
                    write_canonical_on(&view, Failing(room), Compression::None, "f", None, threads)
                        .unwrap_err();
                assert!(err.to_string().contains("disk full"), "{err}");
            }
        }
    }

    #[test]
    fn key_groups_released_while_the_task_writes_leave_the_file_and_the_live_state_right() {
        use std::sync::Arc;
        let config = BackendConfig::heap()
            .max_parallelism(32)
            .key_group_range(KeyGroupRange::new(0, 31).unwrap());
        let mut b = Backend::<u64>::open(config).unwrap();
        let value = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in 0..20_000u64 {
            b.set_current_key(&k);
            b.value(&value).update(k).unwrap();
        }
        let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
        for threads in [1, 2] {
            let id = CheckpointId(threads as u64);
            let pending = b
                .snapshot(id, &storage, "task")
                .unwrap()
                .with_encode_threads(threads);
            // A second view of the same instant, for comparison: it is another view object,
            // which the pending snapshot's releases do not touch (and which does not stop them:
            // the pending snapshot holds its own views alone).
            let reference = b.snapshot_state().unwrap();
            let expected = reference.canonical_entries("v").unwrap().unwrap();
            drop(reference);
            let writer = std::thread::spawn(move || pending.run());
            // Overwrite every key while the key groups are written and released.
            for k in 0..20_000u64 {
                b.set_current_key(&k);
                b.value(&value)
                    .update(k + 1_000_000 * threads as u64)
                    .unwrap();
            }
            let result = writer.join().unwrap().unwrap();
            assert_eq!(result.stats.entries, 20_000);
            let files = FileRestoreSource::open_all(&*storage, &[result.handle]).unwrap();
            let mut found = std::collections::BTreeMap::new();
            for kg in 0..32 {
                files[0]
                    .read_key_group(kg, &mut |_, e| {
                        found.insert((kg, e.key, e.namespace), e.state);
                    })
                    .unwrap();
            }
            assert_eq!(found, expected, "{threads} threads");
            for k in (0..20_000u64).step_by(997) {
                b.set_current_key(&k);
                assert_eq!(
                    b.value(&value).get().unwrap(),
                    Some(k + 1_000_000 * threads as u64)
                );
            }
        }
    }

    /// A view of one value state whose key groups each hold one entry, failing (an error, or a
    /// panic) when key group `bad` is read.
    struct Faulty {
        meta: crate::state::StateMeta,
        bad: u16,
        panic: bool,
    }

    impl crate::snapshot::StateTableSnapshot for Faulty {
        fn meta(&self) -> &crate::state::StateMeta {
            &self.meta
        }
        fn entry_count(&self) -> crate::Result<usize> {
            Ok(64)
        }
        fn visit_key_group(
            &self,
            key_group: u16,
            visit: &mut dyn FnMut(crate::snapshot::EncodedEntry),
        ) -> crate::Result<()> {
            if key_group == self.bad {
                if self.panic {
                    panic!("reading key group {key_group}");
                }
                return Err(Error::InvalidArgument(format!(
                    "key group {key_group} is unreadable"
                )));
            }
            visit(crate::snapshot::EncodedEntry {
                key: key_group.to_be_bytes().to_vec(),
                namespace: Vec::new(),
                state: crate::snapshot::EncodedState::Value(vec![1, 2, 3]),
            });
            Ok(())
        }
    }

    fn faulty_view(bad: u16, panic: bool) -> StateSnapshot {
        let codec = |name: &str| crate::state::CodecInfo {
            name: name.into(),
            version: 1,
        };
        let meta = crate::state::StateMeta {
            name: "v".into(),
            kind: crate::state::StateKind::Value,
            namespace: codec("unit"),
            value: codec("bytes"),
            user_key: None,
        };
        StateSnapshot::new(
            64,
            KeyGroupRange::new(0, 63).unwrap(),
            codec("bytes"),
            vec![std::sync::Arc::new(Faulty { meta, bad, panic })],
        )
    }

    #[test]
    fn a_key_group_that_fails_to_read_is_the_error_whatever_the_threads() {
        for threads in [1, 2, 5] {
            for bad in [0, 17, 63] {
                let err = write_canonical_on(
                    &faulty_view(bad, false),
                    Vec::new(),
                    Compression::None,
                    "f",
                    None,
                    threads,
                )
                .unwrap_err();
                assert!(
                    err.to_string()
                        .contains(&format!("key group {bad} is unreadable")),
                    "{threads} threads: {err}"
                );
            }
        }
    }

    #[test]
    fn a_panicking_encoder_thread_panics_the_write_instead_of_hanging_it() {
        for threads in [2, 5] {
            let view = faulty_view(9, true);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_canonical_on(&view, Vec::new(), Compression::None, "f", None, threads)
            }));
            assert!(
                result.is_err(),
                "{threads} threads: the panic reached the caller"
            );
        }
    }
}
