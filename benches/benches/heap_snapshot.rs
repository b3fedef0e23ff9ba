#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The heap backend's snapshot: the synchronous phase at 100 thousand, 1 million and
//! 10 million entries (it must not grow with the entry count), the first write to a key group
//! after a snapshot, and update throughput while a snapshot is held against without one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowstate::*;
use flowstate_benches::*;

const MAXP: u32 = 128;

fn loaded(entries: usize) -> (HeapBackend<u64>, ValueState<u64>) {
    let mut backend = HeapBackend::open(BackendConfig::heap().max_parallelism(MAXP))
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

fn sync_phase(c: &mut Criterion) {
    let mut g = c.benchmark_group("heap_snapshot");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for entries in [100_000usize, 1_000_000, 10_000_000] {
        let (mut backend, state) = loaded(entries);
        let bytes = backend.table_bytes();
        eprintln!(
            "heap_snapshot: {entries} entries of u64 -> u64 value state: {} table bytes, {:.1} bytes/entry",
            bytes,
            bytes as f64 / entries as f64
        );
        g.bench_with_input(BenchmarkId::new("sync_phase", entries), &entries, |b, _| {
            b.iter(|| {
                black_box(
                    backend
                        .snapshot_state()
                        .expect("snapshots of a heap backend succeed"),
                )
            })
        });
        // The first write to a key group after a snapshot copies that key group's bucket
        // pointers and one bucket: the deferred part of the copy-on-write cost.
        let mut k = 0u64;
        g.bench_with_input(
            BenchmarkId::new("first_write_after_snapshot", entries),
            &entries,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let snapshot = backend.snapshot_state().expect("heap snapshot");
                        k = (k + 7919) % entries as u64;
                        backend.set_current_key(&k);
                        let start = Instant::now();
                        backend.value(&state).update(1).expect("owned");
                        total += start.elapsed();
                        drop(snapshot);
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

/// Update throughput right after a snapshot (every bucket written first is copied) against the
/// same updates with no snapshot held. Each round: take a snapshot (untimed), run `ROUND`
/// updates on random keys (timed), drop the snapshot (untimed).
fn updates_while_snapshot_held(c: &mut Criterion) {
    const ENTRIES: usize = 1_000_000;
    const ROUND: u64 = 100_000;
    let (mut backend, state) = loaded(ENTRIES);
    let keys = shuffled_keys(ENTRIES, 9);
    let mut g = c.benchmark_group("heap_snapshot");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .throughput(Throughput::Elements(ROUND));
    for held in [false, true] {
        let name = if held {
            "updates_with_snapshot_held"
        } else {
            "updates_without_snapshot"
        };
        let mut cur = Cycle::new(&keys);
        g.bench_function(BenchmarkId::new(name, ENTRIES), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let snapshot = held.then(|| backend.snapshot_state().expect("heap snapshot"));
                    let start = Instant::now();
                    for _ in 0..ROUND {
                        let k = cur.next_key();
                        backend.set_current_key(&k);
                        backend.value(&state).update(k ^ 1).expect("owned");
                    }
                    total += start.elapsed();
                    drop(snapshot);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sync_phase, updates_while_snapshot_held);
criterion_main!(benches);
