//! The checkpoint-aware compaction policy's planner ([`CompactionPolicy::CheckpointAware`]).
//!
//! The bottom level holds the base, one table per partition; partition `i` is the key range
//! from its bottom table's smallest key to the next one's (the first is open below, the last
//! above). Flushes cut their tables at these boundaries ([`Tree::partition_boundaries`]), so
//! the L0 tables over a partition are the sorted runs of its changes. One step:
//!
//! 1. with no base yet, the oldest L0 table moves down as it is (no rewrite: its file, already
//!    shipped by a checkpoint, stays the same); tables left in middle levels by a leveled tree
//!    go down with L0 in one merge;
//! 2. else the partition whose runs (with any middle-level table over it, which a restore of
//!    a leveled tree leaves) have the largest ratio to its base, if that ratio reaches
//!    `delta_ratio`, merges into the base: every table over its range, in every level, closed
//!    under overlap, so that no older table is left above newer data;
//! 3. else the partition with the most runs, if more than `max_runs`, merges its newest runs
//!    of about one size (each at most twice the largest taken, at least two) into one run in
//!    their place in L0, keeping tombstones; when an older run it would skip overlaps them, it
//!    merges into the base instead.
//!
//! Fresh runs merge with fresh runs and a merged run waits for runs of its size, so a change is
//! rewritten about once before its partition goes down: incremental checkpoints ship it when
//! it is flushed, when its run is merged, and with its base (amortized over `delta_ratio`),
//! against once per level with leveled compaction. spec/lsm-tree.md, "Compaction policies",
//! has the figures.

use super::*;

/// What one checkpoint-aware step merges.
enum Plan {
    /// Tables merged into the bottom level (newest first: L0 by age, then each level).
    Down(Vec<Arc<TableHandle>>),
    /// L0 runs of one partition merged into one run in L0 (newest first).
    Runs(Vec<Arc<TableHandle>>),
    /// The oldest L0 table moved to an empty bottom level as it is.
    Move(Arc<TableHandle>),
}

/// Whether `t` overlaps the partition `[lo, hi)` (either end open when `None`).
fn in_partition(t: &TableHandle, lo: Option<&[u8]>, hi: Option<&[u8]>) -> bool {
    lo.is_none_or(|lo| t.largest.as_slice() >= lo) && hi.is_none_or(|hi| t.smallest.as_slice() < hi)
}

impl Tree {
    /// The partition boundaries of the checkpoint-aware policy in `version`: the smallest key
    /// of every bottom table but the first. Empty under the leveled policy.
    pub(super) fn partition_boundaries(&self, version: &Version) -> Vec<Vec<u8>> {
        match self.options.compaction {
            CompactionPolicy::Leveled => Vec::new(),
            CompactionPolicy::CheckpointAware(_) => version
                .tables(MAX_LEVELS - 1)
                .iter()
                .skip(1)
                .map(|t| t.smallest.clone())
                .collect(),
        }
    }

    /// Runs one checkpoint-aware step if one is due; see [the module](self). The caller holds
    /// the compaction lock.
    pub(super) fn compact_partitioned(
        &self,
        version: &Version,
        options: &CheckpointAwareOptions,
    ) -> Result<bool> {
        let Some(plan) = self.plan(version, options) else {
            return Ok(false);
        };
        let boundaries = self.partition_boundaries(version);
        match plan {
            Plan::Down(inputs) => {
                let bottom = MAX_LEVELS - 1;
                self.merge_tables(
                    &inputs,
                    bottom,
                    MergeLevel::Bottom,
                    options.partition_bytes,
                    &[],
                    |state| state.stats.partition_merges += 1,
                )?;
            }
            Plan::Move(table) => {
                let bottom = MAX_LEVELS - 1;
                self.install(
                    |version| {
                        version.levels[0].retain(|t| t.id != table.id);
                        version.levels[bottom].push(Arc::clone(&table));
                    },
                    |state| {
                        state.stats.compactions += 1;
                        state.stats.trivial_moves += 1;
                    },
                )?;
            }
            Plan::Runs(inputs) => {
                self.merge_tables(
                    &inputs,
                    0,
                    MergeLevel::Upper,
                    u64::MAX,
                    &boundaries,
                    |state| state.stats.run_merges += 1,
                )?;
            }
        }
        Ok(true)
    }

