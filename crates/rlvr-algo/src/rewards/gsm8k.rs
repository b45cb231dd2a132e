//! GSM8K scoring, exactly as skyrl-gym's `compute_score` / `extract_solution` (strict is what the
//! environment uses) and the dataset script's ground-truth extraction.
//!
//! Both scorers look at the last 300 characters only. A number is `-?[0-9.,]+` (ASCII only).
//! - strict: the first `#### ` (one ASCII space) immediately followed by a number; commas removed.
//! - flexible: the last number anywhere that is not `""` or `"."` (if all are, the first one,
//!   as SkyRL's loop leaves it); commas kept.
//!
//! The answer is compared to the ground truth as a string: `42.` or `042` do not match `42`.
//!
//! rlvr adds `numeric` (not in SkyRL): the last number in the whole response, commas removed,
//! compared as a number, so "the answer is 42." scores. This is the "lenient" accuracy of the
//! PyTorch baseline's GSM8K evaluation, and gives a small model a reward signal.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::error::{Error, Result};

const SOLUTION_CLIP_CHARS: usize = 300;

/// Extraction method (`environment.skyrl_gym.gsm8k.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Strict,
    Flexible,
    /// rlvr's addition: last number anywhere, compared numerically.
    Numeric,
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "strict" => Ok(Method::Strict),
            "flexible" => Ok(Method::Flexible),
            "numeric" => Ok(Method::Numeric),
            other => Err(Error::invalid(format!(
                "Invalid GSM8K scoring method: {other} (expected strict, flexible or numeric)"
            ))),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Strict => "strict",
            Method::Flexible => "flexible",
            Method::Numeric => "numeric",
        })
    }
}

fn is_num_char(c: char) -> bool {
    c.is_ascii_digit() || c == '.' || c == ','
}

/// The match of `-?[0-9.,]+` starting exactly at byte `i`, if any (returns its end).
fn number_at(s: &str, i: usize) -> Option<usize> {
    let rest = &s[i..];
    let mut chars = rest.char_indices().peekable();
    let mut end = None;
    let mut first = true;
    while let Some(&(j, c)) = chars.peek() {
        if first && c == '-' {
            // `-?` is greedy but must be followed by at least one number character.
            let after = &rest[j + 1..];
            if after.chars().next().is_some_and(is_num_char) {
                chars.next();
                first = false;
                continue;
            }
            return None;
        }
        first = false;
        if is_num_char(c) {
            end = Some(i + j + c.len_utf8());
            chars.next();
        } else {
            break;
        }
    }
    end
}

/// All non-overlapping `-?[0-9.,]+` matches, left to right (Python `re.findall`).
fn find_numbers(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if let Some(end) = number_at(s, i) {
            out.push(&s[i..end]);
            i = end;
        } else {
            i += s[i..].chars().next().map_or(1, |c| c.len_utf8());
        }
    }
    out
}

fn clip_tail(s: &str) -> &str {
    let n = s.chars().count();
    if n <= SOLUTION_CLIP_CHARS {
        return s;
    }
    let skip = n - SOLUTION_CLIP_CHARS;
    let (byte, _) = s.char_indices().nth(skip).unwrap_or((0, ' '));
    &s[byte..]
}

/// The first `#### <number>` in `s` (no clipping), commas removed.
fn first_marked_number(s: &str) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = s[from..].find("#### ") {
        let start = from + pos + "#### ".len();
        if let Some(end) = number_at(s, start) {
            return Some(s[start..end].replace(',', ""));
        }
        from = from + pos + 1;
    }
    None
}

/// The answer `compute_score` would compare, or `None` when nothing is extracted.
pub fn extract_solution(solution: &str, method: Method) -> Option<String> {
    let s = clip_tail(solution);
    match method {
        Method::Strict => first_marked_number(s),
        Method::Flexible => {
            let found = find_numbers(s);
            // SkyRL's `for final_answer in reversed(answer): if ... break` leaves the loop
            // variable on the first match when every match is invalid, and returns it.
            found
                .iter()
                .rev()
                .find(|a| !a.is_empty() && **a != ".")
                .or(found.first())
                .map(|a| a.to_string())
        }
        Method::Numeric => find_numbers(solution)
            .into_iter()
            .rev()
            .map(|a| a.replace(',', "").trim_end_matches('.').to_string())
            .find(|a| a.parse::<f64>().is_ok()),
    }
}

