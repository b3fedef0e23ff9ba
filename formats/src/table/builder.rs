//! Streams a table file out: entries in strictly ascending key order, then range tombstones,
//! filter, properties, index and footer on [`TableBuilder::finish`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use crate::codec::compress::{Compression, CompressionKind, Compressor};
use crate::limits::{MAX_BLOCK_LEN, MAX_META_LEN};
use crate::record::MAX_NAME_LEN;
use crate::FormatError;

use super::block::BlockBuilder;
use super::filter::{self, PrefixExtractor};
use super::footer::{Footer, MetaHandle};
use super::frame::{self, BlockType};
use super::index::{BlockHandle, IndexBuilder};
use super::properties::TableProperties;
use super::range_tombstone::{self, RangeTombstone};
use super::{
    EntryKind, DEFAULT_BLOCK_SIZE, DEFAULT_BLOOM_BITS_PER_KEY, DEFAULT_RESTART_INTERVAL,
    HEADER_LEN, MAGIC, MAX_BLOOM_BITS_PER_KEY, MAX_KEY_LEN, MAX_RESTART_INTERVAL, VERSION,
};

/// How a [`TableBuilder`] writes.
#[derive(Clone)]
pub struct TableOptions {
    /// The uncompressed size at which a data block is closed (default
    /// [`DEFAULT_BLOCK_SIZE`]): a block is closed before an entry that would take it past this
    /// size, so it holds at least one entry and exceeds the size only for a single large entry.
    /// Clamped to `1 ..= MAX_BLOCK_LEN`.
    pub block_size: usize,
    /// Entries per restart point (default [`DEFAULT_RESTART_INTERVAL`]), `1 ..=
    /// MAX_RESTART_INTERVAL`: a lookup scans at most this many entries of a block after a binary
    /// search; larger saves key bytes.
    pub restart_interval: usize,
    /// The compression of data, index, properties and range tombstone blocks (default LZ4); a
    /// block that does not shrink is stored raw. The filter is always stored raw.
    pub compression: Compression,
    /// Bloom filter bits per key and per distinct prefix, `0 ..= MAX_BLOOM_BITS_PER_KEY`
    /// (default [`DEFAULT_BLOOM_BITS_PER_KEY`], about 1% false positives); 0 writes no filter.
    pub bloom_bits_per_key: u32,
    /// Puts the prefix of every key (deduplicated) into the filter too, so that a prefix scan
    /// can skip the table. `None` by default.
    pub prefix_extractor: Option<Arc<dyn PrefixExtractor>>,
    /// The writer's name for the table (the tree's file number; 0 by default): stored in the
    /// footer and mixed into every block's CRC, so that a block written into the wrong table
    /// fails its check. Give each table its own.
    pub table_id: u64,
}

impl fmt::Debug for TableOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableOptions")
            .field("block_size", &self.block_size)
            .field("restart_interval", &self.restart_interval)
            .field("compression", &self.compression)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field(
                "prefix_extractor",
                &self.prefix_extractor.as_ref().map(|p| p.name().to_owned()),
            )
            .field("table_id", &self.table_id)
            .finish()
    }
}

impl Default for TableOptions {
    /// 4 KiB blocks, a restart point every 16 entries, LZ4, 10 bloom bits per key, no prefix
    /// extractor, table id 0.
    fn default() -> Self {
        TableOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            restart_interval: DEFAULT_RESTART_INTERVAL,
            compression: Compression::Lz4,
            bloom_bits_per_key: DEFAULT_BLOOM_BITS_PER_KEY,
            prefix_extractor: None,
            table_id: 0,
        }
    }
}

/// What a finished table file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// The file's length in bytes.
    pub len: u64,
    /// The properties block as written: counts, key range, user properties.
    pub properties: TableProperties,
    /// The range tombstones as written (normalized).
    pub range_tombstones: Vec<RangeTombstone>,
}

