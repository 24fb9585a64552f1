//! The LLaMA SentencePiece tokenizer, read straight from `tokenizer.model` (docs/spec.md §5.2),
//! in pure Rust so it runs unchanged in the browser.
//!
//! Encoding reproduces SentencePiece's BPE (`bpe_model.cc`): normalise (escape spaces
//! as `▁`, add the dummy prefix), start from single characters, repeatedly merge the
//! adjacent pair whose concatenation is a piece with the highest score (leftmost on
//! ties), and fall back to `<0xNN>` byte pieces for anything not in the vocabulary.

mod proto;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::error::TokenizerError;
pub use proto::{ModelProto, PieceKind};

const SPACE: char = '▁';

#[derive(Debug, Clone)]
pub struct Tokenizer {
    proto: ModelProto,
    /// Pieces BPE may produce (normal, user-defined, unused), by text.
    pieces: HashMap<String, u32>,
    /// `<0xNN>` byte pieces, by byte value.
    bytes: [Option<u32>; 256],
}

impl Tokenizer {
    /// Parses a SentencePiece `tokenizer.model`.
    pub fn from_model_bytes(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let proto = ModelProto::parse(bytes)?;
        if proto.model_type != 2 {
            return Err(TokenizerError::Unsupported(format!(
                "model type {} (only BPE, type 2, is supported)",
                proto.model_type
            )));
        }
        let n = proto.pieces.len() as i64;
        for (name, id) in [("unk_id", proto.unk_id), ("bos_id", proto.bos_id), ("eos_id", proto.eos_id)] {
            if !(0..n).contains(&id) {
                return Err(TokenizerError::Corrupt(format!("{name} {id} is outside the vocabulary of {n} pieces")));
            }
        }
        if !(proto.normalizer_name.is_empty() || proto.normalizer_name == "identity") {
            return Err(TokenizerError::Unsupported(format!("normalizer '{}'", proto.normalizer_name)));
        }
        let mut pieces = HashMap::new();
        let mut bytes = [None; 256];
        for (id, p) in proto.pieces.iter().enumerate() {
            let id = id as u32;
            match p.kind {
                PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused => {
                    pieces.insert(p.text.clone(), id);
                }
                PieceKind::Byte => {
                    let hex = p.text.strip_prefix("<0x").and_then(|s| s.strip_suffix('>'));
                    let b = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                    let b = b.ok_or_else(|| TokenizerError::Corrupt(format!("bad byte piece {}", p.text)))?;
                    bytes[b as usize] = Some(id);
                }
                PieceKind::Unknown | PieceKind::Control => {}
            }
        }
        Ok(Self { proto, pieces, bytes })
    }

    pub fn vocab_size(&self) -> usize {
        self.proto.pieces.len()
    }
    pub fn bos_id(&self) -> u32 {
        self.proto.bos_id as u32
    }
    pub fn eos_id(&self) -> u32 {
        self.proto.eos_id as u32
    }
    pub fn unk_id(&self) -> u32 {
        self.proto.unk_id as u32
    }

