//! The peer comparison's report: `benches/REPORT.md`, a table per workload and the headline
//! ratios, with the machine, date, load and settings they were measured with.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Family, Settings, StoreKind, Workload, WorkloadResult};

/// The flowstate / peer pairs of the headline table.
pub const PAIRS: [(StoreKind, StoreKind); 4] = [
    (StoreKind::Heap, StoreKind::Hashbrown),
    (StoreKind::Lsm, StoreKind::RocksDb),
    (StoreKind::Heap, StoreKind::Disk),
    (StoreKind::Lsm, StoreKind::Disk),
];

/// What the report says besides the results.
#[derive(Debug, Clone)]
pub struct Context {
    /// The settings of the run.
    pub settings: Settings,
    /// The command that produced the report, as the user should type it again.
    pub command: String,
    /// `/proc/loadavg` before the run.
    pub load_before: String,
    /// `/proc/loadavg` after the run.
    pub load_after: String,
    /// When the run started.
    pub started: SystemTime,
    /// How long the run took.
    pub elapsed: Duration,
    /// Charts as (title, path relative to the report).
    pub charts: Vec<(String, String)>,
    /// Why there are no charts, if there are none.
    pub chart_note: Option<String>,
}

/// The first line of `path` with `key` in it, after the colon (for `/proc/cpuinfo` and
/// `/proc/meminfo`).
fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// The load averages of `/proc/loadavg` (1, 5 and 15 minutes), or "unknown".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// One line about the machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|m| m.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1 << 20) as f64)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |s| s.trim().to_owned());
    format!("{cpu}, {cores} cores available, {mem} memory, Linux {kernel}")
}

/// The commit the harness was built from (`git rev-parse --short HEAD`), if git answers.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `t` as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A throughput with a k/M suffix.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

