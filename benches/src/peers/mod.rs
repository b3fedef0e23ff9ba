//! The peer comparison behind the `peers` example: the same workloads against flowstate's two
//! backends and the stores a user would pick instead, each measured in the same run, written
//! to `benches/REPORT.md` (see [`report`]).
//!
//! Stores ([`StoreKind`]):
//!
//! - flowstate's heap and LSM backends, through [`flowstate::Backend`];
//! - [`FlinkHeap`]: `hashbrown` maps shaped like Flink's heap backend (one map per key group,
//!   the key group computed per access from the encoded key);
//! - RocksDB through the `rocksdb` crate, configured as Flink's RocksDB backend configures it
//!   (only with the benches crate's cargo feature `peers`; otherwise its rows say so);
//! - the disk, for the checkpoint rows only: a sequential write, then read, of as many bytes as
//!   the heap backend's checkpoint, in the same directory.
//!
//! Workloads ([`Workload`]): Flink's value, list and map state benchmarks, a YCSB-like mix of
//! reads and updates (95/5 and 50/50, uniform and zipfian keys) over a state about ten times
//! the LSM's block cache, and a full checkpoint and restore of a value state.

mod flink_heap;
mod flowstate_store;
pub mod report;
#[cfg(feature = "peers")]
mod rocks;

#[cfg(feature = "plot")]
pub mod chart;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use flink_heap::FlinkHeap;
pub use flowstate_store::FlowstateStore;
#[cfg(feature = "peers")]
pub use rocks::RocksStore;

use crate::{shuffled_keys, Cycle, SplitMix64, MAP_ENTRIES};

/// The error every store operation returns: the store's own error, boxed.
pub type PeerError = Box<dyn std::error::Error + Send + Sync>;
/// The result of a store operation.
pub type PeerResult<T> = Result<T, PeerError>;

/// The key groups of the job (Flink's default max parallelism; 1-byte key-group prefixes).
pub const MAX_PARALLELISM: u32 = 128;
/// Elements per list after the preload (Flink's list benchmarks).
pub const LIST_ELEMENTS: u64 = 10;
/// Bytes of a YCSB record's value.
pub const YCSB_VALUE_BYTES: usize = 100;
/// The zipfian constant of the YCSB key chooser (YCSB's default).
pub const ZIPF_THETA: f64 = 0.99;

/// A store under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    /// flowstate's heap backend.
    Heap,
    /// flowstate's LSM backend.
    Lsm,
    /// `hashbrown` maps shaped like Flink's heap backend ([`FlinkHeap`]).
    Hashbrown,
    /// RocksDB configured as Flink's RocksDB backend.
    RocksDb,
    /// Sequential file write and read (checkpoint rows only).
    Disk,
}

impl StoreKind {
    /// Every store, in the report's order.
    pub const ALL: [StoreKind; 5] = [
        StoreKind::Heap,
        StoreKind::Lsm,
        StoreKind::Hashbrown,
        StoreKind::RocksDb,
        StoreKind::Disk,
    ];

    /// The store's name on the command line (`--stores`).
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Heap => "heap",
            StoreKind::Lsm => "lsm",
            StoreKind::Hashbrown => "hashbrown",
            StoreKind::RocksDb => "rocksdb",
            StoreKind::Disk => "disk",
        }
    }

    /// The name the report prints.
    pub fn label(self) -> &'static str {
        match self {
            StoreKind::Heap => "flowstate heap",
            StoreKind::Lsm => "flowstate LSM",
            StoreKind::Hashbrown => "hashbrown (Flink heap shape)",
            StoreKind::RocksDb => "RocksDB (Flink settings)",
            StoreKind::Disk => "disk (sequential write / read)",
        }
    }

    /// Why the store has no rows in this build, if it has none.
    pub fn not_built(self) -> Option<&'static str> {
        if self == StoreKind::RocksDb && !cfg!(feature = "peers") {
            Some("not built: --features peers")
        } else {
            None
        }
    }
}

/// A group of workloads that share one preloaded state per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Value state: `u64 -> u64`.
    Value,
    /// List state: lists of `u64`.
    List,
    /// Map state: maps of `u64 -> f64`.
    Map,
    /// Value state of 100-byte values, about ten times the LSM's block cache.
    Ycsb,
    /// A full checkpoint, then a restore, of a value state.
    Checkpoint,
}

impl Family {
    /// Every family, in the report's order.
    pub const ALL: [Family; 5] = [
        Family::Value,
        Family::List,
        Family::Map,
        Family::Ycsb,
        Family::Checkpoint,
    ];

