//! Reads a snapshot file through [`RandomAccess`]: footer, meta block and index on opening,
//! then any key group on request.

use std::ops::RangeInclusive;

use crate::codec::checksum;
use crate::codec::compress::{self, CompressionKind};
use crate::cursor::Cursor;
use crate::limits::ReadLimits;
use crate::random_access::{read_exact, read_into, RandomAccess};
use crate::FormatError;

use super::block::{self, BlockHeader, GroupState};
use super::delta::DeltaOf;
use super::entry::DecodedEntry;
use super::footer::{Footer, FOOTER_LEN};
use super::index::{self, KeyGroupLocation, Slot};
use super::meta::{SnapshotMeta, ValueShape};
use super::{HEADER_LEN, MAGIC, MIN_VERSION, VERSION};
use crate::checkpoint::FileOrigin;

/// An open snapshot file.
///
/// [`open`](SnapshotReader::open) reads and checks the header, the footer, the meta block and
/// the index, and nothing else; [`read_key_group`](SnapshotReader::read_key_group) then reads
/// the blocks of one key group, one block in memory at a time. A restore of a sub-range reads
/// only its own key groups.
///
/// Every error names the file and the byte offset. Nothing read from the file sizes an
/// allocation before it has been checked against the file's length and the [`ReadLimits`].
/// Layout and checks: see [the module](super) and spec/formats.md section 3.
#[derive(Debug)]
pub struct SnapshotReader<R> {
    version: u32,
    origin: Option<FileOrigin>,
    delta: Option<DeltaOf>,
    source: R,
    file: String,
    len: u64,
    meta: SnapshotMeta,
    shapes: Vec<ValueShape>,
    slots: Vec<Slot>,
    entry_count: u64,
    limits: ReadLimits,
}

impl<R: RandomAccess> SnapshotReader<R> {
    /// Opens the snapshot in `source`, named `file_name` in errors, with the format's limits.
    pub fn open(source: R, file_name: &str) -> Result<Self, FormatError> {
        Self::open_with_limits(source, file_name, ReadLimits::default())
    }

    /// Opens the snapshot in `source` with `limits` on the meta block and block sizes.
    ///
    /// Checks, in order: the length holds a header and a footer; the header's magic and
    /// version; the footer's magic, version and CRC; the meta block and index lie between
    /// header and footer without gaps; the meta block's size limit, CRC and content; the
    /// index's length for the range, CRC and content (blocks tiling the data region in
    /// key-group order, entry counts adding up to the footer's).
    pub fn open_with_limits(
        source: R,
        file_name: &str,
        limits: ReadLimits,
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
        let mut footer = [0u8; FOOTER_LEN];
        read_exact(&source, &file, footer_at, &mut footer)?;
        let footer = Footer::decode(&footer, &file, footer_at, version)?;
        let corrupt = |offset: u64, reason: String| FormatError::Corrupt {
            file: file.clone(),
            offset,
            reason,
        };
        if footer.meta_offset != HEADER_LEN {
            return Err(corrupt(
                footer_at,
                format!(
                    "meta block at {}, not right after the header",
                    footer.meta_offset
                ),
            ));
        }
        let meta_end = HEADER_LEN + u64::from(footer.meta_len);
        let index_end = footer.index_offset.checked_add(footer.index_len.into());
        if meta_end > footer.index_offset || index_end != Some(footer_at) {
            return Err(corrupt(
                footer_at,
                format!(
                    "meta block (..{meta_end}) and index ({} bytes at {}) do not fit before the footer at {footer_at}",
                    footer.index_len, footer.index_offset
                ),
            ));
        }
        if footer.meta_len > limits.meta_len() {
            return Err(FormatError::LimitExceeded {
                file,
                offset: footer_at + 8,
                what: "meta block length",
                value: footer.meta_len.into(),
                limit: limits.meta_len().into(),
            });
        }
        let mut buf = Vec::new();
        read_into(&source, &file, HEADER_LEN, footer.meta_len.into(), &mut buf)?;
        checksum::verify(&buf, footer.meta_crc, &file, HEADER_LEN)?;
        let (meta, origin, delta) = SnapshotMeta::decode_block(&buf, &file, HEADER_LEN, version)?;
        let expected = index::index_len(meta.key_group_count());
        if u64::from(footer.index_len) != expected {
            return Err(corrupt(
                footer_at + 24,
                format!(
                    "index of {} bytes for {} key groups, which take {expected}",
                    footer.index_len,
                    meta.key_group_count()
                ),
            ));
        }
        read_into(&source, &file, footer.index_offset, expected, &mut buf)?;
        checksum::verify(&buf, footer.index_crc, &file, footer.index_offset)?;
        let slots = index::decode(
            &buf,
            &file,
            footer.index_offset,
            (meta.key_group_start, meta.key_group_end),
            (meta_end, footer.index_offset),
            footer.entry_count,
        )?;
        Ok(SnapshotReader {
            source,
            version,
            origin,
            delta,
            len,
            shapes: meta.shapes(),
            meta,
            slots,
            entry_count: footer.entry_count,
            limits,
            file,
        })
    }

    /// What the file applies to if it is a delta file (version 3); `None` for a full file.
    pub fn delta(&self) -> Option<&DeltaOf> {
        self.delta.as_ref()
    }

    /// The file's format version (1, 2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// What the file says it belongs to (version 2 written for a checkpoint or savepoint);
    /// `None` for version 1 and for files written outside a snapshot.
    pub fn origin(&self) -> Option<&FileOrigin> {
        self.origin.as_ref()
    }

