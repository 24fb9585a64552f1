//! Drawing an answer over the original image as the official demo does
//! (`draw_box_mask_on_image`): 2-px box outlines and r = 5 keypoint discs in the
//! entity's colour, the COCO skeleton in green (3 px), plus a legible label on each
//! box. The drawing is a list of [`DrawCommand`]s (data the web demo renders on a
//! canvas); [`rasterize`] paints them onto an RGB image here.

use font8x8::UnicodeFonts;
use serde::Serialize;

use super::answer::{Answer, COCO_KEYPOINTS, COCO_SKELETON, DEMO_COLORS};
use crate::preprocess::RgbImage;

/// One drawing primitive, in pixels of the original image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DrawCommand {
    Rect { x1: f64, y1: f64, x2: f64, y2: f64, color: [u8; 3], width: u32 },
    Disc { x: f64, y: f64, radius: f64, color: [u8; 3] },
    Line { x1: f64, y1: f64, x2: f64, y2: f64, color: [u8; 3], width: u32 },
    /// Text on a filled box of `background`, top-left at (x, y).
    Label { x: f64, y: f64, text: String, color: [u8; 3], background: [u8; 3] },
}

/// Pillow's colour names used by the demo.
pub fn color_rgb(name: &str) -> [u8; 3] {
    match name {
        "red" => [255, 0, 0],
        "blue" => [0, 0, 255],
        "green" => [0, 128, 0],
        "purple" => [128, 0, 128],
        "orange" => [255, 165, 0],
        _ => [255, 255, 255],
    }
}

/// The drawing of an answer (pixel coordinates must be present: parse with the image size).
pub fn draw_answer(answer: &Answer) -> Vec<DrawCommand> {
    let mut cmds = Vec::new();
    let mut keypoints: Vec<(&str, [f64; 2])> = Vec::new();
    for e in &answer.entities {
        let color = color_rgb(e.color);
        for b in &e.boxes {
            let Some([x1, y1, x2, y2]) = b.pixels else { continue };
            cmds.push(DrawCommand::Rect { x1, y1, x2, y2, color, width: 2 });
            if let Some(label) = &e.label {
                cmds.push(DrawCommand::Label { x: x1, y: y1, text: label.clone(), color: [255, 255, 255], background: color });
            }
        }
        for p in &e.points {
            let Some([x, y]) = p.pixels else { continue };
            cmds.push(DrawCommand::Disc { x, y, radius: 5.0, color });
            if let Some(k) = p.keypoint {
                keypoints.retain(|(name, _)| *name != k);
                keypoints.push((k, [x, y]));
            }
        }
    }
    let green = color_rgb(DEMO_COLORS[2]);
    for [s, t] in COCO_SKELETON {
        let find = |i: usize| keypoints.iter().find(|(n, _)| *n == COCO_KEYPOINTS[i - 1]).map(|(_, p)| *p);
        if let (Some(a), Some(b)) = (find(s), find(t)) {
            cmds.push(DrawCommand::Line { x1: a[0], y1: a[1], x2: b[0], y2: b[1], color: green, width: 3 });
        }
    }
    cmds
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height {
        let i = (y as usize * img.width + x as usize) * 3;
        img.data[i..i + 3].copy_from_slice(&c);
    }
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    for y in y0.max(0)..=y1.min(img.height as i64 - 1) {
        for x in x0.max(0)..=x1.min(img.width as i64 - 1) {
            put(img, x, y, c);
        }
    }
}

/// Label glyphs: 8×8 bitmap font at twice the size.
const GLYPH_SCALE: i64 = 2;

fn label(img: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3], background: [u8; 3]) {
    let w = 8 * GLYPH_SCALE * text.chars().count() as i64;
    let h = 8 * GLYPH_SCALE;
    // Above the box when there is room, else inside it.
    let top = if y - h - 4 >= 0 { y - h - 4 } else { y + 3 };
    fill(img, x, top, x + w + 3, top + h + 3, background);
    for (n, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let gx = x + 2 + n as i64 * 8 * GLYPH_SCALE + col * GLYPH_SCALE;
                    let gy = top + 2 + row as i64 * GLYPH_SCALE;
                    fill(img, gx, gy, gx + GLYPH_SCALE - 1, gy + GLYPH_SCALE - 1, color);
                }
            }
        }
    }
}

/// Paints the commands onto `img`.
pub fn rasterize(img: &mut RgbImage, cmds: &[DrawCommand]) {
    for cmd in cmds {
        match cmd {
            DrawCommand::Rect { x1, y1, x2, y2, color, width } => {
                let (x1, y1, x2, y2) = (x1.round() as i64, y1.round() as i64, x2.round() as i64, y2.round() as i64);
                let w = *width as i64 - 1;
                fill(img, x1, y1, x2, y1 + w, *color);
                fill(img, x1, y2 - w, x2, y2, *color);
                fill(img, x1, y1, x1 + w, y2, *color);
                fill(img, x2 - w, y1, x2, y2, *color);
            }
            DrawCommand::Disc { x, y, radius, color } => {
                let r = radius.ceil() as i64;
                for dy in -r..=r {
                    for dx in -r..=r {
                        if (dx * dx + dy * dy) as f64 <= radius * radius {
                            put(img, x.round() as i64 + dx, y.round() as i64 + dy, *color);
                        }
                    }
                }
            }
            DrawCommand::Line { x1, y1, x2, y2, color, width } => {
                let steps = (x2 - x1).abs().max((y2 - y1).abs()).ceil().max(1.0) as i64;
                let half = *width as i64 / 2;
                for s in 0..=steps {
                    let t = s as f64 / steps as f64;
                    let (x, y) = ((x1 + t * (x2 - x1)).round() as i64, (y1 + t * (y2 - y1)).round() as i64);
                    fill(img, x - half, y - half, x + half, y + half, *color);
                }
            }
            DrawCommand::Label { x, y, text, color, background } => label(img, x.round() as i64, y.round() as i64, text, *color, *background),
        }
    }
}
