//! `sphinx chat`: a multi-turn conversation in the terminal. Answers stream as they are
//! generated; the image (if any) is encoded once and stays in the KV cache between turns.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sphinx_core::generate::ChatSession;
use sphinx_core::preprocess::DecodeOptions;
use sphinx_core::tasks::parse_answer;

use sphinx_native::load::{encode_image_file, load_model, ModelArgs};

use crate::SamplingArgs;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image to talk about (kept for the whole conversation).
    #[arg(long, short)]
    image: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run_chat(a: ChatArgs) -> Result<()> {
    let model = load_model(&a.model, a.sampling.device)?;
    let image = match &a.image {
        Some(path) => Some(encode_image_file(&model, path, &DecodeOptions::default(), &a.model)?),
        None => None,
    };
    let opts = a.sampling.options();
    let mut session = ChatSession::new(&model.llm, image.as_ref().map(|i| i.tokens.clone()));
    eprintln!("Type a message and press Enter. /reset starts over, /quit (or Ctrl-D) leaves.");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                session = ChatSession::new(&model.llm, image.as_ref().map(|i| i.tokens.clone()));
                eprintln!("(new conversation)");
                continue;
            }
            _ => {}
        }
        let mut on_text = |t: &str| {
            let _ = stdout.write_all(t.as_bytes());
            let _ = stdout.flush();
        };
        match pollster::block_on(session.ask(&model.llm, &model.tokenizer, line, &opts, &mut on_text)) {
            Ok(g) => {
                println!();
                let answer = parse_answer(&g.text, image.as_ref().map(|i| i.geometry));
                for e in answer.entities.iter().filter(|e| !e.boxes.is_empty() || !e.points.is_empty()) {
                    let boxes: Vec<_> = e.boxes.iter().filter_map(|b| b.pixels).map(|p| format!("{:.0},{:.0},{:.0},{:.0}", p[0], p[1], p[2], p[3])).collect();
                    let points: Vec<_> = e.points.iter().filter_map(|p| p.pixels).map(|p| format!("{:.0},{:.0}", p[0], p[1])).collect();
                    eprintln!("  [{}] {} boxes px: {} points px: {}", e.color, e.label.as_deref().unwrap_or("-"), boxes.join(" "), points.join(" "));
                }
                eprintln!("[{} tokens at {:.1} tok/s; {} positions in the cache]", g.tokens.len(), g.tokens_per_sec(), session.cached_positions());
            }
            // The conversation survives a failed turn (e.g. the context is full): say so and go on.
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}
