//! The `conv_v1_2` template (`accessory/data/conversation/lib.py`, docs/spec.md §5.1):
//! `system + "\n\n###"`, then ` Role: message\n###` per turn, and ` Assistant:`
//! left open for the model to answer.

pub const SYSTEM_PROMPT: &str = "A chat between a curious human and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the human's questions.";

/// What the model writes at the end of a turn (`response_end_signal`).
pub const END_OF_TURN: &str = "\n###";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Human,
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Human => "Human",
            Role::Assistant => "Assistant",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Conversation {
    pub system: String,
    pub turns: Vec<(Role, String)>,
}

impl Default for Conversation {
    fn default() -> Self {
        Self { system: SYSTEM_PROMPT.to_string(), turns: Vec::new() }
    }
}

impl Conversation {
    pub fn new() -> Self {
        Self::default()
    }

    /// A one-question conversation.
    pub fn single(question: &str) -> Self {
        let mut c = Self::new();
        c.push(Role::Human, question);
        c
    }

    pub fn push(&mut self, role: Role, message: &str) {
        self.turns.push((role, message.to_string()));
    }

    /// The prompt that produced the last answer (the conversation without its last turn).
    pub fn prompt_without_last_answer(&self) -> String {
        let mut c = self.clone();
        if c.turns.last().is_some_and(|(r, _)| *r == Role::Assistant) {
            c.turns.pop();
        }
        c.prompt()
    }

    /// The prompt text, ending with an open `### Assistant:` turn.
    pub fn prompt(&self) -> String {
        let mut p = format!("{}\n\n###", self.system);
        for (role, msg) in &self.turns {
            p.push_str(&format!(" {}: {msg}\n###", role.name()));
        }
        p.push_str(" Assistant:");
        p
    }
}