    /// The family's name on the command line (`--only`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Value => "value",
            Family::List => "list",
            Family::Map => "map",
            Family::Ycsb => "ycsb",
            Family::Checkpoint => "checkpoint",
        }
    }

    /// The workloads of the family.
    pub fn workloads(self) -> Vec<Workload> {
        match self {
            Family::Value => vec![
                Workload::ValueGet,
                Workload::ValueUpdate,
                Workload::ValueAdd,
            ],
            Family::List => vec![Workload::ListGet, Workload::ListAdd],
            Family::Map => vec![
                Workload::MapGet,
                Workload::MapContains,
                Workload::MapIterate,
                Workload::MapPut,
            ],
            Family::Ycsb => vec![
                Workload::Ycsb {
                    read_percent: 95,
                    zipfian: false,
                },
                Workload::Ycsb {
                    read_percent: 95,
                    zipfian: true,
                },
                Workload::Ycsb {
                    read_percent: 50,
                    zipfian: false,
                },
                Workload::Ycsb {
                    read_percent: 50,
                    zipfian: true,
                },
            ],
            Family::Checkpoint => vec![Workload::Checkpoint, Workload::Restore],
        }
    }

    /// The stores of `chosen` the family runs (the disk only for checkpoints).
    pub fn stores(self, chosen: &[StoreKind]) -> Vec<StoreKind> {
        StoreKind::ALL
            .into_iter()
            .filter(|s| chosen.contains(s))
            .filter(|&s| s != StoreKind::Disk || self == Family::Checkpoint)
            .collect()
    }
}

/// One measured workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Flink's `valueGet`: get the value of a preloaded key.
    ValueGet,
    /// Flink's `valueUpdate`: overwrite the value of a preloaded key.
    ValueUpdate,
    /// Flink's `valueAdd`: set the value of a key never written before.
    ValueAdd,
    /// Flink's `listGet`: read a whole list (10 elements after the preload).
    ListGet,
    /// Flink's `listAdd` (`listAppend`): append one element.
    ListAdd,
    /// Flink's `mapGet`: get one of the 10 entries of a key's map.
    MapGet,
    /// Flink's `mapContains`: probe a user key, half of them absent.
    MapContains,
    /// Flink's `mapIterator`: iterate over a key's 10 entries (one op = one whole map).
    MapIterate,
    /// Flink's `mapUpdate` (`mapPut`): overwrite one entry.
    MapPut,
    /// YCSB-like mix: `read_percent`% reads, the rest updates of 100-byte values.
    Ycsb {
        /// Percentage of reads.
        read_percent: u32,
        /// Zipfian (scrambled, theta 0.99) keys instead of uniform ones.
        zipfian: bool,
    },
    /// A full checkpoint of the state (entries per second; time and bytes shown too).
    Checkpoint,
    /// A restore of that checkpoint into a new store (entries per second).
    Restore,
}

impl Workload {
    /// The workload's name in the report.
    pub fn name(self) -> String {
        match self {
            Workload::ValueGet => "value get".into(),
            Workload::ValueUpdate => "value update".into(),
            Workload::ValueAdd => "value add".into(),
            Workload::ListGet => "list get".into(),
            Workload::ListAdd => "list add".into(),
            Workload::MapGet => "map get".into(),
            Workload::MapContains => "map contains".into(),
            Workload::MapIterate => "map iterate".into(),
            Workload::MapPut => "map put".into(),
            Workload::Ycsb {
                read_percent,
                zipfian,
            } => format!(
                "YCSB {read_percent}/{} {}",
                100 - read_percent,
                if zipfian { "zipfian" } else { "uniform" }
            ),
            Workload::Checkpoint => "full checkpoint".into(),
            Workload::Restore => "restore".into(),
        }
    }

    /// What one unit of the workload's throughput counts.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::MapIterate => "maps/s",
            Workload::Checkpoint | Workload::Restore => "entries/s",
            _ => "ops/s",
        }
    }
}

/// How big and how long the comparison is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Preloaded keys of the value, list and map workloads (Flink: 500,000).
    pub keys: usize,
    /// Records of the YCSB workloads.
    pub ycsb_records: usize,
    /// Value entries of the checkpoint workloads.
    pub checkpoint_entries: usize,
    /// Runs per workload; the report gives medians.
    pub runs: usize,
    /// Time each store spends in one run of one operation workload.
    pub budget: Duration,
    /// The block cache of the LSM backend and of RocksDB in the Flink workloads.
    pub cache_bytes: usize,
    /// The memtable (write buffer) of the LSM backend and of RocksDB.
    pub memtable_bytes: usize,
    /// Families to run (all by default).
    pub families: Vec<Family>,
    /// Stores to run (all by default; `--stores` picks some, for profiling one store).
    pub stores: Vec<StoreKind>,
    /// Whether this is the quick mode (small sizes, one run).
    pub quick: bool,
}

