//! `hashbrown` shaped like Flink's heap backend: one map per key group, the key group computed
//! per access from the encoded key ([`baseline_key_work`]).

use std::io::{BufReader, BufWriter, Read, Write};

use hashbrown::HashMap;

use super::{publish, PeerResult, Restored, Store, StoreConfig, MAX_PARALLELISM};
use crate::baseline_key_work;

/// The state of the workloads in `hashbrown` maps, one per key group and state, as Flink's
/// `HeapKeyedStateBackend` keeps a `StateMap` per key group.
pub struct FlinkHeap {
    values: Vec<HashMap<u64, u64>>,
    lists: Vec<HashMap<u64, Vec<u64>>>,
    maps: Vec<HashMap<u64, HashMap<u64, f64>>>,
    bytes: Vec<HashMap<u64, Vec<u8>>>,
    buf: Vec<u8>,
    config: StoreConfig,
}

fn groups<V>() -> Vec<HashMap<u64, V>> {
    (0..MAX_PARALLELISM).map(|_| HashMap::new()).collect()
}

impl FlinkHeap {
    /// Empty maps; checkpoints go to `config.dir`.
    pub fn new(config: StoreConfig) -> PeerResult<Self> {
        std::fs::create_dir_all(&config.dir)?;
        Ok(FlinkHeap {
            values: groups(),
            lists: groups(),
            maps: groups(),
            bytes: groups(),
            buf: Vec::with_capacity(16),
            config,
        })
    }

    /// The key group of `key`, computed as flowstate's `set_current_key` does.
    #[inline]
    fn group(&mut self, key: u64) -> usize {
        usize::from(baseline_key_work(key, &mut self.buf, MAX_PARALLELISM))
    }
}

impl Store for FlinkHeap {
    fn value_get(&mut self, key: u64) -> PeerResult<Option<u64>> {
        let g = self.group(key);
        Ok(self.values[g].get(&key).copied())
    }

    fn value_put(&mut self, key: u64, value: u64) -> PeerResult<()> {
        let g = self.group(key);
        self.values[g].insert(key, value);
        Ok(())
    }

    fn value_remove(&mut self, key: u64) -> PeerResult<()> {
        let g = self.group(key);
        self.values[g].remove(&key);
        Ok(())
    }

    fn list_get(&mut self, key: u64) -> PeerResult<u64> {
        let g = self.group(key);
        Ok(self.lists[g]
            .get(&key)
            .map_or(0, |l| l.iter().fold(0u64, |a, &b| a.wrapping_add(b))))
    }

    fn list_add(&mut self, key: u64, element: u64) -> PeerResult<()> {
        let g = self.group(key);
        self.lists[g].entry(key).or_default().push(element);
        Ok(())
    }

    fn list_set(&mut self, key: u64, elements: &[u64]) -> PeerResult<()> {
        let g = self.group(key);
        self.lists[g].insert(key, elements.to_vec());
        Ok(())
    }

    fn map_get(&mut self, key: u64, user_key: u64) -> PeerResult<Option<f64>> {
        let g = self.group(key);
        Ok(self.maps[g]
            .get(&key)
            .and_then(|m| m.get(&user_key))
            .copied())
    }

    fn map_contains(&mut self, key: u64, user_key: u64) -> PeerResult<bool> {
        let g = self.group(key);
        Ok(self.maps[g]
            .get(&key)
            .is_some_and(|m| m.contains_key(&user_key)))
    }

    fn map_iterate(&mut self, key: u64) -> PeerResult<f64> {
        let g = self.group(key);
        Ok(self.maps[g]
            .get(&key)
            .map_or(0.0, |m| m.iter().map(|(&uk, &v)| uk as f64 + v).sum()))
    }

    fn map_put(&mut self, key: u64, user_key: u64, value: f64) -> PeerResult<()> {
        let g = self.group(key);
        self.maps[g].entry(key).or_default().insert(user_key, value);
        Ok(())
    }

    fn bytes_get(&mut self, key: u64) -> PeerResult<usize> {
        let g = self.group(key);
        Ok(self.bytes[g].get(&key).map_or(0, Vec::len))
    }

    fn bytes_put(&mut self, key: u64, value: &[u8]) -> PeerResult<()> {
        let g = self.group(key);
        match self.bytes[g].get_mut(&key) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                self.bytes[g].insert(key, value.to_vec());
            }
        }
        Ok(())
    }

    fn settle(&mut self) -> PeerResult<()> {
        Ok(())
    }

    fn compact_fully(&mut self) -> PeerResult<()> {
        Ok(())
    }

    /// Serializes the value maps key group by key group into one file (key group `u16`,
    /// entry count `u32`, then `u64` key and value per entry, little-endian), as Flink's heap
    /// snapshot writes its key groups in order; fsync, rename, directory fsync.
    fn checkpoint(&mut self, _run: u64) -> PeerResult<u64> {
        let tmp = self.config.dir.join("checkpoint.tmp");
        let path = self.config.dir.join("checkpoint");
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        for (g, map) in self.values.iter().enumerate() {
            w.write_all(&(g as u16).to_le_bytes())?;
            w.write_all(&(map.len() as u32).to_le_bytes())?;
            for (&k, &v) in map {
                w.write_all(&k.to_le_bytes())?;
                w.write_all(&v.to_le_bytes())?;
            }
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        publish(file, &tmp, &path)
    }

    /// Reads the checkpoint file back into new maps (dropped after).
    fn restore(&mut self, _run: u64) -> PeerResult<Restored> {
        let path = self.config.dir.join("checkpoint");
        let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        let mut restored: Vec<HashMap<u64, u64>> = groups();
        let mut head = [0u8; 6];
        let mut entry = [0u8; 16];
        for _ in 0..MAX_PARALLELISM {
            r.read_exact(&mut head)?;
            let g = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let count = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
            let map = restored.get_mut(g).ok_or("key group out of range")?;
            map.reserve(count);
            for _ in 0..count {
                r.read_exact(&mut entry)?;
                let (k, v) = entry.split_at(8);
                map.insert(
                    u64::from_le_bytes(k.try_into()?),
                    u64::from_le_bytes(v.try_into()?),
                );
            }
        }
        Ok(Box::new(restored))
    }
}
