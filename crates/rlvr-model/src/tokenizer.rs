//! The tokenizer of a checkpoint: a `tokenizers` pipeline plus what transformers keeps beside it
//! (special tokens by role, the chat template). Built from an HF directory (`tokenizer.json`,
//! `tokenizer_config.json`) or from GGUF metadata (see `gguf::tokenizer`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

pub use crate::chat_template::ChatMessage;
use crate::chat_template::{ChatTemplate, TemplateTokens};

/// Special-token strings by role, as `tokenizer_config.json` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    chat_template: Option<ChatTemplate>,
    /// Extra variables every chat-template rendering sees (SkyRL's `chat_template_kwargs`, e.g.
    /// `enable_thinking`).
    template_kwargs: Vec<(String, minijinja::Value)>,
    add_bos_token: bool,
    model_max_length: Option<usize>,
}

impl Tokenizer {
    /// Wraps a `tokenizers` pipeline; every named special token must be in its vocabulary.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        special: SpecialTokens,
        chat_template: Option<&str>,
        add_bos_token: bool,
    ) -> Result<Self> {
        for (role, tok) in [
            ("bos_token", &special.bos_token),
            ("eos_token", &special.eos_token),
            ("pad_token", &special.pad_token),
            ("unk_token", &special.unk_token),
        ] {
            if let Some(t) = tok {
                if inner.token_to_id(t).is_none() {
                    bail!("{role} {t:?} is not in the tokenizer's vocabulary");
                }
            }
        }
        let chat_template = chat_template.map(ChatTemplate::new).transpose()?;
        Ok(Self {
            inner,
            special,
            chat_template,
            template_kwargs: Vec::new(),
            add_bos_token,
            model_max_length: None,
        })
    }

    /// Loads `tokenizer.json`, plus `tokenizer_config.json`, `special_tokens_map.json` and
    /// `chat_template.jinja` when present, from an HF checkpoint directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&tj)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", tj.display()))?;
        // JSON syntax first: tokenizers panics on some malformed files (its decoder section is
        // parsed with `expect`); what still panics inside it becomes an error here.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", tj.display()))?;
        let parsed = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>());
        let inner = match parsed {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => anyhow::bail!("{}: cannot load tokenizer: {e}", tj.display()),
            Err(_) => anyhow::bail!(
                "{}: cannot load tokenizer: the file is malformed (the tokenizers library panicked)",
                tj.display()
            ),
        };
        let config = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let map = read_json_opt(&dir.join("special_tokens_map.json"))?;
        let pick = |key: &str| -> Option<String> {
            config
                .as_ref()
                .and_then(|c| token_string(c.get(key)?))
                .or_else(|| map.as_ref().and_then(|m| token_string(m.get(key)?)))
        };
        let special = SpecialTokens {
            bos_token: pick("bos_token"),
            eos_token: pick("eos_token"),
            pad_token: pick("pad_token"),
            unk_token: pick("unk_token"),
        };
        let jinja = dir.join("chat_template.jinja");
        let template = match config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .filter(|t| !t.is_null())
        {
            Some(t) => Some(template_string(t).with_context(|| {
                format!(
                    "{}: chat_template",
                    dir.join("tokenizer_config.json").display()
                )
            })?),
            None if jinja.exists() => Some(
                std::fs::read_to_string(&jinja)
                    .with_context(|| format!("reading {}", jinja.display()))?,
            ),
            None => None,
        };
        let add_bos_token = config
            .as_ref()
            .and_then(|c| c.get("add_bos_token")?.as_bool())
            .unwrap_or(false);
        let mut tok = Self::from_parts(inner, special, template.as_deref(), add_bos_token)
            .with_context(|| format!("tokenizer in {}", dir.display()))?;
        tok.model_max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length")?.as_u64())
            .map(|v| v as usize);
        Ok(tok)
    }

    pub fn with_model_max_length(mut self, n: Option<usize>) -> Self {
        self.model_max_length = n;
        self
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow::anyhow!("encoding failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow::anyhow!("decoding failed: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    /// The longest vocabulary entry in UTF-8 bytes: no token stands for more text than this (a
    /// byte-level BPE symbol is one text byte and at least one UTF-8 byte), so a text longer
    /// than `n * max_token_bytes()` bytes cannot fit in `n` tokens and need not be tokenized.
    pub fn max_token_bytes(&self) -> usize {
        self.inner
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn id_of(&self, tok: &Option<String>) -> Option<u32> {
        tok.as_deref().and_then(|t| self.inner.token_to_id(t))
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.bos_token)
    }
    pub fn eos_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.eos_token)
    }
    pub fn pad_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.pad_token)
    }
    pub fn unk_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.unk_token)
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Whether encoding with special tokens prepends BOS (`add_bos_token`).
    pub fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }

    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_ref().map(|t| t.source())
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt=..)`.
    /// Passes `kwargs` to every chat-template rendering, as transformers'
    /// `apply_chat_template(..., **kwargs)` does.
    pub fn with_template_kwargs(mut self, kwargs: &[(String, serde_json::Value)]) -> Self {
        self.template_kwargs = kwargs
            .iter()
            .map(|(k, v)| (k.clone(), minijinja::Value::from_serialize(v)))
            .collect();
        self
    }

    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some(template) = &self.chat_template else {
            bail!("this tokenizer has no chat template");
        };
        let tokens = TemplateTokens {
            bos_token: self.special.bos_token.clone(),
            eos_token: self.special.eos_token.clone(),
            pad_token: self.special.pad_token.clone(),
            unk_token: self.special.unk_token.clone(),
        };
        let extra: Vec<(&str, minijinja::Value)> = self
            .template_kwargs
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        template.render_with(messages, add_generation_prompt, &tokens, &extra)
    }

    /// transformers' `apply_chat_template(..., tokenize=True)`: the rendered text encoded with
    /// `add_special_tokens=False` (the template already writes its special tokens).
    pub fn apply_chat_template_ids(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }

    /// `tokenizer.json` contents.
    pub fn to_tokenizer_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("serializing tokenizer.json: {e}"))
    }

    /// `tokenizer_config.json` contents as transformers reads them.
    pub fn to_tokenizer_config_json(&self) -> Json {
        let mut decoder = serde_json::Map::new();
        let mut added: Vec<_> = self.inner.get_added_tokens_decoder().into_iter().collect();
        added.sort_by_key(|(id, _)| *id);
        for (id, t) in added {
            decoder.insert(
                id.to_string(),
                serde_json::json!({
                    "content": t.content,
                    "lstrip": t.lstrip,
                    "normalized": t.normalized,
                    "rstrip": t.rstrip,
                    "single_word": t.single_word,
                    "special": t.special,
                }),
            );
        }
        let mut c = serde_json::Map::new();
        c.insert("add_bos_token".into(), Json::Bool(self.add_bos_token));
        c.insert("add_prefix_space".into(), Json::Bool(false));
        c.insert("added_tokens_decoder".into(), Json::Object(decoder));
        for (key, tok) in self.special_entries() {
            c.insert(
                key.into(),
                tok.map(|s| Json::String(s.clone())).unwrap_or(Json::Null),
            );
        }
        if let Some(t) = self.chat_template() {
            c.insert("chat_template".into(), Json::String(t.to_owned()));
        }
        c.insert("clean_up_tokenization_spaces".into(), Json::Bool(false));
        if let Some(n) = self.model_max_length {
            c.insert("model_max_length".into(), Json::from(n));
        }
        c.insert(
            "tokenizer_class".into(),
            Json::String("PreTrainedTokenizerFast".into()),
        );
        Json::Object(c)
    }

    /// `special_tokens_map.json` contents.
    pub fn to_special_tokens_map_json(&self) -> Json {
        let mut m = serde_json::Map::new();
        for (key, tok) in self.special_entries() {
            if let Some(t) = tok {
                m.insert(key.into(), Json::String(t.clone()));
            }
        }
        Json::Object(m)
    }

    fn special_entries(&self) -> [(&'static str, Option<&String>); 4] {
        [
            ("bos_token", self.special.bos_token.as_ref()),
            ("eos_token", self.special.eos_token.as_ref()),
            ("pad_token", self.special.pad_token.as_ref()),
            ("unk_token", self.special.unk_token.as_ref()),
        ]
    }
}

fn read_json_opt(path: &Path) -> Result<Option<Json>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(Some(v))
}

/// A special token as transformers writes it: a string or an AddedToken dict with `content`.
fn token_string(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` of which `default` is used.
fn template_string(v: &Json) -> Result<String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Array(list) => {
            let named = |name: &str| {
                list.iter().find_map(|e| {
                    (e.get("name")?.as_str()? == name)
                        .then(|| e.get("template")?.as_str().map(str::to_owned))
                        .flatten()
                })
            };
            named("default").context("a list of templates without a \"default\" entry")
        }
        _ => bail!("expected a string or a list of {{name, template}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::bpe::{Vocab, BPE};
    use tokenizers::AddedToken;

    fn write_inner(dir: &Path) {
        let vocab: Vocab = [("a", 0), ("b", 1), ("ab", 2), ("<s>", 3), ("</s>", 4)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![("a".into(), "b".into())])
            .build()
            .unwrap();
        let mut t = tokenizers::Tokenizer::new(bpe);
        t.add_special_tokens([
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ])
        .unwrap();
        t.save(dir.join("tokenizer.json"), false).unwrap();
    }

    #[test]
    fn hf_dir_special_token_dicts_and_template_lists() {
        let dir = tempfile::tempdir().unwrap();
        write_inner(dir.path());
        let config = serde_json::json!({
            "bos_token": {"__type": "AddedToken", "content": "<s>", "special": true},
            "eos_token": "</s>",
            "pad_token": null,
            "chat_template": [
                {"name": "tool_use", "template": "unused"},
                {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"}
            ],
        });
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
        assert_eq!(
            (tok.bos_token_id(), tok.eos_token_id(), tok.pad_token_id()),
            (Some(3), Some(4), None)
        );
        let msgs = [ChatMessage::user("ab")];
        assert_eq!(tok.apply_chat_template(&msgs, false).unwrap(), "<s>ab</s>");
        assert_eq!(
            tok.apply_chat_template_ids(&msgs, false).unwrap(),
            vec![3, 2, 4]
        );
        assert_eq!(tok.decode(&[3, 2, 4], true).unwrap(), "ab");
    }

    #[test]
    fn hf_dir_reads_chat_template_jinja_and_special_tokens_map() {
        let dir = tempfile::tempdir().unwrap();
        write_inner(dir.path());
        std::fs::write(
            dir.path().join("special_tokens_map.json"),
            r#"{"eos_token": "</s>"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "{{ messages[0].content }}{{ eos_token }}",
        )
        .unwrap();
        let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
        assert_eq!(
            tok.apply_chat_template(&[ChatMessage::user("a")], false)
                .unwrap(),
            "a</s>"
        );
        assert!(tok.bos_token_id().is_none());
    }

    #[test]
    fn hf_dir_errors_name_the_file_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("tokenizer.json"), "{err:#}");
        write_inner(dir.path());
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"eos_token": "<eos>"}"#,
        )
        .unwrap();
        let err = format!("{:#}", Tokenizer::from_hf_dir(dir.path()).unwrap_err());
        assert!(err.contains("eos_token") && err.contains("<eos>"), "{err}");
        std::fs::write(dir.path().join("tokenizer_config.json"), "{not json").unwrap();
        let err = format!("{:#}", Tokenizer::from_hf_dir(dir.path()).unwrap_err());
        assert!(err.contains("tokenizer_config.json"), "{err}");
        let tok = Tokenizer::from_parts(
            tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap(),
            SpecialTokens::default(),
            None,
            false,
        )
        .unwrap();
        assert!(tok
            .apply_chat_template(&[ChatMessage::user("a")], true)
            .is_err());
    }

    #[test]
    fn template_kwargs_reach_every_rendering() {
        let dir = tempfile::tempdir().unwrap();
        write_inner(dir.path());
        let template = "{{ messages[0].content }}{% if enable_thinking is defined and not enable_thinking %} /no_think{% endif %}";
        let tok = Tokenizer::from_parts(
            tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap(),
            SpecialTokens::default(),
            Some(template),
            false,
        )
        .unwrap();
        let msgs = [ChatMessage::user("a")];
        assert_eq!(tok.apply_chat_template(&msgs, true).unwrap(), "a");
        let tok = tok.with_template_kwargs(&[("enable_thinking".into(), serde_json::json!(false))]);
        assert_eq!(tok.apply_chat_template(&msgs, true).unwrap(), "a /no_think");
    }
}
