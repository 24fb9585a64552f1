//! Task answers: the parser against the official demo's regular expressions run by
//! Python (fixtures/reference/answer_cases.json), un-padding on wide and tall images,
//! and drawing over the original pixels.

use sphinx_core::preprocess::{PaddedSquare, RgbImage};
use sphinx_core::tasks::{draw_answer, parse_answer, rasterize, Answer, DrawCommand};
use sphinx_tests::fixtures;

/// The answer's lists in the demo's order: labelled last-to-first, then bare last-to-first.
fn demo_order(a: &Answer) -> Vec<(String, Vec<Vec<f64>>, String)> {
    let (labelled, bare): (Vec<_>, Vec<_>) = a.entities.iter().partition(|e| e.label.is_some());
    labelled
        .iter()
        .rev()
        .chain(bare.iter().rev())
        .map(|e| (e.label.clone().unwrap_or_default(), e.groups.clone(), e.color.to_string()))
        .collect()
}

#[test]
fn parser_equals_the_demo_regexes() {
    let text = std::fs::read_to_string(fixtures().join("reference/answer_cases.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut lists = 0;
    for case in cases.as_array().unwrap() {
        let input = case["text"].as_str().unwrap();
        let want: Vec<(String, Vec<Vec<f64>>, String)> = serde_json::from_value(case["parsed"].clone()).unwrap();
        let got = demo_order(&parse_answer(input, None));
        assert_eq!(got, want, "input {input:?}");
        lists += want.len();
    }
    assert!(lists > 400);
}

#[test]
fn boxes_map_back_to_pixels_on_wide_and_tall_images() {
    // Wide 1280×720: side 1280, pasted 280 px down.
    let a = parse_answer("<p>bus</p>[0.25,0.50,0.75,0.75]", Some(PaddedSquare::new(1280, 720)));
    assert_eq!(a.entities[0].boxes[0].pixels, Some([320.0, 360.0, 960.0, 680.0]));
    // Tall 300×500: side 500, pasted 100 px right; a box reaching into the padding is clamped.
    let a = parse_answer("[0.10,0.20,0.90,1.00]", Some(PaddedSquare::new(300, 500)));
    assert_eq!(a.entities[0].boxes[0].pixels, Some([0.0, 100.0, 300.0, 500.0]));
    // Points, and keypoint names with spaces.
    let a = parse_answer("<p>left eye</p> [0.50,0.50]", Some(PaddedSquare::new(300, 500)));
    let p = &a.entities[0].points[0];
    assert_eq!((p.pixels, p.keypoint), (Some([150.0, 250.0]), Some("left_eye")));
}

#[test]
fn answers_serialise_to_json() {
    let a = parse_answer("<p>dog</p>[0.10,0.20,0.30,0.40]", Some(PaddedSquare::new(100, 100)));
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["entities"][0]["label"], "dog");
    assert_eq!(json["entities"][0]["color"], "red");
    assert_eq!(json["entities"][0]["boxes"][0]["pixels"], serde_json::json!([10.0, 20.0, 30.0, 40.0]));
}

#[test]
fn drawing_marks_the_box_and_leaves_the_rest() {
    let (w, h) = (200, 100);
    let original = RgbImage::new(w, h, (0..w * h * 3).map(|i| (i % 97) as u8 + 50).collect());
    // Side 200, image pasted 50 px down: this box is x 40..160, y 20..80 in pixels.
    let a = parse_answer("<p>thing</p>[0.20,0.35,0.80,0.65]", Some(PaddedSquare::new(w, h)));
    let cmds = draw_answer(&a);
    assert!(matches!(cmds[0], DrawCommand::Rect { x1, y1, x2, y2, .. } if (x1, y1, x2, y2) == (40.0, 20.0, 160.0, 80.0)));
    let mut img = original.clone();
    rasterize(&mut img, &cmds);
    for (x, y) in [(40, 20), (160, 20), (40, 80), (160, 80), (41, 21), (100, 80)] {
        assert_eq!(img.pixel(x, y), [255, 0, 0], "box colour at ({x},{y})");
    }
    // Inside the box below the label, and outside it, the original pixels remain.
    for (x, y) in [(100, 60), (10, 10), (190, 95), (42, 78)] {
        assert_eq!(img.pixel(x, y), original.pixel(x, y), "original at ({x},{y})");
    }
}

#[test]
fn keypoints_draw_the_skeleton() {
    let a = parse_answer(
        "<p>left shoulder</p> [0.30,0.30] <p>left elbow</p> [0.30,0.60] <p>nose</p> [0.90,0.10]",
        Some(PaddedSquare::new(100, 100)),
    );
    let cmds = draw_answer(&a);
    let lines: Vec<_> = cmds.iter().filter(|c| matches!(c, DrawCommand::Line { .. })).collect();
    // Only left_shoulder–left_elbow (6–8) has both ends.
    assert_eq!(lines, vec![&DrawCommand::Line { x1: 30.0, y1: 30.0, x2: 30.0, y2: 60.0, color: [0, 128, 0], width: 3 }]);
    let mut img = RgbImage::filled(100, 100, [0, 0, 0]);
    rasterize(&mut img, &cmds);
    assert_eq!(img.pixel(30, 45), [0, 128, 0]);
    // The demo colours labelled lists from the last one: nose red, left elbow blue.
    assert_eq!(img.pixel(90, 10), [255, 0, 0]);
    assert_eq!(img.pixel(30, 62), [0, 0, 255]);
}

#[test]
fn parsing_and_drawing_never_panic() {
    let pool = ["<p>", "</p>", "[", "]", "0.5", ",", ";", "1.", ".", " ", "\n", "|||", "é", "日本", "😀", "0.99", "x"];
    let mut s: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..3000 {
        let mut text = String::new();
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        for k in 0..(s % 40) {
            text.push_str(pool[((s >> (k % 50)) as usize + k as usize * 7) % pool.len()]);
        }
        let a = parse_answer(&text, Some(PaddedSquare::new(37, 23)));
        let mut img = RgbImage::filled(37, 23, [1, 2, 3]);
        rasterize(&mut img, &draw_answer(&a));
    }
}
