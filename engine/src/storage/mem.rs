//! [`MemStorage`]: an in-memory [`Storage`] that simulates power loss and injects faults, for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{components, invalid, past_end, within, ReadableFile, Storage, WritableFile};
use crate::error::{Error, Result};

/// How [`MemStorage::crash_with`] treats what was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Everything not synced is lost: each file keeps its synced bytes, each directory its
    /// synced names.
    DropUnsynced,
    /// Unsynced data may partly survive, chosen by a pseudo-random generator seeded with
    /// `seed` (the same seed on the same history gives the same result):
    ///
    /// - a file whose unsynced bytes extend its synced bytes keeps the synced bytes and a
    ///   random prefix (possibly empty, possibly all) of the unsynced tail;
    /// - a file truncated and rewritten since its last sync keeps either its synced bytes or
    ///   a random prefix of its new bytes;
    /// - each unsynced change of a name in a directory (created, renamed, removed) survives
    ///   or not, independently of the others.
    Torn {
        /// The generator's seed.
        seed: u64,
    },
}

/// An in-memory [`Storage`] that simulates power loss and injects faults, for tests.
///
/// Every file has live bytes (what reads see) and durable bytes ([`WritableFile::sync`]
/// copies live to durable); every directory has a live name table and a durable one
/// ([`Storage::sync_dir`] copies live to durable; creating, renaming and removing change only
/// the live one). [`crash`](MemStorage::crash) resets everything to the durable state, as a
/// power loss would, and [`crash_with`](MemStorage::crash_with) can tear unsynced data
/// instead of dropping it.
///
/// Mutating operations are counted ([`op_count`](MemStorage::op_count)): `create`,
/// `rename`, `remove_file`, `create_dir_all`, `remove_dir_all`, `sync_dir` and, on a file,
/// `write_all` and `sync`. [`fail_after`](MemStorage::fail_after) makes them fail from a
/// given one on, so that a test can sweep every failure point of a piece of code. A failing
/// operation changes nothing, except that with [short writes](MemStorage::set_short_writes)
/// a failing `write_all` writes a prefix of its buffer first. Reads never fail.
///
/// Clones share the same file system. Everything is deterministic: the only randomness
/// comes from seeds the test gives.
///
/// Renames of directories across directories are modelled per directory (each directory's
/// table becomes durable on its own), which no journaling file system does; avoid relying
/// on crash behaviour of such renames.
#[derive(Clone)]
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage::new()
    }
}

impl fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        let files = state
            .nodes
            .values()
            .filter(|n| matches!(n, Node::File(_)))
            .count();
        f.debug_struct("MemStorage")
            .field("nodes", &state.nodes.len())
            .field("files", &files)
            .field("op_count", &state.ops)
            .field("fail_from_op", &state.fail_from)
            .field("short_writes", &state.short_writes)
            .field("crashes", &state.epoch)
            .finish()
    }
}

const ROOT_ID: u64 = 0;

struct MemState {
    /// Files and directories by id; the root is [`ROOT_ID`]. Ordered, so that crashes iterate
    /// deterministically.
    nodes: BTreeMap<u64, Node>,
    next_id: u64,
    /// The number of crashes so far; handles from an earlier epoch are dead.
    epoch: u64,
    /// Mutating operations attempted so far.
    ops: u64,
    /// Mutating operation number (1-based, as counted by `ops`) from which operations fail.
    fail_from: Option<u64>,
    short_writes: bool,
    /// Generator for short-write lengths.
    rng: SplitMix64,
    /// Collect unreachable nodes when there are more than this many.
    gc_threshold: usize,
}

enum Node {
    File(MemFile),
    Dir(MemDir),
}

#[derive(Default)]
struct MemFile {
    live: Arc<Vec<u8>>,
    durable: Arc<Vec<u8>>,
}

#[derive(Default)]
struct MemDir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

fn lock(state: &Mutex<MemState>) -> MutexGuard<'_, MemState> {
    // The state stays consistent across a panic: no operation panics half-way.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn mem_err(path: &str, kind: io::ErrorKind, msg: &str) -> Error {
    Error::io(path, io::Error::new(kind, msg.to_string()))
}

