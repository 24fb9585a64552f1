//! Decode every fixture and compare with Pillow's `Image.open(f).convert("RGB")`
//! (see gen/make_jpeg_fixtures.py). Target: 0 differing bytes on every file.

use std::fs;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

#[test]
fn fixtures_match_pillow() {
    let dir = fixtures_dir();
    let manifest = fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (name, expect) = (cols[0], cols[3]);
        let (w, h): (u32, u32) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        let jpg = fs::read(dir.join(format!("{name}.jpg"))).unwrap();
        let res = jpeg_exact::decode_rgb(&jpg, 1 << 26);
        checked += 1;
        match (expect, res) {
            ("ok", Ok((rw, rh, rgb))) => {
                if (rw, rh) != (w, h) {
                    failures.push(format!("{name}: size {rw}x{rh}, expected {w}x{h}"));
                    continue;
                }
                let raw = dir.join(format!("{name}.rgb"));
                if raw.exists() {
                    let want = fs::read(raw).unwrap();
                    let diff = want.iter().zip(&rgb).filter(|(a, b)| a != b).count()
                        + want.len().abs_diff(rgb.len());
                    let maxd = want
                        .iter()
                        .zip(&rgb)
                        .map(|(a, b)| a.abs_diff(*b))
                        .max()
                        .unwrap_or(0);
                    println!(
                        "{name:40} {w:5}x{h:<5} differing bytes: {diff} (max abs diff {maxd})"
                    );
                    // The portable-C IDCT (feature c-idct) is expected to differ from Pillow's
                    // SIMD IDCT on the extreme-coefficient fixtures only.
                    let c_idct_expected = cfg!(feature = "c-idct") && name.starts_with("overflow_");
                    if diff != 0 && !c_idct_expected {
                        failures.push(format!("{name}: {diff} differing bytes, max diff {maxd}"));
                    }
                } else {
                    let hashes = fs::read_to_string(dir.join(format!("{name}.rowhash"))).unwrap();
                    let stride = w as usize * 3;
                    let bad_rows = hashes
                        .lines()
                        .enumerate()
                        .filter(|(y, hx)| {
                            let row = &rgb[y * stride..(y + 1) * stride];
                            format!("{:016x}", fnv1a64(row)) != *hx
                        })
                        .count();
                    println!("{name:40} {w:5}x{h:<5} differing rows: {bad_rows} (row hashes)");
                    if bad_rows != 0 {
                        failures.push(format!("{name}: {bad_rows} differing rows"));
                    }
                }
            }
            ("ok", Err(e)) => failures.push(format!("{name}: unexpected error: {e}")),
            (_, Ok(_)) => failures.push(format!("{name}: expected an error ({expect}), got Ok")),
            (_, Err(e)) => println!("{name:40} error as expected ({expect}): {e}"),
        }
    }
    println!("checked {checked} fixtures, {} failures", failures.len());
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
