//! The SentencePiece tokenizer against ids written by the `sentencepiece` Python
//! package for the LLaMA-2 `tokenizer.model` (fixtures/reference/tokenizer_cases.json).

use sphinx_core::generate::{Conversation, StopSequences};
use sphinx_core::tokenizer::Tokenizer;
use sphinx_tests::fixtures;

fn tokenizer() -> Tokenizer {
    let bytes = std::fs::read(fixtures().join("tokenizer/llama2-tokenizer.model")).unwrap();
    Tokenizer::from_model_bytes(&bytes).unwrap()
}

fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("reference/tokenizer_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn special_ids_and_size() {
    let t = tokenizer();
    let c = cases();
    assert_eq!(t.vocab_size() as u64, c["n_words"].as_u64().unwrap());
    assert_eq!((t.bos_id(), t.eos_id(), t.unk_id()), (1, 2, 0));
}

#[test]
fn ids_equal_sentencepiece_and_decode_round_trips() {
    let t = tokenizer();
    let c = cases();
    let cases = c["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(t.encode(text, false, false), want, "ids of {text:?}");
        assert_eq!(t.decode(&want), case["decoded"].as_str().unwrap(), "decode of {text:?}");
    }
}

#[test]
fn conversation_prompt_matches_spec() {
    // docs/spec.md §5.2: 49 pieces + BOS, beginning [1, 319, 13563] and ending with "\n### Assistant:".
    let t = tokenizer();
    let ids = t.encode(&Conversation::single("What's in the image?").prompt(), true, false);
    assert_eq!(ids.len(), 50);
    assert_eq!(&ids[..3], &[1, 319, 13563]);
    assert_eq!(&ids[ids.len() - 6..], &[13, 2277, 29937, 4007, 22137, 29901]);
    assert_eq!(t.encode("###", false, false), vec![835]);
}

#[test]
fn stop_sequences_match_spec() {
    let t = tokenizer();
    let s = StopSequences::new(&t, &["\n###"]);
    assert_eq!(s.sequences(), &[vec![2], vec![29871, 13, 2277, 29937], vec![13, 2277, 29937]]);
    let s = StopSequences::new(&t, &["###"]);
    assert_eq!(s.sequences(), &[vec![2], vec![835], vec![2277, 29937]]);
}

#[test]
fn multi_turn_template() {
    let mut c = Conversation::new();
    c.push(sphinx_core::generate::Role::Human, "What's in the image?");
    c.push(sphinx_core::generate::Role::Assistant, "A cat.");
    c.push(sphinx_core::generate::Role::Human, "What color?");
    assert!(c.prompt().ends_with("questions.\n\n### Human: What's in the image?\n### Assistant: A cat.\n### Human: What color?\n### Assistant:"));
}

#[test]
fn streamed_deltas_add_up_to_the_whole_decode() {
    let t = tokenizer();
    let c = cases();
    for case in c["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut stream = sphinx_core::tokenizer::StreamDecoder::new();
        let streamed: String = ids.iter().map(|&id| stream.push(&t, id)).collect();
        assert_eq!(streamed, t.decode(&ids), "streamed decode of {:?}", case["text"]);
    }
}
