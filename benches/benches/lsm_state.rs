#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The workloads of `heap_state` (Flink's state benchmarks) on the LSM backend, each beside the
//! heap backend doing the same work with the same keys in the same run, so that the ratio
//! LSM / heap is meaningful on this noisy machine.
//!
//! Two configurations:
//!
//! - `lsm_fits_cache`: 100,000 keys, `u64` values (lists of 10 `u64`, maps of 10 `u64 -> f64`),
//!   as `heap_state` but with fewer keys. Two LSM variants: `lsm_memtable` (a 1 GiB memtable:
//!   everything stays in the memtable, reads never touch a table) and `lsm_tables` (64 MiB
//!   memtable, 256 MiB block cache; before each read workload the memtable is flushed and due
//!   compactions run, so every read goes through the tables and the block cache, which holds
//!   all of them).
//! - `lsm_exceeds_cache`: 1,000,000 keys with 100-byte values (value state), 1,000,000 lists of
//!   10 `u64`, 1,000,000 maps of 10 `u64 -> f64` (10 M map entries); one LSM variant `lsm` with
//!   a 64 MiB memtable and a 4 MiB block cache, flushed and compacted before each read
//!   workload, so most reads miss the block cache (the table files stay in the OS page cache:
//!   a miss is a `pread` from memory, a block check and LZ4 decompression, not a disk read).
//!
//! Values, list elements and map values are random (derived from the key), so that LZ4 does
//! not shrink the tables below the state's size; otherwise the workloads are `heap_state`'s.
//!
//! Writes go into the memtable as they would in an operator; flushes and compactions run on the
//! backend's own background thread (`LsmBackground::Threads(1)`).
//!
//! `valueAdd` inserts keys that were never written. The heap backend removes them again after
//! each pass outside the timed region (as in `heap_state`); the LSM backend does not, because a
//! removed key leaves a tombstone in the memtable and re-inserting it would be an in-place
//! overwrite, not an insert. Its state grows during `valueAdd`, with the flushes and compactions
//! that causes.
//!
//! After each LSM measurement the block cache's hits and misses over that benchmark (warm-up
//! included) are printed to stderr, and after each preload the shape of the tree.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowstate::lsm::{CacheStats, LsmBackground};
use flowstate::*;
use flowstate_benches::*;
use tempfile::TempDir;

const MAXP: u32 = 128;

/// The most fresh keys inserted per timed pass of `valueAdd` (the heap removes them after it).
const ADD_PASS: u64 = 500_000;

/// How an LSM variant is configured.
#[derive(Clone, Copy)]
struct LsmSettings {
    label: &'static str,
    memtable_bytes: usize,
    cache_bytes: usize,
    /// Flush the memtable and run due compactions before each read workload.
    reads_from_tables: bool,
}

/// One configuration: the group name, key counts and the LSM variants run beside the heap.
struct Setup {
    group: &'static str,
    value_keys: usize,
    list_keys: usize,
    map_keys: usize,
    lsm: &'static [LsmSettings],
}

const FITS_CACHE: Setup = Setup {
    group: "lsm_fits_cache",
    value_keys: 100_000,
    list_keys: 100_000,
    map_keys: 100_000,
    lsm: &[
        LsmSettings {
            label: "lsm_memtable",
            memtable_bytes: 1 << 30,
            cache_bytes: 256 << 20,
            reads_from_tables: false,
        },
        LsmSettings {
            label: "lsm_tables",
            memtable_bytes: 64 << 20,
            cache_bytes: 256 << 20,
            reads_from_tables: true,
        },
    ],
};

const EXCEEDS_CACHE: Setup = Setup {
    group: "lsm_exceeds_cache",
    value_keys: 1_000_000,
    list_keys: 1_000_000,
    map_keys: 1_000_000,
    lsm: &[LsmSettings {
        label: "lsm",
        memtable_bytes: 64 << 20,
        cache_bytes: 4 << 20,
        reads_from_tables: true,
    }],
};

enum Kind {
    Heap(HeapBackend<u64>),
    Lsm(LsmBackend<u64>),
}

/// A backend under test. Fields drop in order: the backend before its directory.
struct Subject {
    label: &'static str,
    kind: Kind,
    reads_from_tables: bool,
    _dir: Option<TempDir>,
}

/// Runs `$body` with `$b` bound to the subject's backend, monomorphised per backend type (no
/// dispatch inside the timed loop).
macro_rules! on {
    ($subject:expr, $b:ident => $body:expr) => {
        match &mut $subject.kind {
            Kind::Heap($b) => $body,
            Kind::Lsm($b) => $body,
        }
    };
}

