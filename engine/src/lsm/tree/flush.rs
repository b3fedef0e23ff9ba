//! Flushes: the oldest frozen memtable written into L0 tables (spec/lsm-tree.md, "Flush").

use super::*;

impl Tree {
    /// Flushes the oldest frozen memtable into one L0 table (one per partition under the
    /// checkpoint-aware policy), records it in the manifest and installs the new version. Returns `false` if no memtable was waiting. Runs beside a
    /// compaction.
    ///
    /// On an error the memtable stays frozen (a later call retries) and the tree is unchanged;
    /// a table file written before the error is removed on the next open.
    pub fn flush_one(&self) -> Result<bool> {
        let _flush = lock(&self.flush_lock);
        if self.disposed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some(imm) = lock(&self.state).imms.front().cloned() else {
            return Ok(false);
        };
        let own = imm.range_tombstones();
        // A point tombstone under the memtable's own range says nothing the range does not.
        let mut entries = imm
            .entries()
            .filter(|e| !matches!(e, Ok((k, Entry::Delete)) if ranges::covers(own, k)));
        // The checkpoint-aware policy keeps each partition's changes in runs of its own.
        let boundaries = self.partition_boundaries(&self.pin());
        let tables = self.write_tables_cut(&mut entries, own, u64::MAX, &boundaries)?;
        if !tables.is_empty() {
            self.storage.sync_dir(&self.dir)?;
        }
        let written: u64 = tables.iter().map(|t| t.size).sum();
        self.install(
            |version| {
                for t in tables.iter().rev() {
                    version.levels[0].insert(0, Arc::clone(t));
                }
            },
            |state| {
                if let Some(out) = state.flush_outputs.get_mut(&memtable_key(&imm)) {
                    out.tables = Some(tables.clone());
                }
                state.imms.pop_front();
                state.stats.flushes += 1;
                state.stats.flush_bytes_written += written;
            },
        )?;
        Ok(true)
    }
}
