//! Turning the raw math word-problem sets into SkyRL-schema rows (SkyRL's
//! `examples/gsm8k/gsm8k_dataset.py`, and the same shape for MAWPS and SVAMP).

use super::{Message, PromptRow, RewardSpec};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Appended to every question, exactly as SkyRL's GSM8K preparation does.
pub const INSTRUCTION: &str =
    "Let's think step by step and output the final answer after \"####\".";

/// How a question becomes the prompt's chat messages. The default is SkyRL's: one user message,
/// the question followed by [`INSTRUCTION`]. SkyRL's data script is the user's to edit; these are
/// the two edits a model that ignores SkyRL's instruction needs (a system prompt, another
/// instruction), so the parquet files say which prompt a run trained and was evaluated on.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptStyle {
    /// A system message before the question; `None` leaves the chat template's default.
    pub system: Option<String>,
    /// Appended to every question after one space.
    pub instruction: String,
}

impl Default for PromptStyle {
    fn default() -> Self {
        Self {
            system: None,
            instruction: INSTRUCTION.into(),
        }
    }
}

impl PromptStyle {
    fn messages(&self, question: &str) -> Vec<Message> {
        let user = if self.instruction.is_empty() {
            question.to_owned()
        } else {
            format!("{question} {}", self.instruction)
        };
        self.system
            .iter()
            .map(|s| Message {
                role: "system".into(),
                content: s.clone(),
            })
            .chain(std::iter::once(Message {
                role: "user".into(),
                content: user,
            }))
            .collect()
    }
}

/// A word-problem source whose rows can be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Gsm8k,
    Mawps,
    Svamp,
}

impl Source {
    pub fn data_source(self) -> &'static str {
        match self {
            Source::Gsm8k => "openai/gsm8k",
            Source::Mawps => "mawps",
            Source::Svamp => "svamp",
        }
    }
}

/// Reads a raw jsonl file of `source` and returns rows tagged with `split`.
pub fn convert_file(
    source: Source,
    path: &Path,
    split: &str,
    style: &PromptStyle,
) -> Result<Vec<PromptRow>> {
    let lines: Vec<(usize, Value)> = super::io::read_json_lines(path, "is not JSON")?;
    let mut rows = Vec::new();
    for (line, raw) in &lines {
        let (question, ground_truth, answer) =
            fields(source, raw).with_context(|| format!("{}: line {line}", path.display()))?;
        rows.push(row(
            source,
            rows.len(),
            split,
            style.messages(&question),
            &question,
            ground_truth,
            answer,
        ));
    }
    Ok(rows)
}

fn row(
    source: Source,
    index: usize,
    split: &str,
    prompt: Vec<Message>,
    question: &str,
    ground_truth: String,
    answer: Value,
) -> PromptRow {
    PromptRow {
        data_source: source.data_source().into(),
        prompt,
        env_class: "gsm8k".into(),
        reward_spec: RewardSpec {
            method: "rule".into(),
            ground_truth,
        },
        extra_info: json!({"split": split, "index": index, "answer": answer, "question": question}),
    }
}

/// (question, ground truth, raw answer) of one raw row.
fn fields(source: Source, raw: &Value) -> Result<(String, String, Value)> {
    let text = |key: &str| -> Result<String> {
        raw.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("expected a string field {key:?}"))
    };
    let number = |key: &str| -> Result<f64> {
        raw.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("expected a numeric field {key:?}"))
    };
    Ok(match source {
        Source::Gsm8k => {
            let answer = text("answer")?;
            let gt = rlvr_algo::rewards::gsm8k::extract_ground_truth(&answer)?;
            (text("question")?, gt, Value::String(answer))
        }
        Source::Mawps => {
            let target = number("target")?;
            (text("input")?, format_number(target), json!(target))
        }
        Source::Svamp => {
            let target = number("Answer")?;
            (
                join_svamp(&text("Body")?, &text("Question")?),
                format_number(target),
                json!(target),
            )
        }
    })
}

/// SVAMP splits each problem into a body and a question; join them as one text.
fn join_svamp(body: &str, question: &str) -> String {
    let body = body.trim();
    let sep = if body.ends_with(['.', '?', '!']) {
        " "
    } else {
        ". "
    };
    format!("{body}{sep}{}", question.trim())
}

/// Integral answers are written without a decimal point (`43.0` → `43`), as GSM8K's are; the
/// strict scorer compares strings exactly.
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn gsm8k_rows_follow_skyrl_schema() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.jsonl",
            "{\"question\":\"Q?\",\"answer\":\"so 1,000 + 200\\n#### 1,200\",\"idx\":0}\n",
        );
        let rows = convert_file(Source::Gsm8k, &p, "train", &PromptStyle::default()).unwrap();
        assert_eq!(rows[0].reward_spec.ground_truth, "1200");
        assert_eq!(
            rows[0].prompt[0].content,
            "Q? Let's think step by step and output the final answer after \"####\"."
        );
        assert_eq!(rows[0].data_source, "openai/gsm8k");
        assert_eq!(rows[0].env_class, "gsm8k");
        assert_eq!(rows[0].extra_info["split"], "train");
    }

    #[test]
    fn prompt_style_adds_a_system_message_and_replaces_the_instruction() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.jsonl",
            "{\"question\":\"Q?\",\"answer\":\"#### 3\",\"idx\":0}\n",
        );
        let style = PromptStyle {
            system: Some("Be brief.".into()),
            instruction: "End with #### N.".into(),
        };
        let rows = convert_file(Source::Gsm8k, &p, "test", &style).unwrap();
        let roles: Vec<&str> = rows[0].prompt.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        assert_eq!(rows[0].prompt[0].content, "Be brief.");
        assert_eq!(rows[0].prompt[1].content, "Q? End with #### N.");
        let bare = PromptStyle {
            system: None,
            instruction: String::new(),
        };
        let rows = convert_file(Source::Gsm8k, &p, "test", &bare).unwrap();
        assert_eq!(rows[0].prompt.len(), 1);
        assert_eq!(rows[0].prompt[0].content, "Q?");
    }

    #[test]
    fn mawps_and_svamp_numbers() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.jsonl",
            "{\"input\":\"How many?\",\"target\":43.0}\n{\"input\":\"Half?\",\"target\":2.5}\n",
        );
        let rows = convert_file(Source::Mawps, &p, "train", &PromptStyle::default()).unwrap();
        assert_eq!(rows[0].reward_spec.ground_truth, "43");
        assert_eq!(rows[1].reward_spec.ground_truth, "2.5");
        let p = write(d.path(), "s.jsonl", "{\"Answer\":145.0,\"Question\":\"How big is each group?\",\"Body\":\"There are 290 bananas in 2 groups\"}\n");
        let rows = convert_file(Source::Svamp, &p, "test", &PromptStyle::default()).unwrap();
        assert_eq!(rows[0].reward_spec.ground_truth, "145");
        assert!(rows[0].prompt[0]
            .content
            .starts_with("There are 290 bananas in 2 groups. How big is each group?"));
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "b.jsonl",
            "{\"question\":\"Q\",\"answer\":\"no marker\"}\n",
        );
        let err = format!(
            "{:#}",
            convert_file(Source::Gsm8k, &p, "train", &PromptStyle::default()).unwrap_err()
        );
        assert!(
            err.contains("b.jsonl") && err.contains("line 1") && err.contains("####"),
            "{err}"
        );
    }
}
