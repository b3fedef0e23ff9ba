#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Flink's state benchmarks on the heap backend, each beside a plain `hashbrown::HashMap` doing
//! the same work in the same run (key encoded and key group computed per record, as
//! `set_current_key` does). Compare the two as a ratio; absolute figures are for context only.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowstate::*;
use flowstate_benches::*;
use hashbrown::HashMap;

const MAXP: u32 = 128;

fn backend() -> HeapBackend<u64> {
    HeapBackend::open(BackendConfig::heap().max_parallelism(MAXP)).expect("a valid configuration")
}

fn config(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("heap_state");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    g
}

fn value_benches(c: &mut Criterion) {
    let keys = shuffled_keys(PRELOADED_KEYS, 1);
    let fresh = fresh_keys(FRESH_KEYS, 2);

    let mut ours = backend();
    let count = ours
        .register(ValueStateDescriptor::<u64>::new("value"))
        .expect("registration of a new state succeeds");
    let mut base: HashMap<u64, u64> = HashMap::new();
    let mut buf = Vec::new();
    for &k in &keys {
        ours.set_current_key(&k);
        ours.value(&count)
            .update(k)
            .expect("the key group is owned");
        base.insert(k, k);
    }

    let mut g = config(c);
    let mut cur = Cycle::new(&keys);
    g.bench_function("valueGet/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            black_box(ours.value(&count).get().expect("owned"))
        })
    });
    let mut cur = Cycle::new(&keys);
    g.bench_function("valueGet/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            black_box(base.get(&k).copied())
        })
    });

    let mut cur = Cycle::new(&keys);
    g.bench_function("valueUpdate/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            ours.value(&count).update(k + 1).expect("owned")
        })
    });
    let mut cur = Cycle::new(&keys);
    g.bench_function("valueUpdate/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            base.insert(k, k + 1);
        })
    });

    // valueAdd: inserts of keys not present; after each pass over the fresh keys they are
    // removed again outside the timed region, so every timed operation is an insert.
    g.bench_function("valueAdd/flowstate", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(fresh.len() as u64) as usize;
                let start = Instant::now();
                for &k in &fresh[..n] {
                    ours.set_current_key(&k);
                    ours.value(&count).update(k).expect("owned");
                }
                total += start.elapsed();
                for &k in &fresh[..n] {
                    ours.set_current_key(&k);
                    ours.value(&count).clear().expect("owned");
                }
                done += n as u64;
            }
            total
        })
    });
    g.bench_function("valueAdd/hashbrown", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(fresh.len() as u64) as usize;
                let start = Instant::now();
                for &k in &fresh[..n] {
                    black_box(baseline_key_work(k, &mut buf, MAXP));
                    base.insert(k, k);
                }
                total += start.elapsed();
                for &k in &fresh[..n] {
                    base.remove(&k);
                }
                done += n as u64;
            }
            total
        })
    });
    g.finish();
}

