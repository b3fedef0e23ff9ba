#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Heap checkpoints: the asynchronous phase against writing the same bytes to the same directory
//! (with the same sync-and-rename publication), restore and rescale restore against reading the
//! same files sequentially, updates while the asynchronous phase runs, and the synchronous phase
//! of a real checkpoint at 1 and 10 million entries.
//!
//! The asynchronous phase runs at 2 and 10 million entries (`ASYNC_ENTRIES`, or the
//! comma-separated counts in the environment variable `FLOWSTATE_ASYNC_ENTRIES`), with the
//! default number of encode threads and with one, beside a raw write of the same bytes.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowstate::*;
use flowstate_benches::*;

const MAXP: u32 = 128;
const ENTRIES: usize = 1_000_000;

fn loaded(entries: usize) -> (Backend<u64>, ValueState<u64>) {
    let mut backend = Backend::<u64>::open(BackendConfig::heap().max_parallelism(MAXP))
        .expect("a valid configuration");
    let state = backend
        .register(ValueStateDescriptor::<u64>::new("value"))
        .expect("registration of a new state succeeds");
    for k in 0..entries as u64 {
        backend.set_current_key(&k);
        backend
            .value(&state)
            .update(k)
            .expect("the key group is owned");
    }
    (backend, state)
}

fn storage(dir: &std::path::Path) -> Arc<dyn CheckpointStorage> {
    Arc::new(
        FsCheckpointStorage::open_local(dir, FsCheckpointOptions::default().with_retained(1))
            .expect("checkpoint storage in a temporary directory"),
    )
}

/// Writes `len` bytes to a new file in `dir` the way a state file is published: buffered
/// writes, fsync, rename, fsync of the directory.
fn raw_write(dir: &std::path::Path, len: u64, chunk: &[u8]) {
    let tmp = dir.join("raw.tmp");
    let mut f = std::fs::File::create(&tmp).expect("a file in the temporary directory");
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).expect("the write succeeds");
        left -= n as u64;
    }
    f.sync_all().expect("fsync succeeds");
    std::fs::rename(&tmp, dir.join("raw")).expect("rename succeeds");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("directory fsync succeeds");
}

/// The time of `iters` asynchronous phases of `backend`'s checkpoints (ids from `id` on,
/// each aborted after), the synchronous phases left out.
fn timed_async_phases(
    backend: &mut Backend<u64>,
    storage: &Arc<dyn CheckpointStorage>,
    id: &mut u64,
    iters: u64,
    compression: Compression,
    threads: usize,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        *id += 1;
        let pending = backend
            .snapshot(CheckpointId(*id), storage, "task")
            .expect("the synchronous phase succeeds")
            .with_compression(compression)
            .with_encode_threads(threads);
        let t = Instant::now();
        pending.run().expect("the asynchronous phase succeeds");
        total += t.elapsed();
        storage
            .abort_checkpoint(CheckpointId(*id))
            .expect("abort succeeds");
    }
    total
}

/// The entry counts of the heap asynchronous-phase rows.
const ASYNC_ENTRIES: [usize; 2] = [2_000_000, 10_000_000];

