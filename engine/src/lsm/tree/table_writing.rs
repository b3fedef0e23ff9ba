//! Writing table files: a table streamed into a temporary file, synced and renamed into place
//! ([`Tree::write_tables`] for flushes and compactions, cut by size and by range-tombstone
//! bytes), and [`TableWriter`] for sorted values that [`Tree::ingest`] adds.

use super::*;

/// An `io::Write` over a storage file that keeps the storage's own error (the table builder
/// only sees an `io::Error` made from it) in a slot the writer of the table reads.
struct FileWriter {
    pub(super) file: Box<dyn WritableFile>,
    pub(super) error: Arc<Mutex<Option<Error>>>,
}

impl std::io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf).map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            *lock(&self.error) = Some(e);
            io
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A table being written: its builder streaming into a temporary file.
struct OpenTable {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) path: String,
    pub(super) tmp: String,
    pub(super) builder: TableBuilder<FileWriter>,
    /// The storage error behind a failed builder call, if any.
    pub(super) error: Arc<Mutex<Option<Error>>>,
    /// The last key added.
    pub(super) last_key: Option<Vec<u8>>,
}

impl OpenTable {
    /// The error to report for `e`: the storage's own error if a write failed.
    pub(super) fn error(&self, e: impl Into<Error>) -> Error {
        lock(&self.error).take().unwrap_or_else(|| e.into())
    }
}

/// Writes sorted `(key, value)` pairs straight into table files of about
/// [`TreeOptions::target_table_bytes`] ([`Tree::table_writer`]); [`Tree::ingest`] adds them
/// to the tree. A key not above the previous one starts a new table, so several sorted runs
/// may go through one writer (the tables of different runs may then overlap).
///
/// Tables finished but never ingested, and a table being written when the writer is dropped,
/// are deleted.
pub struct TableWriter<'t> {
    pub(super) tree: &'t Tree,
    current: Option<OpenTable>,
    pub(super) tables: Vec<Arc<TableHandle>>,
}

impl fmt::Debug for TableWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableWriter")
            .field("tables", &self.tables.len())
            .field("open", &self.current.is_some())
            .finish()
    }
}

impl TableWriter<'_> {
    /// Adds `key` with `value` (a put).
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let cut = self.current.as_ref().is_some_and(|t| {
            t.last_key.as_deref().is_some_and(|last| key <= last)
                || t.builder.estimated_len() >= self.tree.options.target_table_bytes
        });
        if cut {
            self.cut()?;
        }
        let table = match &mut self.current {
            Some(t) => t,
            None => self.current.insert(self.tree.start_table()?),
        };
        if let Err(e) = table.builder.add(key, EntryKind::Put, value) {
            let e = table.error(e);
            self.abandon();
            return Err(e);
        }
        match &mut table.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => table.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    /// Finishes the open table, if any.
    pub(super) fn cut(&mut self) -> Result<()> {
        if let Some(table) = self.current.take() {
            if let Some(handle) = self.tree.finish_table(table, &[])? {
                self.tables.push(handle);
            }
        }
        Ok(())
    }

    /// Removes the open table's temporary file.
    pub(super) fn abandon(&mut self) {
        if let Some(table) = self.current.take() {
            let _ = self.tree.storage.remove_file(&table.tmp);
        }
    }

    /// Finishes the last table and returns every table written, in order, for
    /// [`Tree::ingest`].
    pub fn finish(mut self) -> Result<Vec<Arc<TableHandle>>> {
        self.cut()?;
        Ok(std::mem::take(&mut self.tables))
    }
}

impl Drop for TableWriter<'_> {
    fn drop(&mut self) {
        self.abandon();
        for t in &self.tables {
            t.obsolete.store(true, Ordering::Release);
        }
    }
}

/// The most bytes of range tombstones the tree writes into one table (their encoded size,
/// about): well within the table format's bound on the block (`MAX_META_LEN`, 16 MiB).
pub const RANGE_BYTES_PER_TABLE: usize = 4 << 20;

/// Where to cut a table so that no table holds more than `budget` bytes of `ranges`
/// (normalized): the starts of the ranges that would pass it, in order. Cutting at a range's
/// start splits no range, and the ranges before it end before it (normalized ranges are
/// separated), so the tables on both sides do not overlap.
fn range_cuts(ranges: &[RangeTombstone], budget: usize) -> Vec<Vec<u8>> {
    let mut cuts = Vec::new();
    let mut bytes = 0usize;
    for r in ranges {
        let len = r.start.len() + r.end.len() + 10;
        if bytes > 0 && bytes + len > budget {
            cuts.push(r.start.clone());
            bytes = 0;
        }
        bytes += len;
    }
    cuts
}