impl Subject {
    fn heap() -> Subject {
        let backend = HeapBackend::open(BackendConfig::heap().max_parallelism(MAXP))
            .expect("a valid configuration");
        Subject {
            label: "heap",
            kind: Kind::Heap(backend),
            reads_from_tables: false,
            _dir: None,
        }
    }

    fn lsm(settings: &LsmSettings) -> Subject {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = BackendConfig::lsm(dir.path().join("lsm"))
            .max_parallelism(MAXP)
            .lsm_memtable_bytes(settings.memtable_bytes)
            .lsm_block_cache_bytes(settings.cache_bytes)
            .lsm_background(LsmBackground::Threads(1));
        let backend = LsmBackend::open(config).expect("a valid configuration");
        Subject {
            label: settings.label,
            kind: Kind::Lsm(backend),
            reads_from_tables: settings.reads_from_tables,
            _dir: Some(dir),
        }
    }

    fn all(setup: &Setup) -> Vec<Subject> {
        let mut all = vec![Subject::heap()];
        all.extend(setup.lsm.iter().map(Subject::lsm));
        all
    }

    /// Before a read workload: for a variant that reads from tables, flush and compact.
    fn settle(&mut self) {
        if let Kind::Lsm(b) = &self.kind {
            if self.reads_from_tables {
                b.flush_and_compact().expect("flush and compaction succeed");
            }
        }
    }

    fn cache(&self) -> Option<CacheStats> {
        match &self.kind {
            Kind::Lsm(b) => b.stats().cache,
            Kind::Heap(_) => None,
        }
    }

    /// Prints the block cache's hits and misses since `before`.
    fn report_cache(&self, id: &str, before: Option<CacheStats>) {
        if let (Some(before), Some(after)) = (before, self.cache()) {
            let hits = after.hits - before.hits;
            let misses = after.misses - before.misses;
            let lookups = (hits + misses).max(1);
            eprintln!(
                "  [{id}] block cache: {hits} hits, {misses} misses ({:.1}% hits), \
                 {:.1} MiB of {:.0} MiB used",
                100.0 * hits as f64 / lookups as f64,
                after.usage_bytes as f64 / (1 << 20) as f64,
                after.capacity_bytes as f64 / (1 << 20) as f64,
            );
        }
    }

    /// Prints the shape of the tree.
    fn report_tree(&self, what: &str) {
        if let Kind::Lsm(b) = &self.kind {
            let s = b.stats();
            let levels: Vec<String> = s
                .tree
                .levels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.tables > 0)
                .map(|(i, l)| {
                    format!(
                        "L{i}: {} tables {:.1} MiB",
                        l.tables,
                        l.bytes as f64 / (1 << 20) as f64
                    )
                })
                .collect();
            let table_bytes: u64 = s.tree.levels.iter().map(|l| l.bytes).sum();
            eprintln!(
                "  [{what} {}] memtable {:.1} MiB + {} frozen; tables {:.1} MiB ({}); \
                 flushes {}, compactions {} ({} trivial moves), write amplification {:.2}",
                self.label,
                s.tree.memtable_bytes as f64 / (1 << 20) as f64,
                s.tree.immutable_memtables,
                table_bytes as f64 / (1 << 20) as f64,
                if levels.is_empty() {
                    "none".to_owned()
                } else {
                    levels.join(", ")
                },
                s.tree.flushes,
                s.tree.compactions,
                s.tree.trivial_moves,
                s.write_amplification(),
            );
        }
    }
}

/// Runs one benchmark per subject as `<workload>/<label>`: settles the subject first for a read
/// workload, runs the setup statements (once per subject: cursors persist over criterion's
/// calls of the routine), then the routine, and reports the block cache over the run.
macro_rules! each {
    ($g:expr, $group:expr, $subjects:expr, $workload:expr, read = $read:expr,
     |$s:ident, $i:ident, $bencher:ident| { $($setup:tt)* } => $body:expr) => {
        for ($i, $s) in $subjects.iter_mut().enumerate() {
            if $read {
                $s.settle();
            }
            let before = $s.cache();
            let id = format!("{}/{}", $workload, $s.label);
            {
                $($setup)*
                $g.bench_function(id.as_str(), |$bencher| $body);
            }
            $s.report_cache(&format!("{}/{}", $group, id), before);
        }
    };
}

fn group<'a>(
    c: &'a mut Criterion,
    setup: &Setup,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(setup.group);
    g.throughput(Throughput::Elements(1));
    g
}

