//! The encrypted block and the whole encrypted model against the plaintext
//! ENSI twin, step by step (insecure-boot-n12: the chain of n16-boot at
//! N = 2^12, NOT secure, so that the test runs in seconds).

use ensi_ckks::{KeyGenerator, ParametersLiteral};
use ensi_infer::block::{generate_keys, BlockTrace, EncryptedModel, ServerContext};
use ensi_infer::client::{decrypt_columns, decrypt_logits, encrypt_embeddings};
use ensi_model::{BitNetModel, EnsiApprox, Family, Mode, TinyOptions};
use std::sync::Arc;

mod common;
use common::{argmax, max_err_and_scale};

fn tiny(family: Family, dir: &std::path::Path) -> BitNetModel {
    ensi_model::write_tiny(dir, &TinyOptions::new(family, 0)).unwrap();
    BitNetModel::load(dir).unwrap()
}

fn bits(err: f64) -> f64 {
    -err.max(1e-300).log2()
}

fn run_family(family: Family) {
    let dir =
        std::env::temp_dir().join(format!("ensi-block-test-{family:?}-{}", std::process::id()));
    let model = Arc::new(tiny(family, &dir));
    let approx = EnsiApprox::default();
    let polys = approx.polys().unwrap();
    let params = ParametersLiteral::preset("insecure-boot-n12")
        .unwrap()
        .build()
        .unwrap();
    let enc_model = EncryptedModel::new(model.clone(), polys);
    let tokens_text = [5u32, 17, 42, 99, 7];
    let tokens = tokens_text.len();
    let packing = enc_model.packing(&params, 8).unwrap();
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let keys = generate_keys(&params, &packing, &sk).unwrap();
    let ctx = ServerContext::new(&params, packing, keys).unwrap();

    // The twin's trace.
    let mode = Mode::twin(&approx).unwrap();
    let mut cache = model.new_cache();
    let (fwd, trace) = model
        .forward_traced(&tokens_text, &mut cache, &mode)
        .unwrap();

    let x = model.embed(&tokens_text).unwrap();
    let cols = encrypt_embeddings(&params, &packing, &sk, &x).unwrap();
    let mut bt = BlockTrace::default();
    let out = enc_model
        .block(&ctx, 0, &cols, tokens, Some(&mut bt))
        .unwrap();
    let lt = &trace.layers[0];
    for (name, cts, factor) in &bt.steps {
        let got = decrypt_columns(&params, &sk, cts, tokens, *factor).unwrap();
        let want = lt
            .step(name)
            .unwrap_or_else(|| panic!("unknown step {name}"));
        let err = got.max_abs_diff(want);
        let rel = err / want.max_abs().max(1e-12);
        println!(
            "{family:?} {name:12} max |err| {err:.3e} (max |value| {:.3}), {:.1} bits relative",
            want.max_abs(),
            bits(rel)
        );
        assert!(bits(rel) > 10.0, "{name}: {:.1} bits", bits(rel));
    }
    let stats = ctx.take_stats();
    println!("{family:?}: {} bootstraps in one block", stats.bootstraps);
    assert_eq!(stats.bootstraps, 6);
    drop(out);

    // The whole model: same next token as the twin.
    let logits_ct = enc_model.forward(&ctx, cols, tokens, &|_, _| {}).unwrap();
    let vocab = model.config().vocab_size;
    let logits = decrypt_logits(&params, &packing, &sk, &logits_ct, vocab).unwrap();
    let want = fwd.logits.row(tokens - 1);
    let (err, _) = max_err_and_scale(&logits, want);
    println!(
        "{family:?} logits: max |err| {err:.3e}, encrypted top-1 {}, twin top-1 {}",
        argmax(&logits),
        argmax(want)
    );
    assert_eq!(argmax(&logits), argmax(want));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn encrypted_block_and_model_match_the_twin_1bitllm() {
    run_family(Family::OneBitLlm);
}

#[test]
fn encrypted_block_and_model_match_the_twin_bitnet2b() {
    run_family(Family::BitNet2B);
}
