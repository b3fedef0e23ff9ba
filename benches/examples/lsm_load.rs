//! A bulk load of the LSM backend: `entries` value-state entries (`u64` keys in a scattered
//! order, 32-byte random values), flushed and compacted by one background thread under the
//! configured memory bounds, then random point reads.
//!
//! Usage: `cargo run --release -p flowstate-benches --example lsm_load -- [entries] [reads] [dir]`
//! (defaults: 10,000,000 entries, 1,000,000 reads, a temporary directory).
//!
//! It reports load throughput, flushes and compactions with their bytes, write amplification,
//! tables per level, the peak memtable memory observed (sampled every 100,000 writes) against the
//! bound `(max_immutable_memtables + 2) × memtable_bytes`, the slowest batch of 1,000 writes
//! (back-pressure stalls), peak RSS (`VmHWM`, which counts the pages of mapped table files) and
//! peak anonymous RSS (`RssAnon`, sampled), and for the reads their rate, the block cache hit
//! rate and a check of every value read. The figures in benches/README.md ("LSM backend") were
//! taken with it.

use std::time::{Duration, Instant};

use flowstate::lsm::{LsmBackground, LsmStats};
use flowstate::*;
use flowstate_benches::{arg, SplitMix64};

const MEMTABLE_BYTES: usize = 64 << 20;
const MAX_IMMUTABLE: usize = 2;
const CACHE_BYTES: usize = 64 << 20;
const MAXP: u32 = 128;
/// Writes between two samples of the tree's memory.
const SAMPLE_EVERY: u64 = 100_000;
/// Writes timed together to find stalls.
const BATCH: u64 = 1_000;
/// Writes between two progress lines.
const PROGRESS_EVERY: u64 = 1_000_000;

type Value = (u64, u64, u64, u64);

