//! `sphinx views`: what the encoders see, as PNG files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use sphinx_core::preprocess::{decode_image, denormalize_to_rgb, padded_resize, DecodeOptions, RgbImage, TilingPreset};
use web_time::Instant;

pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    image::save_buffer(path, &img.data, img.width as u32, img.height as u32, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}

/// Name of view `i` of a recipe with an n×n grid: `global`, then `r{row}c{col}`.
fn view_name(i: usize, grid: usize) -> String {
    if i == 0 { "global".into() } else { format!("r{}c{}", (i - 1) / grid, (i - 1) % grid) }
}

pub fn run_views(image: PathBuf, variant: &str, out: PathBuf, exif: bool, max_pixels: u64) -> Result<()> {
    let preset = TilingPreset::by_name(variant).ok_or_else(|| {
        let names: Vec<_> = TilingPreset::ALL.iter().map(|p| p.name).collect();
        anyhow!("unknown variant '{variant}' (known: {}, sphinx-v2-1k)", names.join(", "))
    })?;
    let bytes = std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
    let t0 = Instant::now();
    let img = decode_image(&bytes, &DecodeOptions { max_pixels, apply_exif_orientation: exif })
        .with_context(|| format!("decoding {}", image.display()))?;
    let t1 = Instant::now();
    let (square, x) = padded_resize(&img, preset.image_size);
    let views = preset.views(&x);
    let t2 = Instant::now();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    save_png(&square, &out.join("padded.png"))?;
    println!("{}: {}×{} → padded {}² ({})", image.display(), img.width, img.height, preset.image_size, preset.name);
    for (family, recipe, list) in [("vit", preset.vit, &views.vit), ("convnext", preset.convnext, &views.convnext)] {
        for (i, v) in list.iter().enumerate() {
            let path = out.join(format!("{family}-{i}-{}.png", view_name(i, recipe.grid)));
            save_png(&denormalize_to_rgb(v), &path)?;
            println!("  {}  {}×{}", path.display(), v.width, v.height);
        }
    }
    eprintln!(
        "[decode {:.1} ms, pad + resize + normalise + views {:.1} ms]",
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3
    );
    Ok(())
}
