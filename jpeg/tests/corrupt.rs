//! Corrupt / hostile inputs: every case must return (usually Err) without panicking and
//! without allocating beyond the pixel limit.

use jpeg_exact::{JpegError, decode_rgb};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(p).unwrap()
}

/// Offset of the first marker `m` (pointing at its 0xFF), walking the header segments.
fn find_marker(d: &[u8], m: u8) -> usize {
    let mut i = 2;
    loop {
        assert_eq!(d[i], 0xFF);
        if d[i + 1] == m {
            return i;
        }
        assert_ne!(d[i + 1], 0xDA, "marker {m:02x} not found before SOS");
        let len = (d[i + 2] as usize) << 8 | d[i + 3] as usize;
        i += 2 + len;
    }
}

const LIMIT: u64 = 1 << 24;

#[test]
fn not_jpeg_and_empty() {
    assert_eq!(decode_rgb(b"", LIMIT), Err(JpegError::NotJpeg));
    assert_eq!(
        decode_rgb(b"\x89PNG\r\n\x1a\n", LIMIT),
        Err(JpegError::NotJpeg)
    );
    assert_eq!(decode_rgb(b"\xFF\xD8", LIMIT), Err(JpegError::Truncated));
    assert!(decode_rgb(b"\xFF\xD8\xFF\xD9", LIMIT).is_err());
}

#[test]
fn truncation_at_every_length_never_panics() {
    for name in [
        "base_420_64x48.jpg",
        "prog_420_64x48.jpg",
        "rst_rows1_420_65x49.jpg",
        "cjpeg_prog_rst1b_420.jpg",
    ] {
        let d = fixture(name);
        let full = decode_rgb(&d, LIMIT).unwrap();
        let mut oks = 0;
        for n in 0..d.len() {
            if let Ok(r) = decode_rgb(&d[..n], LIMIT) {
                // Only a single-scan file whose scan is complete may decode (Pillow does too).
                assert_eq!(r, full, "{name} truncated to {n} decoded to something else");
                oks += 1;
            }
        }
        assert!(oks <= 2, "{name}: {oks} truncated prefixes decoded");
    }
}

#[test]
fn truncated_scan_is_err() {
    let d = fixture("base_420_64x48.jpg");
    assert_eq!(
        decode_rgb(&d[..d.len() / 2], LIMIT),
        Err(JpegError::Truncated)
    );
    let p = fixture("prog_420_64x48.jpg");
    assert_eq!(
        decode_rgb(&p[..p.len() - 2], LIMIT),
        Err(JpegError::Truncated)
    );
}

#[test]
fn bad_huffman_table() {
    let mut d = fixture("base_444_64x48.jpg");
    let i = find_marker(&d, 0xC4);
    // Claim 2 codes of length 1 (over-subscribed: the all-ones code is not allowed).
    d[i + 5] = 2;
    let r = decode_rgb(&d, LIMIT);
    assert!(r.is_err(), "{r:?}");
    // Counts that exceed the segment.
    let mut d = fixture("base_444_64x48.jpg");
    let i = find_marker(&d, 0xC4);
    for k in 0..16 {
        d[i + 5 + k] = 200;
    }
    assert!(decode_rgb(&d, LIMIT).is_err());
}

#[test]
fn huge_dimensions_rejected_before_allocation() {
    let mut d = fixture("base_420_64x48.jpg");
    let i = find_marker(&d, 0xC0);
    d[i + 5..i + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]); // 65500 x 65500
    match decode_rgb(&d, LIMIT) {
        Err(JpegError::TooLarge { pixels, max_pixels }) => {
            assert_eq!(pixels, 65500 * 65500);
            assert_eq!(max_pixels, LIMIT);
        }
        r => panic!("{r:?}"),
    }
    d[i + 5..i + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]); // beyond JPEG_MAX_DIMENSION
    assert!(matches!(
        decode_rgb(&d, u64::MAX),
        Err(JpegError::BadDimensions { .. })
    ));
    d[i + 5..i + 9].copy_from_slice(&[0, 0, 0, 64]); // height 0 (DNL) unsupported
    assert!(matches!(
        decode_rgb(&d, LIMIT),
        Err(JpegError::BadDimensions { .. })
    ));
    // Within JPEG limits but over the caller's limit.
    let d = fixture("base_420_64x48.jpg");
    assert!(matches!(
        decode_rgb(&d, 64 * 48 - 1),
        Err(JpegError::TooLarge { .. })
    ));
    assert!(decode_rgb(&d, 64 * 48).is_ok());
}

