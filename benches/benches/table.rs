#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The LSM table file (`flowstate_formats::table`) on 1,000,000 entries held in memory: build
//! throughput, point lookups (present keys, absent keys, with and without a block cache) against
//! a `BTreeMap` of the same entries in the same run, and full scans against iterating the
//! `BTreeMap`.
//!
//! Keys are laid out as the tree lays them out: state id (1 byte), key group (big-endian u16 of
//! 128), then a 13-byte user key; values are 8-byte `u64`s, as a value state of `u64` holds. The
//! sorted entries sit in one contiguous buffer, as a memtable flush streams them from its arena
//! (1M separately allocated keys visited in key order would measure cache misses instead).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowstate_benches::{table_key as key_of, xorshift};
use flowstate_formats::table::{
    Block, BlockCache, BlockCacheKey, EntryKind, TableBuilder, TableOptions, TableReadOptions,
    TableReader,
};
use flowstate_formats::Compression;

const ENTRIES: u64 = 1_000_000;
const LOOKUPS: usize = 10_000;

const KEY_LEN: usize = 16;

/// The entries, sorted by key, as contiguous records of a 16-byte key and an 8-byte value.
fn entries() -> Vec<[u8; 24]> {
    let mut e: Vec<[u8; 24]> = (0..ENTRIES)
        .map(|i| {
            let mut r = [0u8; 24];
            r[..KEY_LEN].copy_from_slice(&key_of(i));
            r[KEY_LEN..].copy_from_slice(&(i * 7).to_le_bytes());
            r
        })
        .collect();
    e.sort_unstable();
    e
}

fn build(entries: &[[u8; 24]], compression: Compression) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 << 20);
    let mut b = TableBuilder::new(
        &mut out,
        TableOptions {
            compression,
            ..TableOptions::default()
        },
        "bench.sst",
    )
    .expect("valid options");
    for r in entries {
        let (k, v) = r.split_at(KEY_LEN);
        b.add(k, EntryKind::Put, v).expect("ascending keys");
    }
    b.finish().expect("the table is written");
    out
}

/// A block cache without eviction behind one mutex (uncontended here): what a cache hit costs.
#[derive(Default)]
struct MapCache(Mutex<HashMap<BlockCacheKey, Arc<Block>>>);

impl BlockCache for MapCache {
    fn get(&self, key: &BlockCacheKey) -> Option<Arc<Block>> {
        self.0.lock().expect("not poisoned").get(key).cloned()
    }

    fn insert(&self, key: BlockCacheKey, block: Arc<Block>) {
        self.0.lock().expect("not poisoned").insert(key, block);
    }
}

fn table(c: &mut Criterion) {
    let entries = entries();
    let raw = entries.len() as u64 * 24;
    let files: Vec<(&str, Compression, Vec<u8>)> =
        [("none", Compression::None), ("lz4", Compression::Lz4)]
            .into_iter()
            .map(|(name, compression)| (name, compression, build(&entries, compression)))
            .collect();
    for (name, _, file) in &files {
        let r = TableReader::open(&file[..], "bench.sst").expect("the table opens");
        eprintln!(
            "table/{name}: {ENTRIES} entries, {raw} raw bytes -> {} file bytes, {} data blocks, index+filter in memory {} bytes",
            file.len(),
            r.data_block_count(),
            r.memory()
        );
    }

    let mut g = c.benchmark_group("table_build");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(6))
        .sample_size(10)
        .throughput(Throughput::Bytes(raw));
    for (name, compression, _) in &files {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(build(&entries, *compression).len()))
        });
    }
    g.finish();

    let mut x = 0x5eed_u64;
    let present: Vec<Vec<u8>> = (0..LOOKUPS)
        .map(|_| key_of(xorshift(&mut x) % ENTRIES))
        .collect();
    let absent: Vec<Vec<u8>> = (0..LOOKUPS)
        .map(|_| key_of(ENTRIES + xorshift(&mut x) % ENTRIES))
        .collect();
    let map: BTreeMap<Vec<u8>, Vec<u8>> = entries
        .iter()
        .map(|r| (r[..KEY_LEN].to_vec(), r[KEY_LEN..].to_vec()))
        .collect();

    let mut g = c.benchmark_group("table_get");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
        .throughput(Throughput::Elements(LOOKUPS as u64));
    g.bench_function("btreemap_present", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for k in &present {
                n += map.get(k).map_or(0, Vec::len);
            }
            black_box(n)
        })
    });
    for (name, _, file) in &files {
        let r = TableReader::open(&file[..], "bench.sst").expect("the table opens");
        g.bench_function(format!("{name}_present"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for k in &present {
                    n += r.get(k).expect("reads").map_or(0, |(_, v)| v.len());
                }
                black_box(n)
            })
        });
        g.bench_function(format!("{name}_absent"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for k in &absent {
                    n += usize::from(r.get(k).expect("reads").is_some());
                }
                black_box(n)
            })
        });
        let cached = TableReader::open_with(
            &file[..],
            "bench.sst",
            TableReadOptions {
                block_cache: Some(Arc::new(MapCache::default())),
                ..TableReadOptions::default()
            },
        )
        .expect("the table opens");
        for k in &present {
            cached.get(k).expect("reads");
        }
        g.bench_function(format!("{name}_present_cached"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for k in &present {
                    n += cached.get(k).expect("reads").map_or(0, |(_, v)| v.len());
                }
                black_box(n)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("table_scan");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10)
        .throughput(Throughput::Elements(ENTRIES));
    g.bench_function("btreemap", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (k, v) in &map {
                n += k.len() + v.len();
            }
            black_box(n)
        })
    });
    for (name, _, file) in &files {
        let r = TableReader::open(&file[..], "bench.sst").expect("the table opens");
        g.bench_function(format!("{name}_cursor"), |b| {
            b.iter(|| {
                let mut it = r.iter();
                let mut n = 0usize;
                while it.advance().expect("reads") {
                    n += it.key().len() + it.value().len();
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, table);
criterion_main!(benches);
