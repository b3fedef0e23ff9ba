//! flowstate's backends as a [`Store`]: through [`flowstate::Backend`], the type an embedder
//! opens, with the four states of the workloads registered once.

use std::sync::Arc;

use flowstate::lsm::LsmBackground;
use flowstate::*;

use super::{PeerResult, Restored, Store, StoreConfig, MAX_PARALLELISM};

/// A flowstate backend (heap or LSM) with the workloads' states registered, and the local
/// checkpoint storage its checkpoints go to.
pub struct FlowstateStore {
    backend: Backend<u64>,
    value: ValueState<u64>,
    list: ListState<u64>,
    map: MapState<u64, f64>,
    bytes: ValueState<Vec<u8>>,
    config: StoreConfig,
    lsm: bool,
    storage: Option<Arc<dyn CheckpointStorage>>,
    completed: Option<CompletedCheckpoint>,
}

impl FlowstateStore {
    /// A heap backend (max parallelism 128, every key group).
    pub fn heap(config: StoreConfig) -> PeerResult<Self> {
        let backend = Backend::open(BackendConfig::heap().max_parallelism(MAX_PARALLELISM))?;
        Self::with(backend, config, false)
    }

    /// An LSM backend in `config.dir` with its cache and memtable sizes, one background
    /// thread, and full (not incremental) checkpoints, so the checkpoint rows compare the same
    /// work: the whole state written once.
    pub fn lsm(config: StoreConfig) -> PeerResult<Self> {
        let backend = Backend::open(Self::lsm_config(&config, "lsm"))?;
        Self::with(backend, config, true)
    }

    fn lsm_config(config: &StoreConfig, sub: &str) -> BackendConfig {
        BackendConfig::lsm(config.dir.join(sub))
            .max_parallelism(MAX_PARALLELISM)
            .lsm_block_cache_bytes(config.cache_bytes)
            .lsm_memtable_bytes(config.memtable_bytes)
            .lsm_background(LsmBackground::Threads(1))
            .lsm_incremental_checkpoints(false)
    }

    fn with(mut backend: Backend<u64>, config: StoreConfig, lsm: bool) -> PeerResult<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let value = backend.register(ValueStateDescriptor::<u64>::new("value"))?;
        let list = backend.register(ListStateDescriptor::<u64>::new("list"))?;
        let map = backend.register(MapStateDescriptor::<u64, f64>::new("map"))?;
        let bytes = backend.register(ValueStateDescriptor::<Vec<u8>>::new("bytes"))?;
        Ok(FlowstateStore {
            backend,
            value,
            list,
            map,
            bytes,
            config,
            lsm,
            storage: None,
            completed: None,
        })
    }

    fn storage(&mut self) -> PeerResult<Arc<dyn CheckpointStorage>> {
        if let Some(s) = &self.storage {
            return Ok(s.clone());
        }
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
            self.config.dir.join("checkpoints"),
            FsCheckpointOptions::default().with_retained(1),
        )?);
        self.storage = Some(storage.clone());
        Ok(storage)
    }
}

impl Store for FlowstateStore {
    fn value_get(&mut self, key: u64) -> PeerResult<Option<u64>> {
        self.backend.set_current_key(&key);
        Ok(self.backend.value(&self.value).get()?)
    }

    fn value_put(&mut self, key: u64, value: u64) -> PeerResult<()> {
        self.backend.set_current_key(&key);
        Ok(self.backend.value(&self.value).update(value)?)
    }

    fn value_remove(&mut self, key: u64) -> PeerResult<()> {
        self.backend.set_current_key(&key);
        Ok(self.backend.value(&self.value).clear()?)
    }

    fn list_get(&mut self, key: u64) -> PeerResult<u64> {
        self.backend.set_current_key(&key);
        Ok(self
            .backend
            .list(&self.list)
            .read(|list| list.iter().fold(0u64, |a, &b| a.wrapping_add(b)))?)
    }

    fn list_add(&mut self, key: u64, element: u64) -> PeerResult<()> {
        self.backend.set_current_key(&key);
        Ok(self.backend.list(&self.list).add(element)?)
    }

    fn list_set(&mut self, key: u64, elements: &[u64]) -> PeerResult<()> {
        self.backend.set_current_key(&key);
        Ok(self.backend.list(&self.list).update(elements.to_vec())?)
    }

    fn map_get(&mut self, key: u64, user_key: u64) -> PeerResult<Option<f64>> {
        self.backend.set_current_key(&key);
        Ok(self.backend.map(&self.map).get(&user_key)?)
    }

    fn map_contains(&mut self, key: u64, user_key: u64) -> PeerResult<bool> {
        self.backend.set_current_key(&key);
        Ok(self.backend.map(&self.map).contains(&user_key)?)
    }

    fn map_iterate(&mut self, key: u64) -> PeerResult<f64> {
        self.backend.set_current_key(&key);
        let mut sum = 0.0;
        self.backend
            .map(&self.map)
            .for_each(|&uk, &v| sum += uk as f64 + v)?;
        Ok(sum)
    }

    fn map_put(&mut self, key: u64, user_key: u64, value: f64) -> PeerResult<()> {
        self.backend.set_current_key(&key);
        Ok(self.backend.map(&self.map).put(user_key, value)?)
    }

    fn bytes_get(&mut self, key: u64) -> PeerResult<usize> {
        self.backend.set_current_key(&key);
        Ok(self
            .backend
            .value(&self.bytes)
            .read(|v| v.map_or(0, Vec::len))?)
    }

    fn bytes_put(&mut self, key: u64, value: &[u8]) -> PeerResult<()> {
        self.backend.set_current_key(&key);
        Ok(self.backend.value(&self.bytes).update(value.to_vec())?)
    }

    fn settle(&mut self) -> PeerResult<()> {
        // Flushes and runs the compactions that are due (nothing for the heap backend).
        Ok(self.backend.compact()?)
    }

    fn compact_fully(&mut self) -> PeerResult<()> {
        Ok(self.backend.compact_all()?)
    }

    fn checkpoint(&mut self, run: u64) -> PeerResult<u64> {
        let storage = self.storage()?;
        let id = CheckpointId(run + 1);
        let result = self.backend.snapshot(id, &storage, "task")?.run()?;
        let bytes = result.stats.bytes;
        let done = storage.complete_checkpoint(
            id,
            vec![SubtaskState::new("op", 0, 1, MAX_PARALLELISM).with_keyed(result.handle)],
        )?;
        self.completed = Some(done);
        Ok(bytes)
    }

    fn restore(&mut self, run: u64) -> PeerResult<Restored> {
        let storage = self.storage()?;
        let done = self
            .completed
            .as_ref()
            .ok_or("restore before any checkpoint")?;
        let range = KeyGroupRange::for_operator(MAX_PARALLELISM, 1, 0)?;
        let sources = FileRestoreSource::open_all(&*storage, &done.handles_for(range))?;
        let sources: Vec<&dyn RestoreSource> = sources.iter().map(|s| s as _).collect();
        let config = if self.lsm {
            Self::lsm_config(&self.config, &format!("restore-{run}"))
        } else {
            BackendConfig::heap().max_parallelism(MAX_PARALLELISM)
        };
        let mut restored = Backend::<u64>::restore(config, &sources)?;
        restored.register(ValueStateDescriptor::<u64>::new("value"))?;
        Ok(Box::new(restored))
    }
}