impl TableSummary {
    /// The number of point entries.
    pub fn entries(&self) -> u64 {
        self.properties.entries
    }

    /// The smallest key of a point entry.
    pub fn smallest(&self) -> Option<&[u8]> {
        self.properties.smallest_key.as_deref()
    }

    /// The largest key of a point entry.
    pub fn largest(&self) -> Option<&[u8]> {
        self.properties.largest_key.as_deref()
    }
}

/// Writes a table file to `W`: the header on creation, data blocks as entries come, the rest on
/// [`finish`](TableBuilder::finish).
///
/// It checks every rule a reader checks and refuses a call that breaks one with
/// [`FormatError::InvalidInput`] or [`FormatError::LimitExceeded`]; such a call has no effect
/// and the builder stays usable. After an I/O error the builder refuses further calls. Given the
/// same calls and options, it writes the same bytes. Pass `&mut file` (buffered) to keep the
/// file after `finish`. Layout: see [the module](super).
pub struct TableBuilder<W: Write> {
    out: W,
    file: String,
    options: TableOptions,
    compressor: Compressor,
    /// Bytes written so far.
    pos: u64,
    block: BlockBuilder,
    index: IndexBuilder,
    hashes: Vec<u64>,
    last_prefix: Option<Vec<u8>>,
    /// The first key added, and the last (in `block` unless a block was just written).
    smallest: Option<Vec<u8>>,
    last_key: Vec<u8>,
    props: TableProperties,
    range_tombstones: Vec<RangeTombstone>,
    range_tombstone_bytes: usize,
    user_property_bytes: usize,
    /// The frame being written.
    scratch: Vec<u8>,
    failed: bool,
}

impl<W: Write> fmt::Debug for TableBuilder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableBuilder")
            .field("file", &self.file)
            .field("pos", &self.pos)
            .field("entries", &self.props.entries)
            .finish_non_exhaustive()
    }
}

impl<W: Write> TableBuilder<W> {
    /// Starts a table named `file_name` (in errors) with `options`, writing the header.
    ///
    /// Fails with [`FormatError::InvalidInput`] for a restart interval or bloom bits per key
    /// out of range, a zstd level out of range, or a prefix extractor with an empty or
    /// too-long name.
    pub fn new(out: W, options: TableOptions, file_name: &str) -> Result<Self, FormatError> {
        let file = file_name.to_owned();
        let invalid = |reason: String| FormatError::InvalidInput {
            file: file.clone(),
            reason,
        };
        if !(1..=MAX_RESTART_INTERVAL).contains(&options.restart_interval) {
            return Err(invalid(format!(
                "restart interval {} is outside 1 ..= {MAX_RESTART_INTERVAL}",
                options.restart_interval
            )));
        }
        if options.bloom_bits_per_key > MAX_BLOOM_BITS_PER_KEY {
            return Err(invalid(format!(
                "{} bloom bits per key (at most {MAX_BLOOM_BITS_PER_KEY})",
                options.bloom_bits_per_key
            )));
        }
        if let Some(p) = &options.prefix_extractor {
            if p.name().is_empty() || p.name().len() > MAX_NAME_LEN {
                return Err(invalid(format!(
                    "prefix extractor name of {} bytes (1 ..= {MAX_NAME_LEN})",
                    p.name().len()
                )));
            }
        }
        let compressor =
            Compressor::new(options.compression).map_err(|e| invalid(e.to_string()))?;
        let block_size = options.block_size.clamp(1, MAX_BLOCK_LEN as usize);
        let props = TableProperties {
            entries: 0,
            deletes: 0,
            merges: 0,
            range_tombstones: 0,
            data_blocks: 0,
            raw_key_bytes: 0,
            raw_value_bytes: 0,
            smallest_key: None,
            largest_key: None,
            restart_interval: options.restart_interval as u32,
            block_size: block_size as u32,
            compression: options.compression.kind(),
            bloom_bits_per_key: options.bloom_bits_per_key,
            prefix_extractor: options
                .prefix_extractor
                .as_ref()
                .map(|p| p.name().to_owned()),
            user_properties: BTreeMap::new(),
        };
        let mut b = TableBuilder {
            out,
            block: BlockBuilder::new(options.restart_interval),
            options: TableOptions {
                block_size,
                ..options
            },
            compressor,
            pos: 0,
            index: IndexBuilder::default(),
            hashes: Vec::new(),
            last_prefix: None,
            smallest: None,
            last_key: Vec::new(),
            props,
            range_tombstones: Vec::new(),
            range_tombstone_bytes: 0,
            user_property_bytes: 0,
            scratch: Vec::new(),
            failed: false,
            file,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&VERSION.to_le_bytes());
        b.write(&header)?;
        Ok(b)
    }

