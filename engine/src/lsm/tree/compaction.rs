//! Compaction: the policies that pick which tables to merge next, and the merge itself
//! (spec/lsm-tree.md, "Compaction" and "Compaction policies").
//!
//! - [`CompactionPolicy::Leveled`] (the default): L0 into L1 once L0 holds
//!   [`TreeOptions::l0_compaction_trigger`] tables; a level over its size budget compacts one
//!   table into the next. Few tables to read, but every byte is rewritten once per level it
//!   passes, and each rewritten table is new bytes for the next incremental checkpoint.
//! - [`CompactionPolicy::CheckpointAware`]: the base of the data stays in the bottom level,
//!   split into partitions (one bottom table each); flushes cut their tables at the partition
//!   boundaries, so each partition's changes pile up in L0 as sorted runs of their own; a
//!   partition is merged into the base only when its runs reach a configured fraction of its
//!   base, and its runs are merged among themselves only when there are too many. Space
//!   amplification is the explicit trade-off for few re-shipped bytes
//!   ([`policy`](super::policy) holds the planner).

use super::*;

/// How a tree picks its compactions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CompactionPolicy {
    /// Leveled compaction (the default).
    #[default]
    Leveled,
    /// Partitioned delta runs over a bottom-level base, merged by delta ratio: for
    /// incremental checkpoints that re-ship few bytes.
    CheckpointAware(CheckpointAwareOptions),
}

/// The settings of [`CompactionPolicy::CheckpointAware`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointAwareOptions {
    /// A partition's runs are merged into its base once their bytes reach this fraction of
    /// the base's bytes (default 1.0). Higher: fewer base rewrites (fewer new bytes per
    /// checkpoint), more space (up to `1 + delta_ratio` times the live data) and more runs to
    /// read.
    pub delta_ratio: f64,
    /// The most runs one partition may hold in L0 (default 16); past it, its newest runs are
    /// merged into one (a minor merge, which keeps tombstones).
    pub max_runs: usize,
    /// The size at which a merge into the base closes a bottom table, that is the size of a
    /// partition (default 8 MiB). Smaller partitions spread the base rewrites over more
    /// checkpoints.
    pub partition_bytes: u64,
}

impl Default for CheckpointAwareOptions {
    fn default() -> Self {
        CheckpointAwareOptions {
            delta_ratio: 1.0,
            max_runs: 16,
            partition_bytes: 8 << 20,
        }
    }
}

impl CheckpointAwareOptions {
    pub(super) fn check(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::InvalidConfig(format!(
                "LSM tree, checkpoint-aware compaction: {what}"
            )))
        };
        if !(self.delta_ratio.is_finite() && self.delta_ratio > 0.0) {
            return bad("delta_ratio must be a positive number");
        }
        if self.max_runs < 2 {
            return bad("max_runs must be at least 2");
        }
        if self.partition_bytes == 0 {
            return bad("partition_bytes must be above 0");
        }
        Ok(())
    }
}

impl Tree {
    /// Picks one compaction: `(input level, its input tables newest first)`. In a level
    /// below L0, the table after the level's compaction pointer (or the first one).
    pub(super) fn pick(&self, version: &Version) -> Option<(usize, Vec<Arc<TableHandle>>)> {
        if version.tables(0).len() >= self.options.l0_compaction_trigger {
            return Some((0, version.tables(0).to_vec()));
        }
        for level in 1..MAX_LEVELS - 1 {
            if version.level_bytes(level) > self.options.level_budget(level) {
                let tables = version.tables(level);
                let pointer = lock(&self.state).compact_pointer[level].clone();
                let next = tables
                    .iter()
                    .find(|t| t.smallest > pointer)
                    .or_else(|| tables.first())?;
                return Some((level, vec![Arc::clone(next)]));
            }
        }
        None
    }