/// A ratio with two decimals, or three significant digits below 0.1.
pub fn ratio(x: f64) -> String {
    if x < 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

fn bytes(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// What is known about why flowstate's store loses to `peer` on `workload` (the causes
/// benches/README.md and issue 11 name, from `perf` profiles of the probe examples; this run
/// profiles nothing).
pub fn known_reason(workload: Workload, flowstate: StoreKind, peer: StoreKind) -> &'static str {
    use Workload::*;
    match (flowstate, peer, workload) {
        (StoreKind::Heap, StoreKind::Hashbrown, ValueAdd) => {
            "an insert probes the bucket's slot array (a cache miss: tags sit inside the \
             24-byte slots) where hashbrown touches only its control bytes before a store, and \
             a full bucket is rebuilt at 1.5x (benches/README.md, \"Read paths\")"
        }
        (StoreKind::Heap, StoreKind::Hashbrown, Checkpoint) => {
            "the asynchronous phase walks the copy-on-write buckets (a cache miss per bucket), \
             sorts each key group and encodes the canonical format, on at most 2 threads \
             (benches/README.md, heap checkpoints)"
        }
        (StoreKind::Heap, StoreKind::Hashbrown, Restore) => {
            "restore decodes the canonical format and types each state at registration \
             (CPU-bound; benches/README.md, heap checkpoints)"
        }
        (StoreKind::Heap, StoreKind::Hashbrown, _) => {
            "two dependent cache misses per access (the bucket vector, then the bucket's slots) \
             with a longer instruction path than hashbrown's between them, so fewer accesses \
             overlap (benches/README.md, \"Heap backend vs hashbrown\")"
        }
        (StoreKind::Lsm, StoreKind::RocksDb, MapGet | MapContains | MapIterate) => {
            "most map blocks miss the cache: a miss decompresses the block and checks every \
             entry of it (benches/README.md, \"Read paths\")"
        }
        (StoreKind::Lsm, StoreKind::RocksDb, Checkpoint) => {
            "the LSM's full checkpoint scans the frozen tree key group by key group and sorts \
             each key group into the canonical order (spec/lsm-key-layout.md section 2); RocksDB's \
             row writes its iterator's bytes as they come"
        }
        (StoreKind::Lsm, StoreKind::RocksDb, _) => "not profiled in this run",
        (_, StoreKind::Disk, Checkpoint) => {
            "the disk row is the bound: a raw write of the same bytes, with no encoding"
        }
        (_, StoreKind::Disk, Restore) => {
            "the disk row is the bound: a sequential read of the same bytes (page cache), with \
             no decoding or insertion"
        }
        _ => "not profiled in this run",
    }
}

/// Renders the whole report.
pub fn render(results: &[WorkloadResult], ctx: &Context) -> String {
    let s = &ctx.settings;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# flowstate against its peers\n");
    let _ = writeln!(
        w,
        "Generated by `{}` (benches/src/peers, benches/examples/peers.rs); do not edit by hand.\n",
        ctx.command
    );
    let _ = writeln!(w, "- date: {}", utc(ctx.started));
    let _ = writeln!(w, "- machine: {}", machine());
    let _ = writeln!(
        w,
        "- load average (1/5/15 min): {} before, {} after; the machine is shared, so compare \
         ratios within this run",
        ctx.load_before, ctx.load_after
    );
    if let Some(commit) = git_commit() {
        let _ = writeln!(w, "- commit: {commit}");
    }
    let _ = writeln!(
        w,
        "- duration: {:.0} s{}",
        ctx.elapsed.as_secs_f64(),
        if s.quick { " (quick mode)" } else { "" }
    );
    let _ = writeln!(
        w,
        "- settings: {} keys for value/list/map state (maps of 10 `u64 -> f64` entries, lists of \
         10 `u64`), {} YCSB records of 100 random bytes, {} value entries checkpointed; {} \
         run(s) of {} ms per store and operation workload, median reported; block cache {} MiB \
         (YCSB: {:.1} MiB, about a tenth of the records' bytes) and memtable {} MiB for both \
         LSM stores; max parallelism 128",
        s.keys,
        s.ycsb_records,
        s.checkpoint_entries,
        s.runs,
        s.budget.as_millis(),
        s.cache_bytes >> 20,
        s.ycsb_cache_bytes() as f64 / (1 << 20) as f64,
        s.memtable_bytes >> 20
    );
    let _ = writeln!(w, "\n{}\n", STORES_TEXT);

    let _ = writeln!(w, "## Headline: flowstate / peer\n");
    let _ = writeln!(
        w,
        "Throughput of flowstate divided by the peer's, each ratio taken within one run and the \
         median of the runs reported (> 1: flowstate is faster). A ratio below 1 is marked ✗; \
         its reason is in the workload's table below.\n"
    );
    let _ = writeln!(
        w,
        "| workload | heap / hashbrown | LSM / RocksDB | heap / disk | LSM / disk |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for r in results {
        let mut line = format!("| {} |", r.workload.name());
        for (a, b) in PAIRS {
            let cell = match r.ratio(a, b) {
                Some(x) if x < 1.0 => format!(" {} ✗ |", ratio(x)),
                Some(x) => format!(" {} |", ratio(x)),
                None => match r.row(b).and_then(|row| row.note.clone()) {
                    Some(note) if r.row(b).is_some_and(|row| row.runs.is_empty()) => {
                        format!(" {note} |")
                    }
                    _ => " – |".to_owned(),
                },
            };
            line.push_str(&cell);
        }
        let _ = writeln!(w, "{line}");
    }
    let _ = writeln!(w);
    for (title, path) in &ctx.charts {
        let _ = writeln!(w, "![{title}]({path})\n");
    }
    if let Some(note) = &ctx.chart_note {
        let _ = writeln!(w, "Charts: {note}\n");
    }

    let mut family = None;
    for r in results {
        let f = family_of(r.workload);
        if family != Some(f) {
            family = Some(f);
            let _ = writeln!(w, "## {}\n", family_title(f));
        }
        workload_table(w, r);
    }
    out
}

const STORES_TEXT: &str = "Stores: **flowstate heap** and **flowstate LSM** through \
`flowstate::Backend` (LSM: one background thread, full checkpoints, flushed and compacted before \
each read workload); **hashbrown** maps shaped like Flink's heap backend (one map per key group, \
the key group computed per access from the encoded key, foldhash); **RocksDB** through the \
`rocksdb` crate configured as Flink's RocksDB backend (no WAL, key = key group | key | \
namespace, list append through a `,`-joining merge operator, LZ4, 10-bit bloom filters, an LRU \
block cache of the LSM's size holding data blocks and the partitioned index and filter blocks \
(two-level index, partitioned filters, cached with high priority, top level pinned: Flink's \
managed memory with `partitioned-index-filters`), as our LSM charges its tables' indexes and \
filters to its cache, so both bound memory by the cache (unpartitioned filter blocks thrashed a \
64 MiB cache: about 2,000 map gets/s), write buffer of the LSM's memtable size, 2 background \
jobs; flushed and compacted before each read workload; reads with \
`get_pinned`); **disk**: a sequential write (fsync, rename, directory fsync) and read of as many \
bytes as the heap checkpoint, in the same directory. Checkpoints: flowstate writes its canonical \
full checkpoint through `FsCheckpointStorage`; hashbrown serializes its maps key group by key \
group into one file; RocksDB writes every entry of an iterator, length-prefixed, into one file \
(Flink's full snapshot). Restores: flowstate's `Backend::restore` (the LSM writes tables and \
ingests them); hashbrown rebuilds its maps; RocksDB puts every entry through write batches \
without WAL into a new database and flushes it. Every checkpoint is fsynced. Every run starts \
from the preloaded state, as each of Flink's benchmarks starts from its own setup: before runs 2 \
and later, untimed, the keys `valueAdd` added are removed and the lists `listAdd` grew are set \
back to their 10 elements, and the LSM stores compact fully, also for the map family, whose \
puts spread the maps over levels (otherwise each run would read a larger state, the faster \
store's the largest, and map reads would meet one, two or three levels by the chance of \
compaction timing; benches/README.md has map reads over state spread across levels).";

fn family_of(w: Workload) -> Family {
    match w {
        Workload::ValueGet | Workload::ValueUpdate | Workload::ValueAdd => Family::Value,
        Workload::ListGet | Workload::ListAdd => Family::List,
        Workload::MapGet | Workload::MapContains | Workload::MapIterate | Workload::MapPut => {
            Family::Map
        }
        Workload::Ycsb { .. } => Family::Ycsb,
        Workload::Checkpoint | Workload::Restore => Family::Checkpoint,
    }
}

fn family_title(f: Family) -> &'static str {
    match f {
        Family::Value => "Value state (Flink's valueGet, valueUpdate, valueAdd)",
        Family::List => "List state (Flink's listGet, listAppend)",
        Family::Map => "Map state (Flink's mapGet, mapContains, mapIterator, mapUpdate)",
        Family::Ycsb => "YCSB-like mixes (state about 10x the LSM's block cache)",
        Family::Checkpoint => "Full checkpoint and restore of a value state",
    }
}