impl Settings {
    /// The full comparison: Flink's sizes, 5 runs of 1 s per store and workload.
    pub fn full() -> Self {
        Settings {
            keys: 500_000,
            ycsb_records: 1_000_000,
            checkpoint_entries: 2_000_000,
            runs: 5,
            budget: Duration::from_secs(1),
            cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
            families: Family::ALL.to_vec(),
            stores: StoreKind::ALL.to_vec(),
            quick: false,
        }
    }

    /// The quick mode CI runs so the harness keeps working: small sizes, one short run.
    pub fn quick() -> Self {
        Settings {
            keys: 2_000,
            ycsb_records: 10_000,
            checkpoint_entries: 10_000,
            runs: 1,
            budget: Duration::from_millis(25),
            cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
            families: Family::ALL.to_vec(),
            stores: StoreKind::ALL.to_vec(),
            quick: true,
        }
    }

    /// The block cache of the YCSB workloads: a tenth of the records' bytes (key and value),
    /// so that the LSM's state is about ten times its cache.
    pub fn ycsb_cache_bytes(&self) -> usize {
        (self.ycsb_records * (YCSB_VALUE_BYTES + 16) / 10).max(64 << 10)
    }
}

/// Where a store keeps its files, and its cache and memtable sizes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// A directory of the store's own (created by the store).
    pub dir: PathBuf,
    /// Block cache bytes.
    pub cache_bytes: usize,
    /// Memtable bytes.
    pub memtable_bytes: usize,
}

/// The operations every store offers for the workloads, on `u64` keys in a void namespace.
///
/// Each call works as an operator's per-record access does: it locates the key (key group
/// and key encoding included) and then reads or writes its state.
pub trait Store {
    /// Value state: the value of `key`.
    fn value_get(&mut self, key: u64) -> PeerResult<Option<u64>>;
    /// Value state: sets the value of `key`.
    fn value_put(&mut self, key: u64, value: u64) -> PeerResult<()>;
    /// Value state: removes the value of `key` (between runs, untimed: what takes the state
    /// back to its preload).
    fn value_remove(&mut self, key: u64) -> PeerResult<()>;
    /// List state: reads the whole list of `key`; returns the sum of its elements.
    fn list_get(&mut self, key: u64) -> PeerResult<u64>;
    /// List state: appends `element` to the list of `key`.
    fn list_add(&mut self, key: u64, element: u64) -> PeerResult<()>;
    /// List state: replaces the list of `key` (the preload).
    fn list_set(&mut self, key: u64, elements: &[u64]) -> PeerResult<()>;
    /// Map state: the value of `user_key` in the map of `key`.
    fn map_get(&mut self, key: u64, user_key: u64) -> PeerResult<Option<f64>>;
    /// Map state: whether the map of `key` holds `user_key`.
    fn map_contains(&mut self, key: u64, user_key: u64) -> PeerResult<bool>;
    /// Map state: iterates over the map of `key`; returns the sum of user keys and values.
    fn map_iterate(&mut self, key: u64) -> PeerResult<f64>;
    /// Map state: sets `user_key` to `value` in the map of `key`.
    fn map_put(&mut self, key: u64, user_key: u64, value: f64) -> PeerResult<()>;
    /// YCSB value state: the length of the value of `key` (read, not copied where the store
    /// can avoid it).
    fn bytes_get(&mut self, key: u64) -> PeerResult<usize>;
    /// YCSB value state: sets the value of `key`.
    fn bytes_put(&mut self, key: u64, value: &[u8]) -> PeerResult<()>;
    /// Before read workloads: flushes memtables and waits for due compactions (no-op in
    /// memory).
    fn settle(&mut self) -> PeerResult<()>;
    /// Between runs (untimed): merges everything into the bottom level, so removed entries and
    /// their tombstones are gone (no-op in memory).
    fn compact_fully(&mut self) -> PeerResult<()>;
    /// Writes a full checkpoint of the value state into the store's directory (with fsync);
    /// returns its bytes. `run` numbers the checkpoints.
    fn checkpoint(&mut self, run: u64) -> PeerResult<u64>;
    /// Restores the last checkpoint into a new store of the same kind, in directory
    /// `restore-{run}` of the store's directory if it needs one; returns the new store, which
    /// the caller drops (and whose directory it deletes) outside the timed region.
    fn restore(&mut self, run: u64) -> PeerResult<Restored>;
}

