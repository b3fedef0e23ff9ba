//! Encodes the blocks of one key group into memory: what [`SnapshotWriter`] streams out, and
//! what several threads build at once for [`SnapshotWriter::add_key_group`].
//!
//! A key group's blocks depend only on its entries and the writer's options (compression,
//! block size, delta or full), never on where the key group lands in the file: the block
//! header holds no offset and each block's CRC covers the block alone. So a key group encoded
//! apart and appended later gives the same bytes as one written entry by entry.

use crate::codec::compress::{Compression, Compressor};
use crate::codec::varint;
use crate::limits::MAX_BLOCK_LEN;
use crate::FormatError;

use super::block::BlockHeader;
use super::entry::EntryValue;
use super::meta::{SnapshotMeta, ValueShape};
use super::writer::SnapshotWriterOptions;

/// The most bytes a section header (state index and entry count varints) takes.
const SECTION_HEADER_MAX: usize = 20;

/// The finished blocks of one key group, built by a [`KeyGroupEncoder`]; appended to a file by
/// [`SnapshotWriter::add_key_group`](super::SnapshotWriter::add_key_group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedKeyGroup {
    key_group: u16,
    bytes: Vec<u8>,
    entries: u64,
}

impl EncodedKeyGroup {
    /// The key group.
    pub fn key_group(&self) -> u16 {
        self.key_group
    }

