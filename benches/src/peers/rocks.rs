//! RocksDB through the `rocksdb` crate, configured as Flink's `EmbeddedRocksDBStateBackend`
//! configures it (only with the benches crate's cargo feature `peers`).
//!
//! - No write-ahead log (Flink writes with `disableWAL`), no fsync on flush.
//! - Key = key group (1 byte at max parallelism 128, big-endian) | key (its codec bytes) |
//!   namespace (1 byte: Flink's `VoidNamespaceSerializer` writes a single 0); map entries
//!   append the user key's bytes. Map values carry Flink's null flag byte before the value.
//! - List append is a merge (Flink's `stringappendtest` operator: elements joined by `,`),
//!   here a Rust associative merge operator doing the same concatenation.
//! - LZ4 on every level, 4 KiB blocks, bloom filters (10 bits per key), an LRU block cache of
//!   the LSM backend's size holding data blocks and, as Flink's managed memory with
//!   `state.backend.rocksdb.memory.partitioned-index-filters` sets it up, partitioned index
//!   and filter blocks (two-level index, partitioned filters, cached with high priority, the
//!   top level pinned): memory bounded by the cache, as the LSM backend charges its tables'
//!   indexes and filters to its cache (see [`RocksStore::open`]); a write buffer of the LSM
//!   backend's memtable size, 2 background jobs (Flink's default thread count),
//!   `max_open_files = -1`.
//! - One database per workload family with the family's state in the default column family
//!   (Flink keeps one column family per state; with one state per database that is the same).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use flowstate::Codec;
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DBCompressionType, MergeOperands, Options,
    ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::{publish, PeerResult, Restored, Store, StoreConfig, MAX_PARALLELISM};

/// Flink's list-state merge: the operands appended to the existing value, `,` between
/// elements.
fn string_append(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(
        existing.map_or(0, |e| e.len() + 1) + operands.iter().map(|o| o.len() + 1).sum::<usize>(),
    );
    if let Some(e) = existing {
        out.extend_from_slice(e);
    }
    for op in operands {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(op);
    }
    Some(out)
}

/// A RocksDB database holding one family's state, with Flink's settings.
pub struct RocksStore {
    db: DB,
    write: WriteOptions,
    read: ReadOptions,
    key: Vec<u8>,
    config: StoreConfig,
    _cache: Cache,
}

impl RocksStore {
    fn options(config: &StoreConfig, cache: &Cache) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_size(4096);
        table.set_block_cache(cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter memory within the cache, as the LSM backend charges its tables'
        // indexes and filters to its cache. Partitioned, as Flink's
        // `partitioned-index-filters` option configures it: whole (unpartitioned) filter
        // blocks of the 5 M-entry map state thrashed a 64 MiB cache (about 2,000 map gets
        // per second in a first run).
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_write_buffer_size(config.memtable_bytes);
        opts.set_max_background_jobs(2);
        opts.set_max_open_files(-1);
        opts.set_use_fsync(false);
        opts.set_stats_dump_period_sec(0);
        opts.set_merge_operator_associative("stringappendtest", string_append);
        opts
    }

    /// Opens a new database in `config.dir/db`, its block cache bounding data blocks and the
    /// partitioned index and filter blocks together (module docs).
    pub fn open(config: StoreConfig) -> PeerResult<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let cache = Cache::new_lru_cache(config.cache_bytes);
        let db = DB::open(&Self::options(&config, &cache), config.dir.join("db"))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(RocksStore {
            db,
            write,
            read: ReadOptions::default(),
            key: Vec::with_capacity(32),
            config,
            _cache: cache,
        })
    }

    /// Sets the key buffer to key group | key | namespace of `key`.
    #[inline]
    fn set_key(&mut self, key: u64) {
        self.key.clear();
        self.key.push(0);
        key.encode(&mut self.key);
        let group = flowstate::key_group_for(&self.key[1..], MAX_PARALLELISM);
        // Max parallelism 128: a 1-byte key-group prefix, as Flink computes it.
        self.key[0] = group as u8;
        self.key.push(0);
    }

    /// Sets the key buffer to the key of `user_key` in the map of `key`.
    #[inline]
    fn set_map_key(&mut self, key: u64, user_key: u64) {
        self.set_key(key);
        user_key.encode(&mut self.key);
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.config.dir.join("checkpoint")
    }
}

fn u64_at(bytes: &[u8], at: usize) -> PeerResult<u64> {
    let b = bytes.get(at..at + 8).ok_or("value shorter than 8 bytes")?;
    Ok(u64::from_le_bytes(b.try_into()?))
}

impl Store for RocksStore {
    fn value_get(&mut self, key: u64) -> PeerResult<Option<u64>> {
        self.set_key(key);
        match self.db.get_pinned_opt(&self.key, &self.read)? {
            Some(v) => Ok(Some(u64_at(&v, 0)?)),
            None => Ok(None),
        }
    }

    fn value_put(&mut self, key: u64, value: u64) -> PeerResult<()> {
        self.set_key(key);
        Ok(self
            .db
            .put_opt(&self.key, value.to_le_bytes(), &self.write)?)
    }

    fn value_remove(&mut self, key: u64) -> PeerResult<()> {
        self.set_key(key);
        Ok(self.db.delete_opt(&self.key, &self.write)?)
    }

    fn list_get(&mut self, key: u64) -> PeerResult<u64> {
        self.set_key(key);
        let mut sum = 0u64;
        if let Some(v) = self.db.get_pinned_opt(&self.key, &self.read)? {
            // Elements of 8 bytes, one delimiter byte between them.
            let mut at = 0;
            while at < v.len() {
                sum = sum.wrapping_add(u64_at(&v, at)?);
                at += 9;
            }
        }
        Ok(sum)
    }

