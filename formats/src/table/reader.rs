//! Reads a table file through [`RandomAccess`]: footer, properties, index, filter and range
//! tombstones on opening, then data blocks on demand, one at a time, through one function that
//! consults the block cache.

use std::fmt;
use std::sync::Arc;

use crate::limits::ReadLimits;
use crate::random_access::{read_exact, RandomAccess};
use crate::FormatError;

use super::block::{Block, Bounds};
use super::cache::{BlockCache, BlockCacheKey};
use super::filter::{BloomFilter, PrefixExtractor};
use super::footer::{Footer, MetaHandle, FOOTER_LEN};
use super::frame::{self, BlockType, Payload};
use super::index::Index;
use super::iter::TableIter;
use super::properties::TableProperties;
use super::range_tombstone::{self, RangeTombstone};
use super::{EntryKind, HEADER_LEN, MAGIC, MIN_VERSION, VERSION};

/// How a [`TableReader`] reads.
#[derive(Clone, Default)]
pub struct TableReadOptions {
    /// Limits on block sizes: data blocks within `max_block_len`, the index, filter,
    /// properties and range tombstone blocks within `max_meta_len` (stored and uncompressed).
    pub limits: ReadLimits,
    /// The prefix extractor the tree uses: [`TableReader::iter_prefix`] consults the filter's
    /// prefix bits when the table recorded an extractor of the same name and the prefix asked
    /// for is one the extractor extracts.
    pub prefix_extractor: Option<Arc<dyn PrefixExtractor>>,
    /// A cache of data blocks shared with other readers: asked before every data block read,
    /// offered every block read.
    pub block_cache: Option<Arc<dyn BlockCache>>,
    /// This table's name in the cache ([`BlockCacheKey::table`]): unique among the tables
    /// that share `block_cache`.
    pub cache_id: u64,
}

impl fmt::Debug for TableReadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableReadOptions")
            .field("limits", &self.limits)
            .field(
                "prefix_extractor",
                &self.prefix_extractor.as_ref().map(|p| p.name().to_owned()),
            )
            .field("block_cache", &self.block_cache.is_some())
            .field("cache_id", &self.cache_id)
            .finish()
    }
}

/// What an open table holds in memory, shared by the reader's clones and iterators.
pub(crate) struct Inner<R> {
    pub(crate) source: R,
    pub(crate) file: String,
    len: u64,
    table_id: u64,
    pub(crate) props: TableProperties,
    props_offset: u64,
    pub(crate) index: Index,
    filter: Option<BloomFilter>,
    filter_offset: u64,
    tombstones: Vec<RangeTombstone>,
    limits: ReadLimits,
    /// The filter holds prefixes of the extractor the caller uses.
    prefix_filter: Option<Arc<dyn PrefixExtractor>>,
    cache: Option<Arc<dyn BlockCache>>,
    cache_id: u64,
}

/// An open table file.
///
/// [`open`](TableReader::open) reads and checks the header, the footer, the properties, the
/// index, the filter and the range tombstones, and nothing else; lookups and scans then read
/// data blocks, each checked whole when read (see [`Block`]), one at a time. Every error names
/// the file and the byte offset; nothing read from the file sizes an allocation before it has
/// been checked against the file's length and the [`ReadLimits`].
///
/// A reader is cheap to clone (the open table is shared) and, with a `Sync` source, can be used
/// from several threads; its iterators hold a clone, so they outlive the borrow they were
/// created from. Layout and checks: see [the module](super) and spec/formats.md section 5.
pub struct TableReader<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for TableReader<R> {
    fn clone(&self) -> Self {
        TableReader {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R> fmt::Debug for TableReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableReader")
            .field("file", &self.inner.file)
            .field("len", &self.inner.len)
            .field("entries", &self.inner.props.entries)
            .field("data_blocks", &self.inner.index.len())
            .finish_non_exhaustive()
    }
}

fn corrupt(file: &str, offset: u64, reason: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        file: file.to_owned(),
        offset,
        reason: reason.into(),
    }
}

