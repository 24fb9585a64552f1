//! Builders of *valid* untrusted-input files — pickles, `torch.save` zips, safetensors,
//! web manifests, PNG and JPEG headers — and structure-aware mutators over them, for
//! the regression tests of crafted files and the bounded fuzzing in CI
//! (`tests/tests/untrusted_files.rs`, `tests/tests/fuzz_loaders.rs`).

/// A small deterministic generator (xorshift64*), so every fuzz run is reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// A size or offset, biased to the values that break arithmetic.
    pub fn boundary(&mut self) -> u64 {
        const B: [u64; 14] = [0, 1, 2, 3, 7, 8, 255, 65535, 1 << 31, (1 << 32) - 1, 1 << 40, (1 << 63) - 1, u64::MAX - 1, u64::MAX];
        if self.chance(0.7) { *self.pick(&B) } else { self.next() >> self.below(64) }
    }
}

/// CRC-32 (IEEE), as zip entries and PNG chunks carry it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

// ---------------------------------------------------------------- pickle

/// One pickle opcode with its argument, so mutations can change arguments and order.
#[derive(Debug, Clone)]
pub enum Op {
    /// A bare opcode byte (MARK, TUPLE, REDUCE, SETITEMS, ...).
    Code(u8),
    Int(i64),
    Str(String),
    Global(String, String),
    /// BINPUT / BINGET with a memo index.
    Put(u8),
    Get(u8),
}

pub const MARK: u8 = b'(';

fn push_int(out: &mut Vec<u8>, v: i64) {
    if let Ok(v) = i32::try_from(v) {
        out.push(b'J');
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.extend_from_slice(&[0x8a, 8]);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Serialises ops as a protocol-2 pickle (PROTO header and STOP added).
pub fn pickle_bytes(ops: &[Op]) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    for op in ops {
        match op {
            Op::Code(c) => out.push(*c),
            Op::Int(v) => push_int(&mut out, *v),
            Op::Str(s) => {
                out.push(b'X');
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Op::Global(m, n) => out.extend_from_slice(format!("c{m}\n{n}\n").as_bytes()),
            Op::Put(i) => out.extend_from_slice(&[b'q', *i]),
            Op::Get(i) => out.extend_from_slice(&[b'h', *i]),
        }
    }
    out.push(b'.');
    out
}

/// A tensor entry of a state dict: a view of storage `key`.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub storage_type: String,
    pub key: String,
    pub offset: i64,
    pub shape: Vec<i64>,
    pub stride: Vec<i64>,
}

impl TensorSpec {
    /// A contiguous f32 tensor over its own storage.
    pub fn f32(name: &str, key: &str, shape: &[i64]) -> Self {
        let mut stride = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1].saturating_mul(shape[i + 1]);
        }
        Self { name: name.into(), storage_type: "FloatStorage".into(), key: key.into(), offset: 0, shape: shape.to_vec(), stride }
    }
}

fn tuple_of(ints: &[i64]) -> Vec<Op> {
    let mut ops = vec![Op::Code(MARK)];
    ops.extend(ints.iter().map(|&v| Op::Int(v)));
    ops.push(Op::Code(b't'));
    ops
}

/// The ops `torch.save({"model": {name: tensor}})` writes (in substance).
pub fn state_dict_ops(tensors: &[TensorSpec]) -> Vec<Op> {
    let mut ops = vec![Op::Code(b'}'), Op::Str("model".into()), Op::Global("collections".into(), "OrderedDict".into()), Op::Code(b')'), Op::Code(b'R'), Op::Code(MARK)];
    for t in tensors {
        ops.push(Op::Str(t.name.clone()));
        ops.push(Op::Global("torch._utils".into(), "_rebuild_tensor_v2".into()));
        ops.push(Op::Code(MARK));
        ops.extend([Op::Code(MARK), Op::Str("storage".into()), Op::Global("torch".into(), t.storage_type.clone()), Op::Str(t.key.clone()), Op::Str("cpu".into())]);
        ops.push(Op::Int(t.shape.iter().fold(1i64, |n, &d| n.saturating_mul(d)).max(0)));
        ops.extend([Op::Code(b't'), Op::Code(b'Q'), Op::Int(t.offset)]);
        ops.extend(tuple_of(&t.shape));
        ops.extend(tuple_of(&t.stride));
        ops.extend([Op::Code(0x89), Op::Global("collections".into(), "OrderedDict".into()), Op::Code(b')'), Op::Code(b'R'), Op::Code(b't'), Op::Code(b'R')]);
    }
    ops.extend([Op::Code(b'u'), Op::Code(b's')]);
    ops
}

