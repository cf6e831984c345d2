//! The encrypted model in the dense layout against the plaintext ENSI twin,
//! step by step and end to end (insecure-boot-n12: the chain of n16-boot at
//! N = 2^12, NOT secure, so that the test runs in about a minute; 4 token
//! slots, the most the attention layout fits at N = 2^12).

use ensi_ckks::{KeyGenerator, ParametersLiteral};
use ensi_infer::block::{EncryptedModel, ServerContext};
use ensi_infer::client::{decrypt_logits, encrypt_embeddings};
use ensi_infer::dense_model::{choose_packing, decrypt_dense, generate_model_keys, DenseTrace};
use ensi_infer::packing::Layout;
use ensi_model::{BitNetModel, EnsiApprox, Family, Mode, TinyOptions};
use std::sync::Arc;

mod common;
use common::{argmax, max_err_and_scale};

fn bits(err: f64) -> f64 {
    -err.max(1e-300).log2()
}

fn run_family(family: Family) {
    run(family, "insecure-boot-n12", 4, true);
}

/// One block (and, if `whole`, the whole model) at `preset` against the twin.
fn run(family: Family, preset: &str, max_tokens: usize, whole: bool) {
    let dir =
        std::env::temp_dir().join(format!("ensi-dense-test-{family:?}-{}", std::process::id()));
    ensi_model::write_tiny(&dir, &TinyOptions::new(family, 0)).unwrap();
    let model = Arc::new(BitNetModel::load(&dir).unwrap());
    let approx = EnsiApprox::default();
    let enc_model = EncryptedModel::new(model.clone(), approx.polys().unwrap());
    let params = ParametersLiteral::preset(preset).unwrap().build().unwrap();
    let cfg = model.config();
    let packing = choose_packing(cfg, &params, max_tokens, None).unwrap();
    assert_eq!(packing.layout, Layout::Dense, "the default where it fits");
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let keys = generate_model_keys(&params, cfg, &packing, &sk).unwrap();
    let ctx = ServerContext::new(&params, packing, keys).unwrap();

    let tokens_text = [5u32, 17, 42];
    let tokens = tokens_text.len();
    let mode = Mode::twin(&approx).unwrap();
    let mut cache = model.new_cache();
    let (fwd, trace) = model
        .forward_traced(&tokens_text, &mut cache, &mode)
        .unwrap();

    let x = model.embed(&tokens_text).unwrap();
    let input = encrypt_embeddings(&params, &packing, &sk, &x).unwrap();
    assert_eq!(input.len(), 1, "one ciphertext for the whole state");
    let mut dt = DenseTrace::default();
    enc_model
        .dense_block(&ctx, 0, &input[0], tokens, Some(&mut dt))
        .unwrap();
    let lt = &trace.layers[0];
    for (name, ct, factor, gains) in &dt.steps {
        let want = lt
            .step(name)
            .unwrap_or_else(|| panic!("unknown step {name}"));
        let mut got =
            decrypt_dense(&params, &sk, ct, packing.tokens_pad, (tokens, want.cols())).unwrap();
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
    }
    let stats = ctx.take_stats();
    for (name, time, levels, count) in stats.totals() {
        println!(
            "  {name:20} {:8.3} s  {levels} levels  x{count}",
            time.as_secs_f64()
        );
    }
    assert_eq!(
        stats.bootstraps, 6,
        "6 bootstraps per block, all in RMSNorms"
    );
    if !whole {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    let logits_ct = enc_model.forward(&ctx, input, tokens, &|_, _| {}).unwrap();
    let vocab = cfg.vocab_size;
    let logits = decrypt_logits(&params, &packing, &sk, &logits_ct, vocab).unwrap();
    let want = fwd.logits.row(tokens - 1);
    let (err, scale) = max_err_and_scale(&logits, want);
    println!(
        "{family:?} logits: max |err| {err:.3e} ({:.1} bits relative to max |logit| {scale:.2}), \
         encrypted top-1 {}, twin top-1 {}",
        bits(err / scale),
        argmax(&logits),
        argmax(want)
    );
    assert!(bits(err / scale) > 10.0);
    assert_eq!(argmax(&logits), argmax(want));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 128-bit preset: one block of the tiny 1bitLLM model at n16-boot
/// (N = 2^16), 4 token slots. A few minutes on two cores, about 8 GB.
#[test]
fn dense_block_matches_the_twin_at_128_bits() {
    run(Family::OneBitLlm, "n16-boot", 4, false);
}

#[test]
fn dense_block_and_model_match_the_twin_1bitllm() {
    run_family(Family::OneBitLlm);
}

#[test]
fn dense_block_and_model_match_the_twin_bitnet2b() {
    run_family(Family::BitNet2B);
}
