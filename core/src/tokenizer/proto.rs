//! A minimal reader for SentencePiece's `ModelProto` (sentencepiece_model.proto),
//! just the fields the tokenizer needs. Protobuf wire format: each field is a
//! varint key `(field_number << 3) | wire_type` followed by its value.

use crate::error::TokenizerError;

/// The type of one vocabulary piece (`SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

#[derive(Debug, Clone)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// What the tokenizer needs from a `tokenizer.model`.
#[derive(Debug, Clone)]
pub struct ModelProto {
    pub pieces: Vec<Piece>,
    /// `TrainerSpec.model_type`: 1 = unigram, 2 = BPE.
    pub model_type: i64,
    pub byte_fallback: bool,
    pub unk_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    pub normalizer_name: String,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn bad(&self, what: &str) -> TokenizerError {
        TokenizerError::Corrupt(format!("{what} at byte {}", self.pos))
    }

    fn varint(&mut self) -> Result<u64, TokenizerError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.bad("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenizerError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.bad("field runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, TokenizerError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| self.bad("length"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(self.bad(&format!("unsupported wire type {w}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn utf8(b: &[u8]) -> Result<String, TokenizerError> {
    String::from_utf8(b.to_vec()).map_err(|_| TokenizerError::Corrupt("piece is not UTF-8".into()))
}

fn piece(buf: &[u8]) -> Result<Piece, TokenizerError> {
    let mut p = Piece { text: String::new(), score: 0.0, kind: PieceKind::Normal };
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.field()? {
        match (f, v) {
            (1, Value::Bytes(b)) => p.text = utf8(b)?,
            (2, Value::Fixed32(bits)) => p.score = f32::from_bits(bits),
            (3, Value::Varint(t)) => {
                p.kind = match t {
                    1 => PieceKind::Normal,
                    2 => PieceKind::Unknown,
                    3 => PieceKind::Control,
                    4 => PieceKind::UserDefined,
                    5 => PieceKind::Unused,
                    6 => PieceKind::Byte,
                    _ => return Err(TokenizerError::Corrupt(format!("unknown piece type {t}"))),
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

impl ModelProto {
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let mut m = ModelProto {
            pieces: Vec::new(),
            model_type: 1,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            normalizer_name: String::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut r = Reader::new(bytes);
        while let Some((f, v)) = r.field()? {
            match (f, v) {
                (1, Value::Bytes(b)) => m.pieces.push(piece(b)?),
                (2, Value::Bytes(b)) => m.trainer_spec(b)?,
                (3, Value::Bytes(b)) => m.normalizer_spec(b)?,
                _ => {}
            }
        }
        if m.pieces.is_empty() {
            return Err(TokenizerError::Corrupt("no vocabulary pieces".into()));
        }
        Ok(m)
    }

    fn trainer_spec(&mut self, buf: &[u8]) -> Result<(), TokenizerError> {
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.field()? {
            if let Value::Varint(x) = v {
                // int32 fields are sign-extended to 64 bits on the wire.
                let signed = x as i64;
                match f {
                    3 => self.model_type = signed,
                    35 => self.byte_fallback = x != 0,
                    40 => self.unk_id = signed,
                    41 => self.bos_id = signed,
                    42 => self.eos_id = signed,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn normalizer_spec(&mut self, buf: &[u8]) -> Result<(), TokenizerError> {
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.field()? {
            match (f, v) {
                (1, Value::Bytes(b)) => self.normalizer_name = utf8(b)?,
                (3, Value::Varint(x)) => self.add_dummy_prefix = x != 0,
                (4, Value::Varint(x)) => self.remove_extra_whitespaces = x != 0,
                (5, Value::Varint(x)) => self.escape_whitespaces = x != 0,
                _ => {}
            }
        }
        Ok(())
    }
}
