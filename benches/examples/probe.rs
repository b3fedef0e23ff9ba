//! Raw per-operation latency of the heap backend against a `hashbrown::HashMap` doing the same
//! work (key encoded, key group computed), outside criterion: a quick A/B tool for changes to the
//! heap map. Usage: `cargo run --release -p flowstate-benches --example probe -- [keys] [rounds]`.
//!
//! It prints the table bytes per entry and, per round, get and update ns/op for both. The
//! figures in benches/README.md ("unsafe on the hot path") were taken with it.

use std::time::Instant;

use flowstate::*;
use flowstate_benches::*;

fn main() -> Result<()> {
    let n = arg(1, 500_000) as usize;
    let rounds = arg(2, 3);
    let keys = shuffled_keys(n, 1);
    let mut backend = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let state = backend.register(ValueStateDescriptor::<u64>::new("v"))?;
    let mut base = hashbrown::HashMap::<u64, u64>::new();
    for &k in &keys {
        backend.set_current_key(&k);
        backend.value(&state).update(k)?;
        base.insert(k, k);
    }
    println!(
        "table bytes/entry {:.1}",
        backend.table_bytes() as f64 / n as f64
    );
    let probe: Vec<u64> = shuffled_keys(n, 2);
    let mut buf = Vec::new();
    let mut sum = 0u64;
    for round in 0..rounds {
        let t = Instant::now();
        for &k in &probe {
            backend.set_current_key(&k);
            sum += backend.value(&state).get()?.unwrap_or(0);
        }
        let get = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for &k in &probe {
            sum += u64::from(baseline_key_work(k, &mut buf, 128));
            sum += base.get(&k).copied().unwrap_or(0);
        }
        let base_get = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for &k in &probe {
            backend.set_current_key(&k);
            backend.value(&state).update(k + round)?;
        }
        let update = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for &k in &probe {
            sum += u64::from(baseline_key_work(k, &mut buf, 128));
            base.insert(k, k + round);
        }
        let base_update = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "get ours {get:.1} ns, hashbrown {base_get:.1} ns, ratio {:.2}; \
             update ours {update:.1} ns, hashbrown {base_update:.1} ns, ratio {:.2}",
            get / base_get,
            update / base_update
        );
    }
    // Inserts of fresh keys (Flink's valueAdd): a map growing from empty to `n` keys, and
    // 3 `n` more into it, against hashbrown maps per key group doing the same.
    for round in 0..rounds {
        let mut grown = HeapBackend::<u64>::open(BackendConfig::heap())?;
        let state = grown.register(ValueStateDescriptor::<u64>::new("v"))?;
        let mut maps: Vec<hashbrown::HashMap<u64, u64>> =
            (0..128).map(|_| hashbrown::HashMap::new()).collect();
        let fresh = shuffled_keys(4 * n, 3 + round);
        let t = Instant::now();
        for &k in &fresh {
            grown.set_current_key(&k);
            grown.value(&state).update(k)?;
        }
        let add = t.elapsed().as_nanos() as f64 / fresh.len() as f64;
        let t = Instant::now();
        for &k in &fresh {
            let g = usize::from(baseline_key_work(k, &mut buf, 128));
            maps[g].insert(k, k);
        }
        let base_add = t.elapsed().as_nanos() as f64 / fresh.len() as f64;
        println!(
            "add ours {add:.1} ns, hashbrown per key group {base_add:.1} ns, ratio {:.2}; \
             table bytes/entry {:.1}",
            add / base_add,
            grown.table_bytes() as f64 / fresh.len() as f64
        );
    }
    std::hint::black_box(sum);
    Ok(())
}