    fn list_add(&mut self, key: u64, element: u64) -> PeerResult<()> {
        self.set_key(key);
        Ok(self
            .db
            .merge_opt(&self.key, element.to_le_bytes(), &self.write)?)
    }

    fn list_set(&mut self, key: u64, elements: &[u64]) -> PeerResult<()> {
        self.set_key(key);
        let mut value = Vec::with_capacity(elements.len() * 9);
        for (i, e) in elements.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(&e.to_le_bytes());
        }
        Ok(self.db.put_opt(&self.key, value, &self.write)?)
    }

    fn map_get(&mut self, key: u64, user_key: u64) -> PeerResult<Option<f64>> {
        self.set_map_key(key, user_key);
        match self.db.get_pinned_opt(&self.key, &self.read)? {
            Some(v) => Ok(Some(f64::from_bits(u64_at(&v, 1)?))),
            None => Ok(None),
        }
    }

    fn map_contains(&mut self, key: u64, user_key: u64) -> PeerResult<bool> {
        self.set_map_key(key, user_key);
        Ok(self.db.get_pinned_opt(&self.key, &self.read)?.is_some())
    }

    /// A prefix scan from key group | key | namespace, as Flink's `RocksDBMapState` iterator
    /// seeks and checks the prefix, with the upper bound set so RocksDB stops at its end.
    fn map_iterate(&mut self, key: u64) -> PeerResult<f64> {
        self.set_key(key);
        let prefix_len = self.key.len();
        let mut upper = self.key.clone();
        // The namespace byte is 0: the prefix's successor is the same with a 1.
        if let Some(last) = upper.last_mut() {
            *last += 1;
        }
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(upper);
        let mut it = self.db.raw_iterator_opt(read);
        it.seek(&self.key);
        let mut sum = 0.0;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(&self.key[..prefix_len]) {
                break;
            }
            let uk = u64_at(k, prefix_len)?;
            sum += uk as f64 + f64::from_bits(u64_at(v, 1)?);
            it.next();
        }
        it.status()?;
        Ok(sum)
    }

    fn map_put(&mut self, key: u64, user_key: u64, value: f64) -> PeerResult<()> {
        self.set_map_key(key, user_key);
        let mut v = [0u8; 9];
        v[1..].copy_from_slice(&value.to_bits().to_le_bytes());
        Ok(self.db.put_opt(&self.key, v, &self.write)?)
    }

    fn bytes_get(&mut self, key: u64) -> PeerResult<usize> {
        self.set_key(key);
        Ok(self
            .db
            .get_pinned_opt(&self.key, &self.read)?
            .map_or(0, |v| v.len()))
    }

    fn bytes_put(&mut self, key: u64, value: &[u8]) -> PeerResult<()> {
        self.set_key(key);
        Ok(self.db.put_opt(&self.key, value, &self.write)?)
    }

    /// Flushes the memtable and waits until no compaction is pending or running.
    fn compact_fully(&mut self) -> PeerResult<()> {
        self.db.flush()?;
        // Without a snapshot, a full manual compaction drops deleted entries and tombstones.
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        self.settle()
    }

    fn settle(&mut self) -> PeerResult<()> {
        self.db.flush()?;
        loop {
            let pending = self
                .db
                .property_int_value("rocksdb.compaction-pending")?
                .unwrap_or(0);
            let running = self
                .db
                .property_int_value("rocksdb.num-running-compactions")?
                .unwrap_or(0);
            if pending == 0 && running == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Flink's full checkpoint of RocksDB: one iterator over a consistent view, every entry
    /// written as length-prefixed key and value bytes into one file; fsync, rename, fsync of
    /// the directory.
    fn checkpoint(&mut self, _run: u64) -> PeerResult<u64> {
        let path = self.checkpoint_path();
        let tmp = path.with_extension("tmp");
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(k)?;
            w.write_all(&(v.len() as u32).to_le_bytes())?;
            w.write_all(v)?;
            it.next();
        }
        it.status()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        publish(file, &tmp, &path)
    }

    /// Flink's full restore into RocksDB: a new database, every entry of the file put through
    /// write batches of 500 entries without WAL; then a flush, so that the restored state
    /// ends in tables as the LSM backend's restore (which writes tables and ingests them).
    fn restore(&mut self, run: u64) -> PeerResult<Restored> {
        let dir = self.config.dir.join(format!("restore-{run}"));
        let cache = Cache::new_lru_cache(self.config.cache_bytes);
        let db = DB::open(&Self::options(&self.config, &cache), &dir)?;
        let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(self.checkpoint_path())?);
        let mut batch = WriteBatch::default();
        let mut len = [0u8; 4];
        let (mut k, mut v) = (Vec::new(), Vec::new());
        loop {
            match r.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            k.resize(u32::from_le_bytes(len) as usize, 0);
            r.read_exact(&mut k)?;
            r.read_exact(&mut len)?;
            v.resize(u32::from_le_bytes(len) as usize, 0);
            r.read_exact(&mut v)?;
            batch.put(&k, &v);
            if batch.len() >= 500 {
                db.write_opt(std::mem::take(&mut batch), &self.write)?;
            }
        }
        if !batch.is_empty() {
            db.write_opt(batch, &self.write)?;
        }
        db.flush()?;
        Ok(Box::new((db, cache)))
    }
}