    /// The file's name, as given to [`open`](SnapshotReader::open).
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never, for an open snapshot).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The meta block: max parallelism, key-group range, key codec, states.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The key groups the snapshot covers.
    pub fn key_group_range(&self) -> RangeInclusive<u16> {
        self.meta.key_group_range()
    }

    /// The number of entries over all key groups and states.
    pub fn entry_count(&self) -> u64 {
        self.entry_count
    }

    /// Where key group `key_group`'s blocks are; `None` if it is outside the range or has no
    /// entries.
    pub fn location(&self, key_group: u16) -> Option<KeyGroupLocation> {
        let &(offset, len, entry_count) = self.slot(key_group)?;
        (len > 0).then_some(KeyGroupLocation {
            key_group,
            offset,
            len,
            entry_count,
        })
    }

    /// The key groups with entries, ascending.
    pub fn locations(&self) -> impl Iterator<Item = KeyGroupLocation> + '_ {
        self.key_group_range().filter_map(|kg| self.location(kg))
    }

    fn slot(&self, key_group: u16) -> Option<&Slot> {
        let i = key_group.checked_sub(self.meta.key_group_start)?;
        self.slots.get(usize::from(i))
    }

    /// Reads key group `key_group` and calls `visit` with each entry: grouped by state in
    /// ascending index, within a state ascending by (key, namespace). Returns the number of
    /// entries visited.
    ///
    /// An error may come after some entries were visited: the caller must then discard them
    /// (a restore fails as a whole). `visit`'s own errors stop the reading and are returned as
    /// they are. A key group outside the range is [`FormatError::InvalidInput`]; one without
    /// entries visits nothing.
    pub fn read_key_group<E: From<FormatError>>(
        &self,
        key_group: u16,
        mut visit: impl FnMut(DecodedEntry<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let Some(&(offset, len, entries)) = self.slot(key_group) else {
            return Err(FormatError::InvalidInput {
                file: self.file.clone(),
                reason: format!(
                    "key group {key_group} is outside the snapshot's range {}..={}",
                    self.meta.key_group_start, self.meta.key_group_end
                ),
            }
            .into());
        };
        if len == 0 {
            return Ok(0);
        }
        let file = self.file.as_str();
        let corrupt = |offset: u64, reason: String| FormatError::Corrupt {
            file: file.to_owned(),
            offset,
            reason,
        };
        // The index checked that offset + len lies within the data region.
        let end = offset + len;
        let mut pos = offset;
        let mut block_buf = Vec::new();
        let mut plain = Vec::new();
        let mut group = GroupState::default();
        while pos < end {
            let framing = (block::HEADER_LEN + block::TRAILER_LEN) as u64;
            if end - pos < framing {
                return Err(corrupt(
                    pos,
                    format!(
                        "key group {key_group}'s blocks end {} bytes into a block",
                        end - pos
                    ),
                )
                .into());
            }
            let mut header = [0u8; block::HEADER_LEN];
            read_exact(&self.source, file, pos, &mut header)?;
            let header = BlockHeader::decode(&header, file, pos, self.limits.block_len())?;
            if header.key_group != key_group {
                return Err(corrupt(
                    pos,
                    format!(
                        "block of key group {} where the index puts key group {key_group}",
                        header.key_group
                    ),
                )
                .into());
            }
            let block_len = header.block_len();
            if block_len > end - pos {
                return Err(corrupt(
                    pos,
                    format!(
                        "block of {block_len} bytes runs past key group {key_group}'s end at {end}"
                    ),
                )
                .into());
            }
            read_into(&self.source, file, pos, block_len, &mut block_buf)?;
            let body_len = block_buf.len() - block::TRAILER_LEN;
            let (body, crc) = block_buf.split_at(body_len);
            let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
            checksum::verify(body, crc, file, pos)?;
            let stored = &body[block::HEADER_LEN..];
            let uncompressed = header.uncompressed_len as usize;
            let mut cursor = if header.compression == CompressionKind::None {
                if stored.len() != uncompressed {
                    return Err(corrupt(
                        pos,
                        format!(
                            "uncompressed block stores {} bytes but declares {uncompressed}",
                            stored.len()
                        ),
                    )
                    .into());
                }
                Cursor::new(stored, file, pos + block::HEADER_LEN as u64)
            } else {
                compress::decompress(
                    header.compression,
                    stored,
                    uncompressed,
                    &mut plain,
                    file,
                    pos,
                )?;
                Cursor::decompressed(&plain, file, pos)
            };
            block::parse_payload(
                &mut cursor,
                &self.shapes,
                self.delta.is_some(),
                &mut group,
                &mut visit,
            )?;
            pos += block_len;
        }
        if group.entries != entries {
            return Err(corrupt(
                offset,
                format!(
                    "key group {key_group} holds {} entries, the index says {entries}",
                    group.entries
                ),
            )
            .into());
        }
        Ok(entries)
    }

    /// Reads every key group of the range in ascending order, calling `visit` with the key
    /// group and each entry. Returns the number of entries visited.
    pub fn read_all<E: From<FormatError>>(
        &self,
        mut visit: impl FnMut(u16, DecodedEntry<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut n = 0;
        for kg in self.key_group_range() {
            n += self.read_key_group(kg, |e| visit(kg, e))?;
        }
        Ok(n)
    }

    /// The source the reader reads from.
    pub fn into_source(self) -> R {
        self.source
    }
}
