//! A fallible, lazy iterator over a table's entries in key order, holding one data block at a
//! time.

use std::fmt;
use std::sync::Arc;

use crate::random_access::RandomAccess;
use crate::FormatError;

use super::block::{Block, Found, Next};
use super::reader::Inner;
use super::{EntryKind, TableEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet: the first step seeks.
    Start,
    /// On an entry.
    On,
    /// At the end, or after an error.
    Done,
}

/// What a full scan counted, to compare with the properties at the end.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    entries: u64,
    deletes: u64,
    merges: u64,
    key_bytes: u64,
    value_bytes: u64,
}

/// Entries of a table in ascending key order, from [`TableReader::iter`],
/// [`iter_from`](super::TableReader::iter_from) or
/// [`iter_prefix`](super::TableReader::iter_prefix).
///
/// Two ways to use it:
///
/// - as an [`Iterator`] of `Result<TableEntry, FormatError>`, each entry owned;
/// - as a cursor, without a copy per entry: [`advance`](TableIter::advance) moves to the next
///   entry and says whether there is one, then [`key`](TableIter::key),
///   [`kind`](TableIter::kind) and [`value`](TableIter::value) borrow it (what a merging
///   iterator over many tables wants).
///
/// Blocks are read lazily, one at a time: the iterator holds the current block only. After an
/// error it ends. It holds the open table, not a borrow of the reader.
///
/// [`TableReader::iter`]: super::TableReader::iter
pub struct TableIter<R> {
    table: Arc<Inner<R>>,
    state: State,
    /// Where the first step seeks to (`None`: the first entry).
    seek: Option<Vec<u8>>,
    /// The iteration ends at the first key without this prefix.
    prefix: Option<Vec<u8>>,
    block: Option<Arc<Block>>,
    block_index: usize,
    /// The current entry: key, kind, value position in the block, next entry's position.
    key: Vec<u8>,
    found: Option<Found>,
    /// Counted on a full scan only.
    totals: Option<Totals>,
    /// Whether blocks read from the file are offered to the block cache.
    fill_cache: bool,
}