/// The inclusive upper bound of keys below the exclusive `end`: the key itself when `end` is
/// a [`ranges::successor`] (`x` followed by a zero byte has `x` as its exact predecessor),
/// else `end` (an upper bound one key too high, which only costs a needless table probe).
fn inclusive_below(end: &[u8]) -> &[u8] {
    match end.split_last() {
        Some((0, rest)) => rest,
        _ => end,
    }
}

impl Tree {
    /// Starts a table: allocates its id and creates its temporary file.
    fn start_table(&self) -> Result<OpenTable> {
        let id = {
            let mut state = lock(&self.state);
            let mut id = state.next_id;
            while state.adopted_ids.contains(&id) {
                id += 1;
            }
            state.next_id = id + 1;
            id
        };
        let name = table_name(id);
        let path = self.path(&name);
        let tmp = format!("{path}{TEMP_SUFFIX}");
        let file = self.storage.create(&tmp)?;
        let error = Arc::new(Mutex::new(None));
        let writer = FileWriter {
            file,
            error: Arc::clone(&error),
        };
        let options = TableOptions {
            table_id: id,
            ..self.table_options.clone()
        };
        match TableBuilder::new(writer, options, &path) {
            Ok(builder) => Ok(OpenTable {
                id,
                name,
                path,
                tmp,
                builder,
                error,
                last_key: None,
            }),
            Err(e) => {
                let _ = self.storage.remove_file(&tmp);
                Err(e.into())
            }
        }
    }

    /// Adds `ranges` (normalized, already cut to the table's share) to `table`, finishes it,
    /// syncs it, renames it into place and opens it. `None` (and no file) if the table holds
    /// neither an entry nor a range. On an error the temporary file is removed.
    fn finish_table(
        &self,
        table: OpenTable,
        ranges: &[RangeTombstone],
    ) -> Result<Option<Arc<TableHandle>>> {
        let tmp = table.tmp.clone();
        let finished = self.finish_table_inner(table, ranges);
        if !matches!(finished, Ok(Some(_))) {
            let _ = self.storage.remove_file(&tmp);
        }
        finished
    }

