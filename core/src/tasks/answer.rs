//! Boxes and points in SPHINX's answers, parsed exactly as the official demo's
//! `extract_and_color` does (docs/spec.md §6):
//!
//! 1. labelled lists `<p>(.*?)</p>\s*(\[[\d.,;\s]*\])` (leftmost, non-overlapping; the
//!    label cannot span a line), each rewritten in the text as `label|||[...]`;
//! 2. then bare lists `(?<!\|\|\|)(\[[\d.,;\s]*\])` in the rewritten text;
//! 3. each list split on `;`, and only decimals (`\d+\.\d+`) read from each group:
//!    four numbers are a box, two a point; anything else is ignored.
//!
//! Colours cycle red, blue, green, purple, orange in the demo's order (labelled lists
//! from last to first, then bare lists from last to first). Digits are ASCII.
//! Coordinates are normalised to the padded square and mapped back to pixels.

use serde::Serialize;

use crate::preprocess::PaddedSquare;

pub const DEMO_COLORS: [&str; 5] = ["red", "blue", "green", "purple", "orange"];

/// COCO-17 keypoints, in order.
pub const COCO_KEYPOINTS: [&str; 17] = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
];

/// The COCO skeleton, as 1-based keypoint indices.
pub const COCO_SKELETON: [[usize; 2]; 19] = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10], [9, 11],
    [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
];

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct BoxCoords {
    /// [x1, y1, x2, y2] in [0, 1] of the padded square.
    pub normalized: [f64; 4],
    /// In pixels of the original image, clamped to it (when the image size is known).
    pub pixels: Option<[f64; 4]>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PointCoords {
    pub normalized: [f64; 2],
    pub pixels: Option<[f64; 2]>,
    /// The COCO keypoint this point's label names (`left eye` → `left_eye`).
    pub keypoint: Option<&'static str>,
}

/// One bracket list of the answer, with its label if it had one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Entity {
    pub label: Option<String>,
    pub color: &'static str,
    /// The numbers of each `;`-separated group, as the demo reads them.
    pub groups: Vec<Vec<f64>>,
    pub boxes: Vec<BoxCoords>,
    pub points: Vec<PointCoords>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Answer {
    pub text: String,
    /// Labelled lists first, then bare lists, each in text order.
    pub entities: Vec<Entity>,
}

/// Python's `\s` for str patterns.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn in_list(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '.' | ',' | ';') || is_space(c)
}

/// At byte `i` (a `[`), the end (exclusive) of `\[[\d.,;\s]*\]`, if it matches.
fn list_end(s: &str, i: usize) -> Option<usize> {
    let rest = s.get(i..)?;
    let mut chars = rest.char_indices();
    if chars.next()?.1 != '[' {
        return None;
    }
    for (k, c) in chars {
        if c == ']' {
            return Some(i + k + 1);
        }
        if !in_list(c) {
            return None;
        }
    }
    None
}

/// `<p>(.*?)</p>\s*(\[...\])` at byte `i`: (label, list start, end).
fn labelled_at(s: &str, i: usize) -> Option<(usize, usize, usize, usize)> {
    let label_start = i + 3;
    let line_end = s[label_start..].find('\n').map_or(s.len(), |n| label_start + n);
    let mut from = label_start;
    while let Some(off) = s[from..line_end].find("</p>") {
        let close = from + off;
        let after = close + 4;
        let ws = s[after..].char_indices().find(|(_, c)| !is_space(*c)).map_or(s.len(), |(k, _)| after + k);
        if let Some(end) = list_end(s, ws) {
            return Some((label_start, close, ws, end));
        }
        from = close + 1;
    }
    None
}

/// `re.findall(r'\d+\.\d+', group)` as floats.
fn decimals(group: &str) -> Vec<f64> {
    let b = group.as_bytes();
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        if b[p].is_ascii_digit() {
            let mut e = p;
            while e < b.len() && b[e].is_ascii_digit() {
                e += 1;
            }
            if e + 1 < b.len() && b[e] == b'.' && b[e + 1].is_ascii_digit() {
                let mut f = e + 1;
                while f < b.len() && b[f].is_ascii_digit() {
                    f += 1;
                }
                if let Ok(v) = group[p..f].parse() {
                    out.push(v);
                }
                p = f;
                continue;
            }
        }
        p += 1;
    }
    out
}

fn entity(label: Option<String>, list: &str, color: &'static str, geometry: Option<PaddedSquare>) -> Entity {
    let groups: Vec<Vec<f64>> = list.split(';').map(decimals).collect();
    let keypoint = label.as_deref().and_then(|l| {
        let name = l.replace(' ', "_");
        COCO_KEYPOINTS.iter().copied().find(|k| *k == name)
    });
    let mut e = Entity { label, color, groups: Vec::new(), boxes: Vec::new(), points: Vec::new() };
    for g in &groups {
        match g.as_slice() {
            &[x1, y1, x2, y2] => {
                let b = [x1, y1, x2, y2];
                e.boxes.push(BoxCoords { normalized: b, pixels: geometry.map(|p| p.box_to_pixels(b)) });
            }
            &[x, y] => e.points.push(PointCoords {
                normalized: [x, y],
                pixels: geometry.map(|p| {
                    let (px, py) = p.to_pixels(x, y);
                    [px, py]
                }),
                keypoint,
            }),
            _ => {}
        }
    }
    e.groups = groups;
    e
}

/// Parses an answer; `geometry` (the original image size) adds pixel coordinates.
/// Never panics, whatever the text.
pub fn parse_answer(text: &str, geometry: Option<PaddedSquare>) -> Answer {
    // 1. Labelled lists, leftmost first, non-overlapping.
    let mut labelled = Vec::new();
    let mut pos = 0;
    while let Some(off) = text.get(pos..).and_then(|r| r.find("<p>")) {
        let i = pos + off;
        match labelled_at(text, i) {
            Some(m) => {
                labelled.push(m);
                pos = m.3;
            }
            None => pos = i + 1,
        }
    }
    // The demo colours them from the last to the first and rewrites each as `label|||[...]`.
    let mut color = 0;
    let mut rewritten = text.to_string();
    let mut entities = Vec::new();
    for &(ls, le, ks, end) in labelled.iter().rev() {
        let c = DEMO_COLORS[color % DEMO_COLORS.len()];
        color += 1;
        let (label, list) = (&text[ls..le], &text[ks..end]);
        let start = ls - 3;
        rewritten.replace_range(start..end, &format!("<span style=\"color:{c}\">{label}|||{list}</span>"));
        entities.push(entity(Some(label.to_string()), list, c, geometry));
    }
    entities.reverse();
    // 2. Bare lists in the rewritten text, not right after `|||`.
    let mut bare = Vec::new();
    let mut pos = 0;
    while let Some(off) = rewritten.get(pos..).and_then(|r| r.find('[')) {
        let i = pos + off;
        let after_mark = rewritten[..i].ends_with("|||");
        match (!after_mark).then(|| list_end(&rewritten, i)).flatten() {
            Some(end) => {
                bare.push((i, end));
                pos = end;
            }
            None => pos = i + 1,
        }
    }
    let mut bare_entities = Vec::new();
    for &(i, end) in bare.iter().rev() {
        let c = DEMO_COLORS[color % DEMO_COLORS.len()];
        color += 1;
        bare_entities.push(entity(None, &rewritten[i..end], c, geometry));
    }
    bare_entities.reverse();
    entities.extend(bare_entities);
    Answer { text: text.to_string(), entities }
}
