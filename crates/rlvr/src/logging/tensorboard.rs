//! TensorBoard event files written directly: TFRecord framing around `tensorflow.Event` protos
//! holding scalar summaries. Only the few protobuf fields TensorBoard reads for scalars are encoded.

use super::{Logger, Metrics};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

pub struct TensorBoardLogger {
    file: std::fs::File,
}

impl TensorBoardLogger {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{}",
            now.as_secs(),
            host.trim()
        ));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut logger = Self { file };
        // The first record names the file format version.
        let mut ev = event_header(wall_time(), 0);
        put_bytes(&mut ev, 3, b"brain.Event:2");
        logger.write_record(&ev)?;
        Ok(logger)
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&rec)?;
        self.file.flush()?;
        Ok(())
    }
}

impl Logger for TensorBoardLogger {
    fn log(&mut self, step: usize, metrics: &Metrics) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in metrics {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            v.push((2 << 3) | 5); // simple_value: float, fixed32
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &v);
        }
        let mut ev = event_header(wall_time(), step as i64);
        put_bytes(&mut ev, 5, &summary);
        self.write_record(&ev)
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `Event { double wall_time = 1; int64 step = 2; }`
fn event_header(wall_time: f64, step: i64) -> Vec<u8> {
    let mut ev = vec![(1 << 3) | 1];
    ev.extend_from_slice(&wall_time.to_le_bytes());
    ev.push(2 << 3);
    put_varint(&mut ev, step as u64);
    ev
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited field (strings, bytes, sub-messages).
fn put_bytes(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_varint(buf, (field << 3) | 2);
    put_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the records back, checking both CRCs, and decodes the scalar values.
    fn read_scalars(path: &Path) -> Vec<(i64, String, f32)> {
        let data = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let len_bytes = &data[pos..pos + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(data[pos + 8..pos + 12].try_into().unwrap()),
                masked_crc(len_bytes)
            );
            let rec = &data[pos + 12..pos + 12 + len];
            assert_eq!(
                u32::from_le_bytes(data[pos + 12 + len..pos + 16 + len].try_into().unwrap()),
                masked_crc(rec)
            );
            pos += 16 + len;
            // Event: wall_time (9 bytes), step varint, then optional summary field 5.
            let mut i = 9;
            assert_eq!(rec[i], 2 << 3);
            i += 1;
            let (mut step, mut shift) = (0i64, 0);
            loop {
                let b = rec[i];
                i += 1;
                step |= ((b & 0x7f) as i64) << shift;
                shift += 7;
                if b < 0x80 {
                    break;
                }
            }
            if rec[i] != (5 << 3) | 2 {
                continue;
            }
            i += 2; // tag + one-byte length (small test summaries)
            while i < rec.len() {
                assert_eq!(rec[i], (1 << 3) | 2);
                let vlen = rec[i + 1] as usize;
                let v = &rec[i + 2..i + 2 + vlen];
                let tlen = v[1] as usize;
                let tag = String::from_utf8(v[2..2 + tlen].to_vec()).unwrap();
                assert_eq!(v[2 + tlen], (2 << 3) | 5);
                let val = f32::from_le_bytes(v[3 + tlen..7 + tlen].try_into().unwrap());
                out.push((step, tag, val));
                i += 2 + vlen;
            }
        }
        out
    }

    #[test]
    fn scalars_round_trip_through_tfrecord_framing() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = TensorBoardLogger::create(dir.path()).unwrap();
        let mut m = Metrics::new();
        m.insert("reward/avg_raw_reward".into(), 0.25);
        m.insert("policy/policy_loss".into(), -1.5);
        l.log(3, &m).unwrap();
        l.log(300, &m).unwrap();
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let got = read_scalars(&file);
        assert_eq!(
            got,
            vec![
                (3, "policy/policy_loss".into(), -1.5),
                (3, "reward/avg_raw_reward".into(), 0.25),
                (300, "policy/policy_loss".into(), -1.5),
                (300, "reward/avg_raw_reward".into(), 0.25),
            ]
        );
    }

    #[test]
    fn masked_crc_matches_tensorflow_reference() {
        // crc32c("") = 0, masked = 0xa282ead8 (TensorFlow's kMaskDelta).
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        // crc32c("123456789") = 0xe3069283 (the CRC-32C check value).
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }
}
