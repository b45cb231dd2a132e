use super::{Logger, Metrics};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A CSV table, one row per step. Columns are the union of all metric names seen; the file is
/// rewritten when a new column appears, so it always has one consistent header.
pub struct CsvLogger {
    path: PathBuf,
    columns: Vec<String>,
    rows: Vec<(usize, Metrics)>,
}

impl CsvLogger {
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns: Vec::new(),
            rows: Vec::new(),
        })
    }

    fn write_all(&self) -> Result<()> {
        let tmp = self.path.with_extension("csv.tmp");
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        write!(f, "step")?;
        for c in &self.columns {
            write!(f, ",{c}")?;
        }
        writeln!(f)?;
        for (step, m) in &self.rows {
            write!(f, "{step}")?;
            for c in &self.columns {
                match m.get(c) {
                    Some(v) => write!(f, ",{v}")?,
                    None => write!(f, ",")?,
                }
            }
            writeln!(f)?;
        }
        f.flush()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

impl Logger for CsvLogger {
    fn log(&mut self, step: usize, metrics: &Metrics) -> Result<()> {
        for k in metrics.keys() {
            if !self.columns.contains(k) {
                self.columns.push(k.clone());
            }
        }
        self.rows.push((step, metrics.clone()));
        self.write_all()
    }
}
