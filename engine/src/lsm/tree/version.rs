//! The tables of a tree and the views over them: [`TableHandle`] (one open table file, deleted
//! once obsolete and released), [`Version`] (the tables by level, immutable and shared) and
//! [`TreeSnapshot`] (frozen memtables over a version), with their reads.

use super::*;

/// One open table file of the tree.
///
/// Once a compaction has replaced the table and the manifest that no longer lists it is
/// durable, the file is deleted when the last holder of the handle drops it.
pub struct TableHandle {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) path: String,
    pub(super) size: u64,
    pub(super) smallest: Vec<u8>,
    pub(super) largest: Vec<u8>,
    pub(super) reader: TableReader<Arc<dyn ReadableFile>>,
    /// The table's range tombstones (shared with merges that read it).
    pub(super) ranges: Arc<[RangeTombstone]>,
    /// The storage the file is deleted from once obsolete; `None` for a table read in place
    /// (a checkpoint's file), which is never deleted.
    pub(super) storage: Option<Arc<dyn Storage>>,
    pub(super) obsolete: AtomicBool,
    /// The table's index and filter memory, charged to the tree's block cache while the table
    /// is open (held for its `Drop`, which takes the charge back).
    pub(super) _reservation: Option<crate::lsm::cache::CacheReservation>,
}

impl TableHandle {
    /// The table's id (its file number).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The file name in the tree's directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's path in the tree's storage.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The smallest key the table holds or its range tombstones delete.
    pub fn smallest(&self) -> &[u8] {
        &self.smallest
    }

    /// The largest key the table holds or its range tombstones delete (a range's exclusive
    /// end when no smaller bound can be written: an upper bound).
    pub fn largest(&self) -> &[u8] {
        &self.largest
    }

    /// The table's range tombstones, normalized.
    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.ranges
    }

    /// Marks a table that no version holds, nor any manifest lists, for deletion: its file
    /// goes when the last holder drops it.
    pub(crate) fn discard(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    /// The open table.
    pub fn reader(&self) -> &TableReader<Arc<dyn ReadableFile>> {
        &self.reader
    }

    pub(super) fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_slice() <= hi && self.largest.as_slice() >= lo
    }

    /// The table's point entry for `key` and whether its range tombstones cover the key.
    pub(super) fn lookup(&self, key: &[u8]) -> Result<(Lookup<'static>, bool)> {
        if key < self.smallest.as_slice() || key > self.largest.as_slice() {
            return Ok((Lookup::NotFound, false));
        }
        let lookup = match self.reader.get(key)? {
            Some((EntryKind::Put, v)) => Lookup::Found(v.into()),
            Some((EntryKind::Delete, _)) => Lookup::Deleted,
            Some((EntryKind::Merge, ops)) => Lookup::MergeOperands(ops.into()),
            None => Lookup::NotFound,
        };
        let covered = !self.ranges.is_empty()
            && matches!(lookup, Lookup::NotFound | Lookup::MergeOperands(_))
            && ranges::covers(&self.ranges, key);
        Ok((lookup, covered))
    }

    /// The table's entries from `start` (on) as a merge source; blocks read are offered to
    /// the block cache if `fill_cache`.
    pub(super) fn source(&self, start: &[u8], prefix: Option<&[u8]>, fill_cache: bool) -> Source {
        let iter = match prefix {
            Some(p) => self.reader.iter_prefix(p),
            None => self.reader.iter_from(start),
        }
        .fill_cache(fill_cache);
        Box::new(iter.map(|e| {
            let e = e?;
            let entry = match e.kind {
                EntryKind::Put => Entry::Put(e.value),
                EntryKind::Delete => Entry::Delete,
                EntryKind::Merge => Entry::Merge(e.value),
            };
            Ok((e.key, entry))
        }))
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // A file left behind is garbage that the next open removes.
            if let Some(storage) = &self.storage {
                let _ = storage.remove_file(&self.path);
            }
        }
    }
}

impl fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("size", &self.size)
            .field("smallest", &key::Hex(&self.smallest).to_string())
            .field("largest", &key::Hex(&self.largest).to_string())
            .finish()
    }
}

/// An immutable set of tables by level: L0 newest first (its tables may overlap), deeper
/// levels sorted by key (their tables do not overlap).
#[derive(Debug, Clone, Default)]
pub struct Version {
    pub(super) levels: Vec<Vec<Arc<TableHandle>>>,
}

impl Version {
    pub(super) fn empty() -> Self {
        Version {
            levels: vec![Vec::new(); MAX_LEVELS],
        }
    }