    /// Runs one compaction step if one is due: L0 into L1 once L0 holds
    /// [`TreeOptions::l0_compaction_trigger`] tables, else one table of the first level over its
    /// size budget into the next level. Returns `false` if none was due. Flushes run beside
    /// it: they add L0 tables newer than its inputs, which it leaves in place.
    ///
    /// Tombstones and range tombstones are dropped only when no deeper level holds tables
    /// overlapping the output; until then the output carries the inputs' range tombstones.
    /// Compaction reads do not fill the block cache. The replaced files are deleted once the
    /// new manifest is durable and no pinned version holds them.
    pub fn compact_one(&self) -> Result<bool> {
        let _compact = lock(&self.compact_lock);
        if self.disposed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let base = self.pin();
        if let CompactionPolicy::CheckpointAware(options) = self.options.compaction {
            return self.compact_partitioned(&base, &options);
        }
        let Some((level, upper)) = self.pick(&base) else {
            return Ok(false);
        };
        let out_level = level + 1;
        let lo = upper
            .iter()
            .map(|t| t.smallest.as_slice())
            .min()
            .unwrap_or_default()
            .to_vec();
        let hi = upper
            .iter()
            .map(|t| t.largest.as_slice())
            .max()
            .unwrap_or_default()
            .to_vec();
        let lower: Vec<Arc<TableHandle>> = base
            .tables(out_level)
            .iter()
            .filter(|t| t.overlaps(&lo, &hi))
            .cloned()
            .collect();
        if level > 0 && lower.is_empty() {
            return self.trivial_move(level, &upper[0]).map(|()| true);
        }
        let lo = lower
            .first()
            .map_or(lo.clone(), |t| t.smallest.clone().min(lo.clone()));
        let hi = lower
            .last()
            .map_or(hi.clone(), |t| t.largest.clone().max(hi.clone()));
        let deeper = (out_level + 1..MAX_LEVELS)
            .any(|l| base.tables(l).iter().any(|t| t.overlaps(&lo, &hi)));
        let merge_level = if deeper {
            MergeLevel::Upper
        } else {
            MergeLevel::Bottom
        };
        let inputs: Vec<Arc<TableHandle>> = upper.iter().chain(&lower).cloned().collect();
        let limit = self.options.target_table_bytes;
        self.merge_tables(&inputs, out_level, merge_level, limit, &[], |state| {
            if let Some(last) = upper.last() {
                state.compact_pointer[level] = last.largest.clone();
            }
        })?;
        Ok(true)
    }

