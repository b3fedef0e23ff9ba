//! Streams a snapshot file out, key group by key group.

use std::io::Write;

use crate::codec::checksum;
use crate::codec::compress::Compression;
use crate::FormatError;

use super::delta::DeltaOf;
use super::entry::EntryValue;
use super::footer::Footer;
use super::index::{self, KeyGroupLocation, Slot};
use super::key_group_encoder::{EncodedKeyGroup, KeyGroupEncoder};
use super::meta::SnapshotMeta;
use super::{DEFAULT_BLOCK_SIZE, FULL_VERSION, HEADER_LEN, MAGIC, VERSION};
use crate::checkpoint::FileOrigin;

/// How a [`SnapshotWriter`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWriterOptions {
    /// The compression of every block (a block that does not shrink is stored raw).
    pub compression: Compression,
    /// The uncompressed payload size at which a block is closed and the key group continues
    /// in a new block. A block holds at least one entry and never more than
    /// [`MAX_BLOCK_LEN`](crate::limits::MAX_BLOCK_LEN) bytes.
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
    first: u16,
    last: u16,
    /// Builds the blocks of the open key group; the writer writes each out as it fills.
    encoder: KeyGroupEncoder,
    /// Bytes written so far.
    pos: u64,
    meta_len: u32,
    meta_crc: u32,
    /// The format version: 3 for a delta file, 2 for a full one.
    version: u32,
    slots: Vec<Slot>,
    group: Option<OpenGroup>,
    last_group: Option<u16>,
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
        let encoder = KeyGroupEncoder::new(meta, &options);
        let file = options.file_name;
        let invalid = |reason: String| FormatError::InvalidInput {
            file: file.clone(),
            reason,
        };
        meta.validate().map_err(&invalid)?;
        let encoder = encoder?;
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
            first: meta.key_group_start,
            last: meta.key_group_end,
            encoder,
            pos: 0,
            meta_len: meta_bytes.len() as u32,
            meta_crc: checksum::crc32(&meta_bytes),
            version,
            slots: vec![(0, 0, 0); meta.key_group_count()],
            group: None,
            last_group: None,
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
        self.check_next_group(key_group)?;
        self.group = Some(OpenGroup {
            key_group,
            offset: self.pos,
        });
        self.encoder.begin_reusing(key_group);
        Ok(())
    }

    /// Checks that key group `key_group` may come next.
    fn check_next_group(&self, key_group: u16) -> Result<(), FormatError> {
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
        Ok(())
    }

    /// Appends a whole key group encoded apart (possibly on another thread) by a
    /// [`KeyGroupEncoder`] made with this writer's meta and options: the file gets the same
    /// bytes as from [`begin_key_group`](Self::begin_key_group), its entries and
    /// [`end_key_group`](Self::end_key_group). The key group must lie in the meta block's
    /// range and follow the previous one, and no key group may be open.
    pub fn add_key_group(&mut self, group: &EncodedKeyGroup) -> Result<(), FormatError> {
        let key_group = group.key_group();
        self.check_next_group(key_group)?;
        if group.entries() == 0 && !group.bytes().is_empty() {
            return Err(self.invalid(format!("key group {key_group} has blocks but no entries")));
        }
        let offset = self.pos;
        self.write(group.bytes())?;
        if group.entries() > 0 {
            self.slots[usize::from(key_group - self.first)] =
                (offset, self.pos - offset, group.entries());
            self.entries += group.entries();
        }
        self.last_group = Some(key_group);
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
        match self.encoder.add(state_index, key, namespace, value) {
            Ok(()) => {
                self.entries += 1;
                self.write_blocks()
            }
            // A broken rule changes nothing: the writer stays usable.
            Err(e @ FormatError::InvalidInput { .. }) => Err(e),
            Err(e) => Err(self.fail_group(e)),
        }
    }

    /// Marks the writer failed after an error of the open key group's encoder (its offset
    /// counts from the key group's start) and returns the error with the file offset.
    fn fail_group(&mut self, e: FormatError) -> FormatError {
        self.failed = true;
        let start = self.group.as_ref().map_or(self.pos, |g| g.offset);
        match e {
            FormatError::LimitExceeded {
                file,
                offset,
                what,
                value,
                limit,
            } => FormatError::LimitExceeded {
                file,
                offset: start + offset,
                what,
                value,
                limit,
            },
            FormatError::Io {
                file,
                offset,
                source,
            } => FormatError::Io {
                file,
                offset: start + offset,
                source,
            },
            other => other,
        }
    }

    /// Writes out the blocks the encoder finished.
    fn write_blocks(&mut self) -> Result<(), FormatError> {
        if !self.encoder.blocks().is_empty() {
            put(
                &mut self.out,
                &mut self.pos,
                &mut self.failed,
                &self.file,
                self.encoder.blocks(),
            )?;
            self.encoder.drain_blocks();
        }
        Ok(())
    }

    /// Closes the open key group, writing its last block.
    pub fn end_key_group(&mut self) -> Result<(), FormatError> {
        self.check_usable()?;
        if self.group.is_none() {
            return Err(self.invalid("end_key_group without an open key group"));
        }
        if let Err(e) = self.encoder.flush_block() {
            return Err(self.fail_group(e));
        }
        self.write_blocks()?;
        let Some(g) = self.group.take() else {
            return Ok(());
        };
        let entries = self.encoder.entries();
        let slot = &mut self.slots[usize::from(g.key_group - self.first)];
        if entries > 0 {
            *slot = (g.offset, self.pos - g.offset, entries);
        }
        self.last_group = Some(g.key_group);
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
