//! Bad image input gets a typed error, never a panic; a brief mutation fuzz of the
//! decode entry point runs in CI.

use sphinx_core::preprocess::{decode_image, DecodeOptions, ImageError};
use sphinx_tests::fixtures;

fn file(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap()
}

fn decode(bytes: &[u8]) -> Result<(usize, usize), ImageError> {
    decode_image(bytes, &DecodeOptions::default()).map(|i| (i.width, i.height))
}

/// A PNG whose header claims `w`×`h`, with an empty image-data chunk.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &[]), (b"IEND", &[])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

#[test]
fn empty_input() {
    assert_eq!(decode(&[]), Err(ImageError::Empty));
}

#[test]
fn unknown_bytes() {
    assert_eq!(decode(b"this is not an image at all"), Err(ImageError::UnknownFormat));
}

#[test]
fn unsupported_format() {
    // A TIFF header: recognised, but not a format this runtime decodes.
    let e = decode(b"II*\x00\x08\x00\x00\x00\x00\x00").unwrap_err();
    assert!(matches!(e, ImageError::Unsupported(_)), "{e:?}");
}

#[test]
fn truncated_images() {
    for name in ["caption1.jpg", "synthetic/gray_517x301.png", "synthetic/photo_230x150.gif", "synthetic/photo_230x150.webp", "synthetic/photo_230x150.bmp"] {
        let b = file(name);
        for cut in [10, b.len() / 3, b.len() - 20] {
            match decode(&b[..cut]) {
                Err(ImageError::Corrupt(_) | ImageError::UnknownFormat | ImageError::Unsupported(_)) => {}
                // Some decoders fill a truncated tail instead of failing (as Pillow's JPEG
                // decoder does with LOAD_TRUNCATED_IMAGES); they must still give the full size.
                Ok(size) => assert!(cut > 10, "{name} cut at {cut} decoded to {size:?}"),
                Err(e) => panic!("{name} cut at {cut}: unexpected {e:?}"),
            }
        }
    }
}

#[test]
fn zero_size_image() {
    assert!(decode(&png_header(0, 10)).is_err());
}

#[test]
fn decompression_bomb_is_refused_before_decoding() {
    let e = decode(&png_header(100_000, 100_000)).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { pixels: 10_000_000_000, .. }), "{e:?}");
    let small = DecodeOptions { max_pixels: 1000, ..Default::default() };
    let e = decode_image(&file("caption1.jpg"), &small).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { width: 337, height: 224, .. }), "{e:?}");
}

#[test]
fn mutation_fuzz_never_panics() {
    let names = [
        "caption1.jpg",
        "synthetic/rgba_150x200.png",
        "synthetic/palette_260x120.png",
        "synthetic/rgb16_77x45.png",
        "synthetic/photo_230x150.gif",
        "synthetic/photo_230x150.webp",
        "synthetic/photo_230x150.bmp",
    ];
    let iterations: usize = std::env::var("SPHINX_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for name in names {
        let original = file(name);
        for _ in 0..iterations {
            let mut b = original.clone();
            // Flip bytes, mostly in the headers where parsers branch.
            for _ in 0..1 + next() % 6 {
                let span = if next() % 2 == 0 { b.len().min(256) } else { b.len() };
                let i = (next() as usize) % span;
                b[i] = next() as u8;
            }
            if next() % 4 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            let _ = decode(&b);
        }
    }
}
