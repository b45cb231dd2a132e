//! JSON -> tensor helpers and tolerance comparisons for the golden cases.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::CaseOutcome;

/// How a case is named in the report.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Naming {
    /// `list/<name>`, or `list/<index>` for a case without a name.
    Prefixed,
    /// `<name>`, or `list[<index>]` for a case without a name.
    Plain,
}

/// The cases of list `key` in a golden file (none where the file has no such list).
pub(crate) fn cases<'a>(json: &'a Value, key: &str) -> &'a [Value] {
    json.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// A golden file's list of cases and the check each case of it goes through.
pub(crate) type CaseList<'a> = (&'a str, &'a dyn Fn(&Value) -> CaseResult);

/// Each list's check on every case of that list, in file order.
pub(crate) fn run_lists(json: &Value, naming: Naming, lists: &[CaseList]) -> Vec<CaseOutcome> {
    let mut out = Vec::new();
    for &(list, check) in lists {
        for (i, c) in cases(json, list).iter().enumerate() {
            let name = match naming {
                Naming::Prefixed => format!("{list}/{}", name_of(c, i.to_string())),
                Naming::Plain => name_of(c, format!("{list}[{i}]")),
            };
            out.push(CaseOutcome::new(name, check(c)));
        }
    }
    out
}

/// `|a - e| <= atol + rtol·|e|`, NaN matches NaN, infinities must match exactly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

impl Tol {
    pub const F32: Tol = Tol {
        rtol: 1e-5,
        atol: 1e-6,
    };
    pub const F64: Tol = Tol {
        rtol: 1e-10,
        atol: 1e-12,
    };
    /// float64 results built on the float32 PPO ratio.
    pub const RATIO64: Tol = Tol {
        rtol: 2e-7,
        atol: 1e-9,
    };
    /// bfloat16 (8-bit mantissa): 2e-2 relative to the magnitude (at least 1).
    pub const BF16: Tol = Tol {
        rtol: 2e-2,
        atol: 2e-2,
    };
    pub const EXACT: Tol = Tol {
        rtol: 0.0,
        atol: 0.0,
    };

    pub fn for_dtype(dtype: DType) -> Tol {
        match dtype {
            DType::F64 => Tol::F64,
            DType::BF16 | DType::F16 => Tol::BF16,
            _ => Tol::F32,
        }
    }

    pub fn close(&self, a: f64, e: f64) -> bool {
        if e.is_nan() {
            return a.is_nan();
        }
        if e.is_infinite() {
            return a == e;
        }
        (a - e).abs() <= self.atol + self.rtol * e.abs()
    }
}

pub(crate) type CaseResult = Result<(), String>;

/// A float from a golden number or one of the non-finite strings.
pub(crate) fn num(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("bad number {n}")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(format!("expected a number, got string {other:?}")),
        },
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(format!("expected a number, got {other}")),
    }
}

/// Flattens a nested list of numbers; returns `(shape, values)`.
pub(crate) fn nested(v: &Value) -> Result<(Vec<usize>, Vec<f64>), String> {
    fn walk(
        v: &Value,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<f64>,
    ) -> Result<(), String> {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                } else if shape[depth] != items.len() {
                    return Err("ragged nested list".into());
                }
                for it in items {
                    walk(it, depth + 1, shape, out)?;
                }
                Ok(())
            }
            other => {
                out.push(num(other)?);
                Ok(())
            }
        }
    }
    let mut shape = Vec::new();
    let mut out = Vec::new();
    walk(v, 0, &mut shape, &mut out)?;
    Ok((shape, out))
}

pub(crate) fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing key {key:?}"))
}

pub(crate) fn dtype_of(case: &Value) -> Result<DType, String> {
    match case.get("dtype").and_then(Value::as_str) {
        Some("float32") | None => Ok(DType::F32),
        Some("float64") => Ok(DType::F64),
        Some("bfloat16") => Ok(DType::BF16),
        Some(other) => Err(format!("unknown dtype {other}")),
    }
}

/// A tensor of `dtype` from a nested list.
pub(crate) fn tensor(v: &Value, dtype: DType) -> Result<Tensor, String> {
    let (shape, data) = nested(v)?;
    Tensor::from_vec(data, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(|e| e.to_string())
}

/// `None` for JSON null.
pub(crate) fn opt_tensor(v: Option<&Value>, dtype: DType) -> Result<Option<Tensor>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => tensor(v, dtype).map(Some),
    }
}

pub(crate) fn numbers(v: &Value) -> Result<Vec<f64>, String> {
    let list = v.as_array().ok_or("expected a list of numbers")?;
    list.iter().map(num).collect()
}

pub(crate) fn strings(v: &Value) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or("expected a list of strings")?
        .iter()
        .map(|s| match s {
            Value::String(s) => Ok(s.clone()),
            other => Ok(other.to_string()),
        })
        .collect()
}

pub(crate) fn values(t: &Tensor) -> Result<Vec<f64>, String> {
    crate::ops::to_vec_f64(t).map_err(|e| e.to_string())
}

/// Compares every element; the message shows the first few mismatches.
pub(crate) fn close(what: &str, actual: &[f64], expected: &Value, tol: Tol) -> CaseResult {
    let (_, exp) = nested(expected).map_err(|e| format!("{what}: {e}"))?;
    if exp.len() != actual.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            actual.len(),
            exp.len()
        ));
    }
    let bad: Vec<String> = actual
        .iter()
        .zip(&exp)
        .enumerate()
        .filter(|(_, (a, e))| !tol.close(**a, **e))
        .take(4)
        .map(|(i, (a, e))| format!("[{i}] got {a:e}, expected {e:e}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {}", bad.join("; ")))
    }
}

/// Compares a tensor against a nested list.
pub(crate) fn close_t(what: &str, actual: &Tensor, expected: &Value, tol: Tol) -> CaseResult {
    close(what, &values(actual)?, expected, tol)
}

/// Our error message must contain SkyRL's (an empty expected message only requires an error).
pub(crate) fn expect_error<T>(what: &str, got: Result<T, String>, expected: &Value) -> CaseResult {
    let msg = expected
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("");
    match got {
        Ok(_) => Err(format!("{what}: expected error {msg:?}, got success")),
        Err(e) if e.contains(msg) => Ok(()),
        Err(e) => Err(format!("{what}: error {e:?} does not contain {msg:?}")),
    }
}

/// Whether an `expected_error` is REF crashing (a Python or numpy failure inside its code, e.g.
/// `np.min([])` on an empty selection) rather than an error SkyRL raises on purpose (its
/// `RuntimeError`/`ValueError` messages). Recognised by what it is, whatever the case is called.
pub(crate) fn is_ref_crash(expected: &Value) -> bool {
    let kind = expected.get("type").and_then(Value::as_str).unwrap_or("");
    let msg = expected
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("");
    const CRASH_TYPES: [&str; 5] = [
        "IndexError",
        "ZeroDivisionError",
        "KeyError",
        "TypeError",
        "AttributeError",
    ];
    const CRASH_MESSAGES: [&str; 4] = [
        "zero-size array",
        "index out of range",
        "out of bounds",
        "division by zero",
    ];
    CRASH_TYPES.contains(&kind) || CRASH_MESSAGES.iter().any(|m| msg.contains(m))
}

pub(crate) fn err_str<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// A case name from `name`, or a fallback.
pub(crate) fn name_of(case: &Value, fallback: String) -> String {
    case.get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or(fallback)
}
