//! Streams a snapshot file out, key group by key group.

use std::io::Write;

use crate::codec::checksum;
use crate::codec::compress::{Compression, Compressor};
use crate::codec::varint;
use crate::limits::MAX_BLOCK_LEN;
use crate::FormatError;

use super::block::BlockHeader;
use super::delta::DeltaOf;
use super::entry::EntryValue;
use super::footer::Footer;
use super::index::{self, KeyGroupLocation, Slot};
use super::meta::{SnapshotMeta, ValueShape};
use super::{DEFAULT_BLOCK_SIZE, FULL_VERSION, HEADER_LEN, MAGIC, VERSION};
use crate::checkpoint::FileOrigin;

/// The most bytes a section header (state index and entry count varints) takes.
const SECTION_HEADER_MAX: usize = 20;

/// How a [`SnapshotWriter`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWriterOptions {
    /// The compression of every block (a block that does not shrink is stored raw).
    pub compression: Compression,
    /// The uncompressed payload size at which a block is closed and the key group continues
    /// in a new block. A block holds at least one entry and never more than
    /// [`MAX_BLOCK_LEN`] bytes.
    pub block_size: usize,
    /// The file's name, for errors.
    pub file_name: String,
    /// What the file belongs to, recorded at the end of the meta block (spec/formats.md
    /// section 4.9); `None` for a file written outside a checkpoint or savepoint.
    pub origin: Option<FileOrigin>,
    /// `Some` for a delta file (format version 3, section 3.11): what it applies to. Its
    /// entries are then changes, and [`SnapshotWriter::add_removal`] records removals.
    pub delta: Option<DeltaOf>,
}

impl Default for SnapshotWriterOptions {
    /// No compression, [`DEFAULT_BLOCK_SIZE`], file name `snapshot`, no origin, a full file.
    fn default() -> Self {
        SnapshotWriterOptions {
            compression: Compression::None,
            block_size: DEFAULT_BLOCK_SIZE,
            file_name: "snapshot".to_owned(),
            origin: None,
            delta: None,
        }
    }
}

/// What a finished snapshot file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The file's length in bytes.
    pub len: u64,
    /// The number of entries over all key groups and states.
    pub entry_count: u64,
    /// The location of every key group with entries, ascending.
    pub key_groups: Vec<KeyGroupLocation>,
}

struct OpenGroup {
    key_group: u16,
    offset: u64,
    entries: u64,
}

/// Writes a snapshot file to `W`: the header and meta block on creation, then the key groups
/// in ascending order, then the index and footer on [`finish`](SnapshotWriter::finish).
///
/// Within a key group, entries must come grouped by state in ascending state index, and
/// within a state strictly ascending by (key bytes, namespace bytes); map pairs strictly
/// ascending by user-key bytes. The writer checks every rule the reader checks and returns
/// [`FormatError::InvalidInput`] for a call that breaks one (the call has no effect; the writer
/// stays usable). After an I/O error or a limit error the writer refuses further calls.
///
/// It writes whole blocks with `write_all`; pass `&mut file` to keep the file after
/// [`finish`](SnapshotWriter::finish). Layout: see [the module](super).
pub struct SnapshotWriter<W: Write> {
    out: W,
    file: String,
    shapes: Vec<ValueShape>,
    first: u16,
    last: u16,
    compressor: Compressor,
    block_size: usize,
    /// Bytes written so far.
    pos: u64,
    meta_len: u32,
    meta_crc: u32,
    /// The format version: 3 for a delta file, 2 for a full one.
    version: u32,
    slots: Vec<Slot>,
    group: Option<OpenGroup>,
    last_group: Option<u16>,
    /// Whether this is a delta file: sections are coded `2 × state + removal`.
    delta: bool,
    /// Finished sections of the current block.
    payload: Vec<u8>,
    /// Entries of the open section.
    section: Vec<u8>,
    section_state: Option<u32>,
    section_count: u64,
    /// The section code and (key, namespace) of the last entry of the open key group.
    prev_state: Option<u32>,
    prev_key: Vec<u8>,
    prev_ns: Vec<u8>,
    entries: u64,
    failed: bool,
}

