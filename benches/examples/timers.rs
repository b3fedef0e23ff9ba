//! Timers: register 1 M event-time timers over 100 k keys, then fire them all by advancing the
//! watermark, on the heap and the LSM backend, beside a plain `BinaryHeap` of the same
//! (timestamp, key, namespace) items pushed and popped in the same run (no deduplication, no
//! state, no key switching: the floor). Prints the median of the runs, the ratios, and how many
//! timers each store held in memory once all were registered (the LSM backend caches 128 per key
//! group and domain; the rest stay in its tree).
//!
//! ```sh
//! cargo run --release -p flowstate-benches --example timers -- [timers] [keys] [runs]
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use flowstate::lsm::LsmBackground;
use flowstate::timer::TimerService;
use flowstate::*;
use flowstate_benches::SplitMix64;

/// The timers of a run: (timestamp, key, window start), deterministic.
fn items(n: u64, keys: u64) -> Vec<(i64, u64, i64)> {
    let mut rng = SplitMix64::new(11);
    (0..n)
        .map(|_| {
            let key = rng.below(keys);
            let window = rng.below(1_000) as i64 * 60_000;
            (window + 59_999, key, window)
        })
        .collect()
}

fn flowstate_run(
    mut backend: Backend<u64>,
    items: &[(i64, u64, i64)],
) -> Result<(Duration, Duration, usize, usize)> {
    let mut timers = TimerService::<u64, TimeWindow>::register(&mut backend, "windows")?;
    let started = Instant::now();
    for &(ts, key, start) in items {
        backend.set_current_key(&key);
        timers.register_event_time_timer(
            &mut backend,
            &TimeWindow::new(start, start + 60_000),
            ts,
        )?;
    }
    let registered = started.elapsed();
    let in_memory = timers.timers_in_memory();
    let started = Instant::now();
    let mut fired = 0usize;
    timers.advance_watermark(&mut backend, i64::MAX, |_, _, t| {
        black_box(t);
        fired += 1;
        Ok(())
    })?;
    Ok((registered, started.elapsed(), fired, in_memory))
}

fn heap_run(items: &[(i64, u64, i64)]) -> (Duration, Duration, usize, usize) {
    let started = Instant::now();
    let mut heap = BinaryHeap::with_capacity(items.len());
    for &(ts, key, start) in items {
        heap.push(Reverse((ts, key, start)));
    }
    let registered = started.elapsed();
    let in_memory = heap.len();
    let started = Instant::now();
    let mut fired = 0;
    while let Some(t) = heap.pop() {
        black_box(t);
        fired += 1;
    }
    (registered, started.elapsed(), fired, in_memory)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: timers keys runs"))
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let keys = args.get(1).copied().unwrap_or(100_000);
    let runs = args.get(2).copied().unwrap_or(3);
    let items = items(n, keys);
    let distinct: std::collections::BTreeSet<_> = items.iter().collect();
    println!(
        "{n} timers ({} distinct) over {keys} keys, {runs} runs, medians",
        distinct.len()
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>, usize)> = Vec::new();
    for name in ["BinaryHeap", "flowstate heap", "flowstate LSM"] {
        let (mut reg, mut fire, mut held) = (Vec::new(), Vec::new(), 0);
        for run in 0..runs {
            let (r, f, fired, in_memory) = match name {
                "BinaryHeap" => heap_run(&items),
                "flowstate heap" => flowstate_run(Backend::open(BackendConfig::heap())?, &items)?,
                _ => flowstate_run(
                    Backend::open(
                        BackendConfig::lsm(dir.path().join(format!("lsm-{run}")))
                            .lsm_background(LsmBackground::Threads(1)),
                    )?,
                    &items,
                )?,
            };
            assert!(fired >= distinct.len(), "{name} fired {fired}");
            reg.push(r);
            fire.push(f);
            held = in_memory;
        }
        rows.push((name, reg, fire, held));
    }
    let base = (median(rows[0].1.clone()), median(rows[0].2.clone()));
    println!(
        "| store | register (ms) | fire all (ms) | register / BinaryHeap | fire / BinaryHeap \
         | (register + fire) / BinaryHeap | timers in memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, reg, fire, held) in rows {
        let (r, f) = (median(reg), median(fire));
        println!(
            "| {name} | {:.0} | {:.0} | {:.1}x | {:.1}x | {:.1}x | {held} |",
            r.as_secs_f64() * 1e3,
            f.as_secs_f64() * 1e3,
            r.as_secs_f64() / base.0.as_secs_f64(),
            f.as_secs_f64() / base.1.as_secs_f64(),
            (r + f).as_secs_f64() / (base.0 + base.1).as_secs_f64(),
        );
    }
    Ok(())
}