    /// Its blocks, as they go into the file (empty for a key group without entries).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The number of entries (and removals, in a delta file) in its blocks.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The buffer of the blocks, to hand back to [`KeyGroupEncoder::begin`] for reuse.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Builds the blocks of one key group at a time in memory, checking the rules of the format
/// as [`SnapshotWriter`](super::SnapshotWriter) does (it writes through one of these).
///
/// Entries come grouped by state in ascending state index, and within a state strictly
/// ascending by (key bytes, namespace bytes); map pairs strictly ascending by user-key bytes.
/// A call that breaks a rule fails with [`FormatError::InvalidInput`] and has no effect. An
/// entry too large for a block fails with [`FormatError::LimitExceeded`] and a compression
/// failure with [`FormatError::Io`]; after those the key group is incomplete and is to be
/// dropped. Error offsets count from the start of the key group's blocks.
pub struct KeyGroupEncoder {
    file: String,
    shapes: Vec<ValueShape>,
    /// Whether this is a delta file: sections are coded `2 × state + removal`.
    delta: bool,
    compressor: Compressor,
    /// Whether blocks are stored uncompressed (they are then built from the open section
    /// without a copy into `payload`).
    raw: bool,
    block_size: usize,
    key_group: u16,
    /// Finished blocks of the key group.
    blocks: Vec<u8>,
    /// Bytes of finished blocks already taken by [`take_blocks`](Self::take_blocks).
    taken: u64,
    /// Finished sections of the current block.
    payload: Vec<u8>,
    /// Entries of the open section.
    section: Vec<u8>,
    section_state: Option<u32>,
    section_count: u64,
    /// The section code and (key, namespace) of the last entry of the key group.
    prev_state: Option<u32>,
    prev_key: Vec<u8>,
    prev_ns: Vec<u8>,
    entries: u64,
}

impl std::fmt::Debug for KeyGroupEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGroupEncoder")
            .field("file", &self.file)
            .field("key_group", &self.key_group)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl KeyGroupEncoder {
    /// An encoder for the key groups of a file of `meta` written with `options` (its
    /// compression, block size, file name and whether it is a delta file; the origin does not
    /// matter). Fails with [`FormatError::InvalidInput`] if a zstd level is out of range.
    pub fn new(meta: &SnapshotMeta, options: &SnapshotWriterOptions) -> Result<Self, FormatError> {
        Self::with_shapes(
            meta.shapes(),
            options.delta.is_some(),
            options.compression,
            options.block_size,
            &options.file_name,
        )
    }

    pub(crate) fn with_shapes(
        shapes: Vec<ValueShape>,
        delta: bool,
        compression: Compression,
        block_size: usize,
        file: &str,
    ) -> Result<Self, FormatError> {
        let compressor = Compressor::new(compression).map_err(|e| FormatError::InvalidInput {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(KeyGroupEncoder {
            file: file.to_owned(),
            shapes,
            delta,
            compressor,
            raw: compression == Compression::None,
            block_size: block_size.clamp(1, MAX_BLOCK_LEN as usize),
            key_group: 0,
            blocks: Vec::new(),
            taken: 0,
            payload: Vec::new(),
            section: Vec::new(),
            section_state: None,
            section_count: 0,
            prev_state: None,
            prev_key: Vec::new(),
            prev_ns: Vec::new(),
            entries: 0,
        })
    }

    /// Starts key group `key_group`, dropping whatever an unfinished one held; its blocks go
    /// into `buffer` (cleared first: pass the bytes of an [`EncodedKeyGroup`] already written
    /// to reuse them, or `Vec::new()`).
    pub fn begin(&mut self, key_group: u16, mut buffer: Vec<u8>) {
        buffer.clear();
        self.key_group = key_group;
        self.blocks = buffer;
        self.taken = 0;
        self.payload.clear();
        self.section.clear();
        self.section_state = None;
        self.section_count = 0;
        self.prev_state = None;
        self.entries = 0;
    }

    /// Starts key group `key_group` in the buffer of the previous one.
    pub(crate) fn begin_reusing(&mut self, key_group: u16) {
        let buffer = std::mem::take(&mut self.blocks);
        self.begin(key_group, buffer);
    }

    /// The key group being encoded.
    pub fn key_group(&self) -> u16 {
        self.key_group
    }

    /// Entries added to the key group so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn invalid(&self, reason: impl Into<String>) -> FormatError {
        FormatError::InvalidInput {
            file: self.file.clone(),
            reason: reason.into(),
        }
    }

    /// Adds the entry (`key`, `namespace`) of state `state_index` with state `value` (in a
    /// delta file: the entry is new or changed). The failures of the
    /// [type](KeyGroupEncoder).
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
    /// removed since the base (after the state's changes); [`FormatError::InvalidInput`] in a
    /// full file.
    pub fn add_removal(
        &mut self,
        state_index: u32,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<(), FormatError> {
        self.add(state_index, key, namespace, None)
    }

    pub(crate) fn add(
        &mut self,
        state_index: u32,
        key: &[u8],
        namespace: &[u8],
        value: Option<EntryValue<'_>>,
    ) -> Result<(), FormatError> {
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
            Some(p) if code == p && !follows(key, namespace, &self.prev_key, &self.prev_ns) => {
                return Err(self.invalid(format!(
                    "entry of state {state_index} is not after the previous one by (key, namespace): duplicate or out of order"
                )))
            }
            _ => {}
        }
        self.append(state_index, code, key, namespace, value)?;
        self.prev_state = Some(code);
        self.remember((key, namespace));
        self.flush_if_full()
    }

    /// Adds entries of state `state_index`, which the caller has sorted strictly ascending by
    /// (key bytes, namespace bytes) and which come after every entry added before (the
    /// gathered and sorted run of a state in a key group): the same bytes as one
    /// [`add_entry`](Self::add_entry) each, without comparing each entry with the previous
    /// one (checked in debug builds only; a wrong order gives a file the reader rejects). Every
    /// other rule is checked; on an error the entries before the failing one are added.
    pub fn add_sorted_entries<'a>(
        &mut self,
        state_index: u32,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8], EntryValue<'a>)>,
    ) -> Result<(), FormatError> {
        let mut sorted = self.sorted(state_index);
        for (key, namespace, value) in entries {
            sorted.push(key, namespace, value)?;
        }
        Ok(())
    }

    /// Starts adding sorted entries of state `state_index` one [`push`](SortedEntries::push)
    /// at a time: what [`add_sorted_entries`](Self::add_sorted_entries) does, for a caller
    /// that walks its entries itself (a loop the compiler can inline whole).
    pub fn sorted<'e, 'a>(&'e mut self, state_index: u32) -> SortedEntries<'e, 'a> {
        SortedEntries {
            encoder: self,
            state_index,
            code: 0,
            shape: ValueShape::Value,
            last: None,
        }
    }

