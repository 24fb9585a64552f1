//! Random access to the bytes of one checkpoint file. Native code implements it
//! with positioned file reads; the core never touches the file system itself.

use crate::error::WeightError;

pub trait ByteSource {
    /// A name for error messages (usually the file path).
    fn name(&self) -> &str;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), WeightError>;
}

/// A checkpoint file held in memory (tests, small models, browser blobs).
#[derive(Debug, Clone)]
pub struct MemoryBytes {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl MemoryBytes {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self { name: name.into(), bytes }
    }
}

impl ByteSource for MemoryBytes {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), WeightError> {
        copy_range(&self.name, &self.bytes, offset, buf)
    }
}

/// `data[offset..offset + len]`, or `None` if any of it lies past the end (checked
/// arithmetic: offsets and lengths come from files).
pub fn slice_range(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = usize::try_from(offset.checked_add(len)?).ok()?;
    data.get(start..end)
}

/// Copies `data[offset..offset + buf.len()]` into `buf`, or says which read ran past the end.
pub fn copy_range(name: &str, data: &[u8], offset: u64, buf: &mut [u8]) -> Result<(), WeightError> {
    match slice_range(data, offset, buf.len() as u64) {
        Some(src) => {
            buf.copy_from_slice(src);
            Ok(())
        }
        None => Err(past_the_end(name, offset, buf.len() as u64, data.len())),
    }
}

/// The error for a read of `len` bytes at `offset` past the end of `name` (`have` bytes).
pub fn past_the_end(name: &str, offset: u64, len: u64, have: usize) -> WeightError {
    WeightError::Io { file: name.to_string(), reason: format!("read of {len} bytes at {offset} is past the end ({have} bytes)") }
}

/// `std::io::Read + Seek` over a [`ByteSource`], for the zip reader.
pub(crate) struct Cursor<'a, B: ByteSource> {
    pub source: &'a B,
    pub pos: u64,
}

impl<B: ByteSource> std::io::Read for Cursor<'_, B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.source.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.source
            .read_at(self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<B: ByteSource> std::io::Seek for Cursor<'_, B> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.source.len().checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| std::io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}