impl<W: Write> std::fmt::Debug for SnapshotWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("file", &self.file)
            .field("pos", &self.pos)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot of `meta` with `compression` and default options, writing the header
    /// and meta block.
    pub fn new(out: W, meta: &SnapshotMeta, compression: Compression) -> Result<Self, FormatError> {
        Self::with_options(
            out,
            meta,
            SnapshotWriterOptions {
                compression,
                ..SnapshotWriterOptions::default()
            },
        )
    }

    /// Starts a snapshot of `meta` with `options`, writing the header and meta block.
    ///
    /// Fails with [`FormatError::InvalidInput`] if `meta` breaks a rule of
    /// [`SnapshotMeta::validate`] or a zstd level is out of range.
    pub fn with_options(
        out: W,
        meta: &SnapshotMeta,
        options: SnapshotWriterOptions,
    ) -> Result<Self, FormatError> {
        let file = options.file_name;
        let invalid = |reason: String| FormatError::InvalidInput {
            file: file.clone(),
            reason,
        };
        meta.validate().map_err(&invalid)?;
        let compressor =
            Compressor::new(options.compression).map_err(|e| invalid(e.to_string()))?;
        let mut meta_bytes = Vec::new();
        meta.encode(&mut meta_bytes);
        FileOrigin::encode(options.origin.as_ref(), &mut meta_bytes);
        if let Some(delta) = &options.delta {
            delta.encode(&mut meta_bytes);
        }
        let version = if options.delta.is_some() {
            VERSION
        } else {
            FULL_VERSION
        };
        if meta_bytes.len() > crate::limits::MAX_META_LEN as usize {
            return Err(FormatError::LimitExceeded {
                file,
                offset: HEADER_LEN,
                what: "meta block length",
                value: meta_bytes.len() as u64,
                limit: crate::limits::MAX_META_LEN.into(),
            });
        }
        let mut w = SnapshotWriter {
            out,
            shapes: meta.shapes(),
            first: meta.key_group_start,
            last: meta.key_group_end,
            compressor,
            block_size: options.block_size.clamp(1, MAX_BLOCK_LEN as usize),
            pos: 0,
            meta_len: meta_bytes.len() as u32,
            meta_crc: checksum::crc32(&meta_bytes),
            version,
            delta: options.delta.is_some(),
            slots: vec![(0, 0, 0); meta.key_group_count()],
            group: None,
            last_group: None,
            payload: Vec::new(),
            section: Vec::new(),
            section_state: None,
            section_count: 0,
            prev_state: None,
            prev_key: Vec::new(),
            prev_ns: Vec::new(),
            entries: 0,
            failed: false,
            file,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&version.to_le_bytes());
        w.write(&header)?;
        w.write(&meta_bytes)?;
        Ok(w)
    }

    fn invalid(&self, reason: impl Into<String>) -> FormatError {
        FormatError::InvalidInput {
            file: self.file.clone(),
            reason: reason.into(),
        }
    }

    fn check_usable(&self) -> Result<(), FormatError> {
        if self.failed {
            Err(self.invalid("the writer failed earlier; the file is incomplete"))
        } else {
            Ok(())
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        put(
            &mut self.out,
            &mut self.pos,
            &mut self.failed,
            &self.file,
            bytes,
        )
    }

    /// Opens key group `key_group`, which must lie in the meta block's range and follow the
    /// previous key group. A key group opened and closed without entries takes no space.
    pub fn begin_key_group(&mut self, key_group: u16) -> Result<(), FormatError> {
        self.check_usable()?;
        if let Some(g) = &self.group {
            return Err(self.invalid(format!(
                "key group {} is still open when key group {key_group} begins",
                g.key_group
            )));
        }
        if key_group < self.first || key_group > self.last {
            return Err(self.invalid(format!(
                "key group {key_group} is outside the snapshot's range {}..={}",
                self.first, self.last
            )));
        }
        if let Some(prev) = self.last_group.filter(|&p| key_group <= p) {
            return Err(self.invalid(format!(
                "key group {key_group} comes after key group {prev}: key groups must ascend"
            )));
        }
        self.group = Some(OpenGroup {
            key_group,
            offset: self.pos,
            entries: 0,
        });
        self.prev_state = None;
        Ok(())
    }

    /// Adds the entry (`key`, `namespace`) of state `state_index` with state `value` to the
    /// open key group (in a delta file: the entry is new or changed).
    ///
    /// Fails with [`FormatError::InvalidInput`] if no key group is open, the state index is
    /// unknown, the value's shape is not the state kind's, the entry does not follow the
    /// previous one in (state, key, namespace) order, or map user keys do not strictly ascend;
    /// with [`FormatError::LimitExceeded`] if the entry alone is larger than a block may be.
    pub fn add_entry(
        &mut self,
        state_index: u32,
        key: &[u8],
        namespace: &[u8],
        value: EntryValue<'_>,
    ) -> Result<(), FormatError> {
        self.add(state_index, key, namespace, Some(value))
    }

    /// Records in a delta file that the entry (`key`, `namespace`) of state `state_index` was
    /// removed since the base. Within a key group a state's removals come after its entries
    /// (section order `2 × state`, then `2 × state + 1`), strictly ascending by (key,
    /// namespace); a pair is not both changed and removed. The same failures as
    /// [`add_entry`](Self::add_entry), and [`FormatError::InvalidInput`] in a full file.
    pub fn add_removal(
        &mut self,
        state_index: u32,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<(), FormatError> {
        self.add(state_index, key, namespace, None)
    }

    fn add(
        &mut self,
        state_index: u32,
        key: &[u8],
        namespace: &[u8],
        value: Option<EntryValue<'_>>,
    ) -> Result<(), FormatError> {
        self.check_usable()?;
        if self.group.is_none() {
            return Err(self.invalid("add_entry outside a key group: call begin_key_group first"));
        }
        let Some(&shape) = self.shapes.get(state_index as usize) else {
            return Err(self.invalid(format!(
                "unknown state index {state_index} (the snapshot has {} states)",
                self.shapes.len()
            )));
        };
        let code = match (&value, self.delta) {
            (None, false) => {
                return Err(self.invalid("a full snapshot file records no removal"));
            }
            // The state index is below MAX_STATES (65 536), so its code fits u32.
            (Some(_), true) => state_index * 2,
            (None, true) => state_index * 2 + 1,
            (Some(_), false) => state_index,
        };
        if let Some(value) = &value {
            if value.shape() != shape {
                return Err(self.invalid(format!(
                    "state {state_index} holds {shape:?} entries, not {:?}",
                    value.shape()
                )));
            }
        }
        match self.prev_state {
            Some(p) if code < p => {
                return Err(self.invalid(format!(
                    "state {state_index} comes after state {}: states must ascend within a key \
                     group (in a delta file, each state's changes, then its removals)",
                    if self.delta { p / 2 } else { p }
                )))
            }
            Some(p)
                if code == p
                    && (key, namespace) <= (self.prev_key.as_slice(), self.prev_ns.as_slice()) =>
            {
                return Err(self.invalid(format!(
                    "entry of state {state_index} is not after the previous one by (key, namespace): duplicate or out of order"
                )))
            }
            _ => {}
        }
        if let Some(EntryValue::Map(pairs)) = value {
            if pairs.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(self.invalid(format!(
                    "map user keys of state {state_index} are not strictly ascending"
                )));
            }
        }
        let entry_len = varint::encoded_len(key.len() as u64)
            + key.len()
            + varint::encoded_len(namespace.len() as u64)
            + namespace.len()
            + value.as_ref().map_or(0, EntryValue::encoded_len);
        if entry_len + SECTION_HEADER_MAX > MAX_BLOCK_LEN as usize {
            self.failed = true;
            return Err(FormatError::LimitExceeded {
                file: self.file.clone(),
                offset: self.pos,
                what: "entry length",
                value: entry_len as u64,
                limit: (MAX_BLOCK_LEN as usize - SECTION_HEADER_MAX) as u64,
            });
        }
        if self.pending_len() + SECTION_HEADER_MAX + entry_len > MAX_BLOCK_LEN as usize {
            self.flush_block()?;
        }
        if self.section_state != Some(code) {
            self.close_section();
            self.section_state = Some(code);
        }
        crate::record::put_bytes(key, &mut self.section);
        crate::record::put_bytes(namespace, &mut self.section);
        if let Some(value) = value {
            value.encode(&mut self.section);
        }
        self.section_count += 1;
        self.prev_state = Some(code);
        self.prev_key.clear();
        self.prev_key.extend_from_slice(key);
        self.prev_ns.clear();
        self.prev_ns.extend_from_slice(namespace);
        self.entries += 1;
        if let Some(g) = self.group.as_mut() {
            g.entries += 1;
        }
        if self.pending_len() >= self.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    /// The uncompressed bytes of the block being built, less the open section's header.
    fn pending_len(&self) -> usize {
        self.payload.len() + self.section.len()
    }

    fn close_section(&mut self) {
        if let Some(state) = self.section_state.take() {
            if self.section_count > 0 {
                varint::encode_u64(u64::from(state), &mut self.payload);
                varint::encode_u64(self.section_count, &mut self.payload);
                self.payload.extend_from_slice(&self.section);
            }
        }
        self.section.clear();
        self.section_count = 0;
    }

    fn flush_block(&mut self) -> Result<(), FormatError> {
        self.close_section();
        if self.payload.is_empty() {
            return Ok(());
        }
        let Some(key_group) = self.group.as_ref().map(|g| g.key_group) else {
            return Ok(());
        };
        let payload = std::mem::take(&mut self.payload);
        let result = self.write_block(key_group, &payload);
        self.payload = payload;
        self.payload.clear();
        result
    }

    fn write_block(&mut self, key_group: u16, payload: &[u8]) -> Result<(), FormatError> {
        // `payload` is at most MAX_BLOCK_LEN bytes (add_entry flushes before it would grow
        // past), and a stored payload is never longer than its input.
        let SnapshotWriter {
            out,
            compressor,
            pos,
            failed,
            file,
            ..
        } = self;
        let (kind, stored) = compressor.compress(payload).map_err(|source| {
            *failed = true;
            FormatError::Io {
                file: file.clone(),
                offset: *pos,
                source,
            }
        })?;
        let header = BlockHeader {
            key_group,
            compression: kind,
            uncompressed_len: payload.len() as u32,
            stored_len: stored.len() as u32,
        }
        .encode();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(stored);
        let crc = crc.finalize();
        put(out, pos, failed, file, &header)?;
        put(out, pos, failed, file, stored)?;
        put(out, pos, failed, file, &crc.to_le_bytes())
    }

    /// Closes the open key group, writing its last block.
    pub fn end_key_group(&mut self) -> Result<(), FormatError> {
        self.check_usable()?;
        if self.group.is_none() {
            return Err(self.invalid("end_key_group without an open key group"));
        }
        self.flush_block()?;
        let Some(g) = self.group.take() else {
            return Ok(());
        };
        let slot = &mut self.slots[usize::from(g.key_group - self.first)];
        if g.entries > 0 {
            *slot = (g.offset, self.pos - g.offset, g.entries);
        }
        self.last_group = Some(g.key_group);
        self.prev_state = None;
        Ok(())
    }

    /// Writes the index and the footer, flushes the output and returns what the file holds.
    /// Fails with [`FormatError::InvalidInput`] if a key group is still open.
    pub fn finish(mut self) -> Result<SnapshotSummary, FormatError> {
        self.check_usable()?;
        if let Some(g) = &self.group {
            return Err(self.invalid(format!(
                "key group {} is still open: call end_key_group before finish",
                g.key_group
            )));
        }
        let mut index_bytes = Vec::with_capacity(index::index_len(self.slots.len()) as usize);
        index::encode(self.first, self.last, &self.slots, &mut index_bytes);
        let footer = Footer {
            meta_offset: HEADER_LEN,
            meta_len: self.meta_len,
            meta_crc: self.meta_crc,
            index_offset: self.pos,
            index_len: index_bytes.len() as u32,
            index_crc: checksum::crc32(&index_bytes),
            entry_count: self.entries,
        };
        self.write(&index_bytes)?;
        self.write(&footer.encode(self.version))?;
        if let Err(source) = self.out.flush() {
            return Err(FormatError::Io {
                file: self.file.clone(),
                offset: self.pos,
                source,
            });
        }
        let key_groups = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.1 > 0)
            .map(|(i, &(offset, len, entry_count))| KeyGroupLocation {
                key_group: self.first + i as u16,
                offset,
                len,
                entry_count,
            })
            .collect();
        Ok(SnapshotSummary {
            len: self.pos,
            entry_count: self.entries,
            key_groups,
        })
    }
}

/// Writes `bytes`, advancing `pos`; on failure marks the writer failed.
fn put<W: Write>(
    out: &mut W,
    pos: &mut u64,
    failed: &mut bool,
    file: &str,
    bytes: &[u8],
) -> Result<(), FormatError> {
    match out.write_all(bytes) {
        Ok(()) => {
            *pos += bytes.len() as u64;
            Ok(())
        }
        Err(source) => {
            *failed = true;
            Err(FormatError::Io {
                file: file.to_owned(),
                offset: *pos,
                source,
            })
        }
    }
}
