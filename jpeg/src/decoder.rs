//! Marker parsing (jdmarker.c / jdinput.c semantics), scan decoding (jdhuff.c, jdphuff.c)
//! into whole-image coefficient buffers, then IDCT, upsampling and colour conversion.

use crate::JpegError;
use crate::color::{Plane, YccTables, cmyk_to_rgb, upsample};
use crate::huffman::{BitReader, HuffTable, RawHuff, std_table};
use crate::idct::idct_islow;
use crate::smooth::{SmoothComp, smooth_component};

/// Zigzag index -> natural index, with 16 extra entries (= 63) so that corrupt run lengths
/// behave as in libjpeg (jutils.c jpeg_natural_order).
const NATURAL: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

const MAX_DIMENSION: u32 = 65500;
const MAX_BLOCKS_IN_MCU: usize = 10;
/// Guard against CPU exhaustion by files with huge numbers of (progressive) scans; libjpeg
/// has no such limit, but real encoders write at most a few dozen scans.
const MAX_SCANS: usize = 1000;

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Quantisation table latched at the component's first scan (natural order).
    quant: Option<[u16; 64]>,
    /// width_in_blocks / height_in_blocks
    bw: usize,
    bh: usize,
    /// Allocated blocks per row / block rows (padded to whole MCUs).
    stride: usize,
    rows: usize,
    coefs: Vec<i16>,
    ds_w: usize,
    ds_h: usize,
    /// Progressive: current Al per coefficient (zigzag index), -1 = never received.
    coef_bits: [i32; 64],
    /// Progressive: coef_bits as they were before the latest scan touching them
    /// (cinfo->coef_bits[ci + num_components]).
    prev_coef_bits: [i32; 64],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ColorSpace {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    precision: u8,
    comps: Vec<Component>,
    max_h: usize,
    max_v: usize,
    mcus_x: usize,
    mcus_y: usize,
}

pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    max_pixels: u64,
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<RawHuff>; 4],
    ac: [Option<RawHuff>; 4],
    restart_interval: u32,
    jfif: bool,
    adobe: Option<u8>,
    frame: Option<Frame>,
    color: Option<ColorSpace>,
    multi_scan: bool,
    scans_done: usize,
    pending_marker: Option<u8>,
    /// cinfo->master->last_good_iMCU_row (for block smoothing after corrupt data).
    last_good_imcu: usize,
}

