//! Reading and writing dataset files: parquet (SkyRL's format) and JSON lines.
//!
//! Parquet goes through arrow's JSON codec, so a row's nested columns (`prompt` is a list of
//! structs) map onto [`PromptRow`] by serde without a hand-written schema per column.

use super::PromptRow;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

/// Reads every row of a `.parquet` or `.jsonl`/`.json` file.
pub fn read_rows(path: &Path) -> Result<Vec<PromptRow>> {
    match extension(path).as_str() {
        "parquet" => read_parquet(path),
        "jsonl" | "json" => read_jsonl(path),
        other => bail!(
            "{}: unknown dataset extension {other:?}; expected .parquet or .jsonl",
            path.display()
        ),
    }
}

/// Writes rows to `.parquet` or `.jsonl`, chosen by the extension. Written to a temporary name
/// and renamed, so a reader never sees half a file.
pub fn write_rows(path: &Path, rows: &[PromptRow]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    match extension(path).as_str() {
        "parquet" => write_parquet(&tmp, rows)?,
        "jsonl" => {
            let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
            for row in rows {
                serde_json::to_writer(&mut w, row)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        other => bail!(
            "{}: unknown dataset extension {other:?}; expected .parquet or .jsonl",
            path.display()
        ),
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn read_jsonl(path: &Path) -> Result<Vec<PromptRow>> {
    let what = "does not match the schema (data_source, prompt [{role, content}], env_class, \
                reward_spec {method, ground_truth}, extra_info)";
    let rows = read_json_lines(path, what)?;
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// Each non-empty line of a JSON-lines file as (its 1-based number, a `T`); an error names the
/// file, the line and `what` is wrong with it.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<Vec<(usize, T)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let at = || format!("{}: line {}", path.display(), i + 1);
        let line = line.with_context(|| format!("{}: cannot be read", at()))?;
        if !line.trim().is_empty() {
            let row = serde_json::from_str(&line).with_context(|| format!("{} {what}", at()))?;
            rows.push((i + 1, row));
        }
    }
    Ok(rows)
}

fn read_parquet(path: &Path) -> Result<Vec<PromptRow>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a parquet file", path.display()))?
        .build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("{}: reading a record batch", path.display()))?;
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
            w.write(&batch)?;
            w.finish()?;
        }
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let n = rows.len();
            let row: PromptRow = serde_json::from_slice(line).with_context(|| {
                format!(
                    "{}: row {} does not match the schema (data_source, prompt, env_class, reward_spec, extra_info)",
                    path.display(),
                    n
                )
            })?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn write_parquet(path: &Path, rows: &[PromptRow]) -> Result<()> {
    use arrow_schema::{DataType, Field, Fields, Schema};
    let message = DataType::Struct(Fields::from(vec![
        Field::new("content", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
    ]));
    // extra_info is free-form: infer its struct type from the rows.
    let extra_lines: Vec<String> = rows
        .iter()
        .map(|r| serde_json::json!({ "extra_info": r.extra_info }).to_string())
        .collect();
    let extra_schema = arrow_json::reader::infer_json_schema_from_iterator(
        extra_lines
            .iter()
            .map(|l| Ok(serde_json::from_str::<serde_json::Value>(l).unwrap())),
    )?;
    let extra_field = extra_schema
        .field_with_name("extra_info")
        .cloned()
        .unwrap_or_else(|_| Field::new("extra_info", DataType::Null, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("data_source", DataType::Utf8, false),
        Field::new(
            "prompt",
            DataType::List(Arc::new(Field::new("item", message, true))),
            false,
        ),
        Field::new("env_class", DataType::Utf8, false),
        Field::new(
            "reward_spec",
            DataType::Struct(Fields::from(vec![
                Field::new("ground_truth", DataType::Utf8, false),
                Field::new("method", DataType::Utf8, false),
            ])),
            false,
        ),
        extra_field.with_nullable(true),
    ]));
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(rows)?;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    while let Some(batch) = decoder.flush()? {
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Message, RewardSpec};

    fn sample_rows() -> Vec<PromptRow> {
        (0..5)
            .map(|i| PromptRow {
                data_source: "openai/gsm8k".into(),
                prompt: vec![Message {
                    role: "user".into(),
                    content: format!("What is {i} + 1?"),
                }],
                env_class: "gsm8k".into(),
                reward_spec: RewardSpec {
                    method: "rule".into(),
                    ground_truth: format!("{}", i + 1),
                },
                extra_info: serde_json::json!({"split": "train", "index": i}),
            })
            .collect()
    }

    #[test]
    fn parquet_and_jsonl_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample_rows();
        for name in ["d.parquet", "d.jsonl"] {
            let p = dir.path().join(name);
            write_rows(&p, &rows).unwrap();
            assert_eq!(read_rows(&p).unwrap(), rows, "{name}");
        }
    }

    #[test]
    fn bad_rows_name_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jsonl");
        std::fs::write(&p, "{\"data_source\": \"x\"}\n").unwrap();
        let err = format!("{:#}", read_rows(&p).unwrap_err());
        assert!(err.contains("bad.jsonl") && err.contains("line 1"), "{err}");
        let err = format!("{:#}", read_rows(&dir.path().join("x.csv")).unwrap_err());
        assert!(err.contains("expected .parquet or .jsonl"), "{err}");
    }
}
