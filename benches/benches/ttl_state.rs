#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Flink's TTL state benchmarks (`state/benchmark/ttl`): value, list and map get and update on
//! a state with a TTL, each beside the same state without one in the same run, on the heap
//! and the LSM backend. The TTL is Flink's 1,000,000 ms and nothing expires (Flink's
//! `NeverExpired`), updates on create and write, expired state never returned: the ratio is
//! the cost of the timestamps (8 bytes more per value, element or entry; a clock read and an
//! expiry check per access; on the heap backend the incremental cleanup's 5 entries checked
//! per access). Target: at most 1.3x the time of the same without TTL.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowstate::lsm::LsmBackground;
use flowstate::*;
use flowstate_benches::*;

const MAXP: u32 = 128;
/// Keys preloaded per state (fewer than the plain state benchmarks: four states per backend).
const KEYS: usize = 100_000;
const LIST_LEN: u32 = 10;

fn ttl() -> TtlConfig {
    TtlConfig::after(Duration::from_millis(1_000_000))
}

/// The states of one variant: with or without a TTL.
struct States {
    value: ValueState<u64>,
    list: ListState<u64>,
    map: MapState<u64, f64>,
}

fn register(b: &mut Backend<u64>, ttl: Option<TtlConfig>) -> States {
    let suffix = match ttl {
        Some(t) => format!("-ttl-{}", t.incremental_cleanup_size()),
        None => String::new(),
    };
    let mut value = ValueStateDescriptor::<u64>::new(format!("value{suffix}"));
    let mut list = ListStateDescriptor::<u64>::new(format!("list{suffix}"));
    let mut map = MapStateDescriptor::<u64, f64>::new(format!("map{suffix}"));
    if let Some(ttl) = ttl {
        value = value.with_ttl(ttl);
        list = list.with_ttl(ttl);
        map = map.with_ttl(ttl);
    }
    States {
        value: b.register(value).expect("registration succeeds"),
        list: b.register(list).expect("registration succeeds"),
        map: b.register(map).expect("registration succeeds"),
    }
}

fn preload(b: &mut Backend<u64>, s: &States, keys: &[u64]) {
    for &k in keys {
        b.set_current_key(&k);
        b.value(&s.value).update(k).expect("owned");
        b.list(&s.list)
            .update((0..u64::from(LIST_LEN)).collect())
            .expect("owned");
        b.map(&s.map)
            .put_all((0..MAP_ENTRIES).map(|i| (i, i as f64)))
            .expect("owned");
    }
}

fn bench_backend(c: &mut Criterion, name: &str, mut b: Backend<u64>) {
    let keys = shuffled_keys(KEYS, 7);
    let plain = register(&mut b, None);
    let timed = register(&mut b, Some(ttl()));
    let uncleaned = register(&mut b, Some(ttl().incremental_cleanup(0)));
    preload(&mut b, &plain, &keys);
    preload(&mut b, &timed, &keys);
    preload(&mut b, &uncleaned, &keys);
    let mut g = c.benchmark_group(format!("ttl_state/{name}"));
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(15)
        .throughput(Throughput::Elements(1));
    // The heap backend's incremental cleanup (5 entries per access by default) is measured on
    // its own: "ttl" has it, "ttlNoCleanup" does not (the LSM backend has none: the two match).
    for (variant, s) in [
        ("plain", &plain),
        ("ttl", &timed),
        ("ttlNoCleanup", &uncleaned),
    ] {
        let mut cur = Cycle::new(&keys);
        g.bench_function(format!("valueGet/{variant}"), |bench| {
            bench.iter(|| {
                b.set_current_key(&cur.next_key());
                black_box(b.value(&s.value).get().expect("owned"))
            })
        });
        let mut cur = Cycle::new(&keys);
        g.bench_function(format!("valueUpdate/{variant}"), |bench| {
            bench.iter(|| {
                let k = cur.next_key();
                b.set_current_key(&k);
                b.value(&s.value).update(k + 1).expect("owned")
            })
        });
        let mut cur = Cycle::new(&keys);
        g.bench_function(format!("listGet/{variant}"), |bench| {
            bench.iter(|| {
                b.set_current_key(&cur.next_key());
                black_box(b.list(&s.list).get().expect("owned"))
            })
        });
        let mut cur = Cycle::new(&keys);
        g.bench_function(format!("listAdd/{variant}"), |bench| {
            bench.iter(|| {
                let k = cur.next_key();
                b.set_current_key(&k);
                b.list(&s.list).add(k).expect("owned")
            })
        });
        let mut cur = Cycle::new(&keys);
        let mut rng = SplitMix64::new(3);
        g.bench_function(format!("mapGet/{variant}"), |bench| {
            bench.iter(|| {
                b.set_current_key(&cur.next_key());
                let uk = rng.below(MAP_ENTRIES);
                black_box(b.map(&s.map).get(&uk).expect("owned"))
            })
        });
        let mut cur = Cycle::new(&keys);
        let mut rng = SplitMix64::new(4);
        g.bench_function(format!("mapUpdate/{variant}"), |bench| {
            bench.iter(|| {
                b.set_current_key(&cur.next_key());
                let uk = rng.below(MAP_ENTRIES);
                b.map(&s.map).put(uk, uk as f64 + 0.5).expect("owned")
            })
        });
    }
    g.finish();
}

fn ttl_benches(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::new(0));
    let heap = Backend::open(
        BackendConfig::heap()
            .max_parallelism(MAXP)
            .clock(clock.clone()),
    )
    .expect("a valid configuration");
    bench_backend(c, "heap", heap);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lsm = Backend::open(
        BackendConfig::lsm(dir.path().join("lsm"))
            .max_parallelism(MAXP)
            .lsm_background(LsmBackground::Threads(1))
            .lsm_block_cache_bytes(256 << 20)
            .clock(clock),
    )
    .expect("a valid configuration");
    bench_backend(c, "lsm", lsm);
}

criterion_group!(benches, ttl_benches);
criterion_main!(benches);
