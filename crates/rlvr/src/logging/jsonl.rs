use super::{Logger, Metrics};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// One JSON object per step: `{"step": N, "metric/name": value, ...}`. Appends, so a resumed run
/// continues the same file.
pub struct JsonlLogger {
    file: std::fs::File,
}

impl JsonlLogger {
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file })
    }
}

impl Logger for JsonlLogger {
    fn log(&mut self, step: usize, metrics: &Metrics) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        for (k, v) in metrics {
            // JSON has no NaN/inf: write them as null.
            let v = serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into);
            obj.insert(k.clone(), v);
        }
        writeln!(self.file, "{}", serde_json::Value::Object(obj))?;
        self.file.flush()?;
        Ok(())
    }
}