    fn invalid(&self, reason: impl Into<String>) -> FormatError {
        FormatError::InvalidInput {
            file: self.file.clone(),
            reason: reason.into(),
        }
    }

    fn limit(&self, what: &'static str, value: u64, limit: u64) -> FormatError {
        FormatError::LimitExceeded {
            file: self.file.clone(),
            offset: self.pos,
            what,
            value,
            limit,
        }
    }

    fn check_usable(&self) -> Result<(), FormatError> {
        if self.failed {
            Err(self.invalid("the builder failed earlier; the file is incomplete"))
        } else {
            Ok(())
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        match self.out.write_all(bytes) {
            Ok(()) => {
                self.pos += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.failed = true;
                Err(FormatError::Io {
                    file: self.file.clone(),
                    offset: self.pos,
                    source,
                })
            }
        }
    }

    /// Adds an entry. Keys must ascend strictly over the whole table; a delete carries no
    /// value.
    ///
    /// Fails with [`FormatError::InvalidInput`] if `key` is not after the previous key, a delete
    /// has a value, or the prefix extractor returns a length past the key; with
    /// [`FormatError::LimitExceeded`] if the key is longer than [`MAX_KEY_LEN`], the entry alone
    /// does not fit in a block of [`MAX_BLOCK_LEN`], or the index would outgrow
    /// [`MAX_META_LEN`]. Such a call has no effect.
    pub fn add(&mut self, key: &[u8], kind: EntryKind, value: &[u8]) -> Result<(), FormatError> {
        self.check_usable()?;
        if key.len() > MAX_KEY_LEN {
            return Err(self.limit("key length", key.len() as u64, MAX_KEY_LEN as u64));
        }
        if kind == EntryKind::Delete && !value.is_empty() {
            return Err(self.invalid(format!(
                "a delete carries no value ({} bytes given)",
                value.len()
            )));
        }
        if self.smallest.is_some() && key <= self.last_key.as_slice() {
            return Err(self.invalid(
                "key is not after the previous key: keys must ascend strictly (no duplicates)",
            ));
        }
        let growth = BlockBuilder::growth_bound(key, value);
        if growth + 4 > MAX_BLOCK_LEN as usize {
            return Err(self.limit("entry length", growth as u64, u64::from(MAX_BLOCK_LEN) - 4));
        }
        let prefix_len = match &self.options.prefix_extractor {
            Some(p) => match p.prefix_len(key) {
                Some(n) if n > key.len() => {
                    return Err(self.invalid(format!(
                        "prefix extractor {} gives {n} bytes of a {}-byte key",
                        p.name(),
                        key.len()
                    )))
                }
                n => n,
            },
            None => None,
        };
        let flush = !self.block.is_empty() && self.block.len() + growth > self.options.block_size;
        let index_after = self.index.len_bound()
            + if flush {
                IndexBuilder::entry_len(self.block.last_key())
            } else {
                0
            }
            + IndexBuilder::entry_len(key)
            + frame::OVERHEAD as usize;
        if index_after > MAX_META_LEN as usize {
            return Err(self.limit("index length", index_after as u64, MAX_META_LEN.into()));
        }
        if flush {
            self.flush_block()?;
        }
        self.block.add(key, kind, value);
        if self.options.bloom_bits_per_key > 0 {
            self.hashes.push(filter::key_hash(key));
            if let Some(n) = prefix_len {
                let prefix = &key[..n];
                if self.last_prefix.as_deref() != Some(prefix) {
                    self.hashes.push(filter::prefix_hash(prefix));
                    let last = self.last_prefix.get_or_insert_with(Vec::new);
                    last.clear();
                    last.extend_from_slice(prefix);
                }
            }
        }
        let p = &mut self.props;
        p.entries += 1;
        match kind {
            EntryKind::Put => {}
            EntryKind::Delete => p.deletes += 1,
            EntryKind::Merge => p.merges += 1,
        }
        p.raw_key_bytes += key.len() as u64;
        p.raw_value_bytes += value.len() as u64;
        if self.smallest.is_none() {
            self.smallest = Some(key.to_vec());
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        Ok(())
    }

    /// Adds a range tombstone deleting `start ..  end` (end exclusive) in older tables. Ranges
    /// may come in any order and overlap: the builder sorts and merges them. An empty range
    /// (`start == end`) is refused.
    ///
    /// Fails with [`FormatError::InvalidInput`] if `start` is not before `end`; with
    /// [`FormatError::LimitExceeded`] if a bound is longer than [`MAX_KEY_LEN`] or the block
    /// would outgrow [`MAX_META_LEN`]. Such a call has no effect.
    pub fn add_range_tombstone(&mut self, start: &[u8], end: &[u8]) -> Result<(), FormatError> {
        self.check_usable()?;
        let longest = start.len().max(end.len());
        if longest > MAX_KEY_LEN {
            return Err(self.limit("key length", longest as u64, MAX_KEY_LEN as u64));
        }
        if start >= end {
            return Err(self.invalid("a range tombstone's start must be before its end"));
        }
        let r = RangeTombstone::new(start, end);
        let bytes = self.range_tombstone_bytes + r.encoded_len();
        // Normalization only merges: the block is at most the sum of the ranges plus its count.
        if bytes + 10 > MAX_META_LEN as usize {
            return Err(self.limit(
                "range tombstone block length",
                bytes as u64 + 10,
                MAX_META_LEN.into(),
            ));
        }
        self.range_tombstone_bytes = bytes;
        self.range_tombstones.push(r);
        Ok(())
    }

    /// Attaches the user property `name` (UTF-8, at most [`MAX_NAME_LEN`] bytes) with `value`,
    /// replacing an earlier value of the same name. The tree records the key-group range this
    /// way.
    ///
    /// Fails with [`FormatError::LimitExceeded`] if the name is too long or the properties
    /// would outgrow their share of [`MAX_META_LEN`] (all but room for two keys of
    /// [`MAX_KEY_LEN`]).
    pub fn add_user_property(&mut self, name: &str, value: &[u8]) -> Result<(), FormatError> {
        self.check_usable()?;
        if name.len() > MAX_NAME_LEN {
            return Err(self.limit(
                "user property name length",
                name.len() as u64,
                MAX_NAME_LEN as u64,
            ));
        }
        let old = self
            .props
            .user_properties
            .get(name)
            .map_or(0, |v| name.len() + v.len() + 20);
        let bytes = self.user_property_bytes - old + name.len() + value.len() + 20;
        let budget = MAX_META_LEN as usize - 2 * (MAX_KEY_LEN + 10) - 4096;
        if bytes > budget {
            return Err(self.limit("user properties length", bytes as u64, budget as u64));
        }
        self.user_property_bytes = bytes;
        self.props
            .user_properties
            .insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    /// The number of entries added.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// The bytes written so far plus the open block (uncompressed): what the tree compares with
    /// its target table size. The index, filter and properties come on top.
    pub fn estimated_len(&self) -> u64 {
        self.pos
            + if self.block.is_empty() {
                0
            } else {
                self.block.len() as u64
            }
    }

    /// Compresses `payload` and writes it as a frame of `block_type`; returns its offset,
    /// length and CRC.
    fn write_frame(
        &mut self,
        block_type: BlockType,
        payload: &[u8],
        compress: bool,
    ) -> Result<(u64, u64, u32), FormatError> {
        let offset = self.pos;
        let table_id = self.options.table_id;
        let TableBuilder {
            compressor,
            scratch,
            failed,
            file,
            ..
        } = self;
        let (kind, stored) = if compress {
            compressor.compress(payload).map_err(|source| {
                *failed = true;
                FormatError::Io {
                    file: file.clone(),
                    offset,
                    source,
                }
            })?
        } else {
            (CompressionKind::None, payload)
        };
        scratch.clear();
        let crc = frame::encode(
            table_id,
            offset,
            block_type,
            kind,
            payload.len(),
            stored,
            scratch,
        );
        let frame = std::mem::take(&mut self.scratch);
        let result = self.write(&frame);
        self.scratch = frame;
        result?;
        Ok((offset, self.pos - offset, crc))
    }

    fn flush_block(&mut self) -> Result<(), FormatError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut block = std::mem::replace(&mut self.block, BlockBuilder::new(1));
        let result = self.write_frame(BlockType::Data, block.finish(), true);
        if let Ok((offset, len, _)) = result {
            self.index
                .add(block.last_key(), BlockHandle { offset, len });
            self.props.data_blocks += 1;
        }
        block.reset();
        self.block = block;
        result.map(|_| ())
    }

    fn write_meta(
        &mut self,
        block_type: BlockType,
        payload: &[u8],
        compress: bool,
    ) -> Result<MetaHandle, FormatError> {
        let (offset, len, crc) = self.write_frame(block_type, payload, compress)?;
        // Every meta payload is at most MAX_META_LEN (checked as it grew), so the frame fits u32.
        Ok(MetaHandle {
            offset,
            len: len as u32,
            crc,
        })
    }

    /// Writes the last data block, the range tombstones, the filter, the properties, the index
    /// and the footer, flushes the output, and returns what the file holds.
    pub fn finish(self) -> Result<TableSummary, FormatError> {
        self.finish_into_inner().map(|(summary, _)| summary)
    }

    /// [`finish`](Self::finish), and hands the output back (to sync the file it writes, say).
    pub fn finish_into_inner(mut self) -> Result<(TableSummary, W), FormatError> {
        self.check_usable()?;
        self.flush_block()?;
        let mut footer = Footer {
            table_id: self.options.table_id,
            ..Footer::default()
        };
        let tombstones = range_tombstone::normalize(std::mem::take(&mut self.range_tombstones));
        self.props.range_tombstones = tombstones.len() as u64;
        if !tombstones.is_empty() {
            let mut payload = Vec::new();
            range_tombstone::encode(&tombstones, &mut payload);
            footer.range_tombstones =
                self.write_meta(BlockType::RangeTombstones, &payload, true)?;
        }
        if self.options.bloom_bits_per_key > 0 && self.props.entries > 0 {
            let payload = filter::build(
                &self.hashes,
                self.options.bloom_bits_per_key,
                MAX_META_LEN as usize,
            );
            self.hashes = Vec::new();
            footer.filter = self.write_meta(BlockType::Filter, &payload, false)?;
        }
        if self.props.entries > 0 {
            self.props.smallest_key = self.smallest.take();
            self.props.largest_key = Some(self.last_key.clone());
        }
        let mut payload = Vec::with_capacity(self.props.encoded_len());
        self.props.encode(&mut payload);
        footer.properties = self.write_meta(BlockType::Properties, &payload, true)?;
        debug_assert_eq!(self.index.count(), self.props.data_blocks);
        let payload = self.index.finish();
        footer.index = self.write_meta(BlockType::Index, &payload, true)?;
        self.write(&footer.encode())?;
        if let Err(source) = self.out.flush() {
            self.failed = true;
            return Err(FormatError::Io {
                file: self.file.clone(),
                offset: self.pos,
                source,
            });
        }
        let summary = TableSummary {
            len: self.pos,
            properties: self.props,
            range_tombstones: tombstones,
        };
        Ok((summary, self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(out: &mut Vec<u8>) -> TableBuilder<&mut Vec<u8>> {
        TableBuilder::new(out, TableOptions::default(), "t.sst").unwrap()
    }

    #[test]
    fn misuse_is_refused_without_effect() {
        let mut out = Vec::new();
        let mut b = builder(&mut out);
        b.add(b"b", EntryKind::Put, b"1").unwrap();
        for (key, kind, value) in [
            (&b"b"[..], EntryKind::Put, &b""[..]),
            (b"a", EntryKind::Put, b""),
            (b"c", EntryKind::Delete, b"x"),
        ] {
            let err = b.add(key, kind, value).unwrap_err();
            assert!(matches!(err, FormatError::InvalidInput { .. }), "{err}");
        }
        let long = vec![0u8; MAX_KEY_LEN + 1];
        assert!(matches!(
            b.add(&long, EntryKind::Put, b""),
            Err(FormatError::LimitExceeded { .. })
        ));
        let huge = vec![0u8; MAX_BLOCK_LEN as usize];
        assert!(matches!(
            b.add(b"c", EntryKind::Put, &huge),
            Err(FormatError::LimitExceeded { .. })
        ));
        assert!(b.add_range_tombstone(b"x", b"x").is_err());
        assert!(b.add_range_tombstone(b"y", b"x").is_err());
        b.add(b"c", EntryKind::Delete, b"").unwrap();
        let s = b.finish().unwrap();
        assert_eq!(s.entries(), 2);
        assert_eq!(s.properties.deletes, 1);
        assert_eq!(s.smallest(), Some(&b"b"[..]));
        assert_eq!(s.largest(), Some(&b"c"[..]));
        assert_eq!(s.len, out.len() as u64);
    }

    #[test]
    fn bad_options_are_refused() {
        for options in [
            TableOptions {
                restart_interval: 0,
                ..TableOptions::default()
            },
            TableOptions {
                restart_interval: MAX_RESTART_INTERVAL + 1,
                ..TableOptions::default()
            },
            TableOptions {
                bloom_bits_per_key: 65,
                ..TableOptions::default()
            },
            TableOptions {
                compression: Compression::Zstd { level: 99 },
                ..TableOptions::default()
            },
            TableOptions {
                prefix_extractor: Some(Arc::new(filter::FixedPrefix::new(0))),
                ..TableOptions::default()
            },
        ] {
            // FixedPrefix(0) is valid; the others are not.
            let ok = options.prefix_extractor.is_some();
            assert_eq!(
                TableBuilder::new(Vec::new(), options.clone(), "t").is_ok(),
                ok,
                "{options:?}"
            );
        }
    }

    #[test]
    fn blocks_close_at_the_block_size() {
        let mut out = Vec::new();
        let mut b = TableBuilder::new(
            &mut out,
            TableOptions {
                block_size: 100,
                compression: Compression::None,
                ..TableOptions::default()
            },
            "t",
        )
        .unwrap();
        for i in 0..100u32 {
            b.add(&i.to_be_bytes(), EntryKind::Put, b"0123456789")
                .unwrap();
        }
        let s = b.finish().unwrap();
        // 100 entries of about 17 bytes: 5 entries per 100-byte block.
        assert_eq!(s.properties.data_blocks, 20);
    }

    #[test]
    fn a_failing_writer_stops_the_builder() {
        struct Fail;
        impl Write for Fail {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = TableBuilder::new(Fail, TableOptions::default(), "t").unwrap_err();
        assert!(matches!(err, FormatError::Io { offset: 0, .. }), "{err}");
    }
}