fn async_entries() -> Vec<usize> {
    std::env::var("FLOWSTATE_ASYNC_ENTRIES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| ASYNC_ENTRIES.to_vec())
}

fn async_phase(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = storage(dir.path());
    let mut id = 0u64;
    let threads = checkpoint::default_encode_threads();
    let chunk = vec![0x5a_u8; 1 << 20];
    for entries in async_entries() {
        let (mut backend, _) = loaded(entries);
        // One run to learn the file size.
        id += 1;
        let probe = backend
            .snapshot(CheckpointId(id), &storage, "task")
            .and_then(|p| p.run())
            .expect("the asynchronous phase succeeds");
        let bytes = probe.stats.bytes;
        storage
            .abort_checkpoint(CheckpointId(id))
            .expect("abort succeeds");
        eprintln!(
            "checkpoint: {entries} entries -> {bytes} bytes per snapshot file; {threads} encode \
             threads by default"
        );
        let mut g = c.benchmark_group("checkpoint");
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(5))
            .sample_size(10)
            .throughput(Throughput::Bytes(bytes));
        for (name, compression, threads) in [
            ("none", Compression::None, threads),
            ("none_1_thread", Compression::None, 1),
            ("lz4", Compression::Lz4, threads),
        ] {
            g.bench_function(
                BenchmarkId::new(format!("async_phase_{name}/flowstate"), entries),
                |b| {
                    b.iter_custom(|iters| {
                        timed_async_phases(
                            &mut backend,
                            &storage,
                            &mut id,
                            iters,
                            compression,
                            threads,
                        )
                    })
                },
            );
        }
        drop(backend);
        g.bench_function(BenchmarkId::new("async_phase/raw_write", entries), |b| {
            b.iter(|| raw_write(dir.path(), bytes, &chunk))
        });
        g.finish();
    }
    // The same state in an LSM backend, flushed and compacted into tables: the asynchronous
    // phase scans the frozen tree key group by key group into the same canonical file.
    let mut g = c.benchmark_group("checkpoint");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    let lsm_dir = dir.path().join("lsm-async");
    let mut lsm = Backend::<u64>::open(
        BackendConfig::lsm(&lsm_dir)
            .max_parallelism(MAXP)
            .lsm_incremental_checkpoints(false),
    )
    .expect("a valid configuration");
    let state = lsm
        .register(ValueStateDescriptor::<u64>::new("value"))
        .expect("a new state");
    for k in 0..ENTRIES as u64 {
        lsm.set_current_key(&k);
        lsm.value(&state).update(k).expect("the key group is owned");
    }
    if let Backend::Lsm(l) = &mut lsm {
        l.flush_and_compact().expect("flushes succeed");
    }
    g.bench_function(BenchmarkId::new("async_phase_none/lsm", ENTRIES), |b| {
        b.iter_custom(|iters| {
            timed_async_phases(&mut lsm, &storage, &mut id, iters, Compression::None, 1)
        })
    });
    g.finish();
}

fn restore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = storage(dir.path());
    let (mut backend, _) = loaded(ENTRIES);
    let result = backend
        .snapshot(CheckpointId(1), &storage, "task")
        .and_then(|p| p.run())
        .expect("the asynchronous phase succeeds");
    let done = storage
        .complete_checkpoint(
            CheckpointId(1),
            vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(result.handle)],
        )
        .expect("completion succeeds");
    let bytes = result.stats.bytes;
    let path = dir
        .path()
        .join(done.files().next().expect("one file").path());

    let mut g = c.benchmark_group("checkpoint");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10)
        .throughput(Throughput::Elements(ENTRIES as u64));
    // The LSM backend restores the same file by writing tables and ingesting them; beside it
    // (below), the same entries written through an LSM backend's memtable, flushed and
    // compacted (what its restore did before ingestion).
    let lsm_dir = dir.path().join("lsm-restore");
    for (label, parallelism) in [("restore_full", 1u32), ("restore_rescale_1_of_3", 3)] {
        let range = KeyGroupRange::for_operator(MAXP, parallelism, 0).expect("a valid split");
        for backend in ["flowstate", "lsm"] {
            g.bench_function(
                BenchmarkId::new(format!("{label}/{backend}"), ENTRIES),
                |b| {
                    b.iter(|| {
                        let sources =
                            FileRestoreSource::open_all(&*storage, &done.handles_for(range))
                                .expect("the files open");
                        let sources: Vec<&dyn RestoreSource> =
                            sources.iter().map(|s| s as _).collect();
                        let config = match backend {
                            "lsm" => BackendConfig::lsm(&lsm_dir),
                            _ => BackendConfig::heap(),
                        };
                        let config = config.max_parallelism(MAXP).key_group_range(range);
                        let mut restored =
                            Backend::<u64>::restore(config, &sources).expect("restore succeeds");
                        restored
                            .register(ValueStateDescriptor::<u64>::new("value"))
                            .expect("the state types match");
                        restored
                    })
                },
            );
        }
    }
    g.bench_function(
        BenchmarkId::new("restore_full/lsm_through_the_memtable", ENTRIES),
        |b| {
            b.iter(|| {
                let config = BackendConfig::lsm(&lsm_dir).max_parallelism(MAXP);
                let mut lsm = LsmBackend::<u64>::open(config).expect("a valid configuration");
                let state = lsm
                    .register(ValueStateDescriptor::<u64>::new("value"))
                    .expect("a new state");
                for k in 0..ENTRIES as u64 {
                    lsm.set_current_key(&k);
                    lsm.value(&state).update(k).expect("the key group is owned");
                }
                lsm.flush_and_compact().expect("flushes succeed");
                lsm
            })
        },
    );
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(
        BenchmarkId::new("restore/sequential_read_of_the_file", ENTRIES),
        |b| {
            b.iter(|| {
                let mut buf = Vec::with_capacity(bytes as usize);
                std::fs::File::open(&path)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .expect("the file reads");
                buf
            })
        },
    );
    g.finish();
}

