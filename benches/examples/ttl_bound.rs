//! A long run of state with a TTL: keys that are written once and never read again (sessions
//! that end), on a simulated clock. With background cleanup the stored state settles at a bound
//! (about rate × TTL); without it, it grows with everything ever written.
//!
//! ```sh
//! cargo run --release -p flowstate-benches --example ttl_bound -- [keys-per-second] [seconds] [ttl-seconds]
//! ```
//!
//! Prints, every few simulated seconds, for the heap backend with incremental cleanup (5 and 0
//! entries per access) and the LSM backend with its compaction filter (with a full compaction
//! every TTL, without one, and without a TTL, for comparison): the entries stored and the bytes
//! they take (the heap's table bytes, the LSM's table files). Keys that are written once are
//! the hard case for the LSM backend: leveled compaction need not revisit the tables that hold
//! them, so the filter only sees them when something compacts those tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate::lsm::LsmBackground;
use flowstate::*;

/// One backend of the run: its state and how to read what it stores.
struct Run {
    name: &'static str,
    backend: Backend<u64>,
    state: ValueState<u64>,
    /// Whether it runs a full compaction every TTL (LSM only).
    periodic_compaction: bool,
}

impl Run {
    fn stored(&self) -> (usize, u64) {
        let entries = self.backend.entry_count().expect("counting works");
        let bytes = match &self.backend {
            Backend::Heap(h) => h.table_bytes() as u64,
            Backend::Lsm(l) => l.stats().tree.levels.iter().map(|l| l.bytes).sum(),
            _ => 0,
        };
        (entries, bytes)
    }
}

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("numbers: keys-per-second seconds ttl-seconds")
        })
        .collect();
    let rate = args.first().copied().unwrap_or(20_000);
    let seconds = args.get(1).copied().unwrap_or(120);
    let ttl_s = args.get(2).copied().unwrap_or(10);
    let clock = Arc::new(ManualClock::new(0));
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Stored expired state counts in entry_count under this visibility: the count shows what
    // the backend holds, not what a read would see.
    let ttl = |cleanup| {
        TtlConfig::after(Duration::from_secs(ttl_s))
            .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
            .incremental_cleanup(cleanup)
    };
    let mut runs = Vec::new();
    for (name, cleanup, kind, periodic_compaction) in [
        ("heap, cleanup 5/access", Some(5), "heap", false),
        ("heap, cleanup off", Some(0), "heap", false),
        ("lsm, filter + full compaction/TTL", Some(0), "lsm", true),
        ("lsm, filter only", Some(0), "lsm", false),
        ("lsm, no TTL", None, "lsm", false),
    ] {
        let config = match kind {
            "heap" => BackendConfig::heap(),
            _ => BackendConfig::lsm(dir.path().join(name.replace([' ', ','], "-")))
                .lsm_memtable_bytes(8 << 20)
                .lsm_background(LsmBackground::Inline),
        }
        .clock(clock.clone());
        let mut backend = Backend::<u64>::open(config)?;
        let descriptor = ValueStateDescriptor::<u64>::new("last-seen");
        let state = match cleanup {
            Some(c) => backend.register(descriptor.with_ttl(ttl(c)))?,
            None => backend.register(descriptor)?,
        };
        runs.push(Run {
            name,
            backend,
            state,
            periodic_compaction,
        });
    }
    println!(
        "{rate} new keys/s, each written once, TTL {ttl_s} s, {seconds} s simulated; \
         entries stored / MiB at each report"
    );
    print!("{:>6}", "second");
    for r in &runs {
        print!(" | {:>34}", r.name);
    }
    println!();
    let started = Instant::now();
    let mut next_key = 0u64;
    for second in 1..=seconds {
        for i in 0..rate {
            clock.set((second - 1) * 1000 + i * 1000 / rate);
            for r in &mut runs {
                r.backend.set_current_key(&next_key);
                r.backend.value(&r.state).update(next_key)?;
            }
            next_key += 1;
        }
        if second % ttl_s.max(1) == 0 {
            for r in &runs {
                if let (true, Backend::Lsm(l)) = (r.periodic_compaction, &r.backend) {
                    l.compact_all()?;
                }
            }
        }
        if second % (seconds / 12).max(1) == 0 || second == seconds {
            print!("{second:>6}");
            for r in &runs {
                let (entries, bytes) = r.stored();
                print!(
                    " | {:>21} {:>8.1} MiB",
                    entries,
                    bytes as f64 / (1 << 20) as f64
                );
            }
            println!();
        }
    }
    println!(
        "live at the end (written in the last {ttl_s} s): {}; wall time {:.1} s",
        rate * ttl_s.min(seconds),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