#[test]
fn bad_sampling_factors() {
    let base = fixture("base_420_64x48.jpg");
    let i = find_marker(&base, 0xC0);
    let comp0 = i + 10; // id, hv, tq of component 0
    for hv in [0x00u8, 0x50, 0x05, 0x15] {
        let mut d = base.clone();
        d[comp0 + 1] = hv;
        assert!(decode_rgb(&d, LIMIT).is_err(), "hv {hv:#x}");
    }
    // Y 3x1, Cb 2x1: fractional upsampling, which libjpeg does not implement either.
    let mut d = base.clone();
    d[comp0 + 1] = 0x31;
    d[comp0 + 4] = 0x21;
    assert_eq!(
        decode_rgb(&d, LIMIT),
        Err(JpegError::Unsupported("fractional sampling factors"))
    );
}

#[test]
fn unsupported_processes() {
    let base = fixture("base_420_64x48.jpg");
    let i = find_marker(&base, 0xC0);
    for (sof, what) in [
        (0xC9u8, "arithmetic"),
        (0xC3, "lossless"),
        (0xC5, "hierarchical"),
    ] {
        let mut d = base.clone();
        d[i + 1] = sof;
        match decode_rgb(&d, LIMIT) {
            Err(JpegError::Unsupported(msg)) => assert!(msg.contains(what), "{msg}"),
            r => panic!("{r:?}"),
        }
    }
    let mut d = base.clone();
    d[i + 4] = 12; // precision
    assert!(matches!(
        decode_rgb(&d, LIMIT),
        Err(JpegError::Unsupported(_))
    ));
    // Arithmetic-coded file written by cjpeg, if the fixture exists.
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/cjpeg_arith_420.jpg");
    if p.exists() {
        let d = std::fs::read(p).unwrap();
        assert!(matches!(
            decode_rgb(&d, LIMIT),
            Err(JpegError::Unsupported(_))
        ));
    }
}

#[test]
fn missing_tables() {
    // Quantisation table index 3 never defined.
    let mut d = fixture("base_420_64x48.jpg");
    let i = find_marker(&d, 0xC0);
    d[i + 12] = 3;
    assert_eq!(
        decode_rgb(&d, LIMIT),
        Err(JpegError::MissingTable("quantization"))
    );
    // Huffman table slot 2 never defined (slots 0/1 fall back to the standard tables).
    let mut d = fixture("base_420_64x48.jpg");
    let s = find_marker(&d, 0xDA);
    d[s + 6] = 0x22;
    assert_eq!(
        decode_rgb(&d, LIMIT),
        Err(JpegError::MissingTable("Huffman"))
    );
}

/// Deterministic mutation fuzzing: flip bytes / insert markers, never panic.
#[test]
fn mutation_fuzz_never_panics() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let names = [
        "base_420_33x7.jpg",
        "prog_420_17x13.jpg",
        "prog_444_17x13.jpg",
        "gray_prog_17x13.jpg",
        "rst_blocks3_444_41x23.jpg",
        "cjpeg_prog_custom_script.jpg",
        "cjpeg_s1x2.jpg",
        "cjpeg_s4x1.jpg",
        "cjpeg_prog_incomplete_s2x2_45x20.jpg",
        "cjpeg_prog_partial_bits.jpg",
        "cjpeg_prog_dc_only.jpg",
    ];
    let mut decoded = 0;
    for name in names {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        let Ok(orig) = std::fs::read(p) else { continue };
        for _ in 0..400 {
            let mut d = orig.clone();
            let n = 1 + rnd() % 4;
            for _ in 0..n {
                let pos = (rnd() as usize) % d.len();
                match rnd() % 4 {
                    0 => d[pos] ^= 1 << (rnd() % 8),
                    1 => d[pos] = rnd() as u8,
                    2 => d[pos] = 0xFF,
                    _ => {
                        let end = (pos + 1 + (rnd() as usize) % 64).min(d.len());
                        d.drain(pos..end);
                        if d.len() < 4 {
                            break;
                        }
                    }
                }
            }
            if let Ok((w, h, rgb)) = decode_rgb(&d, 1 << 20) {
                assert_eq!(rgb.len(), w as usize * h as usize * 3);
                decoded += 1;
            }
        }
    }
    println!("{decoded} mutated files still decoded");
}
