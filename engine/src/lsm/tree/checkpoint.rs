//! What checkpoints and restores need of a tree beyond reads and writes: the tables of a
//! frozen view once its memtables are flushed ([`Tree::checkpoint_tables`]), tables adopted
//! from another tree's files ([`Tree::adopt_table`], [`Tree::install_adopted`]), and a table
//! rewritten without the keys outside some key ranges ([`Tree::rewrite_within`]).
//!
//! spec/lsm-tree.md, "Checkpoints and adopted tables", states the rules.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use flowstate_formats::table::RangeTombstone;

use super::{
    corrupt, lock, memtable_key, table_name, FlushOutput, ImmutableMemTable, TableHandle, Tree,
    Version, MANIFEST_NAME, MAX_LEVELS,
};
use crate::error::{Error, Result};
use crate::lsm::key::KeyRange;
use crate::lsm::ranges;

/// The tables of a tree at one instant, for a checkpoint: the version of that instant and the
/// memtables frozen at it, whose flushes [`tables`](Self::tables) waits for (or runs).
///
/// Taking it ([`Tree::checkpoint_tables`]) costs what [`Tree::snapshot`] costs: it freezes
/// the active memtable and holds the current version and the frozen memtables, whatever the
/// size of the tree. Every table file it leads to stays until it is dropped.
pub struct CheckpointTables {
    tree: Arc<Tree>,
    /// Frozen memtables, oldest first.
    imms: Vec<Arc<ImmutableMemTable>>,
    version: Arc<Version>,
}

impl std::fmt::Debug for CheckpointTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointTables")
            .field("frozen_memtables", &self.imms.len())
            .field("tables", &self.version.all_tables().count())
            .finish()
    }
}

impl Tree {
    /// The synchronous phase of a checkpoint of the tree: freezes the active memtable and
    /// holds the current version and the frozen memtables; see [`CheckpointTables`].
    pub fn checkpoint_tables(self: &Arc<Self>) -> CheckpointTables {
        let (view, frozen) = {
            let mut state = lock(&self.state);
            let frozen = Self::freeze_locked(&mut state);
            let imms: Vec<Arc<ImmutableMemTable>> = state.imms.iter().cloned().collect();
            for imm in &imms {
                state
                    .flush_outputs
                    .entry(memtable_key(imm))
                    .or_insert(FlushOutput {
                        waiting: 0,
                        tables: None,
                    })
                    .waiting += 1;
            }
            let view = CheckpointTables {
                tree: Arc::clone(self),
                imms,
                version: Arc::clone(&state.version),
            };
            (view, frozen)
        };
        if frozen {
            self.notify();
        }
        view
    }

    /// The path a table file of id `id` has in the tree's directory: where a restore puts a
    /// file before [`adopt_table`](Self::adopt_table).
    pub fn table_path(&self, id: u64) -> String {
        self.path(&table_name(id))
    }

    /// Reserves the ids of tables about to be adopted, so that tables the tree writes from
    /// now on get other ids. Returns `false`, reserving nothing, if an id is taken (by an
    /// adopted or reserved table, a table of the tree, or one it may have written).
    pub fn reserve_table_ids(&self, ids: &[u64]) -> bool {
        let mut state = lock(&self.state);
        let first = self.options.first_table_id;
        let mut seen = std::collections::HashSet::new();
        let taken = ids.iter().any(|&id| {
            !seen.insert(id)
                || state.adopted_ids.contains(&id)
                || (first..state.next_id).contains(&id)
                || state.version.all_tables().any(|t| t.id == id)
        });
        if !taken {
            state.adopted_ids.extend(ids.iter().copied());
        }
        !taken
    }

    /// Opens the table file at [`table_path(id)`](Self::table_path), put there by the caller
    /// (linked or copied from a checkpoint), as a table of this tree, with the key range the
    /// checkpoint records. Its id must have been reserved and must be the id written in the
    /// file. The table belongs to no version until [`install_adopted`](Self::install_adopted);
    /// dropped before that, it stays on disk until the next open of the tree removes it.
    pub fn adopt_table(
        &self,
        id: u64,
        smallest: &[u8],
        largest: &[u8],
    ) -> Result<Arc<TableHandle>> {
        if !lock(&self.state).adopted_ids.contains(&id) {
            return Err(Error::InvalidArgument(format!(
                "table {id} is adopted without its id reserved"
            )));
        }
        if smallest > largest {
            return Err(corrupt(
                &self.table_path(id),
                "the smallest key recorded is above the largest".into(),
            ));
        }
        Ok(Arc::new(self.open_table(
            id,
            &table_name(id),
            smallest,
            largest,
        )?))
    }