impl<R> fmt::Debug for TableIter<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableIter")
            .field("file", &self.table.file)
            .field("state", &self.state)
            .field("block_index", &self.block_index)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<R: RandomAccess> TableIter<R> {
    pub(crate) fn new(
        table: Arc<Inner<R>>,
        seek: Option<Vec<u8>>,
        prefix: Option<Vec<u8>>,
        full: bool,
    ) -> Self {
        TableIter {
            table,
            state: State::Start,
            seek,
            prefix,
            block: None,
            block_index: 0,
            key: Vec::new(),
            found: None,
            totals: full.then(Totals::default),
            fill_cache: true,
        }
    }

    /// Whether the blocks this iterator reads from the file are offered to the reader's block
    /// cache (default `true`; blocks already cached are used either way). A compaction turns
    /// it off so that one pass over whole tables does not evict the blocks reads use.
    pub fn fill_cache(mut self, fill: bool) -> Self {
        self.fill_cache = fill;
        self
    }

    /// Ends the iteration.
    pub(crate) fn finish(&mut self) {
        self.state = State::Done;
        self.block = None;
        self.found = None;
    }

    /// Moves to the next entry (the first one on the first call). `Ok(false)` at the end; after
    /// an error the iterator is at its end.
    pub fn advance(&mut self) -> Result<bool, FormatError> {
        match self.step() {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.finish();
                Ok(false)
            }
            Err(e) => {
                self.finish();
                Err(e)
            }
        }
    }

    /// Whether the iterator is on an entry (after an [`advance`](TableIter::advance) that
    /// returned `true`).
    pub fn valid(&self) -> bool {
        self.state == State::On && self.found.is_some()
    }

    /// The current entry's key (empty when not [`valid`](TableIter::valid)).
    pub fn key(&self) -> &[u8] {
        if self.valid() {
            &self.key
        } else {
            &[]
        }
    }

    /// The current entry's kind (`Put` when not [`valid`](TableIter::valid)).
    pub fn kind(&self) -> EntryKind {
        self.found.map_or(EntryKind::Put, |f| f.kind)
    }

    /// The current entry's value (empty when not [`valid`](TableIter::valid)).
    pub fn value(&self) -> &[u8] {
        match (&self.block, self.found) {
            (Some(b), Some(f)) => b.value(f),
            _ => &[],
        }
    }

    fn load(&mut self, i: usize) -> Result<bool, FormatError> {
        self.block = None;
        if i >= self.table.index.len() {
            return Ok(false);
        }
        self.block = Some(self.table.read_block(i, self.fill_cache)?);
        self.block_index = i;
        Ok(true)
    }

    fn step(&mut self) -> Result<bool, FormatError> {
        let found = match self.state {
            State::Done => return Ok(false),
            State::Start => {
                self.state = State::On;
                self.first()?
            }
            State::On => self.next_in_order()?,
        };
        self.found = found;
        let Some(f) = found else {
            self.check_totals()?;
            return Ok(false);
        };
        if self
            .prefix
            .as_ref()
            .is_some_and(|p| !self.key.starts_with(p))
        {
            return Ok(false);
        }
        if let Some(t) = &mut self.totals {
            t.entries += 1;
            match f.kind {
                EntryKind::Put => {}
                EntryKind::Delete => t.deletes += 1,
                EntryKind::Merge => t.merges += 1,
            }
            t.key_bytes += self.key.len() as u64;
            t.value_bytes += f.value_len as u64;
        }
        Ok(true)
    }

    /// The first entry at or after the seek key.
    fn first(&mut self) -> Result<Option<Found>, FormatError> {
        let Some(target) = self.seek.take() else {
            if !self.load(0)? {
                return Ok(None);
            }
            return self.next_at(0);
        };
        let Some(i) = self.table.index.find(&target) else {
            return Ok(None);
        };
        if !self.load(i)? {
            return Ok(None);
        }
        let Some(block) = &self.block else {
            return Ok(None);
        };
        match block.seek(&target, &mut self.key) {
            Next::Entry(f) => Ok(Some(f)),
            Next::Broken(pos) => Err(block.broken(&self.table.file, pos)),
            // The block's last key is its index key, at least the target: never reached.
            Next::End => {
                let i = self.block_index + 1;
                if self.load(i)? {
                    self.next_at(0)
                } else {
                    Ok(None)
                }
            }
        }
    }

    #[inline]
    fn next_at(&mut self, pos: usize) -> Result<Option<Found>, FormatError> {
        match &self.block {
            Some(b) => match b.next_at(pos, &mut self.key) {
                Next::Entry(f) => Ok(Some(f)),
                Next::End => Ok(None),
                Next::Broken(pos) => Err(b.broken(&self.table.file, pos)),
            },
            None => Ok(None),
        }
    }

    fn next_in_order(&mut self) -> Result<Option<Found>, FormatError> {
        let pos = self.found.map_or(0, |f| f.next as usize);
        if let Some(f) = self.next_at(pos)? {
            return Ok(Some(f));
        }
        let i = self.block_index + 1;
        if self.load(i)? {
            self.next_at(0)
        } else {
            Ok(None)
        }
    }

    fn check_totals(&mut self) -> Result<(), FormatError> {
        let Some(t) = self.totals.take() else {
            return Ok(());
        };
        let p = &self.table.props;
        let pairs = [
            ("entries", t.entries, p.entries),
            ("deletes", t.deletes, p.deletes),
            ("merges", t.merges, p.merges),
            ("raw key bytes", t.key_bytes, p.raw_key_bytes),
            ("raw value bytes", t.value_bytes, p.raw_value_bytes),
        ];
        for (what, read, declared) in pairs {
            if read != declared {
                return Err(self.table.totals_mismatch(format!(
                    "the data blocks hold {read} {what}, the properties say {declared}"
                )));
            }
        }
        Ok(())
    }
}

impl<R: RandomAccess> Iterator for TableIter<R> {
    type Item = Result<TableEntry, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance() {
            Ok(true) => Some(Ok(TableEntry {
                key: self.key.clone(),
                kind: self.kind(),
                value: self.value().to_vec(),
            })),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