/// The `i`-th key: a bijection of `u64` (multiplication by an odd constant), so keys are
/// distinct and arrive in a scattered order, as a stream's keys do.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The 32-byte value of `k`: random, derived from the key (checked when read back).
fn value(k: u64) -> Value {
    let mut rng = SplitMix64::new(k);
    (
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    )
}

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`), or 0 where there is none.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn levels(stats: &LsmStats) -> String {
    let parts: Vec<String> = stats
        .tree
        .levels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.tables > 0)
        .map(|(i, l)| format!("L{i} {}×{:.0}M", l.tables, mib(l.bytes)))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

fn table_bytes(stats: &LsmStats) -> u64 {
    stats.tree.levels.iter().map(|l| l.bytes).sum()
}

fn row(figure: &str, value: String) {
    println!("| {figure:<52} | {value:<68} |");
}

fn main() -> Result<()> {
    let entries = arg(1, 10_000_000);
    let reads = arg(2, 1_000_000);
    let temp = tempfile::tempdir().map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let dir = std::env::args()
        .nth(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().join("lsm"));
    let mut backend = LsmBackend::<u64>::open(
        BackendConfig::lsm(&dir)
            .max_parallelism(MAXP)
            .lsm_memtable_bytes(MEMTABLE_BYTES)
            .lsm_max_immutable_memtables(MAX_IMMUTABLE)
            .lsm_block_cache_bytes(CACHE_BYTES)
            .lsm_background(LsmBackground::Threads(1)),
    )?;
    let state = backend.register(ValueStateDescriptor::<Value>::new("value"))?;
    let memtable_bound = (MAX_IMMUTABLE + 2) * MEMTABLE_BYTES;
    println!(
        "loading {entries} entries (u64 key, 32-byte random value) into {}: memtable {} MiB, \
         {MAX_IMMUTABLE} frozen memtables at most, block cache {} MiB, one background thread",
        dir.display(),
        MEMTABLE_BYTES >> 20,
        CACHE_BYTES >> 20
    );
    println!(
        "{:>6} {:>8} {:>10} {:>10} {:>9} {:>4} {:>4} {:>8} {:>6} {:>9}  levels",
        "M", "secs", "entries/s", "last 1M/s", "mem MiB", "imm", "L0", "tbl MiB", "WA", "RSS MiB"
    );

    let mut peak_mem = 0usize;
    let mut peak_imms = 0usize;
    let mut peak_l0 = 0usize;
    let mut peak_anon = 0u64;
    let mut slowest_batch = Duration::ZERO;
    let mut batches_over_10ms = 0u64;
    let mut time_over_10ms = Duration::ZERO;
    let mut batch_start = Instant::now();
    let start = Instant::now();
    let mut last_progress = start;
    for i in 0..entries {
        let k = key(i);
        backend.set_current_key(&k);
        backend.value(&state).update(value(k))?;
        let done = i + 1;
        if done % BATCH == 0 {
            let took = batch_start.elapsed();
            slowest_batch = slowest_batch.max(took);
            if took > Duration::from_millis(10) {
                batches_over_10ms += 1;
                time_over_10ms += took;
            }
            if done % SAMPLE_EVERY == 0 {
                let s = backend.stats();
                peak_mem = peak_mem.max(s.tree.memtable_bytes + s.tree.immutable_memtable_bytes);
                peak_imms = peak_imms.max(s.tree.immutable_memtables);
                peak_l0 = peak_l0.max(s.tree.levels.first().map_or(0, |l| l.tables));
                peak_anon = peak_anon.max(proc_status_kib("RssAnon:"));
                if done % PROGRESS_EVERY == 0 || done == entries {
                    let now = Instant::now();
                    let secs = (now - start).as_secs_f64();
                    let interval = (now - last_progress).as_secs_f64();
                    last_progress = now;
                    println!(
                        "{:>6.1} {:>8.1} {:>10.0} {:>10.0} {:>9.1} {:>4} {:>4} {:>8.0} {:>6.2} {:>9.0}  {}",
                        done as f64 / 1e6,
                        secs,
                        done as f64 / secs,
                        (PROGRESS_EVERY.min(done)) as f64 / interval,
                        mib((s.tree.memtable_bytes + s.tree.immutable_memtable_bytes) as u64),
                        s.tree.immutable_memtables,
                        s.tree.levels.first().map_or(0, |l| l.tables),
                        mib(table_bytes(&s)),
                        s.write_amplification(),
                        proc_status_kib("VmRSS:") as f64 / 1024.0,
                        levels(&s),
                    );
                }
            }
            batch_start = Instant::now();
        }
    }
    let load = start.elapsed();
    let after_load = backend.stats();
    let hwm_load = proc_status_kib("VmHWM:");

    let drain_start = Instant::now();
    backend.flush_and_compact()?;
    let drain = drain_start.elapsed();
    let drained = backend.stats();
    let hwm_drain = proc_status_kib("VmHWM:");
    let table_memory = drained.tree.table_memory_bytes;

    // Random point reads of loaded keys, every value checked; then keys never written.
    let mut rng = SplitMix64::new(7);
    let cache_before = drained.cache.unwrap_or_default();
    let read_start = Instant::now();
    let mut wrong = 0u64;
    for _ in 0..reads {
        let k = key(rng.below(entries));
        backend.set_current_key(&k);
        if backend.value(&state).get()? != Some(value(k)) {
            wrong += 1;
        }
    }
    let read_time = read_start.elapsed();
    let cache_after = backend.stats().cache.unwrap_or_default();
    let absent_reads = (reads / 10).max(1);
    let absent_start = Instant::now();
    let mut found_absent = 0u64;
    for _ in 0..absent_reads {
        let k = key(entries + rng.below(u64::MAX - entries));
        backend.set_current_key(&k);
        if backend.value(&state).get()?.is_some() {
            found_absent += 1;
        }
    }
    let absent_time = absent_start.elapsed();
    let hwm_end = proc_status_kib("VmHWM:");
    peak_anon = peak_anon.max(proc_status_kib("RssAnon:"));
    let file_end = proc_status_kib("RssFile:");

    let hits = cache_after.hits - cache_before.hits;
    let misses = cache_after.misses - cache_before.misses;
    let logical = entries * (8 + 32);
    let t = &drained.tree;
    let written = t.flush_bytes_written + t.compaction_bytes_written;

    println!();
    println!("| {:<52} | {:<68} |", "figure", "value");
    println!("|{}|{}|", "-".repeat(54), "-".repeat(70));
    row(
        "entries loaded (8-byte key, 32-byte value)",
        format!("{entries} ({:.0} MiB of keys and values)", mib(logical)),
    );
    row(
        "load: wall time, throughput",
        format!(
            "{:.1} s, {:.0} entries/s",
            load.as_secs_f64(),
            entries as f64 / load.as_secs_f64()
        ),
    );
    row(
        "then flush_and_compact (memtables, due compactions)",
        format!(
            "{:.1} s; load + drain {:.0} entries/s",
            drain.as_secs_f64(),
            entries as f64 / (load + drain).as_secs_f64()
        ),
    );
    row(
        "slowest 1,000 writes; batches of 1,000 over 10 ms",
        format!(
            "{:.1} ms; {batches_over_10ms} of {}, {:.1} s in all",
            slowest_batch.as_secs_f64() * 1e3,
            entries / BATCH,
            time_over_10ms.as_secs_f64()
        ),
    );
    row(
        "at the end of the load: flushes, compactions",
        format!(
            "{} flushes, {} compactions ({} trivial moves), WA {:.2}",
            after_load.tree.flushes,
            after_load.tree.compactions,
            after_load.tree.trivial_moves,
            after_load.write_amplification()
        ),
    );
    row(
        "after the drain: flushes, compactions",
        format!(
            "{} flushes, {} compactions ({} trivial moves)",
            t.flushes, t.compactions, t.trivial_moves
        ),
    );
    row(
        "bytes flushed / compaction read / compaction written",
        format!(
            "{:.0} / {:.0} / {:.0} MiB",
            mib(t.flush_bytes_written),
            mib(t.compaction_bytes_read),
            mib(t.compaction_bytes_written)
        ),
    );
    row(
        "write amplification (flush + compaction) / flush",
        format!("{:.2}", drained.write_amplification()),
    );
    row(
        "table bytes written / logical bytes (40 B an entry)",
        format!("{:.2}", written as f64 / logical as f64),
    );
    row(
        "tables per level after the drain",
        format!(
            "{} ({:.0} MiB, {:.1} B an entry)",
            levels(&drained),
            mib(table_bytes(&drained)),
            table_bytes(&drained) as f64 / entries as f64
        ),
    );
    row(
        "peak memtable + frozen memtables (sampled / 100k)",
        format!(
            "{:.1} MiB of the bound {} MiB ((2 + {MAX_IMMUTABLE}) × {} MiB); {peak_imms} frozen at most",
            mib(peak_mem as u64),
            memtable_bound >> 20,
            MEMTABLE_BYTES >> 20
        ),
    );
    row("peak L0 tables (sampled)", format!("{peak_l0}"));
    row(
        "open tables' memory (index, filter) after the drain",
        format!("{:.1} MiB", mib(table_memory as u64)),
    );
    row(
        "block cache after the reads",
        format!(
            "{:.1} of {:.0} MiB, {} blocks, {} evictions",
            mib(cache_after.usage_bytes as u64),
            mib(cache_after.capacity_bytes as u64),
            cache_after.entries,
            cache_after.evictions
        ),
    );
    row(
        "peak RSS (VmHWM): load / drain / reads",
        format!(
            "{:.0} / {:.0} / {:.0} MiB (memtable bound + cache = {} MiB)",
            hwm_load as f64 / 1024.0,
            hwm_drain as f64 / 1024.0,
            hwm_end as f64 / 1024.0,
            (memtable_bound + CACHE_BYTES) >> 20
        ),
    );
    row(
        "peak anonymous RSS (RssAnon, sampled); mapped files at the end",
        format!(
            "{:.0} MiB (memtable bound + cache = {} MiB); RssFile {:.0} MiB (page cache of mapped tables)",
            peak_anon as f64 / 1024.0,
            (memtable_bound + CACHE_BYTES) >> 20,
            file_end as f64 / 1024.0,
        ),
    );
    row(
        "random reads of loaded keys (values checked)",
        format!(
            "{reads} in {:.2} s: {:.0} reads/s, {:.2} µs each, {wrong} wrong",
            read_time.as_secs_f64(),
            reads as f64 / read_time.as_secs_f64(),
            read_time.as_secs_f64() * 1e6 / reads.max(1) as f64
        ),
    );
    row(
        "block cache during those reads",
        format!(
            "{hits} hits, {misses} misses: {:.1}% hits",
            100.0 * hits as f64 / (hits + misses).max(1) as f64
        ),
    );
    row(
        "reads of keys never written",
        format!(
            "{absent_reads} in {:.2} s: {:.0} reads/s, {found_absent} found",
            absent_time.as_secs_f64(),
            absent_reads as f64 / absent_time.as_secs_f64()
        ),
    );
    if wrong > 0 || found_absent > 0 {
        return Err(Error::InvalidArgument(format!(
            "{wrong} reads returned a wrong value and {found_absent} absent keys were found"
        )));
    }
    Ok(())
}
