//! Text generation (docs/spec.md §5): the conversation template, sampling, stop sequences
//! and the one async generation loop every target uses.

mod chat;
mod conversation;
mod generator;
mod sampler;
mod stop;

pub use chat::ChatSession;
pub use conversation::{Conversation, Role, SYSTEM_PROMPT};
pub use generator::{generate, Generation, GenerationOptions, StopReason};
pub use sampler::Sampler;
pub use stop::StopSequences;