/// The `i`-th key never written by the preload: distinct for every `i < 2^32`, in a scattered
/// order (multiplication by an odd constant is a bijection modulo 2^32).
fn never_written_key(i: u64) -> u64 {
    (1 << 40) + (i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff)
}

/// `count` values for value state, made by `make` from a seed each.
fn value_pool<V>(count: usize, make: impl Fn(&mut SplitMix64) -> V) -> Vec<V> {
    let mut rng = SplitMix64::new(99);
    (0..count).map(|_| make(&mut rng)).collect()
}

/// A 64-bit mix of `k` (SplitMix64's finaliser): neighbouring keys get unrelated values.
fn mix(k: u64) -> u64 {
    SplitMix64::new(k).next_u64()
}

/// The value of the pool for key `k`, picked by a hash of the key so that the entries of one
/// table block (neighbouring keys) hold unrelated values and LZ4 cannot shrink them.
fn pick<V: Clone>(pool: &[V], k: u64) -> V {
    pool[(mix(k) % pool.len() as u64) as usize].clone()
}

/// The 10 elements a list holds after the preload: random, derived from the key.
fn list_for(k: u64) -> Vec<u64> {
    (0..10).map(|i| mix(k.wrapping_mul(16) + i)).collect()
}

/// The value of user key `uk` of key `k`'s map after the preload: random, derived from both.
fn map_value(k: u64, uk: u64) -> f64 {
    (mix(k.wrapping_mul(16) + uk) >> 11) as f64
}

fn value_benches<V: StateValue>(c: &mut Criterion, setup: &Setup, pool: &[V]) {
    let keys = shuffled_keys(setup.value_keys, 1);
    let mut subjects = Subject::all(setup);
    let mut handles = Vec::new();
    for s in &mut subjects {
        let start = Instant::now();
        let h = on!(s, b => {
            let h = b
                .register(ValueStateDescriptor::<V>::new("value"))
                .expect("registration of a new state succeeds");
            for &k in &keys {
                b.set_current_key(&k);
                b.value(&h).update(pick(pool, k)).expect("the key group is owned");
            }
            h
        });
        s.settle();
        eprintln!(
            "  [{} value preload {}] {} keys in {:.2} s",
            setup.group,
            s.label,
            keys.len(),
            start.elapsed().as_secs_f64()
        );
        s.report_tree(&format!("{} value preload", setup.group));
        handles.push(h);
    }
    let mut g = group(c, setup);

    each!(g, setup.group, subjects, "valueGet", read = true, |s, i, bencher| {
        let h = &handles[i];
        let mut cur = Cycle::new(&keys);
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        black_box(b.value(h).get().expect("owned"))
    })));

    each!(g, setup.group, subjects, "valueUpdate", read = false, |s, i, bencher| {
        let h = &handles[i];
        let mut cur = Cycle::new(&keys);
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        b.value(h).update(pick(pool, k + 1)).expect("owned")
    })));

    each!(g, setup.group, subjects, "valueAdd", read = false, |s, i, bencher| {
        let h = &handles[i];
        let remove_after = matches!(s.kind, Kind::Heap(_));
        let mut next = 0u64;
    } => on!(s, b => bencher.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        let mut done = 0u64;
        while done < iters {
            let n = (iters - done).min(ADD_PASS);
            let first = next;
            let start = Instant::now();
            for i in first..first + n {
                let k = never_written_key(i);
                b.set_current_key(&k);
                b.value(h).update(pick(pool, k)).expect("owned");
            }
            total += start.elapsed();
            if remove_after {
                for i in first..first + n {
                    b.set_current_key(&never_written_key(i));
                    b.value(h).clear().expect("owned");
                }
            } else {
                next += n;
            }
            done += n;
        }
        total
    })));
    g.finish();
    for s in &subjects {
        s.report_tree(&format!("{} value end", setup.group));
    }
}

fn list_benches(c: &mut Criterion, setup: &Setup) {
    let keys = shuffled_keys(setup.list_keys, 3);
    let mut subjects = Subject::all(setup);
    let mut handles = Vec::new();
    for s in &mut subjects {
        let start = Instant::now();
        let h = on!(s, b => {
            let h = b
                .register(ListStateDescriptor::<u64>::new("list"))
                .expect("registration of a new state succeeds");
            for &k in &keys {
                b.set_current_key(&k);
                b.list(&h).update(list_for(k)).expect("the key group is owned");
            }
            h
        });
        s.settle();
        eprintln!(
            "  [{} list preload {}] {} keys in {:.2} s",
            setup.group,
            s.label,
            keys.len(),
            start.elapsed().as_secs_f64()
        );
        s.report_tree(&format!("{} list preload", setup.group));
        handles.push(h);
    }
    let mut g = group(c, setup);

    each!(g, setup.group, subjects, "listGet", read = true, |s, i, bencher| {
        let h = &handles[i];
        let mut cur = Cycle::new(&keys);
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        black_box(b.list(h).get().expect("owned"))
    })));

    each!(g, setup.group, subjects, "listAppend", read = false, |s, i, bencher| {
        let h = &handles[i];
        let mut cur = Cycle::new(&keys);
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        b.list(h).add(k).expect("owned")
    })));
    g.finish();
    for s in &subjects {
        s.report_tree(&format!("{} list end", setup.group));
    }
}

