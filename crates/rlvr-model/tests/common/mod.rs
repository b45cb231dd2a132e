//! Test fixtures: a byte-exact GGUF v3 writer, reference block decoders written from the GGML
//! format definitions, and a tiny Llama checkpoint with a tiny byte-level BPE tokenizer; `assets`
//! locates the real models for the reference tests.
#![allow(dead_code)]

pub mod assets;
pub mod fuzz;

use std::path::Path;

use half::f16;

// ---------------------------------------------------------------- GGUF writer

pub enum Md {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArr(Vec<String>),
    I32Arr(Vec<i32>),
}

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;

pub struct RawTensor {
    pub name: String,
    /// Row-major (HF) dims; GGUF stores them innermost first.
    pub dims: Vec<usize>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub fn gguf_bytes(metadata: &[(&str, Md)], tensors: &[RawTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, v) in metadata {
        put_str(&mut out, key);
        match v {
            Md::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Md::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Md::Bool(x) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*x));
            }
            Md::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Md::StrArr(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for s in a {
                    put_str(&mut out, s);
                }
            }
            Md::I32Arr(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    out.extend(x.to_le_bytes());
                }
            }
        }
    }
    let align = |n: usize| n.div_ceil(32) * 32;
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in t.dims.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(t.ggml_type.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = align(offset + t.data.len());
    }
    out.resize(align(out.len()), 0);
    for t in tensors {
        out.extend(&t.data);
        out.resize(align(out.len()), 0);
    }
    out
}

// ---------------------------------------------------------------- deterministic data

/// Tests need varied but reproducible bytes, not quality randomness.
pub use fuzz::Mutator as Lcg;

pub fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

// ---------------------------------------------------------------- reference block decoders
// Straight from the GGML block definitions; each returns the weights of one block.

/// Q8_0: f16 d, 32 x i8 q; w = d * q.
pub fn ref_q8_0(b: &[u8]) -> Vec<f32> {
    let d = f16_at(b, 0);
    (0..32).map(|i| d * (b[2 + i] as i8) as f32).collect()
}

/// Q4_0: f16 d, 16 bytes; w[j] = d * (lo(q[j]) - 8), w[j+16] = d * (hi(q[j]) - 8).
pub fn ref_q4_0(b: &[u8]) -> Vec<f32> {
    let d = f16_at(b, 0);
    let q = &b[2..18];
    let mut w = vec![0.0; 32];
    for j in 0..16 {
        w[j] = d * ((q[j] & 0xF) as f32 - 8.0);
        w[j + 16] = d * ((q[j] >> 4) as f32 - 8.0);
    }
    w
}

/// Q4_1: f16 d, f16 m, 16 bytes; w[j] = d * lo(q[j]) + m, w[j+16] = d * hi(q[j]) + m.
pub fn ref_q4_1(b: &[u8]) -> Vec<f32> {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let q = &b[4..20];
    let mut w = vec![0.0; 32];
    for j in 0..16 {
        w[j] = d * (q[j] & 0xF) as f32 + m;
        w[j + 16] = d * (q[j] >> 4) as f32 + m;
    }
    w
}

/// The 6-bit (scale, min) of sub-block `j` in the 12 packed bytes of Q4_K/Q5_K.
pub fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles; 8 sub-blocks of 32.
/// Sub-blocks 2c and 2c+1 take the low and high nibbles of bytes 32c..32c+32.
pub fn ref_q4_k(b: &[u8]) -> Vec<f32> {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    let mut w = vec![0.0; 256];
    for sub in 0..8 {
        let (sc, m) = k_scale_min(scales, sub);
        let chunk = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
        for l in 0..32 {
            let q = if sub % 2 == 0 {
                chunk[l] & 0xF
            } else {
                chunk[l] >> 4
            };
            w[32 * sub + l] = d * sc as f32 * q as f32 - dmin * m as f32;
        }
    }
    w
}

/// Q5_K: as Q4_K plus 32 bytes qh whose bit `sub` of byte l is the 5th bit of weight l of
/// sub-block `sub`. Layout: d, dmin, scales[12], qh[32], qs[128].
pub fn ref_q5_k(b: &[u8]) -> Vec<f32> {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    let mut w = vec![0.0; 256];
    for sub in 0..8 {
        let (sc, m) = k_scale_min(scales, sub);
        let chunk = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
        for l in 0..32 {
            let lo = if sub % 2 == 0 {
                chunk[l] & 0xF
            } else {
                chunk[l] >> 4
            };
            let hi = (qh[l] >> sub) & 1;
            let q = lo as f32 + 16.0 * hi as f32;
            w[32 * sub + l] = d * sc as f32 * q - dmin * m as f32;
        }
    }
    w
}

