//! The two image representations preprocessing passes around.

/// 8-bit RGB, interleaved, row-major: `data[(y · width + x) · 3 + c]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), width * height * 3);
        Self { width, height, data }
    }

    pub fn filled(width: usize, height: usize, rgb: [u8; 3]) -> Self {
        Self { width, height, data: rgb.iter().copied().cycle().take(width * height * 3).collect() }
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// f32 channels-first tensor on the host: `data[(c · height + y) · width + x]`, [C, H, W].
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Planar {
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// The `size`×`size` square whose top-left corner is (x0, y0).
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Planar {
        let mut data = Vec::with_capacity(self.channels * w * h);
        for c in 0..self.channels {
            for y in y0..y0 + h {
                let row = (c * self.height + y) * self.width;
                data.extend_from_slice(&self.data[row + x0..row + x0 + w]);
            }
        }
        Planar { channels: self.channels, height: h, width: w, data }
    }
}