impl MemState {
    fn new(seed: u64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT_ID, Node::Dir(MemDir::default()));
        MemState {
            nodes,
            next_id: ROOT_ID + 1,
            epoch: 0,
            ops: 0,
            fail_from: None,
            short_writes: false,
            rng: SplitMix64(seed),
            gc_threshold: 64,
        }
    }

    /// Counts a mutating operation on `path` and fails it if faults are injected.
    fn mutation(&mut self, path: &str) -> Result<()> {
        self.ops += 1;
        match self.fail_from {
            Some(from) if self.ops >= from => Err(Error::io(
                path,
                io::Error::other(format!(
                    "injected fault: mutating operation {} fails (MemStorage::fail_after)",
                    self.ops
                )),
            )),
            _ => Ok(()),
        }
    }

    fn add(&mut self, node: Node) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(id, node);
        id
    }

    fn dir(&self, id: u64) -> Option<&MemDir> {
        match self.nodes.get(&id) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, id: u64) -> Option<&mut MemDir> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn file_mut(&mut self, id: u64) -> Option<&mut MemFile> {
        match self.nodes.get_mut(&id) {
            Some(Node::File(f)) => Some(f),
            _ => None,
        }
    }

    /// The id of the directory named by `comps` (live names).
    fn lookup_dir(&self, path: &str, comps: &[&str]) -> Result<u64> {
        let mut id = ROOT_ID;
        for comp in comps {
            let dir = self
                .dir(id)
                .ok_or_else(|| mem_err(path, io::ErrorKind::InvalidInput, "not a directory"))?;
            id = *dir.live.get(*comp).ok_or_else(|| {
                mem_err(path, io::ErrorKind::NotFound, "no such file or directory")
            })?;
        }
        if self.dir(id).is_none() {
            return Err(mem_err(
                path,
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        Ok(id)
    }

    /// The id of the parent directory of a non-root path, its last component, and the id the
    /// last component names, if any.
    fn lookup_entry<'p>(
        &self,
        path: &str,
        comps: &[&'p str],
    ) -> Result<(u64, &'p str, Option<u64>)> {
        let (name, dirs) = comps
            .split_last()
            .ok_or_else(|| invalid(path, "the root directory is not acceptable here"))?;
        let parent = self.lookup_dir(path, dirs)?;
        let id = self.dir(parent).and_then(|d| d.live.get(*name).copied());
        Ok((parent, name, id))
    }

    fn is_dir(&self, id: u64) -> bool {
        self.dir(id).is_some()
    }

    /// Removes nodes that no live or durable name reaches.
    fn collect_garbage(&mut self) {
        let mut reached = BTreeSet::new();
        let mut stack = vec![ROOT_ID];
        while let Some(id) = stack.pop() {
            if !reached.insert(id) {
                continue;
            }
            if let Some(dir) = self.dir(id) {
                stack.extend(dir.live.values().chain(dir.durable.values()).copied());
            }
        }
        self.nodes.retain(|id, _| reached.contains(id));
        self.gc_threshold = (2 * self.nodes.len()).max(64);
    }

    fn maybe_collect_garbage(&mut self) {
        if self.nodes.len() > self.gc_threshold {
            self.collect_garbage();
        }
    }
}

impl MemStorage {
    /// An empty in-memory file system (short-write lengths seeded with 0).
    pub fn new() -> Self {
        MemStorage::with_seed(0)
    }

    /// An empty in-memory file system whose short-write lengths come from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        MemStorage {
            state: Arc::new(Mutex::new(MemState::new(seed))),
        }
    }

    /// Simulates a power loss with [`CrashMode::DropUnsynced`]: every file and directory
    /// returns to its durable state. Handles opened for writing before the crash fail from
    /// now on; injected faults stay until [`heal`](MemStorage::heal).
    pub fn crash(&self) {
        self.crash_with(CrashMode::DropUnsynced);
    }

    /// Simulates a power loss, dropping or tearing unsynced data as `mode` says; see
    /// [`crash`](MemStorage::crash).
    pub fn crash_with(&self, mode: CrashMode) {
        let mut state = lock(&self.state);
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::Torn { seed } => Some(SplitMix64(seed)),
        };
        let mut old = std::mem::take(&mut state.nodes);
        let mut nodes = BTreeMap::new();
        let mut stack = vec![ROOT_ID];
        while let Some(id) = stack.pop() {
            if nodes.contains_key(&id) {
                continue;
            }
            let Some(node) = old.remove(&id) else {
                continue;
            };
            let node = match node {
                Node::Dir(dir) => {
                    let table = match rng.as_mut() {
                        None => dir.durable,
                        Some(rng) => torn_table(dir.live, dir.durable, rng),
                    };
                    // Push in reverse so that children are visited in name order.
                    stack.extend(table.values().rev().copied());
                    Node::Dir(MemDir {
                        live: table.clone(),
                        durable: table,
                    })
                }
                Node::File(file) => {
                    let bytes = match rng.as_mut() {
                        None => file.durable,
                        Some(rng) => torn_bytes(file.live, file.durable, rng),
                    };
                    Node::File(MemFile {
                        live: Arc::clone(&bytes),
                        durable: bytes,
                    })
                }
            };
            nodes.insert(id, node);
        }
        state.nodes = nodes;
        state.gc_threshold = (2 * state.nodes.len()).max(64);
        state.epoch += 1;
    }

    /// Makes the `n`-th mutating operation from now (`n = 1`: the next one; `0` counts as
    /// `1`) and every later one fail with an injected [`Error::Io`] (an `io::Error` of kind
    /// `Other` whose message says it is injected), until [`heal`](MemStorage::heal).
    pub fn fail_after(&self, n: u64) {
        let mut state = lock(&self.state);
        state.fail_from = Some(state.ops.saturating_add(n.max(1)));
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        lock(&self.state).fail_from = None;
    }

    /// With `true`, a `write_all` that fails by injection first writes a prefix of its buffer
    /// (at least one byte and not all of it, if the buffer has two bytes or more), of a length
    /// drawn from the storage's seed.
    pub fn set_short_writes(&self, enabled: bool) {
        lock(&self.state).short_writes = enabled;
    }

    /// The number of mutating operations attempted so far, failed ones included; see the type's
    /// documentation for which operations count.
    pub fn op_count(&self) -> u64 {
        lock(&self.state).ops
    }
}