/// Update throughput on the task thread while the asynchronous phase writes the snapshot on
/// another thread, against the same updates with no snapshot.
fn updates_during_async_phase(c: &mut Criterion) {
    const ROUND: u64 = 200_000;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = storage(dir.path());
    let (mut backend, state) = loaded(ENTRIES);
    let keys = shuffled_keys(ENTRIES, 3);
    let mut g = c.benchmark_group("checkpoint");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10)
        .throughput(Throughput::Elements(ROUND));
    let mut id = 100u64;
    let default_threads = checkpoint::default_encode_threads();
    for (writing, threads) in [(false, 1), (true, default_threads), (true, 1)] {
        let name = match (writing, threads) {
            (false, _) => "updates_without_snapshot".to_owned(),
            (true, 1) => "updates_during_async_phase_1_thread".to_owned(),
            (true, n) => format!("updates_during_async_phase_{n}_threads"),
        };
        let mut cur = Cycle::new(&keys);
        g.bench_function(BenchmarkId::new(name, ENTRIES), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    id += 1;
                    let writer = writing.then(|| {
                        let pending = backend
                            .snapshot(CheckpointId(id), &storage, "task")
                            .expect("the synchronous phase succeeds")
                            .with_encode_threads(threads);
                        std::thread::spawn(move || pending.run())
                    });
                    let t = Instant::now();
                    for _ in 0..ROUND {
                        let k = cur.next_key();
                        backend.set_current_key(&k);
                        backend.value(&state).update(k ^ 1).expect("owned");
                    }
                    total += t.elapsed();
                    if let Some(w) = writer {
                        w.join()
                            .expect("no panic")
                            .expect("the asynchronous phase succeeds");
                        storage
                            .abort_checkpoint(CheckpointId(id))
                            .expect("abort succeeds");
                    }
                }
                total
            })
        });
    }
    g.finish();
}

fn sync_phase_of_a_real_checkpoint(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = storage(dir.path());
    let mut g = c.benchmark_group("checkpoint");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for entries in [1_000_000usize, 10_000_000] {
        let (mut backend, _) = loaded(entries);
        g.bench_with_input(BenchmarkId::new("sync_phase", entries), &entries, |b, _| {
            b.iter(|| {
                backend
                    .snapshot(CheckpointId(1), &storage, "task")
                    .expect("the synchronous phase succeeds")
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    sync_phase_of_a_real_checkpoint,
    async_phase,
    restore,
    updates_during_async_phase
);
criterion_main!(benches);