/// A store restored from a checkpoint, kept alive until the restore is timed.
pub type Restored = Box<dyn std::any::Any>;

/// The result of one workload for one store.
#[derive(Debug, Clone)]
pub struct Row {
    /// The store.
    pub store: StoreKind,
    /// Throughput of each run (in the workload's unit); empty if the store did not run.
    pub runs: Vec<f64>,
    /// Milliseconds of each run (checkpoint and restore rows).
    pub millis: Vec<f64>,
    /// Bytes written (checkpoint rows).
    pub bytes: Option<u64>,
    /// Why the store has no figures, or what else to know about them.
    pub note: Option<String>,
}

/// The results of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// The workload.
    pub workload: Workload,
    /// One row per store.
    pub rows: Vec<Row>,
}

impl WorkloadResult {
    /// The row of `store`, if it has one.
    pub fn row(&self, store: StoreKind) -> Option<&Row> {
        self.rows.iter().find(|r| r.store == store)
    }

    /// The median over runs of `a`'s throughput divided by `b`'s in the same run, if both
    /// have figures for the same runs.
    pub fn ratio(&self, a: StoreKind, b: StoreKind) -> Option<f64> {
        let (ra, rb) = (self.row(a)?, self.row(b)?);
        if ra.runs.is_empty() || ra.runs.len() != rb.runs.len() {
            return None;
        }
        let ratios: Vec<f64> = ra
            .runs
            .iter()
            .zip(&rb.runs)
            .filter(|(_, &y)| y > 0.0)
            .map(|(x, y)| x / y)
            .collect();
        (ratios.len() == ra.runs.len()).then(|| median(&ratios))
    }
}

/// The median of `values` (the mean of the middle two for an even count; 0 if empty).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A YCSB-style scrambled zipfian key chooser over `0..n` (Gray et al.'s generator, as YCSB's
/// `ZipfianGenerator`, with each rank hashed to a key so hot keys spread over key groups).
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A chooser over `0..n` (`n > 0`) with constant `theta` (`0 < theta < 1`).
    pub fn new(n: u64, theta: f64) -> Self {
        let zeta = |count: u64| {
            (1..=count)
                .map(|i| 1.0 / (i as f64).powf(theta))
                .sum::<f64>()
        };
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// The next key.
    pub fn next_key(&self, rng: &mut SplitMix64) -> u64 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let uz = u * self.zetan;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            ((self.n as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        SplitMix64::new(rank.min(self.n - 1)).next_u64() % self.n
    }
}

/// A 64-bit mix of `k`: neighbouring keys get unrelated values.
fn mix(k: u64) -> u64 {
    SplitMix64::new(k).next_u64()
}

/// The 10 elements a list holds after the preload: random, derived from the key.
fn list_for(k: u64) -> Vec<u64> {
    (0..LIST_ELEMENTS)
        .map(|i| mix(k.wrapping_mul(16) + i))
        .collect()
}

/// The value of user key `uk` of key `k`'s map after the preload: random, from both.
fn map_value(k: u64, uk: u64) -> f64 {
    (mix(k.wrapping_mul(16) + uk) >> 11) as f64
}

/// The `i`-th key never written by a preload: distinct for every `i < 2^32`, scattered.
fn never_written_key(i: u64) -> u64 {
    (1 << 40) + (i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff)
}

/// 4,096 random 100-byte values; a record's value is picked by a hash of its key, so the
/// entries of one table block hold unrelated values and LZ4 cannot shrink them.
fn ycsb_pool() -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(99);
    (0..4096)
        .map(|_| {
            (0..YCSB_VALUE_BYTES)
                .map(|_| rng.next_u64() as u8)
                .collect()
        })
        .collect()
}

/// Runs `op` in batches of 256 until `budget` has passed; returns operations per second.
fn timed<S>(
    s: &mut S,
    budget: Duration,
    mut op: impl FnMut(&mut S, u64) -> PeerResult<()>,
) -> PeerResult<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..256 {
            op(s, n)?;
            n += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok(n as f64 / elapsed.as_secs_f64());
        }
    }
}

/// The keys and generators of the workloads, the same for every store.
struct Inputs {
    keys: Vec<u64>,
    user_keys: Vec<u64>,
    probe_keys: Vec<u64>,
    pool: Vec<Vec<u8>>,
    zipf: Option<Zipfian>,
}