/// Reads the meta block `handle` names (of `block_type`) and checks its CRC against the
/// footer's copy.
fn read_meta<R: RandomAccess>(
    source: &R,
    file: &str,
    table_id: u64,
    handle: MetaHandle,
    block_type: BlockType,
    max_len: u32,
) -> Result<Payload, FormatError> {
    let payload = frame::read(
        source,
        file,
        table_id,
        handle.offset,
        handle.len.into(),
        block_type,
        max_len,
    )?;
    if payload.crc != handle.crc {
        return Err(FormatError::ChecksumMismatch {
            file: file.to_owned(),
            offset: handle.offset,
            expected: handle.crc,
            found: payload.crc,
        });
    }
    Ok(payload)
}

impl<R: RandomAccess> TableReader<R> {
    /// Opens the table in `source`, named `file_name` in errors, with default options (the
    /// format's limits, no prefix extractor, no cache).
    pub fn open(source: R, file_name: &str) -> Result<Self, FormatError> {
        Self::open_with(source, file_name, TableReadOptions::default())
    }

    /// Opens the table in `source` with `options`.
    ///
    /// Checks, in order: the length holds a header and a footer; the header's magic and
    /// version; the footer's magic, version and CRC; the blocks the footer names tile the file
    /// between the data blocks and the footer; the properties block; the index (tiling the
    /// data region, as many blocks as the properties say, its last key the largest key); the
    /// filter (present exactly when the properties ask for one) and the range tombstones (as
    /// many as the properties say). Each block's frame is checked first (size limit, CRC, the
    /// footer's copy of the CRC, type, compression).
    pub fn open_with(
        source: R,
        file_name: &str,
        options: TableReadOptions,
    ) -> Result<Self, FormatError> {
        let file = file_name.to_owned();
        let len = source.len();
        let min_len = HEADER_LEN + FOOTER_LEN as u64;
        if len < min_len {
            return Err(FormatError::TruncatedFile {
                file,
                offset: 0,
                needed: min_len,
                available: len,
            });
        }
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact(&source, &file, 0, &mut header)?;
        if header[..8] != MAGIC {
            return Err(FormatError::BadMagic { file, offset: 0 });
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                file,
                found: version,
                supported: VERSION,
            });
        }
        let footer_at = len - FOOTER_LEN as u64;
        let mut bytes = [0u8; FOOTER_LEN];
        read_exact(&source, &file, footer_at, &mut bytes)?;
        let footer = Footer::decode(&bytes, &file, footer_at, version)?;

        // The meta blocks, in file order, tile the space between the data blocks and the
        // footer; the index and the properties are always there.
        let order = [
            ("range tombstone", footer.range_tombstones, 48, true),
            ("filter", footer.filter, 16, true),
            ("properties", footer.properties, 32, false),
            ("index", footer.index, 0, false),
        ];
        let present: Vec<_> = order.iter().filter(|o| !o.1.is_absent()).collect();
        for (what, handle, at, optional) in order {
            if handle.is_absent() && !optional {
                return Err(corrupt(
                    &file,
                    footer_at + at,
                    format!("the footer has no {what} block"),
                ));
            }
            if !handle.is_absent() && handle.offset < HEADER_LEN {
                return Err(corrupt(
                    &file,
                    footer_at + at,
                    format!("{what} block at {} overlaps the header", handle.offset),
                ));
            }
        }
        let data_end = present.first().map_or(footer_at, |o| o.1.offset);
        let mut next = data_end;
        for (what, handle, at, _) in &present {
            if handle.offset != next {
                return Err(corrupt(
                    &file,
                    footer_at + at,
                    format!(
                        "{what} block at {}, where the previous part ends at {next}",
                        handle.offset
                    ),
                ));
            }
            next = handle.offset.saturating_add(handle.len.into());
        }
        if next != footer_at {
            return Err(corrupt(
                &file,
                footer_at,
                format!(
                    "the blocks before the footer end at {next}, the footer starts at {footer_at}"
                ),
            ));
        }
        let meta_len = options.limits.meta_len();

        let payload = read_meta(
            &source,
            &file,
            footer.table_id,
            footer.properties,
            BlockType::Properties,
            meta_len,
        )?;
        let props_offset = footer.properties.offset;
        let props = TableProperties::decode(payload.cursor(&file, props_offset))?;

        let payload = read_meta(
            &source,
            &file,
            footer.table_id,
            footer.index,
            BlockType::Index,
            meta_len,
        )?;
        let index = Index::decode(
            payload,
            &file,
            footer.index.offset,
            HEADER_LEN..data_end,
            options.limits.block_len(),
        )?;
        if index.len() as u64 != props.data_blocks {
            return Err(corrupt(
                &file,
                footer.index.offset,
                format!(
                    "index of {} data blocks, the properties say {}",
                    index.len(),
                    props.data_blocks
                ),
            ));
        }
        let last = index.len().checked_sub(1).and_then(|i| index.key(i));
        if last != props.largest_key.as_deref() {
            return Err(corrupt(
                &file,
                footer.index.offset,
                "the last index key differs from the largest key of the properties",
            ));
        }

        let wants_filter = props.bloom_bits_per_key > 0 && props.entries > 0;
        if wants_filter == footer.filter.is_absent() {
            return Err(corrupt(
                &file,
                footer_at + 16,
                format!(
                    "filter block {} for {} bloom bits per key and {} entries",
                    if wants_filter { "missing" } else { "present" },
                    props.bloom_bits_per_key,
                    props.entries
                ),
            ));
        }
        let filter = if wants_filter {
            let payload = read_meta(
                &source,
                &file,
                footer.table_id,
                footer.filter,
                BlockType::Filter,
                meta_len,
            )?;
            Some(BloomFilter::decode(
                payload.cursor(&file, footer.filter.offset),
                version,
            )?)
        } else {
            None
        };

        let tombstones = if footer.range_tombstones.is_absent() {
            Vec::new()
        } else {
            let payload = read_meta(
                &source,
                &file,
                footer.table_id,
                footer.range_tombstones,
                BlockType::RangeTombstones,
                meta_len,
            )?;
            range_tombstone::decode(payload.cursor(&file, footer.range_tombstones.offset))?
        };
        if tombstones.len() as u64 != props.range_tombstones {
            return Err(corrupt(
                &file,
                footer_at + 48,
                format!(
                    "{} range tombstones, the properties say {}",
                    tombstones.len(),
                    props.range_tombstones
                ),
            ));
        }

        let prefix_filter = match (&options.prefix_extractor, &props.prefix_extractor, &filter) {
            (Some(p), Some(name), Some(_)) if p.name() == name => Some(Arc::clone(p)),
            _ => None,
        };
        Ok(TableReader {
            inner: Arc::new(Inner {
                source,
                file,
                len,
                table_id: footer.table_id,
                props,
                props_offset,
                index,
                filter,
                filter_offset: footer.filter.offset,
                tombstones,
                limits: options.limits,
                prefix_filter,
                cache: options.block_cache,
                cache_id: options.cache_id,
            }),
        })
    }

    /// The file's name, as given to [`open`](TableReader::open).
    pub fn file_name(&self) -> &str {
        &self.inner.file
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Whether the file is empty (never, for an open table).
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The table id the writer recorded in the footer ([`TableOptions::table_id`]).
    ///
    /// [`TableOptions::table_id`]: super::TableOptions::table_id
    pub fn table_id(&self) -> u64 {
        self.inner.table_id
    }

    /// The properties block: counts, key range, how the table was written, user properties.
    pub fn properties(&self) -> &TableProperties {
        &self.inner.props
    }

    /// The range tombstones: sorted, non-empty, separated.
    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.inner.tombstones
    }

    /// The range tombstone that deletes `key` in older tables, if any.
    pub fn covering_tombstone(&self, key: &[u8]) -> Option<&RangeTombstone> {
        range_tombstone::covering(&self.inner.tombstones, key)
    }

    /// The number of data blocks.
    pub fn data_block_count(&self) -> usize {
        self.inner.index.len()
    }

    /// The bytes the open table holds in memory (index, filter, properties, range tombstones),
    /// not counting cached blocks.
    pub fn memory(&self) -> usize {
        let i = &self.inner;
        i.index.memory()
            + i.filter.as_ref().map_or(0, BloomFilter::memory)
            + i.tombstones
                .iter()
                .map(|t| t.start.capacity() + t.end.capacity())
                .sum::<usize>()
            + i.props.encoded_len()
    }

    /// Whether the table may hold `key` (`false`: it certainly does not): the key range, then
    /// the bloom filter.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.inner.may_contain(key)
    }

    /// Whether the table may hold a key starting with `prefix` (`false`: it certainly does
    /// not): the key range, then, if the table's filter holds prefixes, the filter. The caller
    /// promises that `prefix` is a whole prefix as the table's prefix extractor (see
    /// [`TableProperties::prefix_extractor`]) extracts it; any other byte string may give a
    /// wrong `false`.
    pub fn may_contain_prefix(&self, prefix: &[u8]) -> bool {
        let i = &self.inner;
        if !i.prefix_in_range(prefix) {
            return false;
        }
        match (&i.filter, &i.props.prefix_extractor) {
            (Some(f), Some(_)) => f.may_contain_prefix(prefix),
            _ => true,
        }
    }

    /// The entry of `key`: its kind and value, or `None` if the table has no entry for it.
    /// Range tombstones are not applied (they delete keys of older tables): see
    /// [`covering_tombstone`](TableReader::covering_tombstone).
    ///
    /// Reads at most one data block, and none when the key range or the filter rule the key
    /// out.
    pub fn get(&self, key: &[u8]) -> Result<Option<(EntryKind, Vec<u8>)>, FormatError> {
        self.get_with(key, |kind, value| (kind, value.to_vec()))
    }

    /// The entry of `key`, if the table holds it, lent to `visit` straight out of its block
    /// (cached or just read): [`get`](TableReader::get) without copying the value. The
    /// block's key scratch is a buffer of the calling thread's, so a lookup allocates nothing
    /// once the block is cached.
    pub fn get_with<T>(
        &self,
        key: &[u8],
        visit: impl FnOnce(EntryKind, &[u8]) -> T,
    ) -> Result<Option<T>, FormatError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let i = &self.inner;
        if !i.may_contain(key) {
            return Ok(None);
        }
        let Some(b) = i.index.find(key) else {
            return Ok(None);
        };
        let block = i.read_block(b, true)?;
        let found = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => block.get(key, &mut scratch, &i.file),
            // Taken further up this thread's stack (a visitor reading another table).
            Err(_) => block.get(key, &mut Vec::new(), &i.file),
        })?;
        Ok(found.map(|f| visit(f.kind, block.value(f))))
    }

    /// Every entry in ascending key order. Once it has returned the last entry, the iterator
    /// checks that the counts and sizes of what it read are those of the properties.
    pub fn iter(&self) -> TableIter<R> {
        TableIter::new(Arc::clone(&self.inner), None, None, true)
    }

    /// The entries with a key at least `key`, in ascending order.
    pub fn iter_from(&self, key: &[u8]) -> TableIter<R> {
        TableIter::new(Arc::clone(&self.inner), Some(key.to_vec()), None, false)
    }

    /// The entries whose key starts with `prefix`, in ascending order. When the reader was
    /// opened with the prefix extractor the table was written with, and `prefix` is one it
    /// extracts, the filter may rule the table out without reading a block.
    pub fn iter_prefix(&self, prefix: &[u8]) -> TableIter<R> {
        let i = &self.inner;
        let skip = !i.prefix_in_range(prefix)
            || match (&i.prefix_filter, &i.filter) {
                (Some(p), Some(f)) if p.prefix_len(prefix) == Some(prefix.len()) => {
                    !f.may_contain_prefix(prefix)
                }
                _ => false,
            };
        let mut it = TableIter::new(
            Arc::clone(&self.inner),
            Some(prefix.to_vec()),
            Some(prefix.to_vec()),
            false,
        );
        if skip {
            it.finish();
        }
        it
    }

    /// Reads the whole table and checks everything a reader can: every data block (as any
    /// read does), the totals of the properties (as a full [`iter`](TableReader::iter) does),
    /// and that the filter holds every key and, if the reader was opened with the table's
    /// prefix extractor, every prefix. Returns the number of entries.
    ///
    /// Lookups and scans do not rehash keys, so a filter that disagrees with the keys behind
    /// valid checksums (a forged file, or a writer bug) shows only here: as a `Corrupt` error
    /// at the filter block.
    pub fn verify(&self) -> Result<u64, FormatError> {
        let i = &self.inner;
        let mut it = self.iter();
        let mut n = 0u64;
        while it.advance()? {
            let key = it.key();
            if let Some(f) = &i.filter {
                let prefix = i
                    .prefix_filter
                    .as_ref()
                    .and_then(|p| p.prefix_len(key))
                    .and_then(|l| key.get(..l));
                if !f.may_contain_key(key) || prefix.is_some_and(|p| !f.may_contain_prefix(p)) {
                    return Err(corrupt(
                        &i.file,
                        i.filter_offset,
                        format!("the filter rules out the key (or its prefix) of entry {n}"),
                    ));
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// The source the reader reads from, if no clone or iterator of this reader is alive.
    pub fn into_source(self) -> Result<R, Self> {
        Arc::try_unwrap(self.inner)
            .map(|i| i.source)
            .map_err(|inner| TableReader { inner })
    }
}

impl<R: RandomAccess> Inner<R> {
    fn may_contain(&self, key: &[u8]) -> bool {
        let (Some(lo), Some(hi)) = (&self.props.smallest_key, &self.props.largest_key) else {
            return false;
        };
        key >= lo.as_slice()
            && key <= hi.as_slice()
            && self.filter.as_ref().is_none_or(|f| f.may_contain_key(key))
    }

    /// Whether a key starting with `prefix` may lie in the table's key range.
    fn prefix_in_range(&self, prefix: &[u8]) -> bool {
        let (Some(lo), Some(hi)) = (&self.props.smallest_key, &self.props.largest_key) else {
            return false;
        };
        // Keys with the prefix are at least the prefix, and the largest key must reach it; the
        // smallest key must not be past every key with the prefix.
        hi.as_slice() >= prefix && (lo.as_slice() <= prefix || lo.starts_with(prefix))
    }

    /// Data block `i`, from the cache or read and checked: the one place data blocks are read.
    /// A block read from the file is offered to the cache if `fill_cache`.
    pub(crate) fn read_block(&self, i: usize, fill_cache: bool) -> Result<Arc<Block>, FormatError> {
        let handle = self
            .index
            .handle(i)
            .ok_or_else(|| FormatError::InvalidInput {
                file: self.file.clone(),
                reason: format!("data block {i} of {}", self.index.len()),
            })?;
        let key = BlockCacheKey {
            table: self.cache_id,
            offset: handle.offset,
        };
        if let Some(block) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(block);
        }
        let payload = frame::read(
            &self.source,
            &self.file,
            self.table_id,
            handle.offset,
            handle.len,
            BlockType::Data,
            self.limits.block_len(),
        )?;
        let bounds = Bounds {
            first_eq: if i == 0 {
                self.props.smallest_key.as_deref()
            } else {
                None
            },
            first_after: i.checked_sub(1).and_then(|p| self.index.key(p)),
            last_eq: self.index.key(i),
        };
        let block = Arc::new(Block::decode(
            payload,
            self.props.restart_interval as usize,
            &self.file,
            handle.offset,
            bounds,
        )?);
        if let Some(c) = self.cache.as_ref().filter(|_| fill_cache) {
            c.insert(key, Arc::clone(&block));
        }
        Ok(block)
    }

    /// The error of a full scan whose totals differ from the properties'.
    pub(crate) fn totals_mismatch(&self, reason: String) -> FormatError {
        corrupt(&self.file, self.props_offset, reason)
    }
}