    /// Adds one entry of a sorted run after its first (`code` and `shape` checked there).
    #[inline]
    fn push_sorted(
        &mut self,
        state_index: u32,
        code: u32,
        shape: ValueShape,
        key: &[u8],
        namespace: &[u8],
        value: EntryValue<'_>,
    ) -> Result<(), FormatError> {
        if value.shape() != shape {
            return Err(self.invalid(format!(
                "state {state_index} holds {shape:?} entries, not {:?}",
                value.shape()
            )));
        }
        self.append(state_index, code, key, namespace, Some(value))?;
        self.flush_if_full()
    }

    /// Appends the entry (or, with no value, the removal) to the section of `code`, flushing
    /// the block first if the entry would not fit in it; the checks every entry gets whatever
    /// its path: map user keys strictly ascending, the entry within a block's limit.
    #[inline]
    fn append(
        &mut self,
        state_index: u32,
        code: u32,
        key: &[u8],
        namespace: &[u8],
        value: Option<EntryValue<'_>>,
    ) -> Result<(), FormatError> {
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
            return Err(FormatError::LimitExceeded {
                file: self.file.clone(),
                offset: self.written(),
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
        self.section.reserve(entry_len);
        crate::record::put_bytes(key, &mut self.section);
        crate::record::put_bytes(namespace, &mut self.section);
        if let Some(value) = value {
            value.encode(&mut self.section);
        }
        self.section_count += 1;
        self.entries += 1;
        Ok(())
    }

    /// Closes the pending block once it has reached the block size.
    #[inline]
    fn flush_if_full(&mut self) -> Result<(), FormatError> {
        if self.pending_len() >= self.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Records (`key`, `namespace`) as the last entry added (of the state of `prev_state`).
    fn remember(&mut self, (key, namespace): (&[u8], &[u8])) {
        self.prev_key.clear();
        self.prev_key.extend_from_slice(key);
        self.prev_ns.clear();
        self.prev_ns.extend_from_slice(namespace);
    }

    /// Bytes of finished blocks of the key group so far.
    fn written(&self) -> u64 {
        self.taken + self.blocks.len() as u64
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

    /// Closes the open block (if it holds anything) and appends it to the finished blocks.
    pub(crate) fn flush_block(&mut self) -> Result<(), FormatError> {
        if self.raw && self.payload.is_empty() {
            if let Some(state) = self.section_state {
                if self.section_count > 0 {
                    self.flush_raw_section(state);
                    return Ok(());
                }
            }
        }
        self.close_section();
        if self.payload.is_empty() {
            return Ok(());
        }
        // `payload` is at most MAX_BLOCK_LEN bytes (add flushes before it would grow past),
        // and a stored payload is never longer than its input.
        let offset = self.written();
        let KeyGroupEncoder {
            compressor,
            payload,
            blocks,
            file,
            key_group,
            ..
        } = self;
        let (kind, stored) = compressor
            .compress(payload)
            .map_err(|source| FormatError::Io {
                file: file.clone(),
                offset,
                source,
            })?;
        let header = BlockHeader {
            key_group: *key_group,
            compression: kind,
            uncompressed_len: payload.len() as u32,
            stored_len: stored.len() as u32,
        }
        .encode();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(stored);
        let crc = crc.finalize();
        blocks.reserve(header.len() + stored.len() + 4);
        blocks.extend_from_slice(&header);
        blocks.extend_from_slice(stored);
        blocks.extend_from_slice(&crc.to_le_bytes());
        self.payload.clear();
        Ok(())
    }

    /// Writes the open section, alone in its block and uncompressed, as a block: the same
    /// bytes as closing it into the payload and flushing that, without copying the section.
    fn flush_raw_section(&mut self, state: u32) {
        let mut head = Vec::with_capacity(SECTION_HEADER_MAX);
        varint::encode_u64(u64::from(state), &mut head);
        varint::encode_u64(self.section_count, &mut head);
        // At most MAX_BLOCK_LEN bytes: add flushes before the block would grow past.
        let len = (head.len() + self.section.len()) as u32;
        let header = BlockHeader {
            key_group: self.key_group,
            compression: crate::codec::compress::CompressionKind::None,
            uncompressed_len: len,
            stored_len: len,
        }
        .encode();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&head);
        crc.update(&self.section);
        let crc = crc.finalize();
        self.blocks
            .reserve(header.len() + head.len() + self.section.len() + 4);
        self.blocks.extend_from_slice(&header);
        self.blocks.extend_from_slice(&head);
        self.blocks.extend_from_slice(&self.section);
        self.blocks.extend_from_slice(&crc.to_le_bytes());
        self.section.clear();
        self.section_count = 0;
        self.section_state = None;
    }

    /// The blocks finished and not yet [drained](Self::drain_blocks).
    pub(crate) fn blocks(&self) -> &[u8] {
        &self.blocks
    }

    /// Forgets the finished blocks (the streaming writer wrote them out: a key group never
    /// sits whole in its memory).
    pub(crate) fn drain_blocks(&mut self) {
        self.taken += self.blocks.len() as u64;
        self.blocks.clear();
    }

    /// Closes the key group's last block and returns its blocks.
    pub fn finish(&mut self) -> Result<EncodedKeyGroup, FormatError> {
        self.flush_block()?;
        Ok(EncodedKeyGroup {
            key_group: self.key_group,
            bytes: std::mem::take(&mut self.blocks),
            entries: self.entries,
        })
    }
}

/// Sorted entries of one state being added to a [`KeyGroupEncoder`]
/// ([`KeyGroupEncoder::sorted`]): the first is checked in full against what came before, the
/// others only for what the order does not decide (shape, map order, size). Dropping it
/// records the last entry, against which later [`add_entry`](KeyGroupEncoder::add_entry) calls
/// check their order.
pub struct SortedEntries<'e, 'a> {
    encoder: &'e mut KeyGroupEncoder,
    state_index: u32,
    /// The section code and shape of the state, known once the first entry is in.
    code: u32,
    shape: ValueShape,
    /// The last entry added.
    last: Option<(&'a [u8], &'a [u8])>,
}

impl std::fmt::Debug for SortedEntries<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedEntries")
            .field("state_index", &self.state_index)
            .finish_non_exhaustive()
    }
}

impl<'a> SortedEntries<'_, 'a> {
    /// Adds the next entry, which must come strictly after the previous one by (key bytes,
    /// namespace bytes) (checked in debug builds only). The failures of
    /// [`KeyGroupEncoder::add_entry`] but the order's.
    #[inline]
    pub fn push(
        &mut self,
        key: &'a [u8],
        namespace: &'a [u8],
        value: EntryValue<'a>,
    ) -> Result<(), FormatError> {
        match self.last {
            None => {
                self.encoder
                    .add(self.state_index, key, namespace, Some(value))?;
                // `add` succeeded: it recorded the section code and checked the shape.
                self.code = self.encoder.prev_state.unwrap_or(self.state_index);
                self.shape = value.shape();
            }
            Some((prev_key, prev_ns)) => {
                debug_assert!(
                    follows(key, namespace, prev_key, prev_ns),
                    "sorted entries of state {} are not sorted",
                    self.state_index
                );
                self.encoder.push_sorted(
                    self.state_index,
                    self.code,
                    self.shape,
                    key,
                    namespace,
                    value,
                )?;
            }
        }
        self.last = Some((key, namespace));
        Ok(())
    }
}

impl Drop for SortedEntries<'_, '_> {
    fn drop(&mut self) {
        if let Some(last) = self.last {
            self.encoder.remember(last);
        }
    }
}

/// Whether (`key`, `namespace`) comes strictly after (`prev_key`, `prev_ns`).
#[inline]
fn follows(key: &[u8], namespace: &[u8], prev_key: &[u8], prev_ns: &[u8]) -> bool {
    match key.cmp(prev_key) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => namespace > prev_ns,
    }
}
