//! Chat templates rendered as transformers renders them. `tests/data/jinja2_templates.json` holds
//! two templates (a dash-trimmed Llama-3 style one and one that relies on trim_blocks /
//! lstrip_blocks, `namespace`, `loop.last`) and their outputs from Python jinja2 3.x configured
//! as transformers configures it (`ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols])`).

use rlvr_model::chat_template::{ChatMessage, ChatTemplate, TemplateTokens};

#[test]
fn renders_exactly_like_jinja2_with_transformers_settings() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jinja2_templates.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let msgs: Vec<ChatMessage> = serde_json::from_value(data["msgs"].clone()).unwrap();
    let tokens = TemplateTokens {
        bos_token: Some("<s>".into()),
        eos_token: Some("</s>".into()),
        ..Default::default()
    };
    let mut checked = 0;
    for name in ["T1", "T2"] {
        let t = ChatTemplate::new(data[name].as_str().unwrap()).unwrap();
        for agp in [true, false] {
            let want = data["out"][format!("{name}_{}", if agp { "True" } else { "False" })]
                .as_str()
                .unwrap();
            assert_eq!(
                t.render(&msgs, agp, &tokens).unwrap(),
                want,
                "{name} add_generation_prompt={agp}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}