fn workload_table(w: &mut String, r: &WorkloadResult) {
    let checkpoint = matches!(r.workload, Workload::Checkpoint | Workload::Restore);
    let _ = writeln!(w, "### {}\n", r.workload.name());
    let extra = if checkpoint {
        " ms (median) | bytes |"
    } else {
        ""
    };
    let _ = writeln!(
        w,
        "| store | {} (median) | runs (min – max) |{} heap / store | LSM / store | note |",
        r.workload.unit(),
        extra
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|{}---:|---:|---|",
        if checkpoint { "---:|---:|" } else { "" }
    );
    for row in &r.rows {
        let (median, range) = if row.runs.is_empty() {
            ("–".to_owned(), "–".to_owned())
        } else {
            let lo = row.runs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = row.runs.iter().copied().fold(0.0, f64::max);
            (
                si(super::median(&row.runs)),
                format!("{} – {}", si(lo), si(hi)),
            )
        };
        let mut line = format!("| {} | {median} | {range} |", row.store.label());
        if checkpoint {
            let ms = if row.millis.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1}", super::median(&row.millis))
            };
            let b = row.bytes.map_or("–".to_owned(), bytes);
            let _ = write!(line, " {ms} | {b} |");
        }
        let mut notes: Vec<String> = row.note.iter().cloned().collect();
        for flow in [StoreKind::Heap, StoreKind::Lsm] {
            let cell = if row.store == flow {
                " 1 |".to_owned()
            } else {
                match r.ratio(flow, row.store) {
                    Some(x) => {
                        let headline = PAIRS.contains(&(flow, row.store));
                        if headline && x < 1.0 {
                            notes.push(format!(
                                "{} loses ({}): {}",
                                flow.label(),
                                ratio(x),
                                known_reason(r.workload, flow, row.store)
                            ));
                        }
                        format!(" {} |", ratio(x))
                    }
                    None => " – |".to_owned(),
                }
            };
            line.push_str(&cell);
        }
        let _ = writeln!(w, "{line} {} |", notes.join("; "));
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_give_ratios_and_reasons() {
        use super::super::{Row, Settings};
        let row = |store: StoreKind, runs: Vec<f64>| Row {
            store,
            runs,
            millis: Vec::new(),
            bytes: None,
            note: store.not_built().map(str::to_owned),
        };
        let results = vec![WorkloadResult {
            workload: Workload::ValueGet,
            rows: vec![
                row(StoreKind::Heap, vec![1.0e6, 2.0e6]),
                row(StoreKind::Lsm, vec![5.0e5, 5.0e5]),
                row(StoreKind::Hashbrown, vec![2.0e6, 4.0e6]),
                row(StoreKind::RocksDb, Vec::new()),
            ],
        }];
        let ctx = Context {
            settings: Settings::quick(),
            command: "peers --quick".into(),
            load_before: "0 0 0".into(),
            load_after: "0 0 0".into(),
            started: UNIX_EPOCH,
            elapsed: Duration::from_secs(1),
            charts: Vec::new(),
            chart_note: Some("none".into()),
        };
        let text = render(&results, &ctx);
        assert!(text.contains("| value get | 0.50 ✗ |"), "{text}");
        assert!(text.contains("flowstate heap loses (0.50): two dependent cache misses"));
        if cfg!(feature = "peers") {
            assert!(!text.contains("not built"));
        } else {
            assert!(text.contains("not built: --features peers"));
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc(t), "2024-02-29 12:34 UTC");
    }
}
