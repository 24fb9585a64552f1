//! SentencePiece's `ModelProto` (`sentencepiece_model.proto`), read with `prost`: the
//! message types below declare just the fields the tokenizer needs, with their proto
//! tags, and `prost` does the wire-format decoding (length checks, nesting limit,
//! UTF-8 validation, unknown fields skipped). Proto2 defaults are applied here.

use prost::Message;

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

#[derive(Clone, PartialEq, Message)]
struct ModelMessage {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<PieceMessage>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct PieceMessage {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    eos_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    escape_whitespaces: Option<bool>,
}

impl ModelProto {
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let m = ModelMessage::decode(bytes).map_err(|e| TokenizerError::Corrupt(e.to_string()))?;
        let pieces = m
            .pieces
            .into_iter()
            .map(|p| {
                let kind = match p.kind.unwrap_or(1) {
                    1 => PieceKind::Normal,
                    2 => PieceKind::Unknown,
                    3 => PieceKind::Control,
                    4 => PieceKind::UserDefined,
                    5 => PieceKind::Unused,
                    6 => PieceKind::Byte,
                    t => return Err(TokenizerError::Corrupt(format!("unknown piece type {t}"))),
                };
                Ok(Piece { text: p.piece.unwrap_or_default(), score: p.score.unwrap_or(0.0), kind })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if pieces.is_empty() {
            return Err(TokenizerError::Corrupt("no vocabulary pieces".into()));
        }
        let t = m.trainer_spec.unwrap_or_default();
        let n = m.normalizer_spec.unwrap_or_default();
        Ok(ModelProto {
            pieces,
            model_type: t.model_type.unwrap_or(1).into(),
            byte_fallback: t.byte_fallback.unwrap_or(false),
            unk_id: t.unk_id.unwrap_or(0).into(),
            bos_id: t.bos_id.unwrap_or(1).into(),
            eos_id: t.eos_id.unwrap_or(2).into(),
            normalizer_name: n.name.unwrap_or_default(),
            add_dummy_prefix: n.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: n.remove_extra_whitespaces.unwrap_or(true),
            escape_whitespaces: n.escape_whitespaces.unwrap_or(true),
        })
    }
}