/// A score and what was extracted.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `score` on a match, `format_score` on a mismatch, 0 when nothing was extracted.
    pub value: f64,
    pub extracted: Option<String>,
}

/// skyrl-gym `compute_score(solution_str, ground_truth, method, format_score, score)`. The ground
/// truth is the dataset's JSON value: only a string can ever match.
pub fn compute_score(
    solution: &str,
    ground_truth: &Value,
    method: Method,
    format_score: f64,
    score: f64,
) -> Score {
    let extracted = extract_solution(solution, method);
    let value = match (&extracted, ground_truth) {
        (None, _) => 0.0,
        (Some(a), Value::String(gt)) if a == gt => score,
        (Some(a), Value::String(gt)) if method == Method::Numeric && numerically_equal(a, gt) => {
            score
        }
        _ => format_score,
    };
    Score { value, extracted }
}

fn numerically_equal(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.replace(',', "").parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * y.abs().max(1.0),
        _ => false,
    }
}

/// The environment's reward: strict, 1.0 or 0.0.
pub fn strict_reward(solution: &str, ground_truth: &str) -> f64 {
    compute_score(
        solution,
        &Value::String(ground_truth.to_string()),
        Method::Strict,
        0.0,
        1.0,
    )
    .value
}

/// Ground truth from a GSM8K answer (`... #### 72`): the first `#### <number>`, commas removed.
pub fn extract_ground_truth(answer: &str) -> Result<String> {
    first_marked_number(answer).ok_or_else(|| {
        Error::invalid(format!(
            "GSM8K answer has no '#### <number>' final answer: {:?}",
            answer.chars().take(80).collect::<String>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flexible_on_only_invalid_numbers_returns_the_first_as_skyrl_does() {
        assert_eq!(
            extract_solution("#### .", Method::Flexible).as_deref(),
            Some(".")
        );
        assert_eq!(
            extract_solution(". then .", Method::Flexible).as_deref(),
            Some(".")
        );
        // Extracted, so a mismatch earns the format score rather than 0.
        let gt = Value::String("7".into());
        let s = compute_score("#### .", &gt, Method::Flexible, 0.1, 1.0);
        assert_eq!(s.value, 0.1);
        assert_eq!(
            extract_solution("3 then 5 and .", Method::Flexible).as_deref(),
            Some("5")
        );
        assert_eq!(extract_solution("no numbers", Method::Flexible), None);
    }

    #[test]
    fn numeric_takes_the_last_number_and_compares_values() {
        let gt = Value::String("14".into());
        let score = |s: &str| compute_score(s, &gt, Method::Numeric, 0.0, 1.0).value;
        assert_eq!(score("7 + 7 = 14. So the answer is 14."), 1.0);
        assert_eq!(score("The answer is 14.0"), 1.0);
        assert_eq!(score("14 caps, then 15"), 0.0);
        assert_eq!(score("no number"), 0.0);
        let gt = Value::String("1200".into());
        assert_eq!(
            compute_score("total: $1,200.", &gt, Method::Numeric, 0.0, 1.0).value,
            1.0
        );
        // SkyRL's flexible compares strings: the sentence's full stop makes it miss.
        assert_eq!(
            compute_score("answer is 1200.", &gt, Method::Flexible, 0.0, 1.0).value,
            0.0
        );
        assert_eq!("numeric".parse::<Method>().unwrap(), Method::Numeric);
    }

    #[test]
    fn strict_needs_the_marker_and_one_space() {
        assert_eq!(strict_reward("so #### 1,234", "1234"), 1.0);
        assert_eq!(strict_reward("####42", "42"), 0.0);
        assert_eq!(extract_solution("#### --5", Method::Strict), None);
        assert_eq!(
            extract_solution("#### --5", Method::Flexible).as_deref(),
            Some("-5")
        );
    }

    #[test]
    fn only_the_last_300_characters_are_read() {
        let s = format!("#### 7 {}", "x".repeat(400));
        assert_eq!(extract_solution(&s, Method::Strict), None);
    }
}