    /// A version of `levels` (at most [`MAX_LEVELS`]; L0 newest first, deeper levels sorted
    /// by key without overlap, which is checked).
    pub fn from_levels(levels: Vec<Vec<Arc<TableHandle>>>) -> Result<Self> {
        if levels.len() > MAX_LEVELS {
            return Err(Error::InvalidArgument(format!(
                "{} levels, more than {MAX_LEVELS}",
                levels.len()
            )));
        }
        let mut version = Version::empty();
        for (level, mut tables) in levels.into_iter().enumerate() {
            if level > 0 {
                tables.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                if let Some(w) = tables.windows(2).find(|w| w[0].largest >= w[1].smallest) {
                    return Err(corrupt(
                        &w[1].path,
                        format!(
                            "tables {} and {} of level {level} overlap",
                            w[0].name, w[1].name
                        ),
                    ));
                }
            }
            version.levels[level] = tables;
        }
        Ok(version)
    }

    /// The tables of `level` (empty past the last level).
    pub fn tables(&self, level: usize) -> &[Arc<TableHandle>] {
        self.levels.get(level).map_or(&[], Vec::as_slice)
    }

    /// The number of levels ([`MAX_LEVELS`]).
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// The bytes of the table files of `level`.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.tables(level).iter().map(|t| t.size).sum()
    }

    /// Every table, L0 newest first, then each level by key.
    pub fn all_tables(&self) -> impl Iterator<Item = &Arc<TableHandle>> {
        self.levels.iter().flatten()
    }

    /// The tables that may hold `key`, newest first.
    pub(super) fn candidates<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<TableHandle>> {
        let l0 = self.tables(0).iter();
        let deeper = self.levels.iter().skip(1).filter_map(move |tables| {
            let i = tables.partition_point(|t| t.largest.as_slice() < key);
            tables.get(i).filter(|t| t.smallest.as_slice() <= key)
        });
        l0.chain(deeper)
    }

    /// The tables of this version over `[prefix, end)` if one level alone holds keys there
    /// (one table, in L0) and none has a range tombstone there; in key order.
    pub(super) fn single_level(
        &self,
        prefix: &[u8],
        end: Option<&[u8]>,
    ) -> Option<Vec<&Arc<TableHandle>>> {
        let window = |set: &[RangeTombstone]| ranges::overlaps(set, Some(prefix), end);
        let mut found: Vec<&Arc<TableHandle>> = Vec::new();
        let mut found_level = None;
        for level in 0..self.level_count() {
            for t in self.tables(level) {
                if t.largest.as_slice() < prefix || end.is_some_and(|e| t.smallest.as_slice() >= e)
                {
                    continue;
                }
                if window(&t.ranges)
                    || found_level.is_some_and(|l| l != level)
                    || (level == 0 && !found.is_empty())
                {
                    return None;
                }
                found_level = Some(level);
                found.push(t);
            }
        }
        Some(found)
    }

    /// Calls `visit` with each `(key, value)` pair of `tables` (from
    /// [`single_level`](Self::single_level)) whose key starts with `prefix`, read straight out
    /// of their blocks. One level holds them, so there is nothing to merge: a delete hides
    /// nothing below it, and merge operands have no base and are the value.
    pub(super) fn visit_single_level(
        tables: &[&Arc<TableHandle>],
        prefix: &[u8],
        visit: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        for t in tables {
            let mut it = t.reader.iter_prefix(prefix);
            while it.advance()? {
                match it.kind() {
                    EntryKind::Delete => {}
                    EntryKind::Put | EntryKind::Merge => visit(it.key(), it.value())?,
                }
            }
        }
        Ok(())
    }

    /// The value of `key` in this version's tables, resolved newest first, or `None`: what a
    /// snapshot that pinned the version (after flushing the memtables) reads.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let lookups = self.candidates(key).map(|t| t.lookup(key));
        Ok(resolve_ranged(lookups)?.map(|v| v.into_owned()))
    }

    /// The `(key, value)` pairs of this version's tables whose keys start with `prefix`, in
    /// key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = key::prefix_successor(prefix);
        self.scan_with(Vec::new(), prefix, end.as_deref(), Some(prefix), usize::MAX)
    }

    /// Merges `newer` (newest first, each with its range tombstones) with this version's
    /// tables over `start .. end`: the first `limit` live pairs.
    pub(super) fn scan_with(
        &self,
        newer: Vec<(Source, Arc<[RangeTombstone]>)>,
        start: &[u8],
        end: Option<&[u8]>,
        prefix: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (mut sources, mut ranges): (Vec<Source>, Vec<Arc<[RangeTombstone]>>) =
            newer.into_iter().unzip();
        for t in self.all_tables() {
            if t.largest.as_slice() < start || end.is_some_and(|e| t.smallest.as_slice() >= e) {
                continue;
            }
            let end = end.map(<[u8]>::to_vec);
            sources.push(Box::new(t.source(start, prefix, true).take_while(
                move |r| match (r, &end) {
                    (Ok((k, _)), Some(e)) => k < e,
                    _ => true,
                },
            )));
            ranges.push(Arc::clone(&t.ranges));
        }
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for item in MergingIter::with_ranges(sources, ranges, MergeLevel::Bottom) {
            if let (k, Entry::Put(v)) = item? {
                out.push((k, v));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(super) fn manifest(&self, next_table_id: u64) -> Manifest {
        let mut tables = Vec::new();
        for (level, ts) in self.levels.iter().enumerate() {
            for t in ts {
                tables.push(ManifestTable {
                    level: level as u8,
                    id: t.id,
                    name: t.name.clone(),
                    size: t.size,
                    smallest: t.smallest.clone(),
                    largest: t.largest.clone(),
                });
            }
        }
        // Adopted tables keep their own ids, which may lie above the tree's counter.
        let above = tables
            .iter()
            .map(|t| t.id.saturating_add(1))
            .max()
            .unwrap_or(0);
        Manifest {
            next_table_id: next_table_id.max(above),
            tables,
        }
    }
}

/// Whether none of the frozen memtables `imms` holds an entry or a range tombstone over
/// `[prefix, end)`: the first condition for reading the prefix out of one level's tables.
pub(super) fn frozen_quiet<'a>(
    imms: impl IntoIterator<Item = &'a Arc<ImmutableMemTable>>,
    prefix: &[u8],
    end: Option<&[u8]>,
) -> bool {
    imms.into_iter().all(|m| {
        m.prefix(prefix).next().is_none()
            && !ranges::overlaps(m.range_tombstones(), Some(prefix), end)
    })
}

/// What [`TreeSnapshot::visit_prefix`] calls with each `(key, value)` pair; an error stops
/// the visit.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A frozen view of a [`Tree`] ([`Tree::snapshot`]): frozen memtables, newest first, over a
/// version of tables. `Send + Sync`; cheap to clone.
#[derive(Debug, Clone)]
pub struct TreeSnapshot {
    pub(super) imms: Vec<Arc<ImmutableMemTable>>,
    pub(super) version: Arc<Version>,
}

impl TreeSnapshot {
    /// The version of tables under the frozen memtables.
    pub fn version(&self) -> &Arc<Version> {
        &self.version
    }

    /// The value of `key` in the view, or `None` if it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let lookups = self
            .imms
            .iter()
            .map(|m| Ok(memtable_lookup(m.get(key), || m.covers(key))))
            .chain(self.version.candidates(key).map(|t| t.lookup(key)));
        Ok(resolve_ranged(lookups)?.map(|v| v.into_owned()))
    }

    /// The `(key, value)` pairs of the view whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = key::prefix_successor(prefix);
        self.scan(prefix, end.as_deref(), Some(prefix))
    }

    /// The `(key, value)` pairs of the view with `start <= key < end`, in key order.
    pub fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.scan(start, Some(end), None)
    }

    /// Calls `visit` with each `(key, value)` pair of the view whose key starts with
    /// `prefix`, in key order: what [`scan_prefix`](Self::scan_prefix) returns. When the
    /// frozen memtables hold nothing there and one level alone holds tables over the prefix,
    /// without range tombstones there (the state after a full compaction), the pairs are read
    /// straight out of those tables' blocks, without a merge and without a copy per entry;
    /// otherwise they come from `scan_prefix`. Stops at the first error `visit` returns.
    pub fn visit_prefix(&self, prefix: &[u8], visit: &mut EntryVisitor<'_>) -> Result<()> {
        let end = key::prefix_successor(prefix);
        if let Some(tables) = self.single_level(prefix, end.as_deref()) {
            return Version::visit_single_level(&tables, prefix, visit);
        }
        for (k, v) in self.scan_prefix(prefix)? {
            visit(&k, &v)?;
        }
        Ok(())
    }

    /// The tables over `[prefix, end)` if they alone hold keys there: no frozen memtable has an
    /// entry or a range there, they all sit in one level (one table, in L0), and none has a
    /// range tombstone there. In key order.
    pub(super) fn single_level(
        &self,
        prefix: &[u8],
        end: Option<&[u8]>,
    ) -> Option<Vec<&Arc<TableHandle>>> {
        if !frozen_quiet(&self.imms, prefix, end) {
            return None;
        }
        self.version.single_level(prefix, end)
    }

    pub(super) fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end_bound = end.map_or(Bound::Unbounded, Bound::Excluded);
        let sources = self
            .imms
            .iter()
            .map(|m| {
                (
                    Box::new(Arc::clone(m).owned_entries(Bound::Included(start), end_bound))
                        as Source,
                    Arc::clone(m.range_tombstones()),
                )
            })
            .collect();
        self.version
            .scan_with(sources, start, end, prefix, usize::MAX)
    }
}
