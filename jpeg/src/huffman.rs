//! Huffman tables (as jdhuff.c `jpeg_make_d_derived_tbl`) and the entropy bit reader
//! (as jdhuff.c `jpeg_fill_bit_buffer`, including its "zero bits after a marker" behaviour).

use crate::JpegError;

/// A DHT table as it appears in the file.
#[derive(Clone)]
pub struct RawHuff {
    /// bits[l] = number of codes of length l (bits[0] unused).
    pub bits: [u8; 17],
    pub vals: [u8; 256],
}

const LOOKAHEAD: u32 = 8;

/// Decoding table derived from a [`RawHuff`].
pub struct HuffTable {
    /// For 8-bit prefixes: (code length << 8) | symbol, or 0 if the code is longer than 8 bits.
    lookup: [u16; 1 << LOOKAHEAD],
    /// maxcode[l]: largest code of length l, or -1 if none. maxcode[17] is a sentinel.
    maxcode: [i32; 18],
    /// valoffset[l]: index into `vals` of the first code of length l, minus that code.
    valoffset: [i32; 17],
    vals: [u8; 256],
}

impl HuffTable {
    pub fn build(raw: &RawHuff, is_dc: bool) -> Result<HuffTable, JpegError> {
        let mut huffsize = [0u8; 257];
        let mut p = 0usize;
        for l in 1..=16usize {
            let n = raw.bits[l] as usize;
            if p + n > 256 {
                return Err(JpegError::BadHuffmanTable);
            }
            for _ in 0..n {
                huffsize[p] = l as u8;
                p += 1;
            }
        }
        huffsize[p] = 0;
        let numsymbols = p;

        // Generate the codes, rejecting over-subscribed tables (no all-ones code allowed).
        let mut huffcode = [0u32; 257];
        let mut code: u32 = 0;
        let mut si = huffsize[0] as u32;
        p = 0;
        while huffsize[p] != 0 {
            while huffsize[p] as u32 == si {
                huffcode[p] = code;
                p += 1;
                code += 1;
            }
            if code >= (1u32 << si) {
                return Err(JpegError::BadHuffmanTable);
            }
            code <<= 1;
            si += 1;
        }

        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 17];
        p = 0;
        for l in 1..=16usize {
            if raw.bits[l] != 0 {
                valoffset[l] = p as i32 - huffcode[p] as i32;
                p += raw.bits[l] as usize;
                maxcode[l] = huffcode[p - 1] as i32;
            } else {
                maxcode[l] = -1;
            }
        }
        maxcode[17] = 0x000F_FFFF;

        let mut lookup = [0u16; 1 << LOOKAHEAD];
        p = 0;
        for l in 1..=LOOKAHEAD as usize {
            for _ in 0..raw.bits[l] {
                let shift = LOOKAHEAD as usize - l;
                let base = (huffcode[p] as usize) << shift;
                for i in 0..(1usize << shift) {
                    lookup[base + i] = ((l as u16) << 8) | raw.vals[p] as u16;
                }
                p += 1;
            }
        }

        if is_dc {
            for &s in raw.vals.iter().take(numsymbols) {
                if s > 15 {
                    return Err(JpegError::BadHuffmanTable);
                }
            }
        }
        Ok(HuffTable {
            lookup,
            maxcode,
            valoffset,
            vals: raw.vals,
        })
    }
}

