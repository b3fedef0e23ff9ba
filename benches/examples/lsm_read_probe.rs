//! Point reads of the LSM backend on settled state (flushed and compacted), outside criterion:
//! a quick A/B tool and a `perf record` target for the read path, with the peer comparison's
//! shapes (`u64 -> u64` values; maps of 10 `u64 -> f64` entries; 64 MiB block cache and
//! memtable; one background thread).
//!
//! Usage: `cargo run --release -p flowstate-benches --example lsm_read_probe -- [keys] [rounds] [cache MiB]`
//! (defaults: 500,000 keys, 3 rounds, a 64 MiB block cache). It prints, per round, ns per value get, map get, map
//! contains (half the user keys absent) and map iteration (one whole map, 10 entries).
//! `FLOWSTATE_PROBE_OVERWRITES=N` overwrites N map entries after the full compaction, so that
//! the reads meet state spread over levels.

use std::time::Instant;

use flowstate::lsm::LsmBackground;
use flowstate::*;
use flowstate_benches::*;

fn main() -> Result<()> {
    let n = arg(1, 500_000) as usize;
    let rounds = arg(2, 3);
    let cache_mib = arg(3, 64) as usize;
    let keys = shuffled_keys(n, 1);
    let probe = shuffled_keys(n, 2);
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidConfig(e.to_string()))?;
    // `FLOWSTATE_PROBE_BLOOM_BITS=0` writes tables without filters: what the filter costs a
    // read that finds its key.
    let bloom_bits = std::env::var("FLOWSTATE_PROBE_BLOOM_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(flowstate_formats::table::DEFAULT_BLOOM_BITS_PER_KEY);
    let mut b = Backend::<u64>::open(
        BackendConfig::lsm(dir.path().join("lsm"))
            .lsm_tree_options(flowstate::lsm::TreeOptions {
                bloom_bits_per_key: bloom_bits,
                ..Default::default()
            })
            .lsm_memtable_bytes(64 << 20)
            .lsm_block_cache_bytes(cache_mib << 20)
            .lsm_background(LsmBackground::Threads(1)),
    )?;
    let value = b.register(ValueStateDescriptor::<u64>::new("value"))?;
    let map = b.register(MapStateDescriptor::<u64, f64>::new("map"))?;
    let t = Instant::now();
    for &k in &keys {
        b.set_current_key(&k);
        b.value(&value).update(k)?;
        for uk in 0..10u64 {
            b.map(&map)
                .put(k.wrapping_mul(31).wrapping_add(uk), uk as f64)?;
        }
    }
    b.flush()?;
    b.compact_all()?;
    b.wait_idle()?;
    println!("preload and compaction: {:.1} s", t.elapsed().as_secs_f64());
    // `FLOWSTATE_PROBE_OVERWRITES=N`: N map entries overwritten at random after the full
    // compaction, then flushed with only the compactions that are due: state spread over
    // levels, as the peer comparison's map reads after its map puts.
    let overwrites: usize = std::env::var("FLOWSTATE_PROBE_OVERWRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if overwrites > 0 {
        let mut x = 7u64;
        for i in 0..overwrites {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = keys[(x >> 33) as usize % keys.len()];
            b.set_current_key(&k);
            b.map(&map)
                .put(k.wrapping_mul(31).wrapping_add((x >> 20) % 10), i as f64)?;
        }
        b.compact()?;
        b.wait_idle()?;
        println!("{overwrites} overwrites, flushed and compacted as due");
    }
    let mut sum = 0.0;
    for _ in 0..rounds {
        let per = |t: Instant| t.elapsed().as_nanos() as f64 / probe.len() as f64;
        let t = Instant::now();
        for &k in &probe {
            b.set_current_key(&k);
            sum += b.value(&value).get()?.unwrap_or(0) as f64;
        }
        let value_get = per(t);
        let t = Instant::now();
        for &k in &probe {
            b.set_current_key(&k);
            sum += b
                .map(&map)
                .get(&k.wrapping_mul(31).wrapping_add(k % 10))?
                .unwrap_or(0.0);
        }
        let map_get = per(t);
        let t = Instant::now();
        for &k in &probe {
            b.set_current_key(&k);
            let uk = k.wrapping_mul(31).wrapping_add(k % 20);
            sum += f64::from(u8::from(b.map(&map).contains(&uk)?));
        }
        let map_contains = per(t);
        let t = Instant::now();
        for &k in &probe {
            b.set_current_key(&k);
            b.map(&map).for_each(|&uk, &v| sum += uk as f64 + v)?;
        }
        let map_iterate = per(t);
        if let Some(stats) = b.lsm_stats() {
            println!(
                "cache {:?}; levels {:?}; table memory {} B",
                stats.cache, stats.tree.levels, stats.tree.table_memory_bytes
            );
        }
        println!(
            "ns/op: value get {value_get:.0}, map get {map_get:.0}, map contains \
             {map_contains:.0}, map iterate {map_iterate:.0}"
        );
    }
    std::hint::black_box(sum);
    Ok(())
}