    /// The text of one piece, as stored (`▁` for spaces).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.proto.pieces.get(id as usize).map(|p| p.text.as_str())
    }

    /// `sp.encode(text)` plus optional BOS / EOS (`tokenizer.py` `encode(s, bos, eos)`).
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if bos {
            ids.push(self.bos_id());
        }
        let normalized = self.normalize(text);
        if !normalized.is_empty() {
            self.bpe(&normalized, &mut ids);
        }
        if eos {
            ids.push(self.eos_id());
        }
        ids
    }

    /// SentencePiece's identity normaliser: optional whitespace squeezing, the dummy
    /// prefix, and spaces escaped as `▁`.
    fn normalize(&self, text: &str) -> String {
        let squeezed;
        let text = if self.proto.remove_extra_whitespaces {
            squeezed = text.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
            squeezed.as_str()
        } else {
            text
        };
        if text.is_empty() {
            return String::new();
        }
        let mut out = String::with_capacity(text.len() + 3);
        if self.proto.add_dummy_prefix {
            out.push(if self.proto.escape_whitespaces { SPACE } else { ' ' });
        }
        if self.proto.escape_whitespaces {
            out.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
        } else {
            out.push_str(text);
        }
        out
    }

    fn bpe(&self, text: &str, ids: &mut Vec<u32>) {
        // Symbols as byte ranges of `text`, linked as a list; `len == 0` marks a merged-away one.
        let mut start: Vec<usize> = Vec::new();
        let mut len: Vec<usize> = Vec::new();
        for (i, c) in text.char_indices() {
            start.push(i);
            len.push(c.len_utf8());
        }
        let n = start.len();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n).then_some(i + 1)).collect();

        let mut agenda = BinaryHeap::new();
        let push = |agenda: &mut BinaryHeap<Candidate>, l: usize, r: usize, start: &[usize], len: &[usize]| {
            let s = &text[start[l]..start[r] + len[r]];
            if let Some(&id) = self.pieces.get(s) {
                let score = self.proto.pieces[id as usize].score;
                agenda.push(Candidate { score, left: l, right: r, size: s.len() });
            }
        };
        for i in 1..n {
            push(&mut agenda, i - 1, i, &start, &len);
        }
        while let Some(c) = agenda.pop() {
            // Stale candidate: one side was merged away or has grown since.
            if len[c.left] == 0 || len[c.right] == 0 || len[c.left] + len[c.right] != c.size {
                continue;
            }
            if next[c.left] != Some(c.right) {
                continue;
            }
            len[c.left] += len[c.right];
            len[c.right] = 0;
            next[c.left] = next[c.right];
            if let Some(nn) = next[c.right] {
                prev[nn] = Some(c.left);
            }
            if let Some(p) = prev[c.left] {
                push(&mut agenda, p, c.left, &start, &len);
            }
            if let Some(nn) = next[c.left] {
                push(&mut agenda, c.left, nn, &start, &len);
            }
        }
        let mut cur = Some(0);
        while let Some(i) = cur {
            let s = &text[start[i]..start[i] + len[i]];
            match self.pieces.get(s) {
                Some(&id) => ids.push(id),
                None if self.proto.byte_fallback => {
                    for b in s.bytes() {
                        ids.push(self.bytes[b as usize].unwrap_or(self.unk_id()));
                    }
                }
                None => ids.push(self.unk_id()),
            }
            cur = next[i];
        }
    }

    /// `sp.decode(ids)`: pieces joined, `▁` → space, byte pieces gathered into UTF-8,
    /// control pieces dropped, and the dummy-prefix space of the first piece removed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out: Vec<u8> = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut first = true;
        for &id in ids {
            let Some(p) = self.proto.pieces.get(id as usize) else { continue };
            match p.kind {
                PieceKind::Control => continue,
                PieceKind::Byte => {
                    if let Some(b) = p.text.strip_prefix("<0x").and_then(|s| s.strip_suffix('>')) {
                        pending.push(u8::from_str_radix(b, 16).unwrap_or(b'?'));
                    }
                    first = false;
                    continue;
                }
                _ => {}
            }
            flush_bytes(&mut pending, &mut out);
            let text = if p.kind == PieceKind::Unknown { " \u{2047} " } else { p.text.as_str() };
            let mut s = text.replace(SPACE, " ");
            if first && self.proto.add_dummy_prefix && s.starts_with(' ') {
                s.remove(0);
            }
            first = false;
            out.extend_from_slice(s.as_bytes());
        }
        flush_bytes(&mut pending, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Byte pieces become UTF-8 text; invalid sequences become U+FFFD.
fn flush_bytes(pending: &mut Vec<u8>, out: &mut Vec<u8>) {
    if !pending.is_empty() {
        out.extend_from_slice(String::from_utf8_lossy(pending).as_bytes());
        pending.clear();
    }
}

/// A possible merge of two adjacent symbols. The heap pops the highest score,
/// and among equal scores the leftmost pair, as SentencePiece does.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}

/// Turns a growing list of generated ids into text deltas for streaming. Text that
/// ends in an incomplete UTF-8 sequence is held back until the rest arrives.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the window decoded for each new id, and the end of what was emitted
    /// from it: each step decodes only `ids[prefix..]`, so streaming an answer is linear
    /// in its length, not quadratic. Both texts of a step start at the same id, so the
    /// leading-space rule of the window's first piece cancels out.
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the new text it completes (possibly empty, while a UTF-8
    /// character split over byte pieces is incomplete).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read]);
        let now = tokenizer.decode(&self.ids[self.prefix..]);
        if now.len() <= before.len() || now.ends_with('\u{fffd}') {
            return String::new();
        }
        let Some(delta) = now.get(before.len()..) else { return String::new() };
        self.prefix = self.read;
        self.read = self.ids.len();
        delta.to_string()
    }

    /// The whole text decoded so far.
    pub fn text(&self, tokenizer: &Tokenizer) -> String {
        tokenizer.decode(&self.ids)
    }
}