impl Inputs {
    fn new(settings: &Settings, family: Family) -> Self {
        let count = match family {
            Family::Ycsb => settings.ycsb_records,
            Family::Checkpoint => settings.checkpoint_entries,
            _ => settings.keys,
        };
        let mut rng = SplitMix64::new(5);
        Inputs {
            keys: shuffled_keys(count, 1),
            user_keys: (0..1 << 16).map(|_| rng.below(MAP_ENTRIES)).collect(),
            // Half of these miss: user keys 10..20 are never present.
            probe_keys: (0..1 << 16).map(|_| rng.below(2 * MAP_ENTRIES)).collect(),
            pool: if family == Family::Ycsb {
                ycsb_pool()
            } else {
                Vec::new()
            },
            zipf: (family == Family::Ycsb).then(|| Zipfian::new(count as u64, ZIPF_THETA)),
        }
    }

    fn value_of(&self, k: u64) -> &[u8] {
        &self.pool[(mix(k) % self.pool.len() as u64) as usize]
    }
}

/// Per-store state that persists over runs: where `valueAdd` continues, and where the keys it
/// added and [`reset`] has not removed yet start.
#[derive(Default)]
struct Cursor {
    next_fresh: u64,
    added_from: u64,
    run_offset: usize,
}

/// Takes the family's state in `s` back to its preload before a run (untimed), as Flink's
/// benchmarks start each from its own setup: the keys `valueAdd` added are removed, the lists
/// `listAdd` grew are set back to their preloaded elements, and the LSM stores compact fully.
/// Otherwise every run would read a larger state than the one before, and the faster store
/// (which adds more in its second) a larger one than its peer.
fn reset<S: Store>(
    s: &mut S,
    family: Family,
    inputs: &Inputs,
    cursor: &mut Cursor,
) -> PeerResult<()> {
    match family {
        Family::Value => {
            for i in cursor.added_from..cursor.next_fresh {
                s.value_remove(never_written_key(i))?;
            }
            cursor.added_from = cursor.next_fresh;
        }
        Family::List => {
            for &k in &inputs.keys {
                s.list_set(k, &list_for(k))?;
            }
        }
        // Map puts overwrite preloaded entries: the state keeps its size, but the overwritten
        // versions spread each map over levels until compactions reach them (compacted below).
        Family::Map => {}
        // YCSB is a read/update mix: its state is what the updates make it.
        Family::Ycsb | Family::Checkpoint => return Ok(()),
    }
    // Removed keys, replaced lists and overwritten entries would otherwise stay in the LSM
    // stores' tables (as tombstones and shadowed versions) until compactions reach them, so
    // that a run would read one, two or three levels per map by the chance of compaction timing.
    s.compact_fully()
}

/// Loads the family's state into `s` (every key in the shuffled order), then settles it.
fn preload<S: Store>(s: &mut S, family: Family, inputs: &Inputs) -> PeerResult<()> {
    for &k in &inputs.keys {
        match family {
            Family::Value | Family::Checkpoint => s.value_put(k, k)?,
            Family::List => s.list_set(k, &list_for(k))?,
            Family::Map => {
                for uk in 0..MAP_ENTRIES {
                    s.map_put(k, uk, map_value(k, uk))?;
                }
            }
            Family::Ycsb => s.bytes_put(k, inputs.value_of(k))?,
        }
    }
    s.settle()
}

/// One run of one operation workload on `s`: operations per second.
fn run_op<S: Store>(
    s: &mut S,
    workload: Workload,
    inputs: &Inputs,
    cursor: &mut Cursor,
    run: usize,
    budget: Duration,
) -> PeerResult<f64> {
    let keys = &inputs.keys;
    // Each run starts at another place in the key order, the same for every store.
    let offset = (cursor.run_offset + run * 7919) % keys.len().max(1);
    let mut cur = Cycle::new(keys);
    for _ in 0..offset {
        cur.next_key();
    }
    let mut uks = Cycle::new(&inputs.user_keys);
    let mut probes = Cycle::new(&inputs.probe_keys);
    match workload {
        Workload::ValueGet => timed(s, budget, |s, _| {
            black_box(s.value_get(cur.next_key())?);
            Ok(())
        }),
        Workload::ValueUpdate => timed(s, budget, |s, i| s.value_put(cur.next_key(), i)),
        Workload::ValueAdd => {
            let first = cursor.next_fresh;
            let mut last = first;
            let r = timed(s, budget, |s, i| {
                last = first + i + 1;
                s.value_put(never_written_key(first + i), i)
            });
            cursor.next_fresh = last;
            r
        }
        Workload::ListGet => timed(s, budget, |s, _| {
            black_box(s.list_get(cur.next_key())?);
            Ok(())
        }),
        Workload::ListAdd => timed(s, budget, |s, i| s.list_add(cur.next_key(), i)),
        Workload::MapGet => timed(s, budget, |s, _| {
            black_box(s.map_get(cur.next_key(), uks.next_key())?);
            Ok(())
        }),
        Workload::MapContains => timed(s, budget, |s, _| {
            black_box(s.map_contains(cur.next_key(), probes.next_key())?);
            Ok(())
        }),
        Workload::MapIterate => timed(s, budget, |s, _| {
            black_box(s.map_iterate(cur.next_key())?);
            Ok(())
        }),
        Workload::MapPut => timed(s, budget, |s, i| {
            s.map_put(cur.next_key(), uks.next_key(), i as f64)
        }),
        Workload::Ycsb {
            read_percent,
            zipfian,
        } => {
            let n = keys.len() as u64;
            let mut rng = SplitMix64::new(1000 + run as u64);
            let zipf = inputs.zipf.as_ref().filter(|_| zipfian);
            timed(s, budget, |s, _| {
                let key = match zipf {
                    Some(z) => z.next_key(&mut rng),
                    None => rng.below(n),
                };
                if rng.below(100) < u64::from(read_percent) {
                    black_box(s.bytes_get(key)?);
                    Ok(())
                } else {
                    let value = inputs.value_of(rng.next_u64());
                    s.bytes_put(key, value)
                }
            })
        }
        Workload::Checkpoint | Workload::Restore => {
            Err("checkpoint workloads are not operation workloads".into())
        }
    }
}

