//! Decoding from bytes to RGB exactly as Pillow's `Image.open(f).convert("RGB")` does.
//! JPEG goes through `jpeg-exact` (this workspace's `jpeg/`), which reproduces
//! libjpeg-turbo's default decode bit for bit (docs/spec.md §4.1); other formats through
//! the `image` crate, converted as Pillow converts: alpha dropped (not composited), grey
//! replicated, palette looked up, 16-bit colour reduced to its high byte, and 16-bit
//! grey (Pillow's mode `I;16`) clamped to 255. EXIF orientation is ignored by default,
//! like the reference, and applied on request. The pixel count, and that of the square
//! the image is padded to, are checked from the header before anything is decoded.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use thiserror::Error;

use super::images::RgbImage;

/// Pillow refuses images over 2 × `Image.MAX_IMAGE_PIXELS` as decompression bombs.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Largest width × height accepted.
    pub max_pixels: u64,
    /// Rotate/flip by the EXIF orientation tag (the reference pipeline does not).
    pub apply_exif_orientation: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self { max_pixels: DEFAULT_MAX_PIXELS, apply_exif_orientation: false }
    }
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ImageError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("not a recognised image format (JPEG, PNG, WebP, GIF and BMP are supported)")]
    UnknownFormat,
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("the image is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("the image has zero width or height ({width}×{height})")]
    ZeroSize { width: u32, height: u32 },
    #[error("the image is {width}×{height} = {pixels} pixels, over the limit of {max_pixels}")]
    TooLarge { width: u32, height: u32, pixels: u64, max_pixels: u64 },
    #[error("the image is {width}×{height}; padded to a {side}×{side} square it would exceed the limit of {max_pixels} pixels")]
    SquareTooLarge { width: u32, height: u32, side: u64, max_pixels: u64 },
}

fn corrupt(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported(u.to_string()),
        image::ImageError::Limits(l) => ImageError::Unsupported(l.to_string()),
        other => ImageError::Corrupt(other.to_string()),
    }
}

/// Decodes `bytes` to 8-bit RGB.
pub fn decode_image(bytes: &[u8], opts: &DecodeOptions) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
        let r = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Corrupt(e.to_string()))?;
        if r.format().is_none() {
            return Err(ImageError::UnknownFormat);
        }
        Ok(r)
    };
    let (width, height) = reader()?.into_dimensions().map_err(corrupt)?;
    let pixels = width as u64 * height as u64;
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { width, height });
    }
    if pixels > opts.max_pixels {
        return Err(ImageError::TooLarge { width, height, pixels, max_pixels: opts.max_pixels });
    }
    // Preprocessing pads the image to a square of its longer side: bound that too.
    let side = width.max(height) as u64;
    if side * side > opts.max_pixels {
        return Err(ImageError::SquareTooLarge { width, height, side, max_pixels: opts.max_pixels });
    }
    let mut r = reader()?;
    let is_jpeg = r.format() == Some(ImageFormat::Jpeg);
    let mut limits = Limits::default();
    // Room for the largest decoded buffer (RGBA, 16 bits per channel) and no more.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(1 << 20));
    r.limits(limits);
    // JPEG pixels come from jpeg-exact: the `image` crate's decoder is opened only to read
    // the EXIF orientation when it is asked for.
    let mut decoder = if is_jpeg && !opts.apply_exif_orientation { None } else { Some(r.into_decoder().map_err(corrupt)?) };
    let orientation = match (&mut decoder, opts.apply_exif_orientation) {
        (Some(d), true) => d.orientation().ok(),
        _ => None,
    };
    let mut img = match decoder {
        Some(d) if !is_jpeg => DynamicImage::from_decoder(d).map_err(corrupt)?,
        _ => {
            let (w, h, rgb) = jpeg_exact::decode_rgb(bytes, opts.max_pixels).map_err(|e| ImageError::Corrupt(e.to_string()))?;
            let buf = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| ImageError::Corrupt("JPEG decoder returned a short buffer".into()))?;
            DynamicImage::ImageRgb8(buf)
        }
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(to_rgb_like_pillow(img))
}

/// `Image.convert("RGB")` for every pixel layout the decoders produce.
fn to_rgb_like_pillow(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let grey = |v: u8| [v, v, v];
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(b) => b.pixels().flat_map(|p| grey(p[0])).collect(),
        DynamicImage::ImageLumaA8(b) => b.pixels().flat_map(|p| grey(p[0])).collect(),
        // Pillow opens 16-bit grey as `I;16` and clamps it to 8 bits when converting.
        DynamicImage::ImageLuma16(b) => b.pixels().flat_map(|p| grey(p[0].min(255) as u8)).collect(),
        // Other 16-bit layouts are unpacked to 8 bits by keeping the high byte.
        DynamicImage::ImageLumaA16(b) => b.pixels().flat_map(|p| grey((p[0] >> 8) as u8)).collect(),
        DynamicImage::ImageRgb16(b) => b.pixels().flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]).collect(),
        DynamicImage::ImageRgba16(b) => b.pixels().flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]).collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage::new(w, h, data)
}