    fn finish_table_inner(
        &self,
        mut table: OpenTable,
        ranges: &[RangeTombstone],
    ) -> Result<Option<Arc<TableHandle>>> {
        for r in ranges {
            if let Err(e) = table.builder.add_range_tombstone(&r.start, &r.end) {
                return Err(table.error(e));
            }
        }
        if table.builder.entries() == 0 && ranges.is_empty() {
            return Ok(None);
        }
        let OpenTable {
            id,
            name,
            path,
            tmp,
            builder,
            error,
            ..
        } = table;
        let (summary, mut writer) = builder
            .finish_into_inner()
            .map_err(|e| lock(&error).take().unwrap_or_else(|| e.into()))?;
        let mut smallest = summary.smallest().map(<[u8]>::to_vec);
        let mut largest = summary.largest().map(<[u8]>::to_vec);
        if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
            let lo = first.start.as_slice();
            let hi = inclusive_below(&last.end);
            smallest = Some(smallest.map_or(lo.to_vec(), |s| s.min(lo.to_vec())));
            largest = Some(largest.map_or(hi.to_vec(), |l| l.max(hi.to_vec())));
        }
        let (Some(smallest), Some(largest)) = (smallest, largest) else {
            return Ok(None);
        };
        writer.file.sync()?;
        drop(writer);
        self.storage.rename(&tmp, &path)?;
        Ok(Some(Arc::new(
            self.open_table(id, &name, &smallest, &largest)?,
        )))
    }

    /// Writes the entries of `entries` and the range tombstones `ranges` (normalized) into new
    /// tables, each closed once it reaches `limit` bytes, streamed to a temporary file, synced
    /// and renamed. The caller syncs the directory.
    ///
    /// When the output is cut after a key, table `t` takes the parts of the ranges up to that
    /// key (exclusive end: its [`ranges::successor`]) and table `t + 1` the parts after it, so
    /// that the tables' key ranges, ranges included, do not overlap. A table is also cut before
    /// the start of the range that would take its range tombstones past
    /// [`RANGE_BYTES_PER_TABLE`] (the table format bounds the block), so a memtable or a merge
    /// full of ranges makes several tables. Ranges with no entry around them make tables of
    /// their own.
    pub(super) fn write_tables(
        &self,
        entries: &mut dyn Iterator<Item = Result<(Vec<u8>, Entry)>>,
        ranges: &[RangeTombstone],
        limit: u64,
    ) -> Result<Vec<Arc<TableHandle>>> {
        self.write_tables_cut(entries, ranges, limit, &[])
    }

    /// [`write_tables`](Self::write_tables), also cutting the output at every key of
    /// `boundaries` (sorted): no table spans a boundary (the checkpoint-aware policy's
    /// partitions). Partitions with neither an entry nor a range make no table.
    pub(super) fn write_tables_cut(
        &self,
        entries: &mut dyn Iterator<Item = Result<(Vec<u8>, Entry)>>,
        ranges: &[RangeTombstone],
        limit: u64,
        boundaries: &[Vec<u8>],
    ) -> Result<Vec<Arc<TableHandle>>> {
        let mut cuts = range_cuts(ranges, RANGE_BYTES_PER_TABLE);
        if !boundaries.is_empty() {
            cuts.extend(boundaries.iter().cloned());
            cuts.sort_unstable();
            cuts.dedup();
        }
        let mut next_cut = 0;
        let mut out = Vec::new();
        let mut lower: Option<Vec<u8>> = None;
        let mut pending = entries.next();
        loop {
            while next_cut < cuts.len()
                && lower
                    .as_deref()
                    .is_some_and(|l| cuts[next_cut].as_slice() <= l)
            {
                next_cut += 1;
            }
            let cut = cuts.get(next_cut).map(Vec::as_slice);
            // Nothing before the cut (the next entry lies past it, no range in between): skip
            // to it without an empty table. Nothing left at all: done.
            let next_key = match &pending {
                Some(Ok((k, _))) => Some(k.as_slice()),
                _ => None,
            };
            let no_range_before =
                |hi: Option<&[u8]>| !ranges::overlaps(ranges, lower.as_deref(), hi);
            if pending.is_none() && no_range_before(None) {
                break;
            }
            if let (Some(c), Some(k)) = (cut, next_key) {
                if k >= c && no_range_before(Some(c)) {
                    lower = Some(c.to_vec());
                    continue;
                }
            }
            let mut table = self.start_table()?;
            let filled = Self::fill_table(&mut table, entries, &mut pending, limit, cut);
            let stopped_at_cut = match filled {
                Ok(stopped) => stopped,
                Err(e) => {
                    let _ = self.storage.remove_file(&table.tmp);
                    return Err(table.error(e));
                }
            };
            // Where this table's share of the ranges ends: at a range cut, after the last key
            // when more entries follow, at the next range cut when only ranges are left, or
            // nowhere (the last table).
            let upper = match (&pending, &table.last_key) {
                _ if stopped_at_cut => cut.map(<[u8]>::to_vec),
                (Some(_), Some(k)) => Some(ranges::successor(k)),
                _ => cut.map(<[u8]>::to_vec),
            };
            let mine = ranges::clip(ranges, lower.as_deref(), upper.as_deref());
            if let Some(handle) = self.finish_table(table, &mine)? {
                out.push(handle);
            }
            if upper.is_none() {
                break;
            }
            lower = upper;
        }
        Ok(out)
    }

    /// Adds entries from `pending` on to `table` until it reaches `limit` bytes, leaving the
    /// next entry in `pending`; stops before an entry at or after `cut`. Returns whether it
    /// stopped at `cut`.
    fn fill_table(
        table: &mut OpenTable,
        entries: &mut dyn Iterator<Item = Result<(Vec<u8>, Entry)>>,
        pending: &mut Option<Result<(Vec<u8>, Entry)>>,
        limit: u64,
        cut: Option<&[u8]>,
    ) -> Result<bool> {
        while let Some(next) = pending.take() {
            let (k, entry) = next?;
            if cut.is_some_and(|c| k.as_slice() >= c) {
                *pending = Some(Ok((k, entry)));
                return Ok(true);
            }
            match &entry {
                Entry::Put(v) => table.builder.add(&k, EntryKind::Put, v)?,
                Entry::Delete => table.builder.add(&k, EntryKind::Delete, &[])?,
                Entry::Merge(o) => table.builder.add(&k, EntryKind::Merge, o)?,
            }
            table.last_key = Some(k);
            *pending = entries.next();
            if table.builder.estimated_len() >= limit {
                break;
            }
        }
        Ok(false)
    }

    /// A writer of tables from sorted values, for [`ingest`](Self::ingest): bulk loading
    /// without the memtable, flushes or compactions.
    pub fn table_writer(&self) -> TableWriter<'_> {
        TableWriter {
            tree: self,
            current: None,
            tables: Vec::new(),
        }
    }
}