    /// Merges `inputs` (newest first) at `merge_level` into new tables of `out_level` (closed
    /// at `limit` bytes and at every key of `boundaries`), then installs the version without
    /// the inputs and with the outputs (running `after` on the state) and marks the inputs
    /// obsolete. At [`MergeLevel::Upper`] the outputs carry the inputs' range tombstones; at the
    /// bottom they are dropped. Into L0, the outputs take the place of the newest input (L0 is
    /// ordered by age: tables flushed meanwhile stay newer). Inputs are read without filling
    /// the block cache. The caller holds the compaction lock.
    pub(super) fn merge_tables(
        &self,
        inputs: &[Arc<TableHandle>],
        out_level: usize,
        merge_level: MergeLevel,
        limit: u64,
        boundaries: &[Vec<u8>],
        after: impl FnOnce(&mut State),
    ) -> Result<()> {
        let sources: Vec<Source> = inputs.iter().map(|t| t.source(&[], None, false)).collect();
        let input_ranges: Vec<Arc<[RangeTombstone]>> =
            inputs.iter().map(|t| Arc::clone(&t.ranges)).collect();
        let out_ranges = match merge_level {
            MergeLevel::Upper => ranges::union(input_ranges.iter().map(|r| &r[..])),
            MergeLevel::Bottom => Vec::new(),
        };
        let mut merged = MergingIter::with_ranges(sources, input_ranges, merge_level);
        let outputs = match self
            .options
            .compaction_filter
            .as_ref()
            .filter(|f| f.active())
        {
            Some(filter) => {
                let mut filtered =
                    super::compaction_filter::apply(&mut merged, filter.begin(), merge_level);
                self.write_tables_cut(&mut filtered, &out_ranges, limit, boundaries)?
            }
            None => self.write_tables_cut(&mut merged, &out_ranges, limit, boundaries)?,
        };
        if !outputs.is_empty() {
            self.storage.sync_dir(&self.dir)?;
        }
        let gone: HashSet<u64> = inputs.iter().map(|t| t.id).collect();
        self.install(
            |version| {
                let at = version.levels[0]
                    .iter()
                    .position(|t| gone.contains(&t.id))
                    .unwrap_or(0);
                for tables in &mut version.levels {
                    tables.retain(|t| !gone.contains(&t.id));
                }
                let out = &mut version.levels[out_level];
                if out_level == 0 {
                    let at = at.min(out.len());
                    out.splice(at..at, outputs.iter().cloned());
                } else {
                    out.extend(outputs.iter().cloned());
                    out.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                }
            },
            |state| {
                after(state);
                state.stats.compactions += 1;
                state.stats.compaction_bytes_read += inputs.iter().map(|t| t.size).sum::<u64>();
                state.stats.compaction_bytes_written += outputs.iter().map(|t| t.size).sum::<u64>();
            },
        )?;
        for t in inputs {
            t.obsolete.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// A manual full compaction: flushes every memtable, then merges every table of the
    /// current version into new tables in the bottom level (tombstones, range tombstones and
    /// overwritten values dropped, list operands resolved, the compaction filter applied).
    /// Returns `false` if there was nothing to do (no table, or one table already in the
    /// bottom level without tombstones to drop and no active compaction filter). Rewrites the
    /// whole tree: for after a restore or before a savepoint, not for routine use. Flushes may run meanwhile; their L0 tables are newer and stay.
    pub fn compact_all(&self) -> Result<bool> {
        self.freeze();
        while self.flush_one()? {}
        let _compact = lock(&self.compact_lock);
        if self.disposed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let base = self.pin();
        let bottom = MAX_LEVELS - 1;
        let inputs: Vec<Arc<TableHandle>> = base.all_tables().cloned().collect();
        // One bottom table with nothing to drop is settled, unless a filter may drop some.
        let settled = !self.filter_active()
            && inputs.len() == 1
            && base.tables(bottom).len() == 1
            && inputs[0].ranges.is_empty()
            && inputs[0].reader.properties().deletes == 0
            && inputs[0].reader.properties().merges == 0;
        if inputs.is_empty() || settled {
            return Ok(false);
        }
        // L0 newest first, then each level: newest first overall, as a merge wants.
        let limit = match self.options.compaction {
            CompactionPolicy::Leveled => self.options.target_table_bytes,
            CompactionPolicy::CheckpointAware(o) => o.partition_bytes,
        };
        self.merge_tables(&inputs, bottom, MergeLevel::Bottom, limit, &[], |_| {})?;
        Ok(true)
    }

    /// Whether a compaction filter may change what compactions write.
    fn filter_active(&self) -> bool {
        self.options
            .compaction_filter
            .as_ref()
            .is_some_and(|f| f.active())
    }

    /// Moves `table` from `level` to the next level without rewriting it.
    pub(super) fn trivial_move(&self, level: usize, table: &Arc<TableHandle>) -> Result<()> {
        self.install(
            |version| {
                version.levels[level].retain(|t| t.id != table.id);
                let out = &mut version.levels[level + 1];
                out.push(Arc::clone(table));
                out.sort_by(|a, b| a.smallest.cmp(&b.smallest));
            },
            |state| {
                state.compact_pointer[level] = table.largest.clone();
                state.stats.compactions += 1;
                state.stats.trivial_moves += 1;
            },
        )
    }
}
