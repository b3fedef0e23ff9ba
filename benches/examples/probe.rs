//! Scratch: raw lookup latency of the heap backend against hashbrown.
use flowstate::*;
use flowstate_benches::*;
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(500_000);
    let keys = shuffled_keys(n, 1);
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap()).unwrap();
    let s = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let mut base = hashbrown::HashMap::<u64, u64>::new();
    for &k in &keys {
        b.set_current_key(&k);
        b.value(&s).update(k).unwrap();
        base.insert(k, k);
    }
    println!("table bytes/entry {:.1}", b.table_bytes() as f64 / n as f64);
    let probe: Vec<u64> = shuffled_keys(n, 2);
    let mut buf = Vec::new();
    let rounds: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(3);
    for round in 0..rounds {
        let t = Instant::now();
        let mut sum = 0u64;
        for &k in &probe {
            b.set_current_key(&k);
            sum += b.value(&s).get().unwrap().unwrap();
        }
        let ours = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for &k in &probe {
            sum += baseline_key_work(k, &mut buf, 128) as u64;
            sum += base.get(&k).copied().unwrap();
        }
        let theirs = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for &k in &probe {
            b.set_current_key(&k);
            b.value(&s).update(k + round).unwrap();
        }
        let upd = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for &k in &probe {
            sum += baseline_key_work(k, &mut buf, 128) as u64;
            base.insert(k, k + round);
        }
        let bupd = t.elapsed().as_nanos() as f64 / n as f64;
        println!("get ours {ours:.1} ns, hashbrown {theirs:.1} ns, ratio {:.2}; update ours {upd:.1} hashbrown {bupd:.1} ratio {:.2} ({sum})", ours/theirs, upd/bupd);
    }
}
