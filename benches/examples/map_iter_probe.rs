//! Map iteration on the LSM backend beside the heap backend, outside criterion: a quick A/B
//! tool (and a target for `perf record`) for changes to the scan path.
//!
//! Usage: `cargo run --release -p flowstate-benches --example map_iter_probe -- [keys] [rounds] [tables]`
//! (defaults: 100,000 keys with maps of 10 `u64 -> f64` entries, 3 rounds; `tables` = 1
//! flushes the LSM state into tables first, 0 keeps it in the memtable).
//!
//! It prints, per round, the ns per map iterated (10 entries) for both backends and the ratio.

use std::time::Instant;

use flowstate::*;
use flowstate_benches::*;

fn fill<B: KeyedStateBackend<u64>>(b: &mut B, keys: &[u64]) -> Result<MapState<u64, f64>> {
    let h = b.register(MapStateDescriptor::<u64, f64>::new("map"))?;
    for &k in keys {
        b.set_current_key(&k);
        for uk in 0..10u64 {
            b.map(&h)
                .put(k.wrapping_mul(31).wrapping_add(uk), uk as f64)?;
        }
    }
    Ok(h)
}

fn iterate<B: KeyedStateBackend<u64>>(
    b: &mut B,
    h: &MapState<u64, f64>,
    probe: &[u64],
) -> Result<(f64, f64)> {
    let mut sum = 0.0;
    let t = Instant::now();
    for &k in probe {
        b.set_current_key(&k);
        for entry in b.map(h).iter()? {
            let (uk, v) = entry?;
            sum += uk as f64 + v;
        }
    }
    Ok((t.elapsed().as_nanos() as f64 / probe.len() as f64, sum))
}

fn main() -> Result<()> {
    let n = arg(1, 100_000) as usize;
    let rounds = arg(2, 3);
    let tables = arg(3, 0) == 1;
    let keys = shuffled_keys(n, 1);
    let probe = shuffled_keys(n, 2);
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let mut lsm = LsmBackend::<u64>::open(
        BackendConfig::lsm(dir.path().join("lsm"))
            .lsm_memtable_bytes(1 << 30)
            .lsm_block_cache_bytes(256 << 20),
    )?;
    let mut heap = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let lh = fill(&mut lsm, &keys)?;
    let hh = fill(&mut heap, &keys)?;
    if tables {
        lsm.flush_and_compact()?;
    }
    let mut total = 0.0;
    for _ in 0..rounds {
        let (ours, a) = iterate(&mut lsm, &lh, &probe)?;
        let (base, b) = iterate(&mut heap, &hh, &probe)?;
        total += a + b;
        println!(
            "map of 10: lsm {ours:.0} ns, heap {base:.0} ns, ratio {:.2}",
            ours / base
        );
    }
    std::hint::black_box(total);
    Ok(())
}