/// A store of any kind, so that each timed loop is compiled for one store type.
enum AnyStore {
    Flowstate(Box<FlowstateStore>),
    Hashbrown(Box<FlinkHeap>),
    #[cfg(feature = "peers")]
    Rocks(Box<RocksStore>),
}

/// Runs `$body` with `$s` bound to the concrete store (one copy of the body per store type).
macro_rules! with_store {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnyStore::Flowstate($s) => $body,
            AnyStore::Hashbrown($s) => $body,
            #[cfg(feature = "peers")]
            AnyStore::Rocks($s) => $body,
        }
    };
}

fn open_store(kind: StoreKind, config: StoreConfig) -> PeerResult<Option<AnyStore>> {
    Ok(match kind {
        StoreKind::Heap => Some(AnyStore::Flowstate(Box::new(FlowstateStore::heap(config)?))),
        StoreKind::Lsm => Some(AnyStore::Flowstate(Box::new(FlowstateStore::lsm(config)?))),
        StoreKind::Hashbrown => Some(AnyStore::Hashbrown(Box::new(FlinkHeap::new(config)?))),
        #[cfg(feature = "peers")]
        StoreKind::RocksDb => Some(AnyStore::Rocks(Box::new(RocksStore::open(config)?))),
        #[cfg(not(feature = "peers"))]
        StoreKind::RocksDb => None,
        StoreKind::Disk => None,
    })
}

/// Progress lines go to stderr.
fn progress(msg: &str) {
    eprintln!("[peers] {msg}");
}

/// Runs every family of `settings` in directory `dir` and returns one result per workload.
///
/// Per family: each store is opened in a directory of its own under `dir` and preloaded; then
/// `settings.runs` rounds run every workload on every store in turn, so that the ratio of two
/// stores compares figures of the same round.
pub fn run_all(settings: &Settings, dir: &Path) -> PeerResult<Vec<WorkloadResult>> {
    let mut results = Vec::new();
    for &family in &settings.families {
        results.extend(run_family(settings, family, dir)?);
    }
    Ok(results)
}

