//! Hugging Face chat templates (Jinja) rendered with minijinja, configured the way transformers
//! configures jinja2: `trim_blocks`, `lstrip_blocks`, loop controls, Python string methods,
//! `raise_exception`, a Python-style `tojson` and `strftime_now`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

/// One turn of a conversation, as `messages` entries of HF chat templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The special-token strings a template may reference (`bos_token`, `eos_token`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        Self::new(&self.source).expect("a template that compiled once compiles again")
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        // transformers: jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| anyhow::anyhow!("chat template does not compile: {e:#}"))?;
        Ok(Self {
            env,
            source: source.to_owned(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` with the special tokens and `add_generation_prompt`, as
    /// transformers' `apply_chat_template(tokenize=False)` does.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
    ) -> Result<String> {
        self.render_with(messages, add_generation_prompt, tokens, &[])
    }

    /// As [`render`](Self::render), with extra template variables (e.g. `tools`, `enable_thinking`).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
        extra: &[(&str, Value)],
    ) -> Result<String> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        // transformers always passes these, as None when unused; templates test `is not none`.
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        for (k, v) in extra {
            ctx.insert((*k).to_owned(), v.clone());
        }
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        let named = [
            ("bos_token", &tokens.bos_token),
            ("eos_token", &tokens.eos_token),
            ("pad_token", &tokens.pad_token),
            ("unk_token", &tokens.unk_token),
        ];
        for (name, tok) in named {
            if let Some(t) = tok {
                ctx.insert(name.into(), Value::from(t.as_str()));
            }
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .context("chat template missing from its environment")?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| anyhow::anyhow!("chat template failed to render: {e:#}"))
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, i.e. Python's separators (`", "`, `": "`),
/// no HTML escaping (minijinja's built-in escapes `<`, `>`, `&`, `'`).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be a pair",
            ))
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let fmt = PyJson {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    fmt.write(&value, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn write(&self, v: &Value, level: usize, out: &mut String) -> std::result::Result<(), Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if let Some(i) = v.as_i64().filter(|_| v.is_integer()) {
                    out.push_str(&i.to_string());
                } else {
                    let f = f64::try_from(v.clone())?;
                    out.push_str(&py_float_repr(f));
                }
            }
            ValueKind::String => self.write_str(v.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.write_container('[', ']', items.len(), level, out, |i, lvl, out| {
                    self.write(&items[i], lvl, out)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.write_container('{', '}', keys.len(), level, out, |i, lvl, out| {
                    let key = &keys[i];
                    match key.as_str() {
                        Some(s) => self.write_str(s, out),
                        None => self.write_str(&key.to_string(), out),
                    }
                    out.push_str(&self.key_sep);
                    self.write(&v.get_item(key)?, lvl, out)
                })?;
            }
            _ => self.write_str(&v.to_string(), out),
        }
        Ok(())
    }

    fn write_container(
        &self,
        open: char,
        close: char,
        n: usize,
        level: usize,
        out: &mut String,
        mut item: impl FnMut(usize, usize, &mut String) -> std::result::Result<(), Error>,
    ) -> std::result::Result<(), Error> {
        out.push(open);
        if n == 0 {
            out.push(close);
            return Ok(());
        }
        for i in 0..n {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            if let Some(ind) = self.indent {
                out.push('\n');
                out.push_str(&" ".repeat(ind * (level + 1)));
            }
            item(i, level + 1, out)?;
        }
        if let Some(ind) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(ind * level));
        }
        out.push(close);
        Ok(())
    }

    fn write_str(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7e) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr(float)` for the common cases: integral values keep a `.0`, exponents are
/// written `1e-05` style.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f:?}")
}

/// `strftime_now(format)`: the current time (UTC) formatted with the common strftime codes.
fn strftime_now(format: String) -> std::result::Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Value::from(strftime_utc(&format, secs)))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats unix time `secs` (UTC). Supports %Y %y %m %d %e %B %b %A %a %H %I %M %S %p %j %%.
pub(crate) fn strftime_utc(format: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn chatml_renders_with_default_system_prompt() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let out = t
            .render(&[ChatMessage::user("hi")], true, &TemplateTokens::default())
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(
                &[ChatMessage::system("S"), ChatMessage::user("u")],
                false,
                &TemplateTokens::default(),
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        // Block tags on their own lines leave no blank lines or indentation behind.
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src).unwrap();
        let out = t
            .render(
                &[ChatMessage::user("a"), ChatMessage::user("b")],
                false,
                &TemplateTokens::default(),
            )
            .unwrap();
        assert_eq!(out, "U:a\nU:b\n");
    }

    #[test]
    fn special_tokens_pycompat_and_raise_exception() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}{{ m['content'].strip().upper() }}{{ eos_token }}{% endfor %}";
        let t = ChatTemplate::new(src).unwrap();
        let toks = TemplateTokens {
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
            ..Default::default()
        };
        let out = t
            .render(&[ChatMessage::user("  hey ")], false, &toks)
            .unwrap();
        assert_eq!(out, "<s>HEY</s>");
        let err = t
            .render(&[ChatMessage::new("tool", "x")], false, &toks)
            .unwrap_err();
        assert!(format!("{err:#}").contains("bad role tool"), "{err:#}");
    }

    #[test]
    fn tools_and_documents_default_to_none() {
        let src = "{% if tools is not none %}T{% endif %}{% if documents is none %}D{% endif %}";
        let t = ChatTemplate::new(src).unwrap();
        let toks = TemplateTokens::default();
        assert_eq!(t.render(&[], false, &toks).unwrap(), "D");
        let tools = Value::from_serialize(serde_json::json!([{"name": "calc"}]));
        assert_eq!(
            t.render_with(&[], false, &toks, &[("tools", tools)])
                .unwrap(),
            "TD"
        );
    }

    #[test]
    fn loop_controls_are_enabled() {
        let src = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}";
        let t = ChatTemplate::new(src).unwrap();
        let out = t
            .render(
                &[ChatMessage::user("a"), ChatMessage::user("b")],
                false,
                &TemplateTokens::default(),
            )
            .unwrap();
        assert_eq!(out, "a");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ messages | tojson }}|{{ x | tojson(indent=2) }}|{{ y | tojson }}",
        )
        .unwrap();
        let x = Value::from_serialize(serde_json::json!({"a": [1, 2.5], "b": "<é>"}));
        let out = t
            .render_with(
                &[ChatMessage::user("q\"\n")],
                false,
                &TemplateTokens::default(),
                &[("x", x), ("y", Value::from(1e-5))],
            )
            .unwrap();
        assert_eq!(
            out,
            "[{\"role\": \"user\", \"content\": \"q\\\"\\n\"}]|{\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"b\": \"<é>\"\n}|1e-05"
        );
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let secs = 1_709_211_909;
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S", secs),
            "2024-02-29 13:05:09"
        );
        assert_eq!(
            strftime_utc("%d %B %Y, %A %j %b %a %I%p %%", secs),
            "29 February 2024, Thursday 060 Feb Thu 01PM %"
        );
        assert_eq!(strftime_utc("%Y-%m-%d", 0), "1970-01-01");
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}").unwrap();
        let year: i64 = t
            .render(&[], false, &TemplateTokens::default())
            .unwrap()
            .parse()
            .unwrap();
        assert!(year >= 2024);
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = ChatTemplate::new("{% for m in messages %}").unwrap_err();
        assert!(format!("{err:#}").contains("does not compile"), "{err:#}");
    }
}