impl Storage for MemStorage {
    fn create(&self, path: &str) -> Result<Box<dyn WritableFile>> {
        let comps = components(path, false)?;
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let (parent, name, existing) = state.lookup_entry(path, &comps)?;
        let id = match existing {
            Some(id) => {
                let file = state
                    .file_mut(id)
                    .ok_or_else(|| mem_err(path, io::ErrorKind::InvalidInput, "is a directory"))?;
                file.live = Arc::new(Vec::new());
                id
            }
            None => {
                let id = state.add(Node::File(MemFile::default()));
                if let Some(dir) = state.dir_mut(parent) {
                    dir.live.insert(name.to_string(), id);
                }
                id
            }
        };
        Ok(Box::new(MemWritable {
            state: Arc::clone(&self.state),
            id,
            epoch: state.epoch,
            path: path.to_string(),
            pos: 0,
        }))
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadableFile>> {
        let comps = components(path, false)?;
        let state = lock(&self.state);
        let (_, _, id) = state.lookup_entry(path, &comps)?;
        let id = id.ok_or_else(|| mem_err(path, io::ErrorKind::NotFound, "no such file"))?;
        match state.nodes.get(&id) {
            Some(Node::File(file)) => Ok(Box::new(MemReadable {
                path: path.to_string(),
                data: Arc::clone(&file.live),
            })),
            _ => Err(mem_err(path, io::ErrorKind::InvalidInput, "is a directory")),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let from_comps = components(from, false)?;
        let to_comps = components(to, false)?;
        let mut state = lock(&self.state);
        state.mutation(from)?;
        let (from_parent, from_name, id) = state.lookup_entry(from, &from_comps)?;
        let id = id.ok_or_else(|| mem_err(from, io::ErrorKind::NotFound, "no such file"))?;
        let (to_parent, to_name, existing) = state.lookup_entry(to, &to_comps)?;
        if existing == Some(id) {
            return Ok(());
        }
        if state.is_dir(id) {
            if to_comps.starts_with(&from_comps) {
                return Err(mem_err(
                    from,
                    io::ErrorKind::InvalidInput,
                    "cannot move a directory into itself",
                ));
            }
            if existing.is_some() {
                return Err(mem_err(
                    to,
                    io::ErrorKind::AlreadyExists,
                    "a directory cannot replace an existing name",
                ));
            }
        } else if existing.is_some_and(|e| state.is_dir(e)) {
            return Err(mem_err(to, io::ErrorKind::InvalidInput, "is a directory"));
        }
        if let Some(dir) = state.dir_mut(from_parent) {
            dir.live.remove(from_name);
        }
        if let Some(dir) = state.dir_mut(to_parent) {
            dir.live.insert(to_name.to_string(), id);
        }
        Ok(())
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let comps = components(path, false)?;
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let (parent, name, id) = state.lookup_entry(path, &comps)?;
        let id = id.ok_or_else(|| mem_err(path, io::ErrorKind::NotFound, "no such file"))?;
        if state.is_dir(id) {
            return Err(mem_err(path, io::ErrorKind::InvalidInput, "is a directory"));
        }
        if let Some(dir) = state.dir_mut(parent) {
            dir.live.remove(name);
        }
        Ok(())
    }

    fn create_dir_all(&self, path: &str) -> Result<()> {
        let comps = components(path, true)?;
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let mut id = ROOT_ID;
        for comp in comps {
            let next = state.dir(id).and_then(|d| d.live.get(comp).copied());
            id = match next {
                Some(next) if state.is_dir(next) => next,
                Some(_) => {
                    return Err(mem_err(
                        path,
                        io::ErrorKind::AlreadyExists,
                        "a component is a file",
                    ))
                }
                None => {
                    let new = state.add(Node::Dir(MemDir::default()));
                    if let Some(dir) = state.dir_mut(id) {
                        dir.live.insert(comp.to_string(), new);
                    }
                    new
                }
            };
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &str) -> Result<()> {
        let comps = components(path, true)?;
        if comps.is_empty() {
            return Err(invalid(path, "the root directory cannot be removed"));
        }
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let (parent, name, id) = state.lookup_entry(path, &comps)?;
        let id = id.ok_or_else(|| mem_err(path, io::ErrorKind::NotFound, "no such directory"))?;
        if !state.is_dir(id) {
            return Err(mem_err(
                path,
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        if let Some(dir) = state.dir_mut(parent) {
            dir.live.remove(name);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> Result<()> {
        let comps = components(dir, true)?;
        let mut state = lock(&self.state);
        state.mutation(dir)?;
        let id = state.lookup_dir(dir, &comps)?;
        if let Some(d) = state.dir_mut(id) {
            d.durable = d.live.clone();
        }
        state.maybe_collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let comps = components(dir, true)?;
        let state = lock(&self.state);
        let id = state.lookup_dir(dir, &comps)?;
        Ok(state
            .dir(id)
            .map(|d| d.live.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let comps = components(path, true)?;
        let state = lock(&self.state);
        let mut id = ROOT_ID;
        for comp in comps {
            match state.dir(id).and_then(|d| d.live.get(comp)) {
                Some(next) => id = *next,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// A directory table after a torn crash: each name whose live entry differs from its durable
/// one takes one of them at random.
fn torn_table(
    live: BTreeMap<String, u64>,
    mut durable: BTreeMap<String, u64>,
    rng: &mut SplitMix64,
) -> BTreeMap<String, u64> {
    let names: BTreeSet<String> = live.keys().chain(durable.keys()).cloned().collect();
    for name in names {
        let new = live.get(&name).copied();
        if new != durable.get(&name).copied() && rng.below(2) == 1 {
            match new {
                Some(id) => durable.insert(name, id),
                None => durable.remove(&name),
            };
        }
    }
    durable
}

/// A file's bytes after a torn crash.
fn torn_bytes(live: Arc<Vec<u8>>, durable: Arc<Vec<u8>>, rng: &mut SplitMix64) -> Arc<Vec<u8>> {
    if live == durable {
        return durable;
    }
    if live.starts_with(&durable) {
        let tail = (live.len() - durable.len()) as u64;
        let keep = durable.len() + rng.below(tail + 1) as usize;
        return Arc::new(live[..keep].to_vec());
    }
    if rng.below(2) == 0 {
        durable
    } else {
        let keep = rng.below(live.len() as u64 + 1) as usize;
        Arc::new(live[..keep].to_vec())
    }
}

struct MemWritable {
    state: Arc<Mutex<MemState>>,
    id: u64,
    epoch: u64,
    path: String,
    pos: u64,
}

impl fmt::Debug for MemWritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemWritable")
            .field("path", &self.path)
            .field("len", &self.pos)
            .finish()
    }
}

/// Locks the state for a write handle opened in `epoch`; a crash since then kills the handle.
fn live_state<'a>(
    state: &'a Mutex<MemState>,
    epoch: u64,
    path: &str,
) -> Result<MutexGuard<'a, MemState>> {
    let state = lock(state);
    if state.epoch != epoch {
        return Err(mem_err(
            path,
            io::ErrorKind::Other,
            "file handle opened before a simulated crash",
        ));
    }
    Ok(state)
}

/// Writes `buf` at `pos` in the file `id`, if it still exists (writes to a file that no name
/// reaches any more are unobservable).
fn write_at(state: &mut MemState, id: u64, pos: u64, buf: &[u8]) {
    if let Some(file) = state.file_mut(id) {
        let data = Arc::make_mut(&mut file.live);
        let start = pos as usize;
        let end = start + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
    }
}

impl WritableFile for MemWritable {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        let mut state = live_state(&self.state, self.epoch, &self.path)?;
        if let Err(err) = state.mutation(&self.path) {
            if state.short_writes && buf.len() >= 2 {
                let n = 1 + state.rng.below(buf.len() as u64 - 1) as usize;
                write_at(&mut state, self.id, self.pos, &buf[..n]);
                self.pos += n as u64;
            }
            return Err(err);
        }
        write_at(&mut state, self.id, self.pos, buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let mut state = live_state(&self.state, self.epoch, &self.path)?;
        state.mutation(&self.path)?;
        if let Some(file) = state.file_mut(self.id) {
            file.durable = Arc::clone(&file.live);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.pos
    }
}

struct MemReadable {
    path: String,
    data: Arc<Vec<u8>>,
}

impl fmt::Debug for MemReadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemReadable")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .finish()
    }
}

impl ReadableFile for MemReadable {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !within(offset, buf.len(), self.len()) {
            return Err(past_end(&self.path, offset, buf.len(), self.len()));
        }
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
}

/// SplitMix64: a small deterministic generator, enough for choosing crash outcomes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::write_file;
    use crate::storage::{is_temp_name, ROOT};

    /// A storage with the root's entries durable and `f` holding synced `"synced"`.
    fn mem_with_synced_file() -> MemStorage {
        let s = MemStorage::new();
        write_file(&s, "f", b"synced", true);
        s.sync_dir(ROOT).unwrap();
        s
    }

    #[test]
    fn crash_drops_unsynced_data_and_keeps_synced_data() {
        let s = mem_with_synced_file();
        let mut f = s.create("g").unwrap();
        s.sync_dir(ROOT).unwrap();
        f.write_all(b"never synced").unwrap();
        let mut h = s.create("f").unwrap(); // truncates f, unsynced
        h.write_all(b"rewritten").unwrap();
        assert_eq!(s.read_all("f", 100).unwrap(), b"rewritten");
        s.crash();
        assert_eq!(s.read_all("f", 100).unwrap(), b"synced");
        assert_eq!(s.read_all("g", 100).unwrap(), b"", "name durable, data not");

        let mut f = s.create("g").unwrap();
        f.write_all(b"abc").unwrap();
        f.sync().unwrap();
        f.write_all(b"def").unwrap();
        s.crash();
        assert_eq!(s.read_all("g", 100).unwrap(), b"abc");
    }

    #[test]
    fn crash_drops_an_unsynced_rename_and_keeps_a_synced_one() {
        let s = mem_with_synced_file();
        write_file(&s, "tmp", b"new", true);
        s.sync_dir(ROOT).unwrap();
        s.rename("tmp", "f").unwrap();
        s.crash();
        assert_eq!(s.read_all("f", 100).unwrap(), b"synced");
        assert_eq!(s.read_all("tmp", 100).unwrap(), b"new");

        s.rename("tmp", "f").unwrap();
        s.sync_dir(ROOT).unwrap();
        s.crash();
        assert_eq!(s.read_all("f", 100).unwrap(), b"new");
        assert!(!s.exists("tmp").unwrap());
    }

    #[test]
    fn crash_drops_files_and_directories_whose_directory_was_not_synced() {
        let s = mem_with_synced_file();
        write_file(&s, "n", b"file synced, name not", true);
        s.create_dir_all("x/y").unwrap();
        write_file(&s, "x/y/z", b"z", true);
        s.sync_dir("x/y").unwrap();
        s.sync_dir("x").unwrap();
        s.remove_file("f").unwrap();
        s.crash();
        assert!(!s.exists("n").unwrap());
        assert!(!s.exists("x").unwrap(), "root not synced after mkdir");
        assert!(s.exists("f").unwrap(), "an unsynced removal is undone");

        s.create_dir_all("x/y").unwrap();
        write_file(&s, "x/y/z", b"z", true);
        for dir in ["x/y", "x", ROOT] {
            s.sync_dir(dir).unwrap();
        }
        s.remove_file("f").unwrap();
        s.sync_dir(ROOT).unwrap();
        s.crash();
        assert_eq!(s.read_all("x/y/z", 10).unwrap(), b"z");
        assert!(!s.exists("f").unwrap());
    }

    #[test]
    fn handles_from_before_a_crash_fail_and_clones_share_state() {
        let s = mem_with_synced_file();
        let other = s.clone();
        let mut f = other.create("f").unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(s.read_all("f", 10).unwrap(), b"x", "a clone sees the write");
        let reader = s.open("f").unwrap();
        other.crash();
        assert!(f.write_all(b"y").is_err());
        assert!(f.sync().is_err());
        assert_eq!(s.read_all("f", 10).unwrap(), b"synced");
        let mut buf = [0u8];
        reader.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"x", "an open reader keeps its view");
        assert!(format!("{s:?}").contains("MemStorage"));
    }

    /// A torn crash of `f` (durable "AAAA", then 1000 unsynced bytes), returning its content.
    fn torn_outcome(seed: u64) -> Vec<u8> {
        let s = MemStorage::new();
        let mut f = s.create("f").unwrap();
        s.sync_dir(ROOT).unwrap();
        f.write_all(b"AAAA").unwrap();
        f.sync().unwrap();
        f.write_all(&[b'B'; 1000]).unwrap();
        s.crash_with(CrashMode::Torn { seed });
        s.read_all("f", 2000).unwrap()
    }

    #[test]
    fn torn_crash_keeps_the_synced_bytes_and_a_prefix_of_the_rest() {
        let mut lens = BTreeSet::new();
        for seed in 0..50 {
            let got = torn_outcome(seed);
            assert!(
                got.len() >= 4 && got.len() <= 1004,
                "seed {seed}: {}",
                got.len()
            );
            assert_eq!(&got[..4], b"AAAA", "seed {seed}");
            assert!(got[4..].iter().all(|&b| b == b'B'), "seed {seed}");
            lens.insert(got.len());
        }
        assert!(lens.len() > 10, "torn lengths vary with the seed: {lens:?}");
    }

    /// A history with unsynced data, names and a truncation, then a torn crash; returns
    /// every name with its content.
    fn torn_history(seed: u64) -> Vec<(String, Vec<u8>)> {
        let s = mem_with_synced_file();
        write_file(&s, "new-synced", b"0123456789", true);
        write_file(&s, "new-unsynced", b"abcdefghij", false);
        write_file(&s, "f", b"rewritten", false);
        s.remove_file("new-synced").unwrap();
        s.crash_with(CrashMode::Torn { seed });
        s.list_dir(ROOT)
            .unwrap()
            .into_iter()
            .map(|name| {
                let bytes = s.read_all(&name, 100).unwrap();
                (name, bytes)
            })
            .collect()
    }

    #[test]
    fn torn_crash_is_deterministic_for_a_seed() {
        assert_eq!(torn_outcome(7), torn_outcome(7));
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let outcome = torn_history(seed);
            assert_eq!(outcome, torn_history(seed), "seed {seed}");
            let f = &outcome.iter().find(|(n, _)| n == "f").unwrap().1;
            assert!(f == b"synced" || b"rewritten".starts_with(f), "{f:?}");
            for (name, bytes) in &outcome {
                if name == "new-unsynced" {
                    assert!(b"abcdefghij".starts_with(bytes));
                }
            }
            outcomes.insert(outcome);
        }
        assert!(outcomes.len() > 5, "outcomes vary: {}", outcomes.len());
        // Some seed keeps the unsynced name and some drops it.
        let kept = outcomes
            .iter()
            .filter(|o| o.iter().any(|(n, _)| n == "new-unsynced"))
            .count();
        assert!(kept > 0 && kept < outcomes.len());
    }

    fn assert_injected<T: fmt::Debug>(result: Result<T>) {
        match result {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::Other);
                assert!(source.to_string().contains("injected"), "{source}");
            }
            other => panic!("expected an injected fault, got {other:?}"),
        }
    }

    #[test]
    fn fail_after_fails_exactly_the_nth_op_and_later_ones_until_heal() {
        let s = MemStorage::new();
        s.fail_after(3);
        s.create_dir_all("a").unwrap(); // 1
        let mut f = s.create("a/f").unwrap(); // 2
        assert_eq!(s.op_count(), 2);
        // Reads are not counted and do not fail.
        assert!(s.exists("a/f").unwrap());
        assert_eq!(s.list_dir("a").unwrap(), vec!["f"]);
        s.open("a/f").unwrap();
        assert_eq!(s.op_count(), 2);

        assert_injected(f.write_all(b"data")); // 3
        assert_injected(f.sync()); // 4
        assert_injected(s.create_dir_all("b")); // 5
        assert_injected(s.rename("a/f", "a/g")); // 6
        assert_injected(s.remove_file("a/f")); // 7
        assert_injected(s.remove_dir_all("a")); // 8
        assert_injected(s.sync_dir("a")); // 9
        assert_injected(s.create("a/h")); // 10
        assert_eq!(s.op_count(), 10);
        // Failed operations changed nothing.
        assert_eq!(s.list_dir(ROOT).unwrap(), vec!["a"]);
        assert_eq!(s.list_dir("a").unwrap(), vec!["f"]);
        assert_eq!(s.read_all("a/f", 10).unwrap(), b"");

        s.heal();
        f.write_all(b"data").unwrap();
        f.sync().unwrap();
        assert_eq!(s.read_all("a/f", 10).unwrap(), b"data");

        // fail_after(1) and fail_after(0) both fail the very next operation.
        s.fail_after(1);
        assert_injected(s.sync_dir(ROOT));
        s.heal();
        s.fail_after(0);
        assert_injected(s.sync_dir(ROOT));
        s.heal();
        s.sync_dir(ROOT).unwrap();
    }

    #[test]
    fn short_write_writes_a_prefix_then_fails() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut lens = BTreeSet::new();
        for seed in 0..10 {
            let s = MemStorage::with_seed(seed);
            s.set_short_writes(true);
            let mut f = s.create("f").unwrap();
            s.fail_after(1);
            assert_injected(f.write_all(&data));
            s.heal();
            let got = s.read_all("f", 2000).unwrap();
            assert!(!got.is_empty() && got.len() < data.len(), "{}", got.len());
            assert_eq!(got[..], data[..got.len()]);
            assert_eq!(f.len(), got.len() as u64);
            lens.insert(got.len());
        }
        assert!(lens.len() > 1, "{lens:?}");

        // Without short writes a failing write writes nothing.
        let s = MemStorage::new();
        let mut f = s.create("f").unwrap();
        s.fail_after(1);
        assert_injected(f.write_all(&data));
        assert_eq!(s.read_all("f", 2000).unwrap(), b"");
    }

    /// Sweeps every failure point of `write_atomic` followed by a crash: the target is then
    /// its old content (or absent) or the complete new content, never a part, and it is the
    /// new content whenever `write_atomic` succeeded.
    fn sweep_write_atomic(old: Option<&[u8]>, mode: CrashMode, short_writes: bool) {
        let new: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8 + 1).collect();
        let setup = || {
            let s = MemStorage::with_seed(11);
            s.set_short_writes(short_writes);
            s.create_dir_all("chk-1").unwrap();
            s.sync_dir(ROOT).unwrap();
            if let Some(old) = old {
                s.write_atomic("chk-1/_metadata", old).unwrap();
            }
            s
        };
        let clean = setup();
        let base = clean.op_count();
        clean.write_atomic("chk-1/_metadata", &new).unwrap();
        let ops = clean.op_count() - base;
        assert_eq!(ops, 5, "create, write, sync, rename, sync_dir");

        for n in 1..=ops + 1 {
            let s = setup();
            s.fail_after(n);
            let result = s.write_atomic("chk-1/_metadata", &new);
            assert_eq!(result.is_ok(), n > ops, "failure point {n}");
            s.crash_with(mode);
            s.heal();
            let got = if s.exists("chk-1/_metadata").unwrap() {
                Some(s.read_all("chk-1/_metadata", 10_000).unwrap())
            } else {
                None
            };
            let what = format!("failure point {n}, {mode:?}, old {old:?}");
            if result.is_ok() {
                assert_eq!(got.as_deref(), Some(&new[..]), "{what}");
            } else {
                assert!(
                    got.as_deref() == old || got.as_deref() == Some(&new[..]),
                    "{what}: partial target of {:?} bytes",
                    got.map(|g| g.len())
                );
            }
            for name in s.list_dir("chk-1").unwrap() {
                assert!(name == "_metadata" || is_temp_name(&name), "{what}: {name}");
            }
        }
    }

    #[test]
    fn write_atomic_then_crash_at_every_failure_point_is_never_partial() {
        for old in [None, Some(&b"old checkpoint metadata"[..])] {
            for short_writes in [false, true] {
                sweep_write_atomic(old, CrashMode::DropUnsynced, short_writes);
                for seed in 0..20 {
                    sweep_write_atomic(old, CrashMode::Torn { seed }, short_writes);
                }
            }
        }
    }

    #[test]
    fn garbage_is_collected_but_reachable_files_survive() {
        let s = MemStorage::new();
        for i in 0..500 {
            let name = format!("f{}", i % 3);
            s.write_atomic(&name, format!("v{i}").as_bytes()).unwrap();
        }
        let nodes = lock(&s.state).nodes.len();
        assert!(nodes < 100, "{nodes} nodes kept");
        s.crash();
        assert_eq!(s.read_all("f0", 10).unwrap(), b"v498");
        assert_eq!(s.read_all("f1", 10).unwrap(), b"v499");
        assert_eq!(s.read_all("f2", 10).unwrap(), b"v497");
        assert!(is_temp_name("x/_metadata.flowstate-tmp"));
        assert!(!is_temp_name("_metadata"));
    }
}