/// Changes one op: an argument set to a boundary value, an op dropped, repeated or
/// moved, or a stack/memo opcode inserted.
pub fn mutate_ops(rng: &mut Rng, ops: &mut Vec<Op>) {
    if ops.is_empty() {
        ops.push(Op::Code(MARK));
    }
    let i = rng.below(ops.len());
    match rng.below(7) {
        0 => {
            if let Some(j) = (0..ops.len()).map(|k| (i + k) % ops.len()).find(|&k| matches!(ops[k], Op::Int(_))) {
                ops[j] = Op::Int(rng.boundary() as i64);
            }
        }
        1 => {
            ops.remove(i);
        }
        2 => {
            let op = ops[i].clone();
            ops.insert(i, op);
        }
        3 => {
            let code = *rng.pick(&[b'(', b')', b']', b'}', b'0', b'1', b'2', b't', b'l', b'd', b'a', b'e', b's', b'u', b'R', b'Q', b'b', b'N', 0x85, 0x86, 0x87]);
            ops.insert(i, Op::Code(code));
        }
        4 => ops.insert(i, if rng.chance(0.5) { Op::Put(rng.below(4) as u8) } else { Op::Get(rng.below(4) as u8) }),
        5 => {
            if let Some(j) = (0..ops.len()).map(|k| (i + k) % ops.len()).find(|&k| matches!(ops[k], Op::Str(_) | Op::Global(..))) {
                let s = rng.pick(&["", "../x", "FloatStorage", "HalfStorage", "0", "model", "\u{fffd}"]).to_string();
                ops[j] = match &ops[j] {
                    Op::Global(m, _) => Op::Global(m.clone(), s),
                    _ => Op::Str(s),
                };
            }
        }
        _ => {
            let j = rng.below(ops.len());
            ops.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------- zip

/// One entry of a stored (uncompressed) zip.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    pub name: String,
    pub data: Vec<u8>,
    /// A size to declare instead of the real one (zip64 when it needs 64 bits).
    pub declared_size: Option<u64>,
}

impl ZipEntry {
    pub fn new(name: &str, data: Vec<u8>) -> Self {
        Self { name: name.into(), data, declared_size: None }
    }
}

/// A zip archive of stored entries, with central directory and end record.
pub fn zip_bytes(entries: &[ZipEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let crc = crc32(&e.data);
        let size = e.declared_size.unwrap_or(e.data.len() as u64);
        let zip64 = size >= u32::MAX as u64;
        let size32 = if zip64 { u32::MAX } else { size as u32 };
        let extra: Vec<u8> = if zip64 {
            let mut x = vec![1, 0, 16, 0];
            x.extend_from_slice(&size.to_le_bytes());
            x.extend_from_slice(&size.to_le_bytes());
            x
        } else {
            Vec::new()
        };
        let header = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend_from_slice(&45u16.to_le_bytes()); // version made by
            }
            for v in [45u16, 0, 0, 0, 0x21] {
                h.extend_from_slice(&v.to_le_bytes()); // needed, flags, method (stored), time, date
            }
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            if central {
                h.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
                h.extend_from_slice(&[0; 4]); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(e.name.as_bytes());
            h.extend_from_slice(&extra);
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(&e.data);
        central.extend(header(0x0201_4b50, true));
    }
    let (cd_offset, cd_size, n) = (out.len() as u32, central.len() as u32, entries.len() as u16);
    out.extend(central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, n, n] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A `torch.save` archive: `archive/data.pkl` and one storage entry per key.
pub fn pth_bytes(pickle: Vec<u8>, storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut entries = vec![ZipEntry::new("archive/data.pkl", pickle)];
    entries.extend(storages.iter().map(|(k, d)| ZipEntry::new(&format!("archive/data/{k}"), d.clone())));
    zip_bytes(&entries)
}

// ---------------------------------------------------------------- safetensors

/// A safetensors file from a raw JSON header (padded to 8 bytes) and data.
pub fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(data);
    out
}

// ---------------------------------------------------------------- images

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

/// A PNG whose IHDR declares `width`×`height` (8-bit RGB), with an empty image stream.
pub fn png_header(width: u32, height: u32, bit_depth: u8, color: u8) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// A baseline JPEG header (SOI, a quantisation table, SOF0 for `width`×`height`,
/// `components` components, SOS, EOI): enough for a decoder to read its size.
pub fn jpeg_header(width: u16, height: u16, components: u8) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00];
    out.extend_from_slice(&[1u8; 64]);
    out.extend_from_slice(&[0xFF, 0xC0]);
    out.extend_from_slice(&(8 + 3 * components as u16).to_be_bytes());
    out.push(8);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.push(components);
    for c in 0..components {
        out.extend_from_slice(&[c + 1, 0x11, 0]);
    }
    out.extend_from_slice(&[0xFF, 0xDA]);
    out.extend_from_slice(&(6 + 2 * components as u16).to_be_bytes());
    out.push(components);
    for c in 0..components {
        out.extend_from_slice(&[c + 1, 0x00]);
    }
    out.extend_from_slice(&[0, 63, 0, 0xFF, 0xD9]);
    out
}
