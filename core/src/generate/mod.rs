//! Text generation (docs/spec.md §5): the conversation template, sampling, stop sequences
//! and the one async generation loop every target uses.

mod batch;
mod chat;
mod conversation;
mod generator;
mod sampler;
mod sequence;
mod stop;

pub use batch::Batch;
pub use chat::ChatSession;
pub use conversation::{Conversation, Role, SYSTEM_PROMPT};
pub use generator::{generate, Generation, GenerationOptions, StopReason};
pub use sampler::Sampler;
pub use sequence::{step, Sequence};
pub use stop::StopSequences;
