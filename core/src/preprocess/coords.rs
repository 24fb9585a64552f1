//! Boxes and points in SPHINX's answers are normalised to the padded square (docs/spec.md §6):
//! `[x1, y1, x2, y2]` in [0, 1] of side max(W, H), origin at the square's top-left.

/// The padding geometry of one original image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaddedSquare {
    pub width: usize,
    pub height: usize,
}

impl PaddedSquare {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height }
    }

    pub fn side(&self) -> f64 {
        self.width.max(self.height) as f64
    }

    /// Where the original image's (0, 0) lies in the square, in pixels.
    pub fn origin(&self) -> (f64, f64) {
        let (w, h) = (self.width, self.height);
        let x0 = if w < h { (h - w) / 2 } else { 0 };
        let y0 = if w > h { (w - h) / 2 } else { 0 };
        (x0 as f64, y0 as f64)
    }

    /// Normalised square point → original pixels, clamped to the image.
    pub fn to_pixels(&self, x: f64, y: f64) -> (f64, f64) {
        let (x0, y0) = self.origin();
        let s = self.side();
        ((x * s - x0).clamp(0.0, self.width as f64), (y * s - y0).clamp(0.0, self.height as f64))
    }

    /// Original pixels → normalised square coordinates.
    pub fn to_normalized(&self, x: f64, y: f64) -> (f64, f64) {
        let (x0, y0) = self.origin();
        let s = self.side();
        ((x + x0) / s, (y + y0) / s)
    }

    /// `[x1, y1, x2, y2]` normalised → pixels (each corner clamped).
    pub fn box_to_pixels(&self, b: [f64; 4]) -> [f64; 4] {
        let (x1, y1) = self.to_pixels(b[0], b[1]);
        let (x2, y2) = self.to_pixels(b[2], b[3]);
        [x1, y1, x2, y2]
    }

    /// `[x1, y1, x2, y2]` pixels → normalised (`box_xyxy_expand2square` then ÷ side).
    pub fn box_to_normalized(&self, b: [f64; 4]) -> [f64; 4] {
        let (x1, y1) = self.to_normalized(b[0], b[1]);
        let (x2, y2) = self.to_normalized(b[2], b[3]);
        [x1, y1, x2, y2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_image_box_round_trip() {
        // 1280×720: square side 1280, image pasted at y0 = 280.
        let p = PaddedSquare::new(1280, 720);
        assert_eq!(p.origin(), (0.0, 280.0));
        let b = p.box_to_pixels([0.25, 0.5, 0.75, 0.75]);
        assert_eq!(b, [320.0, 360.0, 960.0, 680.0]);
        let back = p.box_to_normalized(b);
        for (a, e) in back.iter().zip([0.25, 0.5, 0.75, 0.75]) {
            assert!((a - e).abs() < 1e-12);
        }
    }

    #[test]
    fn tall_image_box_round_trip_and_clamping() {
        // 337 wide, 601 tall: x0 = (601 − 337) / 2 = 132.
        let p = PaddedSquare::new(337, 601);
        assert_eq!(p.origin(), (132.0, 0.0));
        let b = [10.0, 20.0, 300.0, 590.0];
        let n = p.box_to_normalized(b);
        let px = p.box_to_pixels(n);
        for (a, e) in px.iter().zip(b) {
            assert!((a - e).abs() < 1e-9);
        }
        // A box in the padding is clamped onto the image.
        assert_eq!(p.box_to_pixels([0.0, 0.0, 0.1, 1.2]), [0.0, 0.0, 0.0, 601.0]);
    }
}
