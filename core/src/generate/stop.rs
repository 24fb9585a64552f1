//! Stop sequences matched on token ids (docs/spec.md §5.3, `MetaModel.generate`): EOS, and
//! for each stop string both `encode(s.lstrip(' '))` and its encoding without the
//! dummy-prefix space (`encode_wo_prefix_space`: encode `"@" + s`, drop the `"@"`).

use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone)]
pub struct StopSequences {
    seqs: Vec<Vec<u32>>,
}

/// Prefixes `encode_wo_prefix_space` tries, in order.
const PREFIXES: [&str; 6] = ["@", "\n", "\\", "=", ">", "`"];

impl StopSequences {
    pub fn new(tokenizer: &Tokenizer, strings: &[&str]) -> Self {
        let mut seqs = vec![vec![tokenizer.eos_id()]];
        for s in strings {
            seqs.push(tokenizer.encode(s.trim_start_matches(' '), false, false));
            for p in PREFIXES {
                let head = tokenizer.encode(p, false, false);
                let whole = tokenizer.encode(&format!("{p}{s}"), false, false);
                if whole.len() > head.len() && whole.starts_with(&head) {
                    seqs.push(whole[head.len()..].to_vec());
                    break;
                }
            }
        }
        seqs.retain(|s| !s.is_empty());
        seqs.dedup();
        Self { seqs }
    }

    pub fn sequences(&self) -> &[Vec<u32>] {
        &self.seqs
    }

    /// Length of the stop sequence `tokens` ends with, if any.
    pub fn matched(&self, tokens: &[u32]) -> Option<usize> {
        self.seqs.iter().filter(|s| tokens.ends_with(s)).map(|s| s.len()).max()
    }

    /// How many trailing tokens could still turn out to start a stop sequence
    /// (they are held back from streaming until that is decided).
    pub fn pending(&self, tokens: &[u32]) -> usize {
        let mut best = 0;
        for s in &self.seqs {
            for k in (1..s.len()).rev() {
                if k > best && tokens.ends_with(&s[..k]) {
                    best = k;
                }
            }
        }
        best
    }
}
