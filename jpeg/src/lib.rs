//! `jpeg-exact`: a pure-Rust (std only, no unsafe) JPEG decoder whose RGB output is
//! bit-identical to libjpeg-turbo's default decode as Pillow performs it
//! (`Image.open(f).convert("RGB")`): JDCT_ISLOW, fancy upsampling (no merged upsampler),
//! libjpeg's fixed-point YCbCr->RGB tables. EXIF orientation is not applied.
//!
//! Supported: baseline / extended-sequential Huffman (SOF0/SOF1) and progressive Huffman
//! (SOF2), 8-bit, 1/3/4 components, any integral sampling factors 1..4, restart intervals.
//! Rejected with an error: arithmetic coding, lossless, hierarchical, 12/16-bit.

#![forbid(unsafe_code)]

mod color;
mod decoder;
mod huffman;
mod idct;
mod smooth;

use std::fmt;

/// Errors returned by [`decode_rgb`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegError {
    /// Does not start with SOI.
    NotJpeg,
    /// Input ended before the decoder had what it needed.
    Truncated,
    /// A marker segment is malformed (bad length, bad index, duplicate, missing...).
    BadMarker(&'static str),
    /// A DHT table is invalid.
    BadHuffmanTable,
    /// Entropy-coded data contains an invalid Huffman code.
    BadHuffmanCode,
    /// The scan references a table that was never defined.
    MissingTable(&'static str),
    /// Restart marker missing or out of sequence.
    BadRestart,
    /// Image dimensions invalid (zero, > 65500) or beyond the caller's pixel limit.
    BadDimensions {
        width: u32,
        height: u32,
    },
    TooLarge {
        pixels: u64,
        max_pixels: u64,
    },
    /// A valid but unsupported JPEG feature.
    Unsupported(&'static str),
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JpegError::NotJpeg => write!(f, "not a JPEG file (no SOI marker)"),
            JpegError::Truncated => write!(f, "JPEG data is truncated"),
            JpegError::BadMarker(what) => write!(f, "malformed JPEG marker: {what}"),
            JpegError::BadHuffmanTable => write!(f, "invalid JPEG Huffman table"),
            JpegError::BadHuffmanCode => write!(f, "corrupt JPEG data: bad Huffman code"),
            JpegError::MissingTable(what) => write!(f, "JPEG uses an undefined {what} table"),
            JpegError::BadRestart => write!(f, "corrupt JPEG data: bad restart marker"),
            JpegError::BadDimensions { width, height } => {
                write!(f, "invalid JPEG dimensions {width}x{height}")
            }
            JpegError::TooLarge { pixels, max_pixels } => {
                write!(
                    f,
                    "JPEG has {pixels} pixels, more than the limit of {max_pixels}"
                )
            }
            JpegError::Unsupported(what) => write!(f, "unsupported JPEG feature: {what}"),
        }
    }
}

impl std::error::Error for JpegError {}

/// Decode a JPEG to packed 8-bit RGB, exactly as Pillow + libjpeg-turbo would
/// (`Image.open(f).convert("RGB")`). Returns `(width, height, rgb)` with
/// `rgb.len() == width * height * 3`. Fails if the image has more than `max_pixels` pixels.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32, Vec<u8>), JpegError> {
    decoder::Decoder::new(bytes, max_pixels).decode()
}