struct ScanInfo {
    comps: Vec<usize>,
    dc_tbl: Vec<usize>,
    ac_tbl: Vec<usize>,
    ss: usize,
    se: usize,
    ah: u32,
    al: u32,
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8], max_pixels: u64) -> Self {
        Decoder {
            data,
            pos: 0,
            max_pixels,
            qt: [None; 4],
            dc: [None, None, None, None],
            ac: [None, None, None, None],
            restart_interval: 0,
            jfif: false,
            adobe: None,
            frame: None,
            color: None,
            multi_scan: false,
            scans_done: 0,
            pending_marker: None,
            last_good_imcu: 0,
        }
    }

    fn byte(&mut self) -> Result<u8, JpegError> {
        let b = *self.data.get(self.pos).ok_or(JpegError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<usize, JpegError> {
        Ok(((self.byte()? as usize) << 8) | self.byte()? as usize)
    }

    /// jdmarker.c next_marker: skip garbage up to 0xFF, skip fill bytes, ignore FF/00.
    fn next_marker(&mut self) -> Result<u8, JpegError> {
        if let Some(m) = self.pending_marker.take() {
            return Ok(m);
        }
        loop {
            while self.byte()? != 0xFF {}
            let mut c = self.byte()?;
            while c == 0xFF {
                c = self.byte()?;
            }
            if c != 0 {
                return Ok(c);
            }
        }
    }

    /// Read a marker segment's payload (after the 2-byte length). Lengths below 2 are
    /// treated as an empty payload, as skip_variable does.
    fn segment(&mut self) -> Result<&'a [u8], JpegError> {
        self.segment_impl(true)
    }

    /// As [`Self::segment`], but a length below 2 is an error (DHT, DQT, SOF, SOS).
    fn segment_strict(&mut self) -> Result<&'a [u8], JpegError> {
        self.segment_impl(false)
    }

    fn segment_impl(&mut self, lenient: bool) -> Result<&'a [u8], JpegError> {
        let len = self.u16()?;
        if len < 2 && !lenient {
            return Err(JpegError::BadMarker("segment length"));
        }
        let n = len.saturating_sub(2);
        let data = self.data;
        let s = data
            .get(self.pos..self.pos + n)
            .ok_or(JpegError::Truncated)?;
        self.pos += n;
        Ok(s)
    }

    pub fn decode(mut self) -> Result<(u32, u32, Vec<u8>), JpegError> {
        if self.data.len() < 2 || self.data[0] != 0xFF || self.data[1] != 0xD8 {
            return Err(JpegError::NotJpeg);
        }
        self.pos = 2;
        let mut saw_eoi = false;
        loop {
            let r = self.one_marker();
            match r {
                Ok(true) => {
                    saw_eoi = true;
                    break;
                }
                Ok(false) => {}
                // After the only scan of a single-scan image, Pillow has all rows; running
                // out of data while looking for EOI is not an error there.
                Err(JpegError::Truncated) if self.scans_done > 0 && !self.multi_scan => break,
                Err(e) => return Err(e),
            }
        }
        if self.scans_done == 0 {
            return Err(JpegError::BadMarker("no image data before EOI"));
        }
        debug_assert!(saw_eoi || !self.multi_scan);
        self.output()
    }

    /// Process one marker; Ok(true) at EOI.
    fn one_marker(&mut self) -> Result<bool, JpegError> {
        let m = self.next_marker()?;
        match m {
            0xD8 => return Err(JpegError::BadMarker("duplicate SOI")),
            0xC0 | 0xC1 => self.sof(false)?,
            0xC2 => self.sof(true)?,
            0xC3 | 0xCB => return Err(JpegError::Unsupported("lossless JPEG")),
            0xC9 | 0xCA => return Err(JpegError::Unsupported("arithmetic coding")),
            0xC5..=0xC7 | 0xC8 | 0xCD..=0xCF => {
                return Err(JpegError::Unsupported("hierarchical/differential JPEG"));
            }
            0xC4 => self.dht()?,
            0xCC => {
                // DAC: only meaningful with arithmetic coding, which we reject at SOF.
                self.segment()?;
            }
            0xDB => self.dqt()?,
            0xDD => {
                let len = self.u16()?;
                if len != 4 {
                    return Err(JpegError::BadMarker("DRI length"));
                }
                self.restart_interval = self.u16()? as u32;
            }
            0xE0..=0xEF => {
                let seg = self.segment()?;
                if self.color.is_none() {
                    if m == 0xE0 && seg.len() >= 14 && &seg[..5] == b"JFIF\0" {
                        self.jfif = true;
                    } else if m == 0xEE && seg.len() >= 12 && &seg[..5] == b"Adobe" {
                        self.adobe = Some(seg[11]);
                    }
                }
            }
            0xFE | 0xDC => {
                // COM; DNL is ignored by libjpeg.
                self.segment()?;
            }
            0xD0..=0xD7 | 0x01 => {}
            0xDA => self.sos()?,
            0xD9 => return Ok(true),
            _ => return Err(JpegError::BadMarker("unknown marker")),
        }
        Ok(false)
    }

    fn sof(&mut self, progressive: bool) -> Result<(), JpegError> {
        if self.frame.is_some() {
            return Err(JpegError::BadMarker("duplicate SOF"));
        }
        let seg = self.segment_strict()?;
        if seg.len() < 6 {
            return Err(JpegError::BadMarker("SOF length"));
        }
        let precision = seg[0];
        let height = u32::from(seg[1]) << 8 | u32::from(seg[2]);
        let width = u32::from(seg[3]) << 8 | u32::from(seg[4]);
        let n = seg[5] as usize;
        if width == 0 || height == 0 || n == 0 {
            return Err(JpegError::BadDimensions { width, height });
        }
        if seg.len() != 6 + 3 * n {
            return Err(JpegError::BadMarker("SOF length"));
        }
        let mut comps = Vec::with_capacity(n);
        for i in 0..n {
            let c = &seg[6 + 3 * i..9 + 3 * i];
            comps.push(Component {
                id: c[0],
                h: (c[1] >> 4) as usize,
                v: (c[1] & 15) as usize,
                tq: c[2] as usize,
                quant: None,
                bw: 0,
                bh: 0,
                stride: 0,
                rows: 0,
                coefs: Vec::new(),
                ds_w: 0,
                ds_h: 0,
                coef_bits: [-1; 64],
                prev_coef_bits: [0; 64],
            });
        }
        self.frame = Some(Frame {
            width: width as usize,
            height: height as usize,
            progressive,
            precision,
            comps,
            max_h: 1,
            max_v: 1,
            mcus_x: 0,
            mcus_y: 0,
        });
        Ok(())
    }

    fn dht(&mut self) -> Result<(), JpegError> {
        let seg = self.segment_strict()?;
        let mut p = 0usize;
        while seg.len() - p > 16 {
            let index = seg[p] as usize;
            let mut bits = [0u8; 17];
            bits[1..].copy_from_slice(&seg[p + 1..p + 17]);
            p += 17;
            let count: usize = bits.iter().map(|&b| b as usize).sum();
            if count > 256 || count > seg.len() - p {
                return Err(JpegError::BadHuffmanTable);
            }
            let mut vals = [0u8; 256];
            vals[..count].copy_from_slice(&seg[p..p + count]);
            p += count;
            let (slot, is_ac) = if index & 0x10 != 0 {
                (index - 0x10, true)
            } else {
                (index, false)
            };
            if slot >= 4 {
                return Err(JpegError::BadMarker("DHT table index"));
            }
            let t = Some(RawHuff { bits, vals });
            if is_ac {
                self.ac[slot] = t;
            } else {
                self.dc[slot] = t;
            }
        }
        if p != seg.len() {
            return Err(JpegError::BadMarker("DHT length"));
        }
        Ok(())
    }

    fn dqt(&mut self) -> Result<(), JpegError> {
        let seg = self.segment_strict()?;
        let mut p = 0usize;
        while p < seg.len() {
            let pq = seg[p] >> 4;
            let tq = (seg[p] & 15) as usize;
            p += 1;
            if tq >= 4 {
                return Err(JpegError::BadMarker("DQT table index"));
            }
            let size = if pq != 0 { 128 } else { 64 };
            let body = seg
                .get(p..p + size)
                .ok_or(JpegError::BadMarker("DQT length"))?;
            let mut q = [0u16; 64];
            for i in 0..64 {
                q[NATURAL[i]] = if pq != 0 {
                    u16::from(body[2 * i]) << 8 | u16::from(body[2 * i + 1])
                } else {
                    u16::from(body[i])
                };
            }
            self.qt[tq] = Some(q);
            p += size;
        }
        Ok(())
    }

    /// jdinput.c initial_setup + jdapimin.c default_decompress_parms + buffer allocation,
    /// run at the first SOS (when jpeg_read_header returns and jpeg_start_decompress runs).
    fn setup_frame(&mut self) -> Result<(), JpegError> {
        let f = self
            .frame
            .as_mut()
            .ok_or(JpegError::BadMarker("SOS before SOF"))?;
        let (w, h) = (f.width as u32, f.height as u32);
        if w > MAX_DIMENSION || h > MAX_DIMENSION {
            return Err(JpegError::BadDimensions {
                width: w,
                height: h,
            });
        }
        if f.precision != 8 {
            return Err(JpegError::Unsupported("sample precision other than 8 bits"));
        }
        if f.comps.len() > 10 {
            return Err(JpegError::BadMarker("too many components"));
        }
        for c in &f.comps {
            if !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v) {
                return Err(JpegError::BadMarker("sampling factor"));
            }
        }
        let color = match f.comps.len() {
            1 => ColorSpace::Gray,
            3 => {
                if self.jfif {
                    ColorSpace::YCbCr
                } else if let Some(t) = self.adobe {
                    if t == 0 {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                } else {
                    let ids = (f.comps[0].id, f.comps[1].id, f.comps[2].id);
                    if ids == (82, 71, 66) {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                }
            }
            4 => match self.adobe {
                Some(0) | None => ColorSpace::Cmyk,
                Some(_) => ColorSpace::Ycck,
            },
            _ => {
                return Err(JpegError::Unsupported(
                    "number of components other than 1, 3 or 4",
                ));
            }
        };
        let pixels = u64::from(w) * u64::from(h);
        if pixels > self.max_pixels {
            return Err(JpegError::TooLarge {
                pixels,
                max_pixels: self.max_pixels,
            });
        }
        f.max_h = f.comps.iter().map(|c| c.h).max().unwrap_or(1);
        f.max_v = f.comps.iter().map(|c| c.v).max().unwrap_or(1);
        let (mh, mv) = (f.max_h, f.max_v);
        f.mcus_x = f.width.div_ceil(mh * 8);
        f.mcus_y = f.height.div_ceil(mv * 8);
        for c in &f.comps {
            // Validate the upsampling method now (jinit_upsampler), before decoding.
            if !mh.is_multiple_of(c.h) || !mv.is_multiple_of(c.v) {
                return Err(JpegError::Unsupported("fractional sampling factors"));
            }
        }
        // Allocation sizes, checked in u64 so that 32-bit targets (wasm32) cannot overflow:
        // coefficients (i16) + IDCT planes + upsampled planes + RGB output.
        let coef_samples: u64 = f
            .comps
            .iter()
            .map(|c| (f.mcus_x * c.h * 8) as u64 * (f.mcus_y * c.v * 8) as u64)
            .sum();
        let bytes = coef_samples * 3 + pixels * (f.comps.len() as u64 + 3);
        if bytes > (isize::MAX as u64) / 2 {
            return Err(JpegError::TooLarge {
                pixels,
                max_pixels: self.max_pixels,
            });
        }
        for c in f.comps.iter_mut() {
            c.bw = (f.width * c.h).div_ceil(mh * 8);
            c.bh = (f.height * c.v).div_ceil(mv * 8);
            c.ds_w = (f.width * c.h).div_ceil(mh);
            c.ds_h = (f.height * c.v).div_ceil(mv);
            c.stride = f.mcus_x * c.h;
            c.rows = f.mcus_y * c.v;
            // Bounded: stride*8 <= width + 31 (times h/max_h), likewise rows; max 4 components
            // participate in each 8-bit sample, so this is O(max_pixels).
            c.coefs = vec![0i16; c.stride * c.rows * 64];
        }
        self.color = Some(color);
        // libjpeg-turbo's sequential Huffman decoder (jdhuff.c, not jdphuff.c) installs the
        // standard tables in empty slots 0/1 (Motion-JPEG support).
        let progressive = f.progressive;
        for slot in 0..2 {
            if progressive {
                break;
            }
            if self.dc[slot].is_none() {
                self.dc[slot] = Some(std_table(true, slot));
            }
            if self.ac[slot].is_none() {
                self.ac[slot] = Some(std_table(false, slot));
            }
        }
        Ok(())
    }

    fn sos(&mut self) -> Result<(), JpegError> {
        if self.frame.is_none() {
            return Err(JpegError::BadMarker("SOS before SOF"));
        }
        let seg = self.segment_strict()?;
        let n = *seg.first().ok_or(JpegError::BadMarker("SOS length"))? as usize;
        if seg.len() != n * 2 + 4 || !(1..=4).contains(&n) {
            return Err(JpegError::BadMarker("SOS length"));
        }
        if self.scans_done >= MAX_SCANS {
            return Err(JpegError::Unsupported("more than 1000 scans"));
        }
        let first = self.scans_done == 0;
        if first {
            self.setup_frame()?;
        }
        let f = self
            .frame
            .as_ref()
            .ok_or(JpegError::BadMarker("SOS before SOF"))?;
        let mut info = ScanInfo {
            comps: Vec::new(),
            dc_tbl: Vec::new(),
            ac_tbl: Vec::new(),
            ss: seg[1 + 2 * n] as usize,
            se: seg[2 + 2 * n] as usize,
            ah: (seg[3 + 2 * n] >> 4) as u32,
            al: (seg[3 + 2 * n] & 15) as u32,
        };
        for i in 0..n {
            let cc = seg[1 + 2 * i];
            let tables = seg[2 + 2 * i];
            let ci = f
                .comps
                .iter()
                .take(4)
                .position(|c| c.id == cc)
                .ok_or(JpegError::BadMarker("SOS component id"))?;
            if info.comps.contains(&ci) {
                return Err(JpegError::BadMarker("SOS duplicate component"));
            }
            info.comps.push(ci);
            info.dc_tbl.push((tables >> 4) as usize);
            info.ac_tbl.push((tables & 15) as usize);
        }
        if first {
            self.multi_scan = n < f.comps.len() || f.progressive;
        } else if !self.multi_scan {
            return Err(JpegError::BadMarker("unexpected second scan"));
        }
        if n > 1 {
            let blocks: usize = info
                .comps
                .iter()
                .map(|&ci| f.comps[ci].h * f.comps[ci].v)
                .sum();
            if blocks > MAX_BLOCKS_IN_MCU {
                return Err(JpegError::BadMarker("too many blocks in MCU"));
            }
        }
        let progressive = f.progressive;
        // latch_quant_tables
        if let Some(f) = self.frame.as_mut() {
            for &ci in &info.comps {
                let c = &mut f.comps[ci];
                if c.quant.is_none() {
                    let q = self.qt.get(c.tq).copied().flatten();
                    c.quant = Some(q.ok_or(JpegError::MissingTable("quantization"))?);
                }
            }
        }
        if progressive {
            self.decode_progressive(&info)?;
        } else {
            self.decode_sequential(&info)?;
        }
        self.scans_done += 1;
        Ok(())
    }

    fn table(&self, dc: bool, idx: usize) -> Result<HuffTable, JpegError> {
        let slot = if dc { &self.dc } else { &self.ac };
        let raw = slot
            .get(idx)
            .and_then(|t| t.as_ref())
            .ok_or(JpegError::MissingTable("Huffman"))?;
        HuffTable::build(raw, dc)
    }

    /// The block positions (component, block row, block col) of MCU (mx, my).
    fn mcu_blocks(f: &Frame, info: &ScanInfo, mx: usize, my: usize, out: &mut Vec<(usize, usize)>) {
        out.clear();
        if info.comps.len() == 1 {
            let c = &f.comps[info.comps[0]];
            out.push((0, (my * c.stride + mx) * 64));
        } else {
            for (si, &ci) in info.comps.iter().enumerate() {
                let c = &f.comps[ci];
                for by in 0..c.v {
                    for bx in 0..c.h {
                        let row = my * c.v + by;
                        let col = mx * c.h + bx;
                        out.push((si, (row * c.stride + col) * 64));
                    }
                }
            }
        }
    }

    fn mcu_grid(f: &Frame, info: &ScanInfo) -> (usize, usize) {
        if info.comps.len() == 1 {
            let c = &f.comps[info.comps[0]];
            (c.bw, c.bh)
        } else {
            (f.mcus_x, f.mcus_y)
        }
    }

    fn finish_scan(&mut self, br: &BitReader) {
        self.pos = br.pos;
        self.pending_marker = br.marker;
    }

    /// jdhuff.c process_restart + jdmarker.c read_restart_marker (without resync).
    fn restart(&mut self, br: &mut BitReader<'a>, next_rst: &mut u8) -> Result<(), JpegError> {
        br.reset_bits();
        let m = match br.marker.take() {
            Some(m) => m,
            None => {
                self.pos = br.pos;
                self.pending_marker = None;
                let m = self.next_marker()?;
                br.pos = self.pos;
                m
            }
        };
        if m != 0xD0 + *next_rst {
            return Err(JpegError::BadRestart);
        }
        *next_rst = (*next_rst + 1) & 7;
        br.insufficient = false;
        Ok(())
    }

    fn decode_sequential(&mut self, info: &ScanInfo) -> Result<(), JpegError> {
        let mut dct = Vec::new();
        let mut act = Vec::new();
        for i in 0..info.comps.len() {
            dct.push(self.table(true, info.dc_tbl[i])?);
            act.push(self.table(false, info.ac_tbl[i])?);
        }
        let mut f = self
            .frame
            .take()
            .ok_or(JpegError::BadMarker("SOS before SOF"))?;
        let r = self.sequential_inner(&mut f, info, &dct, &act);
        self.frame = Some(f);
        r
    }

    fn sequential_inner(
        &mut self,
        f: &mut Frame,
        info: &ScanInfo,
        dct: &[HuffTable],
        act: &[HuffTable],
    ) -> Result<(), JpegError> {
        let mut br = BitReader::new(self.data, self.pos);
        let (mcols, mrows) = Self::mcu_grid(f, info);
        let mut last_dc = [0i32; 4];
        let mut to_go = self.restart_interval;
        let mut next_rst = 0u8;
        let mut blocks = Vec::with_capacity(MAX_BLOCKS_IN_MCU);
        for my in 0..mrows {
            for mx in 0..mcols {
                if self.restart_interval != 0 {
                    if to_go == 0 {
                        self.restart(&mut br, &mut next_rst)?;
                        last_dc = [0; 4];
                        to_go = self.restart_interval;
                    }
                    to_go -= 1;
                }
                if br.insufficient {
                    continue;
                }
                Self::mcu_blocks(f, info, mx, my, &mut blocks);
                for &(si, off) in &blocks {
                    let blk = &mut f.comps[info.comps[si]].coefs[off..off + 64];
                    let s = br.decode(&dct[si])? as u32;
                    let diff = br.receive_extend(s)?;
                    let dc = last_dc[si]
                        .checked_add(diff)
                        .ok_or(JpegError::BadMarker("DC coefficient overflow"))?;
                    last_dc[si] = dc;
                    blk[0] = dc as i16;
                    let mut k = 1usize;
                    while k < 64 {
                        let rs = br.decode(&act[si])?;
                        let r = (rs >> 4) as usize;
                        let s = (rs & 15) as u32;
                        if s != 0 {
                            k += r;
                            let v = br.receive_extend(s)?;
                            blk[NATURAL[k]] = v as i16;
                        } else {
                            if r != 15 {
                                break;
                            }
                            k += 15;
                        }
                        k += 1;
                    }
                }
            }
        }
        self.finish_scan(&br);
        Ok(())
    }

    fn decode_progressive(&mut self, info: &ScanInfo) -> Result<(), JpegError> {
        let is_dc = info.ss == 0;
        let mut bad = if is_dc {
            info.se != 0
        } else {
            info.ss > info.se || info.se >= 64 || info.comps.len() != 1
        };
        if info.ah != 0 && info.al + 1 != info.ah {
            bad = true;
        }
        if info.al > 13 {
            bad = true;
        }
        if bad {
            return Err(JpegError::BadMarker("invalid progressive scan parameters"));
        }
        let mut tables = Vec::new();
        for i in 0..info.comps.len() {
            if is_dc {
                if info.ah == 0 {
                    tables.push(Some(self.table(true, info.dc_tbl[i])?));
                } else {
                    tables.push(None);
                }
            } else {
                tables.push(Some(self.table(false, info.ac_tbl[i])?));
            }
        }
        let mut f = self
            .frame
            .take()
            .ok_or(JpegError::BadMarker("SOS before SOF"))?;
        let scan_number = self.scans_done + 1;
        for &ci in &info.comps {
            let c = &mut f.comps[ci];
            for k in info.ss.min(1)..=info.se.max(9) {
                c.prev_coef_bits[k] = if scan_number > 1 { c.coef_bits[k] } else { 0 };
            }
            for k in info.ss..=info.se {
                c.coef_bits[k] = info.al as i32;
            }
        }
        let r = self.progressive_inner(&mut f, info, &tables);
        self.frame = Some(f);
        r
    }

    fn progressive_inner(
        &mut self,
        f: &mut Frame,
        info: &ScanInfo,
        tables: &[Option<HuffTable>],
    ) -> Result<(), JpegError> {
        let mut br = BitReader::new(self.data, self.pos);
        let (mcols, mrows) = Self::mcu_grid(f, info);
        let mut last_dc = [0i32; 4];
        let mut eobrun: u32 = 0;
        let mut to_go = self.restart_interval;
        let mut next_rst = 0u8;
        let mut blocks = Vec::with_capacity(MAX_BLOCKS_IN_MCU);
        let al = info.al;
        let p1: i32 = 1 << al;
        let m1: i32 = -1i32 << al;
        let (ss, se) = (info.ss, info.se);
        let missing = || JpegError::MissingTable("Huffman");
        let rows_per_imcu = if info.comps.len() == 1 {
            f.comps[info.comps[0]].v
        } else {
            1
        };
        for my in 0..mrows {
            for mx in 0..mcols {
                if !br.insufficient {
                    self.last_good_imcu = my / rows_per_imcu;
                }
                if self.restart_interval != 0 {
                    if to_go == 0 {
                        self.restart(&mut br, &mut next_rst)?;
                        last_dc = [0; 4];
                        eobrun = 0;
                        to_go = self.restart_interval;
                    }
                    to_go -= 1;
                }
                if br.insufficient {
                    continue;
                }
                Self::mcu_blocks(f, info, mx, my, &mut blocks);
                if ss == 0 {
                    for &(si, off) in &blocks {
                        let blk = &mut f.comps[info.comps[si]].coefs[off..off + 64];
                        if info.ah == 0 {
                            let t = tables[si].as_ref().ok_or_else(missing)?;
                            let s = br.decode(t)? as u32;
                            let diff = br.receive_extend(s)?;
                            let dc = last_dc[si]
                                .checked_add(diff)
                                .ok_or(JpegError::BadMarker("DC coefficient overflow"))?;
                            last_dc[si] = dc;
                            blk[0] = dc.wrapping_shl(al) as i16;
                        } else if br.get_bit()? {
                            blk[0] |= p1 as i16;
                        }
                    }
                    continue;
                }
                let t = tables[0].as_ref().ok_or_else(missing)?;
                let (_, off) = blocks[0];
                let blk = &mut f.comps[info.comps[0]].coefs[off..off + 64];
                if info.ah == 0 {
                    // AC first
                    if eobrun > 0 {
                        eobrun -= 1;
                        continue;
                    }
                    let mut k = ss;
                    while k <= se {
                        let rs = br.decode(t)?;
                        let r = (rs >> 4) as u32;
                        let s = (rs & 15) as u32;
                        if s != 0 {
                            k += r as usize;
                            let v = br.receive_extend(s)?;
                            blk[NATURAL[k]] = v.wrapping_shl(al) as i16;
                        } else if r == 15 {
                            k += 15;
                        } else {
                            eobrun = 1 << r;
                            if r != 0 {
                                eobrun += br.get_bits(r)?;
                            }
                            eobrun -= 1;
                            break;
                        }
                        k += 1;
                    }
                } else {
                    // AC refinement
                    let mut k = ss;
                    let refine = |c: &mut i16, br: &mut BitReader| -> Result<(), JpegError> {
                        if br.get_bit()? && (*c as i32 & p1) == 0 {
                            *c = if *c >= 0 {
                                c.wrapping_add(p1 as i16)
                            } else {
                                c.wrapping_add(m1 as i16)
                            };
                        }
                        Ok(())
                    };
                    if eobrun == 0 {
                        while k <= se {
                            let rs = br.decode(t)?;
                            let mut r = (rs >> 4) as i32;
                            let s0 = (rs & 15) as u32;
                            let mut s = 0i32;
                            if s0 != 0 {
                                s = if br.get_bit()? { p1 } else { m1 };
                            } else if r != 15 {
                                eobrun = 1 << r;
                                if r != 0 {
                                    eobrun += br.get_bits(r as u32)?;
                                }
                                break;
                            }
                            loop {
                                let c = &mut blk[NATURAL[k]];
                                if *c != 0 {
                                    refine(c, &mut br)?;
                                } else {
                                    r -= 1;
                                    if r < 0 {
                                        break;
                                    }
                                }
                                k += 1;
                                if k > se {
                                    break;
                                }
                            }
                            if s != 0 {
                                blk[NATURAL[k]] = s as i16;
                            }
                            k += 1;
                        }
                    }
                    if eobrun > 0 {
                        while k <= se {
                            let c = &mut blk[NATURAL[k]];
                            if *c != 0 {
                                refine(c, &mut br)?;
                            }
                            k += 1;
                        }
                        eobrun -= 1;
                    }
                }
            }
        }
        self.finish_scan(&br);
        Ok(())
    }

    /// jdcoefct.c smoothing_ok: would libjpeg apply inter-block smoothing at output time?
    fn smoothing_would_apply(f: &Frame) -> bool {
        if !f.progressive {
            return false;
        }
        let mut useful = false;
        for c in &f.comps {
            let q = match &c.quant {
                Some(q) => q,
                None => return false,
            };
            for pos in [0usize, 1, 8, 16, 9, 2, 3, 10, 17, 24] {
                if q[pos] == 0 {
                    return false;
                }
            }
            if c.coef_bits[0] < 0 {
                return false;
            }
            if c.coef_bits[1..10].iter().any(|&b| b != 0) {
                useful = true;
            }
        }
        useful
    }

    fn output(&mut self) -> Result<(u32, u32, Vec<u8>), JpegError> {
        let f = self
            .frame
            .as_ref()
            .ok_or(JpegError::BadMarker("no frame"))?;
        let color = self.color.ok_or(JpegError::BadMarker("no scan"))?;
        let smoothing = Self::smoothing_would_apply(f);
        let multi = self.scans_done > 1;
        let (w, h) = (f.width, f.height);
        let mut planes: Vec<Vec<u8>> = Vec::with_capacity(f.comps.len());
        for c in &f.comps {
            let mut q = [0i16; 64];
            if let Some(qt) = &c.quant {
                for i in 0..64 {
                    q[i] = qt[i] as i16; // ISLOW_MULT_TYPE is `short`
                }
            }
            let pw = c.bw * 8;
            let mut plane = vec![0u8; pw * c.bh * 8];
            if smoothing {
                let mut bits = [0i32; 10];
                let mut prev_bits = [-1i32; 10];
                bits.copy_from_slice(&c.coef_bits[..10]);
                if multi {
                    prev_bits[1..].copy_from_slice(&c.prev_coef_bits[1..10]);
                }
                let sc = SmoothComp {
                    coefs: &c.coefs,
                    stride: c.stride,
                    bw: c.bw,
                    bh: c.bh,
                    v: c.v,
                    quant: c.quant.unwrap_or([0; 64]),
                    bits,
                    prev_bits,
                };
                smooth_component(&sc, f.mcus_y, self.last_good_imcu, |by, bx, ws| {
                    let o = by * 8 * pw + bx * 8;
                    idct_islow(ws, &q, &mut plane[o..], pw);
                });
            } else {
                for by in 0..c.bh {
                    for bx in 0..c.bw {
                        let off = (by * c.stride + bx) * 64;
                        let o = by * 8 * pw + bx * 8;
                        idct_islow(&c.coefs[off..off + 64], &q, &mut plane[o..], pw);
                    }
                }
            }
            let p = Plane {
                data: &plane,
                stride: pw,
                ds_w: c.ds_w,
                ds_h: c.ds_h,
                h: c.h,
                v: c.v,
            };
            planes.push(upsample(&p, f.max_h, f.max_v, w, h)?);
        }
        let mut out = vec![0u8; w * h * 3];
        match color {
            ColorSpace::Gray => {
                for (o, &g) in out.chunks_exact_mut(3).zip(planes[0].iter()) {
                    o.fill(g);
                }
            }
            ColorSpace::Rgb => {
                for (i, o) in out.chunks_exact_mut(3).enumerate() {
                    o.copy_from_slice(&[planes[0][i], planes[1][i], planes[2][i]]);
                }
            }
            ColorSpace::YCbCr => {
                let t = YccTables::new();
                for (i, o) in out.chunks_exact_mut(3).enumerate() {
                    o.copy_from_slice(&t.convert(planes[0][i], planes[1][i], planes[2][i]));
                }
            }
            ColorSpace::Cmyk | ColorSpace::Ycck => {
                let t = YccTables::new();
                for (i, o) in out.chunks_exact_mut(3).enumerate() {
                    let (a, b, c, k) = (planes[0][i], planes[1][i], planes[2][i], planes[3][i]);
                    // libjpeg output (JCS_CMYK); YCCK -> CMYK is ycc->rgb then inverted.
                    let cmyk = if color == ColorSpace::Ycck {
                        let rgb = t.convert(a, b, c);
                        [255 - rgb[0], 255 - rgb[1], 255 - rgb[2], k]
                    } else {
                        [a, b, c, k]
                    };
                    // Pillow reads it as "CMYK;I" (inverted), then converts to RGB.
                    o.copy_from_slice(&cmyk_to_rgb(
                        255 - cmyk[0],
                        255 - cmyk[1],
                        255 - cmyk[2],
                        255 - cmyk[3],
                    ));
                }
            }
        }
        Ok((w as u32, h as u32, out))
    }
}