/// Entropy-coded-segment bit reader.
pub struct BitReader<'a> {
    data: &'a [u8],
    pub pos: usize,
    acc: u64,
    bits: u32,
    /// Number of the lowest bits of `acc` that are fake zero padding added after a marker.
    fake: u32,
    /// Marker code hit inside the entropy data (its 0xFF and code byte were consumed).
    pub marker: Option<u8>,
    /// libjpeg's `insufficient_data`: real data ran out before a marker; the rest of the
    /// restart interval is skipped (left zero / unchanged) exactly as libjpeg does.
    pub insufficient: bool,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            bits: 0,
            fake: 0,
            marker: None,
            insufficient: false,
        }
    }

    #[inline]
    fn fill(&mut self, need: u32) -> Result<(), JpegError> {
        while self.bits < need {
            let byte: u8;
            if self.marker.is_some() {
                byte = 0;
                self.fake += 8;
            } else {
                let b = *self.data.get(self.pos).ok_or(JpegError::Truncated)?;
                self.pos += 1;
                if b == 0xFF {
                    loop {
                        let c = *self.data.get(self.pos).ok_or(JpegError::Truncated)?;
                        self.pos += 1;
                        if c == 0xFF {
                            continue;
                        }
                        if c == 0 {
                            byte = 0xFF;
                        } else {
                            self.marker = Some(c);
                            byte = 0;
                            self.fake += 8;
                        }
                        break;
                    }
                } else {
                    byte = b;
                }
            }
            self.acc = (self.acc << 8) | byte as u64;
            self.bits += 8;
        }
        Ok(())
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.bits -= n;
        if self.bits < self.fake {
            // Consumed padding bits that libjpeg would have warned about (JWRN_HIT_MARKER).
            self.insufficient = true;
            self.fake = self.bits;
        }
    }

    #[inline]
    pub fn get_bits(&mut self, n: u32) -> Result<u32, JpegError> {
        if n == 0 {
            return Ok(0);
        }
        self.fill(n)?;
        let v = ((self.acc >> (self.bits - n)) & ((1u64 << n) - 1)) as u32;
        self.consume(n);
        Ok(v)
    }

    #[inline]
    pub fn get_bit(&mut self) -> Result<bool, JpegError> {
        Ok(self.get_bits(1)? != 0)
    }

    /// Decode one Huffman symbol.
    #[inline]
    pub fn decode(&mut self, t: &HuffTable) -> Result<u8, JpegError> {
        self.fill(16)?;
        let peek16 = ((self.acc >> (self.bits - 16)) & 0xFFFF) as u32;
        let e = t.lookup[(peek16 >> (16 - LOOKAHEAD)) as usize];
        if e != 0 {
            self.consume((e >> 8) as u32);
            return Ok(e as u8);
        }
        for l in (LOOKAHEAD + 1)..=16 {
            let code = (peek16 >> (16 - l)) as i32;
            if code <= t.maxcode[l as usize] {
                self.consume(l);
                let idx = (t.valoffset[l as usize] + code) as usize;
                return t.vals.get(idx).copied().ok_or(JpegError::BadHuffmanCode);
            }
        }
        Err(JpegError::BadHuffmanCode)
    }

    /// Receive `s` bits and sign-extend as HUFF_EXTEND.
    #[inline]
    pub fn receive_extend(&mut self, s: u32) -> Result<i32, JpegError> {
        if s == 0 {
            return Ok(0);
        }
        let r = self.get_bits(s)? as i32;
        Ok(extend(r, s))
    }

    /// Drop buffered bits (at a restart or scan end).
    pub fn reset_bits(&mut self) {
        self.acc = 0;
        self.bits = 0;
        self.fake = 0;
    }
}

#[inline]
pub fn extend(r: i32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if r < (1 << (s - 1)) {
        r + ((-1i32) << s) + 1
    } else {
        r
    }
}

/// Standard Huffman tables (JPEG Annex K.3), which libjpeg-turbo installs in slots 0 and 1 when
/// a file (e.g. Motion-JPEG) does not define them.
pub fn std_table(is_dc: bool, slot: usize) -> RawHuff {
    const DC_LUM_BITS: [u8; 17] = [0, 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_CHR_BITS: [u8; 17] = [0, 0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const AC_LUM_BITS: [u8; 17] = [0, 0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
    const AC_LUM_VALS: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    const AC_CHR_BITS: [u8; 17] = [0, 0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_CHR_VALS: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    let (bits, vals): (&[u8; 17], &[u8]) = match (is_dc, slot) {
        (true, 0) => (&DC_LUM_BITS, &DC_VALS),
        (true, _) => (&DC_CHR_BITS, &DC_VALS),
        (false, 0) => (&AC_LUM_BITS, &AC_LUM_VALS),
        (false, _) => (&AC_CHR_BITS, &AC_CHR_VALS),
    };
    let mut v = [0u8; 256];
    v[..vals.len()].copy_from_slice(vals);
    RawHuff {
        bits: *bits,
        vals: v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_tables_build() {
        for dc in [true, false] {
            for slot in 0..2 {
                HuffTable::build(&std_table(dc, slot), dc).unwrap();
            }
        }
    }

    #[test]
    fn oversubscribed_table_rejected() {
        let mut raw = RawHuff {
            bits: [0; 17],
            vals: [0; 256],
        };
        raw.bits[1] = 2; // codes "0" and "1": the all-ones code is not allowed
        assert!(HuffTable::build(&raw, false).is_err());
        raw.bits[1] = 3;
        assert!(HuffTable::build(&raw, false).is_err());
    }

    #[test]
    fn extend_matches_spec() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0, 3), -7);
        assert_eq!(extend(3, 3), -4);
        assert_eq!(extend(4, 3), 4);
    }
}