    fn plan(&self, version: &Version, options: &CheckpointAwareOptions) -> Option<Plan> {
        let bottom = MAX_LEVELS - 1;
        let base = version.tables(bottom);
        let l0 = version.tables(0);
        // Bytes of the middle-level tables over a partition (a restore of a leveled tree).
        let middle = |lo: Option<&[u8]>, hi: Option<&[u8]>| -> u64 {
            (1..bottom)
                .flat_map(|l| version.tables(l))
                .filter(|t| in_partition(t, lo, hi))
                .map(|t| t.size.max(1))
                .sum()
        };
        if base.is_empty() {
            if middle(None, None) > 0 {
                return (!l0.is_empty()).then(|| Plan::Down(Self::closure(version, None, None)));
            }
            // Nothing below the oldest L0 table: it becomes the base as it is.
            return l0.last().map(|t| Plan::Move(Arc::clone(t)));
        }
        let bounds: Vec<&[u8]> = base.iter().skip(1).map(|t| t.smallest.as_slice()).collect();
        let partition = |i: usize| {
            let lo = if i == 0 { None } else { Some(bounds[i - 1]) };
            (lo, bounds.get(i).copied())
        };
        let mut down: Option<(f64, usize)> = None;
        let mut crowded: Option<(usize, usize)> = None;
        for (i, base_table) in base.iter().enumerate() {
            let (lo, hi) = partition(i);
            let runs = l0.iter().filter(|t| in_partition(t, lo, hi)).count();
            let delta: u64 = l0
                .iter()
                .filter(|t| in_partition(t, lo, hi))
                .map(|t| t.size)
                .sum::<u64>()
                + middle(lo, hi);
            if delta == 0 {
                continue;
            }
            let ratio = delta as f64 / base_table.size.max(1) as f64;
            if ratio >= options.delta_ratio && down.is_none_or(|(r, _)| ratio > r) {
                down = Some((ratio, i));
            }
            if runs > options.max_runs && crowded.is_none_or(|(n, _)| runs > n) {
                crowded = Some((runs, i));
            }
        }
        if let Some((_, i)) = down {
            let (lo, hi) = partition(i);
            return Some(Plan::Down(Self::closure(version, lo, hi)));
        }
        let (_, i) = crowded?;
        let (lo, hi) = partition(i);
        let runs: Vec<&Arc<TableHandle>> = l0.iter().filter(|t| in_partition(t, lo, hi)).collect();
        // The newest runs of about one size (each at most twice the largest taken so far):
        // fresh runs merge with fresh runs, and a run merged before waits for runs of its
        // size, so that each change is rewritten about once before its partition goes down.
        let mut take = 1;
        let mut largest = runs[0].size;
        while take < runs.len() && runs[take].size <= largest.saturating_mul(2) {
            largest = largest.max(runs[take].size);
            take += 1;
        }
        let take = take.max(2);
        let chosen: Vec<Arc<TableHandle>> = runs[..take].iter().map(|t| Arc::clone(t)).collect();
        // The chosen runs must be the newest of the L0 tables over their range: an older
        // one left between them would be read after data older than it.
        let lo_key = chosen.iter().map(|t| t.smallest.as_slice()).min()?;
        let hi_key = chosen.iter().map(|t| t.largest.as_slice()).max()?;
        let oldest = l0.iter().position(|t| t.id == chosen[take - 1].id)?;
        let clean = l0[..oldest]
            .iter()
            .filter(|t| t.overlaps(lo_key, hi_key))
            .all(|t| chosen.iter().any(|c| c.id == t.id));
        if clean {
            Some(Plan::Runs(chosen))
        } else {
            Some(Plan::Down(Self::closure(version, lo, hi)))
        }
    }

    /// Every table of every level over the partition `[lo, hi)`, closed under overlap (a
    /// table over the range widens it), newest first: L0 by age, then each level by key.
    fn closure(version: &Version, lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<Arc<TableHandle>> {
        let mut chosen: HashSet<u64> = HashSet::new();
        let mut lo: Option<Vec<u8>> = lo.map(<[u8]>::to_vec);
        // An exclusive upper bound: a table's largest key widens it to that key's successor.
        let mut hi: Option<Vec<u8>> = hi.map(<[u8]>::to_vec);
        loop {
            let mut grew = false;
            for t in version.all_tables() {
                if chosen.contains(&t.id) || !in_partition(t, lo.as_deref(), hi.as_deref()) {
                    continue;
                }
                chosen.insert(t.id);
                grew = true;
                if lo.as_deref().is_some_and(|l| t.smallest.as_slice() < l) {
                    lo = Some(t.smallest.clone());
                }
                let above = ranges::successor(&t.largest);
                if hi.as_deref().is_some_and(|h| above.as_slice() > h) {
                    hi = Some(above);
                }
            }
            if !grew {
                break;
            }
        }
        version
            .all_tables()
            .filter(|t| chosen.contains(&t.id))
            .cloned()
            .collect()
    }
}
