#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Random point lookups on an LSM table file on local disk, read through `pread`
//! (`LocalStorage::open`) and through a read-only memory map (`LocalStorage::open_mapped`) in
//! the same run: the benchmark that justifies the `unsafe` map (spec/unsafe.md).
//!
//! One table per compression (69 MB uncompressed, about 39 MB with LZ4), written with
//! `TableBuilder`'s default options (4 KiB blocks) into a temporary directory through
//! `LocalStorage`, so the file sits in the OS page cache: a block read is a copy from memory
//! either way, and what differs is the system call (`pread`) against a page already mapped.
//! Keys are laid out as the tree lays them out (state id, key group, 13-byte user key); values
//! are 104 bytes, half random, half a repeated pattern, so that LZ4 has something to do without
//! shrinking the file much.
//!
//! Variants, each over the same 10,000 random present keys per iteration:
//!
//! - `memory`: the file's bytes in a `Vec<u8>` (`&[u8]` as `RandomAccess`, each block copied
//!   out): the floor for a read that copies, no file involved;
//! - `pread` / `mmap`, no block cache: every lookup reads, checks (and decompresses) a block;
//! - `pread_cache4m` / `mmap_cache4m`: a 4 MiB `ShardedBlockCache`, far smaller than the table,
//!   so nearly every lookup still misses it, as in `lsm_state`'s `lsm_exceeds_cache`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowstate::lsm::ShardedBlockCache;
use flowstate::storage::{LocalStorage, ReadableFile, Storage};
use flowstate_benches::{table_key as key_of, xorshift};
use flowstate_formats::table::{BlockCache, TableReader};
use flowstate_formats::table::{EntryKind, TableBuilder, TableOptions, TableReadOptions};
use flowstate_formats::{Compression, RandomAccess};

const ENTRIES: u64 = 600_000;
const VALUE_LEN: usize = 104;
const LOOKUPS: usize = 10_000;
const CACHE_BYTES: usize = 4 << 20;

fn value_of(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    let mut x = i.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    for chunk in v[..VALUE_LEN / 2].chunks_mut(8) {
        let r = xorshift(&mut x).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    for (j, b) in v[VALUE_LEN / 2..].iter_mut().enumerate() {
        *b = b"value-pattern-"[j % 14];
    }
    v
}

/// Writes the table to `name` in `storage` and returns its bytes too.
fn write_table(storage: &LocalStorage, name: &str, compression: Compression) -> Vec<u8> {
    let mut keys: Vec<(Vec<u8>, u64)> = (0..ENTRIES).map(|i| (key_of(i), i)).collect();
    keys.sort_unstable();
    let mut out = Vec::with_capacity(80 << 20);
    let mut b = TableBuilder::new(
        &mut out,
        TableOptions {
            compression,
            table_id: 1,
            ..TableOptions::default()
        },
        name,
    )
    .expect("valid options");
    for (k, i) in &keys {
        b.add(k, EntryKind::Put, &value_of(*i))
            .expect("ascending keys");
    }
    b.finish().expect("the table is written");
    storage
        .write_atomic(name, &out)
        .expect("the table is stored");
    out
}

fn reader<R: RandomAccess>(
    source: R,
    name: &str,
    cache: Option<(u64, Arc<ShardedBlockCache>)>,
) -> TableReader<R> {
    let mut options = TableReadOptions::default();
    if let Some((id, cache)) = cache {
        options.cache_id = id;
        options.block_cache = Some(cache as Arc<dyn BlockCache>);
    }
    TableReader::open_with(source, name, options).expect("the table opens")
}

fn lookups<R: RandomAccess>(r: &TableReader<R>, keys: &[Vec<u8>]) -> usize {
    let mut n = 0usize;
    for k in keys {
        n += r.get(k).expect("reads").map_or(0, |(_, v)| v.len());
    }
    n
}

fn table_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = LocalStorage::new(dir.path()).expect("the storage opens");
    let mut x = 0x5eed_u64;
    let present: Vec<Vec<u8>> = (0..LOOKUPS)
        .map(|_| key_of(xorshift(&mut x) % ENTRIES))
        .collect();

    for (label, compression) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let name = format!("{label}.sst");
        let bytes = write_table(&storage, &name, compression);
        let pread: Arc<dyn ReadableFile> = Arc::from(storage.open(&name).expect("opens"));
        let mapped: Arc<dyn ReadableFile> = Arc::from(
            storage
                .open_mapped(&name)
                .expect("maps")
                .expect("local storage maps files"),
        );
        let probe = reader(&bytes[..], &name, None);
        eprintln!(
            "table_reads/{label}: {ENTRIES} entries of {} key + {VALUE_LEN} value bytes, file {} bytes, {} data blocks",
            present[0].len(),
            bytes.len(),
            probe.data_block_count()
        );

        let mut g = c.benchmark_group(format!("table_reads_{label}"));
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
            .throughput(Throughput::Elements(LOOKUPS as u64));

        let expected = lookups(&probe, &present);
        g.bench_function("memory", |b| {
            b.iter(|| black_box(lookups(&probe, &present)))
        });
        for (variant, file) in [("pread", &pread), ("mmap", &mapped)] {
            let r = reader(Arc::clone(file), &name, None);
            assert_eq!(lookups(&r, &present), expected);
            g.bench_function(variant, |b| b.iter(|| black_box(lookups(&r, &present))));
        }
        for (id, (variant, file)) in [("pread_cache4m", &pread), ("mmap_cache4m", &mapped)]
            .into_iter()
            .enumerate()
        {
            let cache = Arc::new(ShardedBlockCache::new(CACHE_BYTES));
            let r = reader(
                Arc::clone(file),
                &name,
                Some((id as u64 + 1, Arc::clone(&cache))),
            );
            assert_eq!(lookups(&r, &present), expected);
            let before = cache.stats();
            g.bench_function(variant, |b| b.iter(|| black_box(lookups(&r, &present))));
            let after = cache.stats();
            eprintln!(
                "table_reads_{label}/{variant}: block cache hits {} misses {}",
                after.hits - before.hits,
                after.misses - before.misses
            );
        }
        g.finish();
    }
}

criterion_group!(benches, table_reads);
criterion_main!(benches);