/// Q6_K: ql[128], qh[64], 16 x i8 scales, f16 d; 16 sub-blocks of 16, w = d * sc * (q - 32).
/// In each half (128 weights) weight 32k+l (k = 0..4, l = 0..32) takes 4 low bits from
/// ql[l + 32*(k%2)] (low nibble for k < 2, high for k >= 2) and 2 high bits from qh[l] >> 2k.
pub fn ref_q6_k(b: &[u8]) -> Vec<f32> {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc: Vec<i8> = b[192..208].iter().map(|&x| x as i8).collect();
    let d = f16_at(b, 208);
    let mut w = vec![0.0; 256];
    for half in 0..2 {
        let (ql, qh) = (
            &ql[64 * half..64 * half + 64],
            &qh[32 * half..32 * half + 32],
        );
        for k in 0..4 {
            for l in 0..32 {
                let byte = ql[l + 32 * (k % 2)];
                let lo = if k < 2 { byte & 0xF } else { byte >> 4 };
                let hi = (qh[l] >> (2 * k)) & 3;
                let q = (lo | (hi << 4)) as i32 - 32;
                let idx = 128 * half + 32 * k + l;
                w[idx] = d * sc[idx / 16] as f32 * q as f32;
            }
        }
    }
    w
}

// ---------------------------------------------------------------- a tiny checkpoint

/// GPT-2's byte → printable-char map used by byte-level BPE vocabularies.
pub fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut map = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(chars) {
        map[*b as usize] = char::from_u32(c).unwrap();
    }
    map
}

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const MERGES: [&str; 10] = [
    "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2",
];

pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Specials (ids 0..3), the 256 byte tokens in byte order, then one token per merge.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend(byte_chars().iter().map(|c| c.to_string()));
    v.extend(MERGES.iter().map(|m| m.replace(' ', "")));
    v
}

pub fn id_of(token: &str) -> u32 {
    tiny_vocab().iter().position(|t| t == token).unwrap() as u32
}

pub const HIDDEN: usize = 64;
pub const FFN: usize = 96;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = HIDDEN / HEADS;
pub const LAYERS: usize = 2;

