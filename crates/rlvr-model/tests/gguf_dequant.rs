//! GGML blocks with known fields decode to the values the format definition gives: hand-picked
//! blocks checked against numbers written out here, and random blocks against the reference
//! decoders in `common` (written from the GGML block layouts, independent of candle).

mod common;

use candle_core::quantized::GgmlDType;
use common::*;
use rlvr_model::gguf::dequantize_bytes;

fn decode(dtype: GgmlDType, bytes: &[u8], n: usize) -> Vec<f32> {
    dequantize_bytes(dtype, bytes, &[n])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn q8_0_block_by_hand() {
    let mut b = f16_bytes(0.5).to_vec();
    b.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let want: Vec<f32> = (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect();
    assert_eq!(decode(GgmlDType::Q8_0, &b, 32), want);
}

#[test]
fn q4_0_block_by_hand() {
    // d = 2, byte j holds lo = j, hi = 15 - j: w[j] = 2 (j - 8), w[j+16] = 2 (7 - j).
    let mut b = f16_bytes(2.0).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut want = vec![0.0; 32];
    for j in 0..16 {
        want[j] = 2.0 * (j as f32 - 8.0);
        want[j + 16] = 2.0 * (7.0 - j as f32);
    }
    assert_eq!(decode(GgmlDType::Q4_0, &b, 32), want);
}

#[test]
fn q4_1_block_by_hand() {
    // d = 0.25, m = -1: lo = j, hi = 3 → w[j] = 0.25 j - 1, w[j+16] = -0.25.
    let mut b = f16_bytes(0.25).to_vec();
    b.extend(f16_bytes(-1.0));
    b.extend((0..16u8).map(|j| j | (3 << 4)));
    let mut want = vec![-0.25; 32];
    for (j, w) in want.iter_mut().enumerate().take(16) {
        *w = 0.25 * j as f32 - 1.0;
    }
    assert_eq!(decode(GgmlDType::Q4_1, &b, 32), want);
}

/// Packs eight 6-bit (scale, min) pairs the way Q4_K/Q5_K store them.
fn pack_k_scales(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    s
}

#[test]
fn q4_k_block_by_hand() {
    // d = 1, dmin = 0.5, sub-block s has scale s+1 (s+40 for s >= 4, to use the high bits) and
    // min s; every nibble is 3 in even sub-blocks and 5 in odd ones.
    let sc = [1, 2, 3, 4, 44, 45, 46, 47];
    let m = [0, 1, 2, 3, 4, 5, 50, 63];
    let mut b = f16_bytes(1.0).to_vec();
    b.extend(f16_bytes(0.5));
    b.extend(pack_k_scales(sc, m));
    b.extend(std::iter::repeat_n(3u8 | (5 << 4), 128));
    let mut want = vec![0.0; 256];
    for s in 0..8 {
        let q = if s % 2 == 0 { 3.0 } else { 5.0 };
        for l in 0..32 {
            want[32 * s + l] = sc[s] as f32 * q - 0.5 * m[s] as f32;
        }
    }
    assert_eq!(ref_q4_k(&b), want, "reference decoder");
    assert_eq!(decode(GgmlDType::Q4K, &b, 256), want);
}

#[test]
fn q5_k_block_by_hand() {
    // As Q4_K with nibble 2 everywhere, plus the 5th bit set for odd l in sub-blocks 1 and 6.
    let sc = [2, 2, 2, 2, 33, 33, 33, 33];
    let m = [1, 1, 1, 1, 20, 20, 20, 20];
    let mut b = f16_bytes(0.5).to_vec();
    b.extend(f16_bytes(0.25));
    b.extend(pack_k_scales(sc, m));
    b.extend((0..32).map(|l| if l % 2 == 1 { (1u8 << 1) | (1 << 6) } else { 0 }));
    b.extend(std::iter::repeat_n(2u8 | (2 << 4), 128));
    let mut want = vec![0.0; 256];
    for s in 0..8 {
        for l in 0..32 {
            let hi = (s == 1 || s == 6) && l % 2 == 1;
            let q = 2.0 + if hi { 16.0 } else { 0.0 };
            want[32 * s + l] = 0.5 * sc[s] as f32 * q - 0.25 * m[s] as f32;
        }
    }
    assert_eq!(ref_q5_k(&b), want, "reference decoder");
    assert_eq!(decode(GgmlDType::Q5K, &b, 256), want);
}

#[test]
fn q6_k_block_by_hand() {
    // ql: low nibble 1, high nibble 2 everywhere; qh: bits for k = 0..4 are (0, 1, 2, 3);
    // scales: sub-block i has scale i - 8; d = 0.125.
    // Weight 32k+l of each half: q = (k < 2 ? 1 : 2) | (k << 4), minus 32.
    let mut b = vec![1u8 | (2 << 4); 128];
    b.extend(std::iter::repeat_n(1u8 << 2 | 2 << 4 | 3 << 6, 64));
    b.extend((0..16).map(|i| (i as i8 - 8) as u8));
    b.extend(f16_bytes(0.125));
    let mut want = vec![0.0; 256];
    for (idx, w) in want.iter_mut().enumerate() {
        let k = (idx % 128) / 32;
        let lo = if k < 2 { 1 } else { 2 };
        let q = (lo | (k << 4)) as f32 - 32.0;
        *w = 0.125 * (idx / 16) as f32 - 0.125 * 8.0;
        *w *= q;
    }
    assert_eq!(ref_q6_k(&b), want, "reference decoder");
    assert_eq!(decode(GgmlDType::Q6K, &b, 256), want);
}

#[test]
fn random_blocks_match_the_reference_decoders() {
    let mut rng = Lcg(42);
    let cases: [(GgmlDType, usize, usize, BlockDecoder); 6] = [
        (GgmlDType::Q8_0, 34, 32, ref_q8_0),
        (GgmlDType::Q4_0, 18, 32, ref_q4_0),
        (GgmlDType::Q4_1, 20, 32, ref_q4_1),
        (GgmlDType::Q4K, 144, 256, ref_q4_k),
        (GgmlDType::Q5K, 176, 256, ref_q5_k),
        (GgmlDType::Q6K, 210, 256, ref_q6_k),
    ];
    for (dtype, block_bytes, block_len, reference) in cases {
        let blocks = 3;
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for _ in 0..blocks {
            let mut b = rng.bytes(block_bytes);
            // Finite f16 scales: the d (and dmin/m) fields.
            let d_at = if dtype == GgmlDType::Q6K {
                vec![208]
            } else if block_bytes == 18 || block_bytes == 34 {
                vec![0]
            } else {
                vec![0, 2]
            };
            for at in d_at {
                b[at..at + 2].copy_from_slice(&f16_bytes(rng.unit()));
            }
            want.extend(reference(&b));
            bytes.extend(b);
        }
        let got = dequantize_bytes(dtype, &bytes, &[blocks, block_len]).unwrap();
        assert_eq!(got.dims(), &[blocks, block_len]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{dtype:?} weight {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn float_types_and_size_checks() {
    let vals = [1.5f32, -2.25, 0.0, 3.0e-3];
    let f32_bytes: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(decode(GgmlDType::F32, &f32_bytes, 4), vals);
    let f16_b: Vec<u8> = vals.iter().flat_map(|x| f16_bytes(*x)).collect();
    let want16: Vec<f32> = vals
        .iter()
        .map(|x| half::f16::from_f32(*x).to_f32())
        .collect();
    assert_eq!(decode(GgmlDType::F16, &f16_b, 4), want16);
    let bf16_b: Vec<u8> = vals
        .iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect();
    let want_bf: Vec<f32> = vals
        .iter()
        .map(|x| half::bf16::from_f32(*x).to_f32())
        .collect();
    assert_eq!(decode(GgmlDType::BF16, &bf16_b, 4), want_bf);

    let err = dequantize_bytes(GgmlDType::Q8_0, &[0u8; 33], &[32]).unwrap_err();
    assert!(format!("{err}").contains("expected 34 bytes"), "{err}");
    let err = dequantize_bytes(GgmlDType::Q4_0, &[0u8; 18], &[31]).unwrap_err();
    assert!(format!("{err}").contains("block size"), "{err}");
}
