//! The tokenizer stored in GGUF metadata (`tokenizer.ggml.*`), rebuilt as a `tokenizers`
//! pipeline equal to the one in the model's upstream `tokenizer.json`.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::reader::GgufFile;
use crate::tokenizer::{SpecialTokens, Tokenizer};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer> {
    let path = file.path().display().to_string();
    let model = file
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| anyhow!("{path}: no tokenizer.ggml.model in the metadata"))?;
    if model != "gpt2" {
        bail!("{path}: tokenizer.ggml.model = {model:?} is not supported (only byte-level BPE, \"gpt2\")");
    }
    let tokens = file
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| anyhow!("{path}: no tokenizer.ggml.tokens in the metadata"))?;
    let merges = file
        .get_str_array("tokenizer.ggml.merges")?
        .unwrap_or_default();
    let types = file.get_i64_array("tokenizer.ggml.token_type")?;
    if let Some(t) = &types {
        if t.len() != tokens.len() {
            bail!(
                "{path}: tokenizer.ggml.token_type has {} entries for {} tokens",
                t.len(),
                tokens.len()
            );
        }
    }
    let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");

    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        vocab.entry((*tok).to_owned()).or_insert(id as u32);
    }
    let merges: Vec<(String, String)> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| anyhow!("{path}: tokenizer.ggml.merges[{i}] = {m:?} is not \"a b\""))
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        // Llama 3 tokenizers look whole pre-tokens up in the vocabulary before merging.
        .ignore_merges(pre == "llama-bpe")
        .build()
        .map_err(|e| anyhow!("{path}: building the BPE model: {e}"))?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    let (pre_tok, nfc) =
        pre_tokenizer(pre).with_context(|| format!("{path}: tokenizer.ggml.pre = {pre:?}"))?;
    if nfc {
        inner
            .with_normalizer(Some(NFC))
            .map_err(|e| anyhow!("{path}: normalizer: {e}"))?;
    }
    inner.with_pre_tokenizer(Some(pre_tok));
    inner.with_decoder(Some(ByteLevelDecoder::default()));

    // Control tokens are special added tokens (matched before BPE, skippable when decoding).
    if let Some(types) = &types {
        let added = |kind: i64| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(types)
                .filter(|(_, t)| **t == kind)
                .map(|(tok, _)| {
                    AddedToken::from(*tok, kind == TOKEN_TYPE_CONTROL).normalized(false)
                })
                .collect()
        };
        inner
            .add_special_tokens(added(TOKEN_TYPE_CONTROL))
            .map_err(|e| anyhow!("{path}: adding control tokens: {e}"))?;
        inner
            .add_tokens(added(TOKEN_TYPE_USER_DEFINED))
            .map_err(|e| anyhow!("{path}: adding user-defined tokens: {e}"))?;
    }

    let token_at = |key: &str| -> Result<Option<String>> {
        let Some(id) = file.get_u64(key)? else {
            return Ok(None);
        };
        let tok = tokens.get(id as usize).ok_or_else(|| {
            anyhow!(
                "{path}: {key} = {id} is outside the vocabulary of {}",
                tokens.len()
            )
        })?;
        Ok(Some((*tok).to_owned()))
    };
    let special = SpecialTokens {
        bos_token: token_at("tokenizer.ggml.bos_token_id")?,
        eos_token: token_at("tokenizer.ggml.eos_token_id")?,
        pad_token: token_at("tokenizer.ggml.padding_token_id")?,
        unk_token: token_at("tokenizer.ggml.unknown_token_id")?,
    };

    let add_bos = file
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    match (&special.bos_token, add_bos) {
        (Some(bos), true) => {
            let id = inner.token_to_id(bos).unwrap_or_default();
            let template = TemplateProcessing::builder()
                .try_single(format!("{bos}:0 $A:0"))
                .and_then(|b| b.try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1")))
                .map_err(|e| anyhow!("{path}: bos template: {e}"))?
                .special_tokens(vec![(bos.clone(), id)])
                .build()
                .map_err(|e| anyhow!("{path}: bos template: {e}"))?;
            inner.with_post_processor(Some(template));
        }
        _ => {
            inner.with_post_processor(Some(ByteLevel::default().add_prefix_space(false)));
        }
    }

    let template = file.get_str("tokenizer.chat_template")?;
    let max_len = file
        .get_str("general.architecture")?
        .map(|arch| file.get_u64(&format!("{arch}.context_length")))
        .transpose()?
        .flatten()
        .map(|v| v as usize);
    Ok(Tokenizer::from_parts(inner, special, template, add_bos)
        .with_context(|| format!("{path}: tokenizer"))?
        .with_model_max_length(max_len))
}

/// The pre-tokenizer llama.cpp names `pre`, and whether an NFC normalizer precedes it.
fn pre_tokenizer(pre: &str) -> Result<(PreTokenizerWrapper, bool)> {
    let byte_level = |use_regex: bool| ByteLevel::new(false, true, use_regex);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(pattern.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("split regex: {e}"))?
        .into())
    };
    Ok(match pre {
        // SmolLM/StarCoder: every digit on its own, then GPT-2's byte-level split.
        "smollm" | "starcoder" => (
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into(),
            false,
        ),
        "llama-bpe" | "llama3" => (
            Sequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false).into()]).into(),
            false,
        ),
        "qwen2" => (
            Sequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false).into()]).into(),
            true,
        ),
        "default" | "gpt2" | "gpt-2" => (byte_level(true).into(), false),
        other => bail!("unknown pre-tokenizer {other:?} (known: smollm, starcoder, llama-bpe, qwen2, default, gpt2)"),
    })
}