fn list_benches(c: &mut Criterion) {
    let keys = shuffled_keys(PRELOADED_KEYS, 3);
    let mut ours = backend();
    let list = ours
        .register(ListStateDescriptor::<u64>::new("list"))
        .expect("registration of a new state succeeds");
    let mut base: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut buf = Vec::new();
    let initial: Vec<u64> = (0..10).collect();
    let reset = |ours: &mut HeapBackend<u64>, base: &mut HashMap<u64, Vec<u64>>| {
        for &k in &keys {
            ours.set_current_key(&k);
            ours.list(&list).update(initial.clone()).expect("owned");
            base.insert(k, initial.clone());
        }
    };
    reset(&mut ours, &mut base);

    let mut g = config(c);
    let mut cur = Cycle::new(&keys);
    g.bench_function("listGet/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            black_box(ours.list(&list).get().expect("owned"))
        })
    });
    let mut cur = Cycle::new(&keys);
    g.bench_function("listGet/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            black_box(base.get(&k).cloned().unwrap_or_default())
        })
    });

    let mut cur = Cycle::new(&keys);
    g.bench_function("listAppend/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            ours.list(&list).add(k).expect("owned")
        })
    });
    let mut cur = Cycle::new(&keys);
    g.bench_function("listAppend/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            base.entry(k).or_default().push(k);
        })
    });
    reset(&mut ours, &mut base);

    let batch: Vec<u64> = (0..ADD_ALL_ELEMENTS as u64).collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("listAddAll/flowstate", |b| {
        let mut cur = Cycle::new(&keys);
        b.iter_batched(
            || batch.clone(),
            |elements| {
                let k = cur.next_key();
                ours.set_current_key(&k);
                ours.list(&list).add_all(elements).expect("owned")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("listAddAll/hashbrown", |b| {
        let mut cur = Cycle::new(&keys);
        b.iter_batched(
            || batch.clone(),
            |elements| {
                let k = cur.next_key();
                black_box(baseline_key_work(k, &mut buf, MAXP));
                base.entry(k).or_default().extend(elements);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn map_benches(c: &mut Criterion) {
    let keys = shuffled_keys(PRELOADED_KEYS, 4);
    let mut ours = backend();
    let map = ours
        .register(MapStateDescriptor::<u64, f64>::new("map"))
        .expect("registration of a new state succeeds");
    let mut base: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
    let mut buf = Vec::new();
    for &k in &keys {
        ours.set_current_key(&k);
        for uk in 0..MAP_ENTRIES {
            ours.map(&map).put(uk, uk as f64).expect("owned");
            base.entry(k).or_default().insert(uk, uk as f64);
        }
    }
    let mut rng = SplitMix64::new(5);
    let user_keys: Vec<u64> = (0..1 << 16).map(|_| rng.below(MAP_ENTRIES)).collect();
    // Half of these miss: user keys 10..20 are never present.
    let probe_keys: Vec<u64> = (0..1 << 16).map(|_| rng.below(2 * MAP_ENTRIES)).collect();

    let mut g = config(c);
    let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&user_keys));
    g.bench_function("mapGet/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            black_box(ours.map(&map).get(&uks.next_key()).expect("owned"))
        })
    });
    let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&user_keys));
    g.bench_function("mapGet/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            let uk = uks.next_key();
            black_box(base.get(&k).and_then(|m| m.get(&uk)).copied())
        })
    });

    let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&probe_keys));
    g.bench_function("mapContains/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            black_box(ours.map(&map).contains(&uks.next_key()).expect("owned"))
        })
    });
    let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&probe_keys));
    g.bench_function("mapContains/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            let uk = uks.next_key();
            black_box(base.get(&k).is_some_and(|m| m.contains_key(&uk)))
        })
    });

    let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&user_keys));
    g.bench_function("mapUpdate/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            ours.map(&map).put(uks.next_key(), 1.5).expect("owned")
        })
    });
    let (mut cur, mut uks) = (Cycle::new(&keys), Cycle::new(&user_keys));
    g.bench_function("mapUpdate/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            let uk = uks.next_key();
            base.entry(k).or_default().insert(uk, 1.5);
        })
    });

    g.throughput(Throughput::Elements(MAP_ENTRIES));
    let mut cur = Cycle::new(&keys);
    g.bench_function("mapIterator/flowstate", |b| {
        b.iter(|| {
            let k = cur.next_key();
            ours.set_current_key(&k);
            let mut sum = 0.0;
            for entry in ours.map(&map).iter().expect("owned") {
                let (uk, v) = entry.expect("heap iteration does not fail");
                sum += uk as f64 + v;
            }
            black_box(sum)
        })
    });
    let mut cur = Cycle::new(&keys);
    g.bench_function("mapIterator/hashbrown", |b| {
        b.iter(|| {
            let k = cur.next_key();
            black_box(baseline_key_work(k, &mut buf, MAXP));
            let mut sum = 0.0;
            // The same work as the state's iterator: a copy of the entries, then a walk.
            let entries: Vec<(u64, f64)> = base
                .get(&k)
                .map(|m| m.iter().map(|(a, b)| (*a, *b)).collect())
                .unwrap_or_default();
            for (uk, v) in entries {
                sum += uk as f64 + v;
            }
            black_box(sum)
        })
    });
    g.finish();
}

criterion_group!(benches, value_benches, list_benches, map_benches);
criterion_main!(benches);