/// llama.cpp's converter permutation (HF → GGUF rows): per head, HF row r*half+i → 2i+r.
pub fn llama_cpp_permute(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let half = rows / n_head / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for r in 0..2 {
            for i in 0..half {
                let src = h * 2 * half + r * half + i;
                let dst = h * 2 * half + 2 * i + r;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Decodes one block into its weights.
pub type BlockDecoder = fn(&[u8]) -> Vec<f32>;

/// Random blocks of `ggml_type` for `n` weights, with sane f16 scales.
pub fn random_blocks(rng: &mut Lcg, ggml_type: u32, n: usize) -> (Vec<u8>, Vec<f32>) {
    let (block_bytes, decode): (usize, BlockDecoder) = match ggml_type {
        Q8_0 => (34, ref_q8_0),
        Q4_0 => (18, ref_q4_0),
        Q4_1 => (20, ref_q4_1),
        _ => panic!("random_blocks: unsupported type {ggml_type}"),
    };
    let mut data = Vec::new();
    let mut values = Vec::new();
    for _ in 0..n / 32 {
        let mut block = rng.bytes(block_bytes);
        block[0..2].copy_from_slice(&f16_bytes(0.01 + 0.02 * rng.unit().abs()));
        if ggml_type == Q4_1 {
            block[2..4].copy_from_slice(&f16_bytes(-0.1 * rng.unit().abs()));
        }
        values.extend(decode(&block));
        data.extend(block);
    }
    (data, values)
}

fn f32_data(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub struct TinyGguf {
    pub bytes: Vec<u8>,
    /// Expected HF tensors: name → (dims, values).
    pub expected: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// A 2-layer Llama (hidden 64, 4 heads, 2 KV heads, FFN 96) with F32, F16, Q8_0, Q4_0 and Q4_1
/// tensors and the tiny tokenizer. `tied`: no `output.weight`.
pub fn tiny_gguf(tied: bool, pre: &str) -> TinyGguf {
    tiny_gguf_with(tied, pre, false)
}

/// As [`tiny_gguf`], with `tokenizer.ggml.add_bos_token` set to `add_bos`.
pub fn tiny_gguf_with(tied: bool, pre: &str, add_bos: bool) -> TinyGguf {
    let mut rng = Lcg(7);
    let vocab = tiny_vocab();
    let mut tensors = Vec::new();
    let mut expected = Vec::new();
    type Expected = Vec<(String, Vec<usize>, Vec<f32>)>;
    fn quant(
        tensors: &mut Vec<RawTensor>,
        expected: &mut Expected,
        name: &str,
        hf: &str,
        dims: Vec<usize>,
        ty: u32,
        rng: &mut Lcg,
    ) {
        let (data, values) = random_blocks(rng, ty, dims.iter().product());
        tensors.push(RawTensor {
            name: name.into(),
            dims: dims.clone(),
            ggml_type: ty,
            data,
        });
        expected.push((hf.to_owned(), dims, values));
    }
    quant(
        &mut tensors,
        &mut expected,
        "token_embd.weight",
        "model.embed_tokens.weight",
        vec![vocab.len(), HIDDEN],
        Q8_0,
        &mut rng,
    );
    if !tied {
        quant(
            &mut tensors,
            &mut expected,
            "output.weight",
            "lm_head.weight",
            vec![vocab.len(), HIDDEN],
            Q4_1,
            &mut rng,
        );
    }
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        quant(
            &mut tensors,
            &mut expected,
            &g("attn_v.weight"),
            &p("self_attn.v_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            Q4_0,
            &mut rng,
        );
        quant(
            &mut tensors,
            &mut expected,
            &g("attn_output.weight"),
            &p("self_attn.o_proj.weight"),
            vec![HIDDEN, HIDDEN],
            Q4_1,
            &mut rng,
        );
        quant(
            &mut tensors,
            &mut expected,
            &g("ffn_gate.weight"),
            &p("mlp.gate_proj.weight"),
            vec![FFN, HIDDEN],
            Q4_1,
            &mut rng,
        );
        quant(
            &mut tensors,
            &mut expected,
            &g("ffn_up.weight"),
            &p("mlp.up_proj.weight"),
            vec![FFN, HIDDEN],
            Q8_0,
            &mut rng,
        );
        quant(
            &mut tensors,
            &mut expected,
            &g("ffn_down.weight"),
            &p("mlp.down_proj.weight"),
            vec![HIDDEN, FFN],
            Q4_0,
            &mut rng,
        );
        // q (F32) and k (F16) are stored permuted the way llama.cpp's converter writes them.
        let q_hf: Vec<f32> = (0..HIDDEN * HIDDEN).map(|_| rng.unit()).collect();
        let q_gguf = llama_cpp_permute(&q_hf, HEADS, HIDDEN);
        tensors.push(RawTensor {
            name: g("attn_q.weight"),
            dims: vec![HIDDEN, HIDDEN],
            ggml_type: F32,
            data: f32_data(&q_gguf),
        });
        expected.push((p("self_attn.q_proj.weight"), vec![HIDDEN, HIDDEN], q_hf));
        let k_hf: Vec<f32> = (0..KV_HEADS * HEAD_DIM * HIDDEN)
            .map(|_| f16::from_f32(rng.unit()).to_f32())
            .collect();
        let k_gguf = llama_cpp_permute(&k_hf, KV_HEADS, HIDDEN);
        tensors.push(RawTensor {
            name: g("attn_k.weight"),
            dims: vec![KV_HEADS * HEAD_DIM, HIDDEN],
            ggml_type: F16,
            data: k_gguf.iter().flat_map(|x| f16_bytes(*x)).collect(),
        });
        expected.push((
            p("self_attn.k_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            k_hf,
        ));
        for (gn, hn) in [
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
        ] {
            let v: Vec<f32> = (0..HIDDEN).map(|_| 1.0 + 0.1 * rng.unit()).collect();
            tensors.push(RawTensor {
                name: g(&format!("{gn}.weight")),
                dims: vec![HIDDEN],
                ggml_type: F32,
                data: f32_data(&v),
            });
            expected.push((p(&format!("{hn}.weight")), vec![HIDDEN], v));
        }
    }
    let norm: Vec<f32> = (0..HIDDEN).map(|_| 1.0 + 0.1 * rng.unit()).collect();
    tensors.push(RawTensor {
        name: "output_norm.weight".into(),
        dims: vec![HIDDEN],
        ggml_type: F32,
        data: f32_data(&norm),
    });
    expected.push(("model.norm.weight".into(), vec![HIDDEN], norm));

    let token_type: Vec<i32> = (0..vocab.len())
        .map(|i| if i < SPECIALS.len() { 3 } else { 1 })
        .collect();
    let metadata = vec![
        ("general.architecture", Md::Str("llama".into())),
        ("general.alignment", Md::U32(32)),
        ("llama.block_count", Md::U32(LAYERS as u32)),
        ("llama.context_length", Md::U32(128)),
        ("llama.embedding_length", Md::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Md::U32(FFN as u32)),
        ("llama.attention.head_count", Md::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Md::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base", Md::F32(100000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Md::F32(1e-5)),
        ("tokenizer.ggml.model", Md::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Md::Str(pre.into())),
        ("tokenizer.ggml.tokens", Md::StrArr(vocab)),
        ("tokenizer.ggml.token_type", Md::I32Arr(token_type)),
        (
            "tokenizer.ggml.merges",
            Md::StrArr(MERGES.iter().map(|s| s.to_string()).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Md::U32(1)),
        ("tokenizer.ggml.eos_token_id", Md::U32(2)),
        ("tokenizer.ggml.padding_token_id", Md::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Md::U32(0)),
        ("tokenizer.ggml.add_bos_token", Md::Bool(add_bos)),
        ("tokenizer.chat_template", Md::Str(CHATML.into())),
    ];
    TinyGguf {
        bytes: gguf_bytes(&metadata, &tensors),
        expected,
    }
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}
