//! Image preprocessing, exact to the official pipeline (docs/spec.md §4): decode and convert to
//! RGB as Pillow does, pad to a square with the CLIP-mean colour, Pillow's bicubic
//! resize, CLIP normalisation, then the in-model views (global + sub-images) each
//! encoder sees. Everything here works on bytes in memory, for every target.

mod coords;
mod decode;
mod images;
mod interp;
mod pad;
mod pil_resize;
mod tiling;

pub use coords::PaddedSquare;
pub use decode::{decode_image, DecodeOptions, ImageError, DEFAULT_MAX_PIXELS};
pub use images::{Planar, RgbImage};
pub use interp::{torch_bicubic, torch_bicubic_scaled, torch_nearest};
pub use pad::{denormalize_to_rgb, normalize, pad_to_square, CLIP_MEAN, CLIP_STD, PAD_COLOR};
pub use pil_resize::pil_resize_bicubic;
pub use tiling::{EncoderViews, Interp, TilingPreset, ViewRecipe, Views};

/// Host transform `padded_resize` (docs/spec.md §4.1): pad to square, Pillow bicubic to
/// `image_size`, normalise. Returns the 8-bit resized image and the normalised tensor.
pub fn padded_resize(img: &RgbImage, image_size: usize) -> (RgbImage, Planar) {
    let square = pad_to_square(img);
    let resized = pil_resize_bicubic(&square, image_size, image_size);
    let x = normalize(&resized);
    (resized, x)
}
