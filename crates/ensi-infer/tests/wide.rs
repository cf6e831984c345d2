//! One block in the wide layout (the dense layout over several ciphertexts)
//! against the plaintext ENSI twin, step by step (insecure-boot-n12: the chain
//! of n16-boot at N = 2^12, NOT secure, so that the test runs in about a
//! minute). 64 token slots make 32 blocks per ciphertext, so the tiny model's
//! state spans 2 real ciphertexts (packed in one complex), its MLP 4 (2) and
//! its heads 2 (1): every packed and multi-ciphertext path runs.

use ensi_ckks::{KeyGenerator, ParametersLiteral};
use ensi_infer::block::{EncryptedModel, ServerContext};
use ensi_infer::client::encrypt_embeddings;
use ensi_infer::dense_model::{choose_packing, generate_model_keys};
use ensi_infer::packing::Layout;
use ensi_infer::wide::{decrypt_wide, packed, WideShape, WideTrace};
use ensi_model::rng::SplitMix64;
use ensi_model::{BitNetModel, EnsiApprox, Family, Mode, TinyOptions};
use std::sync::Arc;

fn bits(err: f64) -> f64 {
    -err.max(1e-300).log2()
}

fn run(family: Family, tokens: usize) {
    let dir =
        std::env::temp_dir().join(format!("ensi-wide-test-{family:?}-{}", std::process::id()));
    ensi_model::write_tiny(&dir, &TinyOptions::new(family, 3)).unwrap();
    let model = Arc::new(BitNetModel::load(&dir).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    let approx = EnsiApprox::default();
    let enc_model = EncryptedModel::new(model.clone(), approx.polys().unwrap());
    let params = ParametersLiteral::preset("insecure-boot-n12")
        .unwrap()
        .build()
        .unwrap();
    let cfg = model.config();
    let packing = choose_packing(cfg, &params, 64, Some(Layout::Wide)).unwrap();
    let sh = WideShape::new(cfg, &packing).unwrap();
    assert_eq!((sh.blocks, sh.c_d, sh.c_ff, sh.c_h), (32, 2, 4, 2));
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let keys = generate_model_keys(&params, cfg, &packing, &sk).unwrap();
    let ctx = ServerContext::new(&params, packing, keys).unwrap();

    let mut rng = SplitMix64::new(11);
    let ids: Vec<u32> = (0..tokens)
        .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
        .collect();
    let mode = Mode::twin(&approx).unwrap();
    let (_, trace) = model
        .forward_traced(&ids, &mut model.new_cache(), &mode)
        .unwrap();
    let x = model.embed(&ids).unwrap();
    let input = encrypt_embeddings(&params, &packing, &sk, &x).unwrap();
    // Two real ciphertexts of state, packed as the real and imaginary parts of one.
    assert_eq!(
        input.len(),
        1,
        "the state's two ciphertexts come packed in one"
    );
    let mut wt = WideTrace::default();
    let out = enc_model
        .wide_block(&ctx, 0, &input, tokens, Some(&mut wt))
        .unwrap();
    assert_eq!(out.len(), 1);
    let lt = &trace.layers[0];
    let mut seen = Vec::new();
    for (name, cts, factor, gains) in &wt.steps {
        let want = match *name {
            "attn_norm" => &lt.attn_norm,
            "after_attn" => &lt.after_attn,
            "mlp_norm" => &lt.mlp_norm,
            "gate" => &lt.gate,
            "up" => &lt.up,
            "hidden" => &lt.hidden,
            "output" => &lt.output,
            other => panic!("unknown step {other}"),
        };
        let mut got =
            decrypt_wide(&params, &sk, cts, packing.tokens_pad, (tokens, want.cols())).unwrap();
        for t in 0..tokens {
            for (c, v) in got.row_mut(t).iter_mut().enumerate() {
                *v *= factor * gains.as_ref().map_or(1.0, |g| g[c]);
            }
        }
        let err = got.max_abs_diff(want);
        let rel = err / want.max_abs().max(1e-12);
        println!(
            "{family:?} {name:12} max |err| {err:.3e} (max |value| {:.3}), {:.1} bits relative",
            want.max_abs(),
            bits(rel)
        );
        assert!(bits(rel) > 12.0, "{name}: {:.1} bits", bits(rel));
        seen.push(*name);
    }
    // up is computed from the normed state dropped to the level where act(gate) lands.
    let level = |name: &str| {
        wt.steps
            .iter()
            .find(|st| st.0 == name)
            .map(|st| st.1[0].level())
            .unwrap()
    };
    assert!(level("up") < level("gate"), "up computed low");
    assert_eq!(level("up"), level("hidden") + 1, "up at act(gate)'s level");
    assert_eq!(
        seen,
        [
            "attn_norm",
            "after_attn",
            "mlp_norm",
            "gate",
            "up",
            "hidden",
            "output"
        ]
    );
    // The returned state is the traced output.
    let got = decrypt_wide(
        &params,
        &sk,
        &out,
        packing.tokens_pad,
        (tokens, cfg.hidden_size),
    )
    .unwrap();
    assert!(got.max_abs_diff(&lt.output) / lt.output.max_abs() < 2f64.powi(-12));
    let stats = ctx.take_stats();
    for (name, time, levels, count) in stats.totals() {
        println!(
            "  {name:20} {:8.3} s  {levels} levels  x{count}",
            time.as_secs_f64()
        );
    }
    assert_eq!(
        stats.bootstraps,
        2 * (1 + packed(sh.c_d)) + 2,
        "bootstraps only in the norms: ss and each packed state ciphertext per main norm, \
         ss per sub-norm"
    );
}

#[test]
fn wide_block_matches_the_twin_1bitllm() {
    // 40 real tokens of 64 slots: padding and the causal mask are exercised.
    run(Family::OneBitLlm, 40);
}

#[test]
fn wide_block_matches_the_twin_bitnet2b() {
    // Grouped-query attention (2 KV heads for 4 query heads), ReLU^2.
    run(Family::BitNet2B, 64);
}