    /// Installs `levels` (L0 newest first; deeper levels without overlap) as the tree's
    /// version and writes the manifest. The tree must be empty: no table, nothing in a
    /// memtable. On an error the tables are marked obsolete (their files go with them).
    pub fn install_adopted(&self, levels: Vec<Vec<Arc<TableHandle>>>) -> Result<()> {
        let _flush = lock(&self.flush_lock);
        let _compact = lock(&self.compact_lock);
        let all: Vec<Arc<TableHandle>> = levels.iter().flatten().cloned().collect();
        let fail = |e: Error| {
            for t in &all {
                t.obsolete.store(true, Ordering::Release);
            }
            Err(e)
        };
        {
            let state = lock(&self.state);
            if !state.mem.is_empty()
                || !state.imms.is_empty()
                || state.version.all_tables().next().is_some()
            {
                drop(state);
                return fail(Error::InvalidArgument(
                    "tables are adopted only into an empty tree".into(),
                ));
            }
        }
        if levels.len() > MAX_LEVELS {
            return fail(Error::InvalidArgument(format!(
                "{} levels, more than {MAX_LEVELS}",
                levels.len()
            )));
        }
        let version = match Version::from_levels(levels) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            return fail(e);
        }
        let bytes: u64 = all.iter().map(|t| t.size).sum();
        let installed = self.install(
            |v| *v = version,
            |state| {
                state.stats.ingested_tables += all.len() as u64;
                state.stats.ingested_bytes += bytes;
            },
        );
        match installed {
            Ok(()) => {
                // Rewritten tables were marked for deletion until installed.
                for t in &all {
                    t.obsolete.store(false, Ordering::Release);
                }
                Ok(())
            }
            Err(e) => fail(e),
        }
    }

    /// Writes the entries of `table` whose keys lie in `keep` (sorted, disjoint ranges; only
    /// those parts of the table are read), and
    /// its range tombstones clipped to them, into new tables of this tree (entry kinds kept:
    /// tombstones and merge operands stay what they are, so the result may stand at the
    /// table's level). The new tables belong to no version: the caller installs them (with
    /// [`install_adopted`](Self::install_adopted)) or drops them, which deletes them.
    pub fn rewrite_within(
        &self,
        table: &TableHandle,
        keep: &[KeyRange],
    ) -> Result<Vec<Arc<TableHandle>>> {
        // Each kept range read from its start to its end: the rest of the table is not read.
        let mut entries = keep.iter().flat_map(|r| {
            let end = r.end.clone();
            table
                .source(&r.start, None, false)
                .take_while(move |e| match (e, &end) {
                    (Ok((k, _)), Some(end)) => k < end,
                    _ => true,
                })
        });
        let kept: Vec<RangeTombstone> = keep
            .iter()
            .flat_map(|r| ranges::clip(&table.ranges, Some(&r.start), r.end.as_deref()))
            .collect();
        let tables = self.write_tables(&mut entries, &kept, self.options.target_table_bytes)?;
        if !tables.is_empty() {
            if let Err(e) = self.storage.sync_dir(&self.dir) {
                for t in &tables {
                    t.obsolete.store(true, Ordering::Release);
                }
                return Err(e);
            }
        }
        // Written but in no version: deleted unless installed.
        for t in &tables {
            t.obsolete.store(true, Ordering::Release);
        }
        Ok(tables)
    }

    /// Whether the manifest exists (for tests of adoption).
    #[doc(hidden)]
    pub fn has_manifest(&self) -> Result<bool> {
        self.storage.exists(&self.path(MANIFEST_NAME))
    }
}