fn map_benches(c: &mut Criterion, setup: &Setup) {
    let keys = shuffled_keys(setup.map_keys, 4);
    let mut rng = SplitMix64::new(5);
    let user_keys: Vec<u64> = (0..1 << 16).map(|_| rng.below(MAP_ENTRIES)).collect();
    // Half of these miss: user keys 10..20 are never present.
    let probe_keys: Vec<u64> = (0..1 << 16).map(|_| rng.below(2 * MAP_ENTRIES)).collect();
    let mut subjects = Subject::all(setup);
    let mut handles = Vec::new();
    for s in &mut subjects {
        let start = Instant::now();
        let h = on!(s, b => {
            let h = b
                .register(MapStateDescriptor::<u64, f64>::new("map"))
                .expect("registration of a new state succeeds");
            for &k in &keys {
                b.set_current_key(&k);
                for uk in 0..MAP_ENTRIES {
                    b.map(&h).put(uk, map_value(k, uk)).expect("the key group is owned");
                }
            }
            h
        });
        s.settle();
        eprintln!(
            "  [{} map preload {}] {} keys x {MAP_ENTRIES} entries in {:.2} s",
            setup.group,
            s.label,
            keys.len(),
            start.elapsed().as_secs_f64()
        );
        s.report_tree(&format!("{} map preload", setup.group));
        handles.push(h);
    }
    let mut g = group(c, setup);

    each!(g, setup.group, subjects, "mapGet", read = true, |s, i, bencher| {
        let h = &handles[i];
        let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&user_keys));
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        black_box(b.map(h).get(&uks.next_key()).expect("owned"))
    })));

    each!(g, setup.group, subjects, "mapContains", read = true, |s, i, bencher| {
        let h = &handles[i];
        let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&probe_keys));
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        black_box(b.map(h).contains(&uks.next_key()).expect("owned"))
    })));

    g.throughput(Throughput::Elements(MAP_ENTRIES));
    each!(g, setup.group, subjects, "mapIterator", read = true, |s, i, bencher| {
        let h = &handles[i];
        let mut cur = Cycle::new(&keys);
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        let mut sum = 0.0;
        for entry in b.map(h).iter().expect("owned") {
            let (uk, v) = entry.expect("iteration does not fail");
            sum += uk as f64 + v;
        }
        black_box(sum)
    })));

    g.throughput(Throughput::Elements(1));
    each!(g, setup.group, subjects, "mapUpdate", read = false, |s, i, bencher| {
        let h = &handles[i];
        let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&user_keys));
    } => on!(s, b => bencher.iter(|| {
        let k = cur.next_key();
        b.set_current_key(&k);
        b.map(h).put(uks.next_key(), 1.5).expect("owned")
    })));
    g.finish();
    for s in &subjects {
        s.report_tree(&format!("{} map end", setup.group));
    }
}

fn fits_cache_value(c: &mut Criterion) {
    let pool = value_pool(4096, |rng| rng.next_u64());
    value_benches(c, &FITS_CACHE, &pool);
}

fn fits_cache_list(c: &mut Criterion) {
    list_benches(c, &FITS_CACHE);
}

fn fits_cache_map(c: &mut Criterion) {
    map_benches(c, &FITS_CACHE);
}

fn exceeds_cache_value(c: &mut Criterion) {
    // 100 random bytes: incompressible, so LZ4 does not shrink the state below its size.
    let pool = value_pool(4096, |rng| {
        (0..100).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()
    });
    value_benches(c, &EXCEEDS_CACHE, &pool);
}

fn exceeds_cache_list(c: &mut Criterion) {
    list_benches(c, &EXCEEDS_CACHE);
}

fn exceeds_cache_map(c: &mut Criterion) {
    map_benches(c, &EXCEEDS_CACHE);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = fits_cache_value, fits_cache_list, fits_cache_map,
        exceeds_cache_value, exceeds_cache_list, exceeds_cache_map
}
criterion_main!(benches);
