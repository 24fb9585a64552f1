//! Image preprocessing against Pillow and torch (fixtures/gen/make_image_fixtures.py):
//! decoded pixels (JPEG — through `jpeg-exact`, libjpeg-turbo's decode bit for bit —
//! PNG, GIF, BMP, WebP) and the padded, resized 8-bit squares must be identical to
//! Pillow's, and the normalised in-model views within 1e-5 of torch's.

use sha2::{Digest, Sha256};
use sphinx_core::preprocess::{decode_image, padded_resize, DecodeOptions, RgbImage, TilingPreset};
use sphinx_core::weights::{MemoryBytes, SafetensorsFile, WeightSource};
use sphinx_tests::fixtures;

fn json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("reference/images").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sha(img: &RgbImage) -> String {
    Sha256::digest(&img.data).iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_file(path: &std::path::Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap();
    decode_image(&bytes, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode(name: &str) -> RgbImage {
    decode_file(&fixtures().join("images").join(name))
}

/// The pixels Pillow decodes: JPEGs come from the lossless copies of Pillow's output.
fn pillow_pixels(name: &str) -> RgbImage {
    match name.strip_suffix(".jpg") {
        Some(stem) => decode_file(&fixtures().join("reference/images/pillow-decoded").join(format!("{stem}.png"))),
        None => decode(name),
    }
}

#[test]
fn decoded_pixels_equal_pillow_convert_rgb() {
    let want = json("decoded.json");
    let mut checked = 0;
    for (name, w) in want.as_object().unwrap() {
        let img = decode(name);
        assert_eq!([img.width as u64, img.height as u64], [w["size"][0].as_u64().unwrap(), w["size"][1].as_u64().unwrap()], "{name}");
        assert_eq!(sha(&pillow_pixels(name)), w["sha256"].as_str().unwrap(), "{name}: fixture");
        let differing = img.data.iter().zip(&pillow_pixels(name).data).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}: {differing} decoded values differ from Pillow's");
        assert_eq!(sha(&img), w["sha256"].as_str().unwrap(), "{name}: decoded pixels differ from Pillow's");
        checked += 1;
    }
    assert!(checked >= 15);
}

#[test]
fn padded_resized_squares_equal_pillow_exactly() {
    let want = json("padded.json");
    for (name, sizes) in want.as_object().unwrap() {
        let img = pillow_pixels(name);
        for (size, hash) in sizes.as_object().unwrap() {
            let (square, _) = padded_resize(&img, size.parse().unwrap());
            assert_eq!(sha(&square), hash.as_str().unwrap(), "{name} at {size}: differs from Pillow");
        }
    }
}

#[test]
fn views_match_torch_interpolate() {
    let meta = json("views.json");
    let bytes = std::fs::read(fixtures().join("reference/images/views.safetensors")).unwrap();
    let refs = SafetensorsFile::open(MemoryBytes::new("views", bytes)).unwrap();
    let photo = pillow_pixels("sphinx-example-1.jpg");
    let mut overall = 0f32;
    for (variant, m) in meta.as_object().unwrap() {
        let preset = TilingPreset::by_name(variant).unwrap();
        assert_eq!(preset.image_size as u64, m["image_size"].as_u64().unwrap());
        let (_, x) = padded_resize(&photo, preset.image_size);
        let views = preset.views(&x);
        for (family, got) in [("vit", &views.vit), ("convnext", &views.convnext)] {
            let want = m[family].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{variant} {family}: view count");
            for (i, (v, w)) in got.iter().zip(want).enumerate() {
                let shape: Vec<u64> = w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
                assert_eq!(shape, vec![3, v.height as u64, v.width as u64], "{variant} {family} {i}: shape");
                let key = format!("{variant}/{family}/{i}");
                let idx = pollster::block_on(refs.read(&format!("{key}/idx"))).unwrap().to_i64().unwrap();
                let val = pollster::block_on(refs.read(&format!("{key}/val"))).unwrap().to_f32().unwrap();
                let worst = idx.iter().zip(&val).map(|(&j, &r)| (v.data[j as usize] - r).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-5, "{key}: max error {worst}");
                overall = overall.max(worst);
                let sum: f64 = v.data.iter().map(|&a| a as f64).sum();
                let scale = w["abs_sum"].as_f64().unwrap();
                assert!((sum - w["sum"].as_f64().unwrap()).abs() <= 1e-6 * scale, "{key}: sum {sum}");
            }
        }
    }
    eprintln!("views: max |Δ| against torch over every sampled value: {overall:.2e}");
}

#[test]
fn exif_orientation_is_ignored_by_default_and_applied_on_request() {
    let bytes = std::fs::read(fixtures().join("images/synthetic/exif_rot6_230x150.jpg")).unwrap();
    let plain = decode_image(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!((plain.width, plain.height), (230, 150), "the reference does not rotate");
    let turned = decode_image(&bytes, &DecodeOptions { apply_exif_orientation: true, ..Default::default() }).unwrap();
    assert_eq!((turned.width, turned.height), (150, 230));
    // Orientation 6 = rotate 90° clockwise: the displayed top-left is the stored bottom-left.
    assert_eq!(turned.pixel(0, 0), plain.pixel(0, plain.height - 1));
}
