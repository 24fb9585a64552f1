//! Multi-turn chat about an image: the image is encoded once, later turns feed only
//! the new tokens, and the answers equal a from-scratch run over the whole conversation.

use burn::tensor::Device;
use sphinx_core::generate::{generate, ChatSession, GenerationOptions, Role};
use sphinx_core::preprocess::DecodeOptions;
use sphinx_tests::{fixtures, load_model, Reference};

#[test]
fn follow_up_turns_reuse_the_image_and_the_cache() {
    let reference = Reference::load("tiny-sphinx-1k");
    let model = load_model("tiny-sphinx-1k", &Device::flex());
    let image = std::fs::read(fixtures().join(reference.meta["image"].as_str().unwrap())).unwrap();
    let (_, views) = model.preprocess(&image, &DecodeOptions::default()).unwrap();
    let block = model.encode_image(&views).unwrap();
    let n_image = block.dims()[1];
    let opts = GenerationOptions { max_gen_len: 8, temperature: 0.0, ..Default::default() };
    let (llm, tok) = (&model.llm, &model.tokenizer);

    let mut chat = ChatSession::new(llm, Some(block.clone()));
    let first = pollster::block_on(chat.ask(llm, tok, "What's in the image?", &opts, &mut |_| {})).unwrap();
    // Same prompt and image as the reference: the same greedy answer, all 8 tokens of it
    // (an empty or shortened answer fails).
    let want = reference.ids("greedy_tokens");
    assert!(want.len() >= opts.max_gen_len, "the reference has {} greedy tokens", want.len());
    assert_eq!(first.tokens, want[..opts.max_gen_len]);
    assert_eq!(first.text, tok.decode(&first.tokens));
    let after_first = chat.cached_positions();

    let second = pollster::block_on(chat.ask(llm, tok, "What color is it?", &opts, &mut |_| {})).unwrap();
    // Neither BOS, the image nor the first prompt was fed again: at most the re-rendered
    // first answer (random weights write text that may re-tokenise differently) and the new turn.
    let first_prompt = tok.encode(&sphinx_core::generate::Conversation::single("What's in the image?").prompt(), true, false);
    let second_prompt = tok.encode(&chat.conversation().prompt_without_last_answer(), true, false);
    assert!(
        second.prompt_tokens <= second_prompt.len() - first_prompt.len(),
        "second turn fed {} of {} prompt tokens",
        second.prompt_tokens,
        second_prompt.len()
    );
    assert!(chat.cached_positions() > after_first);

    // From scratch: the whole two-turn conversation with the image gives the same answer.
    let mut conv = sphinx_core::generate::Conversation::new();
    conv.push(Role::Human, "What's in the image?");
    conv.push(Role::Assistant, &first.text);
    conv.push(Role::Human, "What color is it?");
    let ids = tok.encode(&conv.prompt(), true, false);
    let mut cache = llm.new_cache();
    let fresh = pollster::block_on(generate(llm, tok, &mut cache, &ids, Some(block), &opts, &mut |_| {})).unwrap();
    assert!(!second.tokens.is_empty());
    assert_eq!(second.tokens, fresh.tokens);
    assert_eq!(second.text, fresh.text);
    assert_eq!(chat.conversation().turns.len(), 4);
    assert!(n_image == 1455);
}