fn run_family(settings: &Settings, family: Family, dir: &Path) -> PeerResult<Vec<WorkloadResult>> {
    let inputs = Inputs::new(settings, family);
    let cache_bytes = if family == Family::Ycsb {
        settings.ycsb_cache_bytes()
    } else {
        settings.cache_bytes
    };
    let mut stores: Vec<(StoreKind, AnyStore, Cursor, PathBuf)> = Vec::new();
    let mut results: Vec<WorkloadResult> = family
        .workloads()
        .into_iter()
        .map(|workload| WorkloadResult {
            workload,
            rows: family
                .stores(&settings.stores)
                .into_iter()
                .map(|store| Row {
                    store,
                    runs: Vec::new(),
                    millis: Vec::new(),
                    bytes: None,
                    note: store.not_built().map(str::to_owned),
                })
                .collect(),
        })
        .collect();
    for kind in family.stores(&settings.stores) {
        let config = StoreConfig {
            dir: dir.join(format!("{}-{:?}", family.name(), kind).to_lowercase()),
            cache_bytes,
            memtable_bytes: settings.memtable_bytes,
        };
        let store_dir = config.dir.clone();
        let Some(mut store) = open_store(kind, config)? else {
            continue;
        };
        let start = Instant::now();
        with_store!(&mut store, s => preload(s.as_mut(), family, &inputs))?;
        progress(&format!(
            "{} preload {}: {} keys in {:.2} s",
            family.name(),
            kind.label(),
            inputs.keys.len(),
            start.elapsed().as_secs_f64()
        ));
        stores.push((kind, store, Cursor::default(), store_dir));
    }
    let disk_dir = dir.join(format!("{}-disk", family.name()));
    for run in 0..settings.runs {
        if family == Family::Checkpoint {
            checkpoint_round(&mut stores, &mut results, &disk_dir, run, inputs.keys.len())?;
            continue;
        }
        if run > 0 {
            for (kind, store, cursor, _) in &mut stores {
                let start = Instant::now();
                with_store!(store, s => reset(s.as_mut(), family, &inputs, cursor))?;
                progress(&format!(
                    "run {}/{}: {} back to its preload in {:.2} s",
                    run + 1,
                    settings.runs,
                    kind.label(),
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        for result in &mut results {
            let workload = result.workload;
            for (kind, store, cursor, _) in &mut stores {
                if matches!(
                    workload,
                    Workload::ValueGet
                        | Workload::ListGet
                        | Workload::MapGet
                        | Workload::MapContains
                        | Workload::MapIterate
                ) {
                    // Reads run on settled state, as a read benchmark after its preload does.
                    with_store!(store, s => s.settle())?;
                }
                let ops = with_store!(store, s => run_op(
                    s.as_mut(), workload, &inputs, cursor, run, settings.budget))?;
                progress(&format!(
                    "run {}/{} {}: {} {:.0} {}",
                    run + 1,
                    settings.runs,
                    workload.name(),
                    kind.label(),
                    ops,
                    workload.unit()
                ));
                if let Some(row) = result.rows.iter_mut().find(|r| r.store == *kind) {
                    row.runs.push(ops);
                }
            }
        }
    }
    Ok(results)
}

/// One round of the checkpoint family: each store checkpoints and restores; then the disk
/// writes and reads as many bytes as the heap backend's checkpoint.
fn checkpoint_round(
    stores: &mut [(StoreKind, AnyStore, Cursor, PathBuf)],
    results: &mut [WorkloadResult],
    disk_dir: &Path,
    run: usize,
    entries: usize,
) -> PeerResult<()> {
    let mut heap_bytes = None;
    for (kind, store, _, store_dir) in stores.iter_mut() {
        let start = Instant::now();
        let bytes = with_store!(store, s => s.checkpoint(run as u64))?;
        let took = start.elapsed();
        let start = Instant::now();
        let restored = with_store!(store, s => s.restore(run as u64))?;
        let restore_took = start.elapsed();
        drop(restored);
        let restore_dir = store_dir.join(format!("restore-{run}"));
        if restore_dir.exists() {
            std::fs::remove_dir_all(&restore_dir)?;
        }
        if *kind == StoreKind::Heap {
            heap_bytes = Some(bytes);
        }
        progress(&format!(
            "run {}: {} checkpoint {} bytes in {:.1} ms, restore in {:.1} ms",
            run + 1,
            kind.label(),
            bytes,
            took.as_secs_f64() * 1e3,
            restore_took.as_secs_f64() * 1e3
        ));
        record(
            results,
            Workload::Checkpoint,
            *kind,
            took,
            Some(bytes),
            entries,
        );
        record(
            results,
            Workload::Restore,
            *kind,
            restore_took,
            None,
            entries,
        );
    }
    if let Some(bytes) = heap_bytes {
        let (write, read) = disk_write_read(disk_dir, bytes)?;
        progress(&format!(
            "run {}: disk {} bytes written in {:.1} ms, read in {:.1} ms",
            run + 1,
            bytes,
            write.as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e3
        ));
        record(
            results,
            Workload::Checkpoint,
            StoreKind::Disk,
            write,
            Some(bytes),
            entries,
        );
        record(
            results,
            Workload::Restore,
            StoreKind::Disk,
            read,
            None,
            entries,
        );
    }
    Ok(())
}

/// Records a timed run of a checkpoint workload: `entries` per second, where the disk's
/// entries are the heap checkpoint's (it moves the same bytes).
fn record(
    results: &mut [WorkloadResult],
    workload: Workload,
    store: StoreKind,
    took: Duration,
    bytes: Option<u64>,
    entries: usize,
) {
    if let Some(result) = results.iter_mut().find(|r| r.workload == workload) {
        if let Some(row) = result.rows.iter_mut().find(|r| r.store == store) {
            row.millis.push(took.as_secs_f64() * 1e3);
            row.runs.push(entries as f64 / took.as_secs_f64().max(1e-9));
            if bytes.is_some() {
                row.bytes = bytes;
            }
        }
    }
}

/// Writes `bytes` bytes sequentially to a new file in `dir` as a state file is published
/// (buffered writes, fsync, rename, fsync of the directory), then reads them back.
fn disk_write_read(dir: &Path, bytes: u64) -> PeerResult<(Duration, Duration)> {
    use std::io::{Read, Write};
    std::fs::create_dir_all(dir)?;
    let mut rng = SplitMix64::new(7);
    let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
    let tmp = dir.join("raw.tmp");
    let path = dir.join("raw");
    let start = Instant::now();
    let mut f = std::fs::File::create(&tmp)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    let write = start.elapsed();
    let start = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    black_box(total);
    Ok((write, start.elapsed()))
}

/// Publishes a file written at `tmp` as `path`: fsync of the file, rename, fsync of the
/// directory (what the disk row and every store's checkpoint do).
pub(crate) fn publish(file: std::fs::File, tmp: &Path, path: &Path) -> PeerResult<u64> {
    file.sync_all()?;
    let len = file.metadata()?.len();
    drop(file);
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `reset` must restore: every preloaded key (lists with their preloaded elements),
    /// and none of the keys `valueAdd` added.
    fn check_preloaded<S: Store>(s: &mut S, family: Family, inputs: &Inputs, added: u64) {
        for &k in &inputs.keys {
            match family {
                // `valueUpdate` overwrote some values: the keys are what must be there.
                Family::Value => assert!(s.value_get(k).unwrap().is_some()),
                Family::List => assert_eq!(
                    s.list_get(k).unwrap(),
                    list_for(k).iter().fold(0u64, |a, &b| a.wrapping_add(b))
                ),
                _ => unreachable!("only value and list state grow"),
            }
        }
        for i in 0..added {
            assert_eq!(s.value_get(never_written_key(i)).unwrap(), None);
        }
    }

    #[test]
    fn reset_takes_each_store_back_to_its_preload() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::quick();
        settings.keys = 300;
        for family in [Family::Value, Family::List] {
            let inputs = Inputs::new(&settings, family);
            for kind in [StoreKind::Heap, StoreKind::Lsm, StoreKind::Hashbrown] {
                let config = StoreConfig {
                    dir: dir.path().join(format!("{}-{:?}", family.name(), kind)),
                    cache_bytes: 1 << 20,
                    memtable_bytes: 1 << 20,
                };
                let mut store = open_store(kind, config).unwrap().unwrap();
                let mut cursor = Cursor::default();
                with_store!(&mut store, s => {
                    preload(s.as_mut(), family, &inputs).unwrap();
                    for workload in family.workloads() {
                        run_op(s.as_mut(), workload, &inputs, &mut cursor, 0,
                            Duration::from_millis(5)).unwrap();
                    }
                    let added = cursor.next_fresh;
                    assert!(family != Family::Value || added > 0, "valueAdd added keys");
                    reset(s.as_mut(), family, &inputs, &mut cursor).unwrap();
                    check_preloaded(s.as_mut(), family, &inputs, added);
                    assert_eq!(cursor.added_from, added, "{kind:?}: nothing left to remove");
                });
            }
        }
    }

    #[test]
    fn zipfian_stays_in_range_and_is_skewed() {
        let z = Zipfian::new(1000, ZIPF_THETA);
        let mut rng = SplitMix64::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.next_key(&mut rng) as usize] += 1;
        }
        let max = counts.iter().copied().max().unwrap_or(0);
        // Uniform would give about 100 per key; the hottest zipfian key gets thousands.
        assert!(max > 5_000, "hottest key drawn {max} times");
    }

    #[test]
    fn ratios_pair_runs() {
        let row = |store, runs: Vec<f64>| Row {
            store,
            runs,
            millis: Vec::new(),
            bytes: None,
            note: None,
        };
        let r = WorkloadResult {
            workload: Workload::ValueGet,
            rows: vec![
                row(StoreKind::Heap, vec![2.0, 9.0, 4.0]),
                row(StoreKind::Hashbrown, vec![1.0, 3.0, 4.0]),
                row(StoreKind::RocksDb, vec![]),
            ],
        };
        assert_eq!(r.ratio(StoreKind::Heap, StoreKind::Hashbrown), Some(2.0));
        assert_eq!(r.ratio(StoreKind::Heap, StoreKind::RocksDb), None);
        assert_eq!(median(&[3.0, 1.0]), 2.0);
    }
}