impl TableHandle {
    /// Opens a table file read in place (a checkpoint's file, through the checkpoint
    /// storage): no block cache, no prefix filter, never deleted. `id` must be the id written
    /// in the file; `smallest` and `largest` are the key range its snapshot records.
    pub fn open_in_place(
        file: Arc<dyn crate::storage::ReadableFile>,
        path: &str,
        id: u64,
        smallest: &[u8],
        largest: &[u8],
    ) -> Result<TableHandle> {
        let size = file.len();
        let reader = flowstate_formats::table::TableReader::open_with(
            file,
            path,
            flowstate_formats::table::TableReadOptions::default(),
        )?;
        if reader.table_id() != id {
            return Err(corrupt(
                path,
                format!("table id {} where {id} is expected", reader.table_id()),
            ));
        }
        if smallest > largest {
            return Err(corrupt(
                path,
                "the smallest key recorded is above the largest".into(),
            ));
        }
        Ok(TableHandle {
            ranges: Arc::from(reader.range_tombstones()),
            id,
            name: path.rsplit('/').next().unwrap_or(path).to_owned(),
            path: path.to_owned(),
            size,
            smallest: smallest.to_vec(),
            largest: largest.to_vec(),
            reader,
            storage: None,
            obsolete: std::sync::atomic::AtomicBool::new(false),
            _reservation: None,
        })
    }
}

impl super::TreeSnapshot {
    /// A view of `version` alone (no memtable): tables read in place, for a restore that
    /// reads a native snapshot entry by entry.
    pub fn of_version(version: Arc<Version>) -> Self {
        super::TreeSnapshot {
            imms: Vec::new(),
            version,
        }
    }
}

impl CheckpointTables {
    /// The version held, under the frozen memtables.
    pub fn version(&self) -> &Arc<Version> {
        &self.version
    }

    /// The number of frozen memtables the view waits for.
    pub fn frozen_memtables(&self) -> usize {
        self.imms.len()
    }

    /// The asynchronous phase: the view's frozen memtables flushed to L0 tables (by the pool,
    /// or here when it has not yet), then every table of the view by level: L0 newest first
    /// (the flushed memtables' tables first), deeper levels by key. Together they hold
    /// exactly the data of the view.
    pub fn tables(&self) -> Result<Vec<Vec<Arc<TableHandle>>>> {
        let mut flushed: Vec<Vec<Arc<TableHandle>>> = Vec::with_capacity(self.imms.len());
        for imm in &self.imms {
            let key = memtable_key(imm);
            loop {
                let done = lock(&self.tree.state)
                    .flush_outputs
                    .get(&key)
                    .and_then(|o| o.tables.clone());
                if let Some(tables) = done {
                    flushed.push(tables);
                    break;
                }
                if self.tree.disposed.load(Ordering::Acquire) {
                    return Err(Error::InvalidArgument(
                        "the tree was disposed before a checkpoint's memtables were flushed".into(),
                    ));
                }
                // Flushes the oldest frozen memtable: ours, or one older that a flush on
                // another thread is about to finish (then ours is next).
                if !self.tree.flush_one()? {
                    // Nothing waits: a flush on another thread took ours and recorded it
                    // before it let go of the flush lock.
                    let done = lock(&self.tree.state)
                        .flush_outputs
                        .get(&key)
                        .and_then(|o| o.tables.clone());
                    match done {
                        Some(tables) => {
                            flushed.push(tables);
                            break;
                        }
                        None => {
                            return Err(Error::InvalidArgument(
                                "a checkpoint's frozen memtable is neither waiting nor flushed"
                                    .into(),
                            ))
                        }
                    }
                }
            }
        }
        let mut levels: Vec<Vec<Arc<TableHandle>>> = (0..self.version.level_count())
            .map(|l| self.version.tables(l).to_vec())
            .collect();
        // Newest memtable first; each flush's tables in key order (they do not overlap).
        let mut l0: Vec<Arc<TableHandle>> = flushed.into_iter().rev().flatten().collect();
        l0.append(&mut levels[0]);
        levels[0] = l0;
        Ok(levels)
    }
}

impl Drop for CheckpointTables {
    fn drop(&mut self) {
        let mut state = lock(&self.tree.state);
        for imm in &self.imms {
            let key = memtable_key(imm);
            if let Some(out) = state.flush_outputs.get_mut(&key) {
                out.waiting -= 1;
                if out.waiting == 0 {
                    state.flush_outputs.remove(&key);
                }
            }
        }
    }
}
