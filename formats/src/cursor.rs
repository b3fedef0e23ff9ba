//! A bounded reader over a byte slice that knows which file (and where in it) the slice came
//! from, so that every error it returns names the file and the byte offset.

use crate::codec::varint;
use crate::FormatError;

/// Reads values from the front of a slice; every length is checked against what remains before
/// anything is taken.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
    /// The file offset of `bytes[0]`, or of the block when `compressed`.
    origin: u64,
    /// The slice is a decompressed payload: offsets are reported as the block's, with the
    /// position inside the payload in the reason.
    compressed: bool,
}

impl<'a> Cursor<'a> {
    /// A cursor over `bytes`, which sit at byte `origin` of `file`.
    pub(crate) fn new(bytes: &'a [u8], file: &'a str, origin: u64) -> Self {
        Cursor {
            bytes,
            pos: 0,
            file,
            origin,
            compressed: false,
        }
    }

    /// A cursor over the decompressed payload of the block at byte `block_offset` of `file`.
    pub(crate) fn decompressed(bytes: &'a [u8], file: &'a str, block_offset: u64) -> Self {
        Cursor {
            compressed: true,
            ..Cursor::new(bytes, file, block_offset)
        }
    }

    /// A cursor over `bytes`, which start where this cursor's slice starts (a prefix of it), in
    /// the same file: positions and errors agree.
    pub(crate) fn over<'b>(&self, bytes: &'b [u8]) -> Cursor<'b>
    where
        'a: 'b,
    {
        Cursor {
            bytes,
            pos: 0,
            file: self.file,
            origin: self.origin,
            compressed: self.compressed,
        }
    }

    /// The bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The position in the slice.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn offset_of(&self, pos: usize) -> u64 {
        if self.compressed {
            self.origin
        } else {
            self.origin + pos as u64
        }
    }

    fn where_(&self, pos: usize) -> String {
        if self.compressed {
            format!(" (byte {pos} of the decompressed payload)")
        } else {
            String::new()
        }
    }

    /// A [`FormatError::Corrupt`] at slice position `pos`.
    pub(crate) fn corrupt_at(&self, pos: usize, reason: impl Into<String>) -> FormatError {
        FormatError::Corrupt {
            file: self.file.to_owned(),
            offset: self.offset_of(pos),
            reason: reason.into() + &self.where_(pos),
        }
    }

    /// A [`FormatError::LimitExceeded`] at slice position `pos`.
    pub(crate) fn limit_at(
        &self,
        pos: usize,
        what: &'static str,
        value: u64,
        limit: u64,
    ) -> FormatError {
        FormatError::LimitExceeded {
            file: self.file.to_owned(),
            offset: self.offset_of(pos),
            what,
            value,
            limit,
        }
    }

    fn truncated_at(&self, pos: usize, needed: u64) -> FormatError {
        FormatError::TruncatedFile {
            file: self.file.to_owned(),
            offset: self.offset_of(pos),
            needed,
            available: (self.bytes.len() - pos) as u64,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(self.truncated_at(self.pos, n as u64));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `n` bytes, for a length `n` read from a file (any `u64`).
    pub(crate) fn take_u64(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() as u64 {
            return Err(self.truncated_at(self.pos, n));
        }
        self.take(n as usize)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The bytes read since slice position `start`.
    pub(crate) fn slice_since(&self, start: usize) -> &'a [u8] {
        &self.bytes[start.min(self.pos)..self.pos]
    }

    /// A byte.
    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A varint (shortest form only).
    pub(crate) fn varint(&mut self) -> Result<u64, FormatError> {
        let start = self.pos;
        let mut rest = &self.bytes[self.pos..];
        match varint::decode_u64(&mut rest) {
            Ok(v) => {
                self.pos = self.bytes.len() - rest.len();
                Ok(v)
            }
            Err(FormatError::Truncated { .. }) => {
                Err(self.truncated_at(start, (self.remaining() + 1) as u64))
            }
            Err(_) => Err(self.corrupt_at(start, "malformed varint")),
        }
    }

    /// A varint count of items that take at least `min_item_len` bytes each (at least 1): the
    /// count is checked against the bytes that remain, so that a caller may size a buffer by it.
    pub(crate) fn count(&mut self, min_item_len: usize, what: &str) -> Result<u64, FormatError> {
        let start = self.pos;
        let n = self.varint()?;
        let fits = (self.remaining() / min_item_len.max(1)) as u64;
        if n > fits {
            return Err(self.corrupt_at(
                start,
                format!(
                    "{what} count {n} is more than the {} bytes left can hold",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// A varint length, then that many bytes.
    pub(crate) fn len_prefixed(&mut self) -> Result<&'a [u8], FormatError> {
        let start = self.pos;
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(self.truncated_at(start, n));
        }
        self.take(n as usize)
    }

    /// A varint length of at most `max_len`, then that many bytes of UTF-8.
    pub(crate) fn string(
        &mut self,
        max_len: usize,
        what: &'static str,
    ) -> Result<&'a str, FormatError> {
        let start = self.pos;
        let n = self.varint()?;
        if n > max_len as u64 {
            return Err(self.limit_at(start, what, n, max_len as u64));
        }
        self.pos = start;
        let bytes = self.len_prefixed()?;
        std::str::from_utf8(bytes)
            .map_err(|_| self.corrupt_at(start, format!("{what} is not UTF-8")))
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(&self, what: &str) -> Result<(), FormatError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt_at(
                self.pos,
                format!("{} bytes left over after the {what}", self.remaining()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_file_and_offset() {
        let bytes = [0x05, 1, 2];
        let mut c = Cursor::new(&bytes, "f", 100);
        let err = c.len_prefixed().unwrap_err();
        assert!(matches!(
            err,
            FormatError::TruncatedFile {
                offset: 100,
                needed: 5,
                available: 3,
                ..
            }
        ));
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x0f], "f", 10);
        let err = c.count(1, "element").unwrap_err();
        assert!(
            matches!(err, FormatError::Corrupt { offset: 10, .. }),
            "{err}"
        );
        let mut c = Cursor::decompressed(&[0x80, 0x00], "f", 7);
        let err = c.varint().unwrap_err();
        assert!(
            err.to_string()
                .contains("byte 0 of the decompressed payload"),
            "{err}"
        );
        assert_eq!(err.offset(), Some(7));
    }
}
