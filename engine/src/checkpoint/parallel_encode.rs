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
    // Asked once: on Linux the answer reads the cgroup's CPU quota from files, which would
    // cost the synchronous phase (where a pending snapshot is made) tens of microseconds.
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
        encoder.add_sorted_entries(
            index as u32,
            run.iter().map(|e| {
                let value = match e.state {
                    RunStateRef::Value(v) => EntryValue::Value(v),
                    RunStateRef::List(l) => EntryValue::List(l),
                    RunStateRef::Map(m) => EntryValue::Map(m),
                };
                (e.key, e.namespace, value)
            }),
        )?;
    }
    Ok(encoder.finish()?)
}

/// Writes every key group of `view` with entries to `writer`, in ascending order, encoding
/// them on `threads` threads (on this thread alone for 1) with encoders made by
/// `new_encoder`, which must match `writer`'s meta and options. Returns the number of key
/// groups written. On an error no new key group starts encoding, the workers stop, and the
/// error of the lowest key group (or of the writer) is returned.
pub(crate) fn write_key_groups<W: Write>(
    view: &StateSnapshot,
    writer: &mut SnapshotWriter<W>,
    threads: usize,
    new_encoder: impl Fn() -> Result<KeyGroupEncoder>,
) -> Result<u64> {
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
        let result = write_in_order(&shared, key_groups.len(), writer);
        if result.is_err() {
            shared.stop();
        }
        result
    })
}

/// Takes the encoded key groups in order from the workers and appends them to `writer`.
fn write_in_order<W: Write>(
    shared: &Shared,
    count: usize,
    writer: &mut SnapshotWriter<W>,
) -> Result<u64> {
    let mut written = 0;
    for index in 0..count {
        let group = shared.take(index)??;
        if group.entries() > 0 {
            writer.add_key_group(&group)?;
            written += 1;
        }
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
