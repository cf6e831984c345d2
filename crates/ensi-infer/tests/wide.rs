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
    let want_of = |name: &str| {
        lt.step(name)
            .unwrap_or_else(|| panic!("unknown step {name}"))
    };
    let decrypted = wt
        .decrypt(&params, &sk, packing.tokens_pad, tokens, |name| {
            want_of(name).cols()
        })
        .unwrap();
    let mut seen = Vec::new();
    for (name, got) in &decrypted {
        let want = want_of(name);
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

/// The packed block map alone against its definition, `y[t][o] = sum_i
/// w(o, i)[t] x[t][i]`: odd real ciphertext counts on both sides (packed
/// ciphertexts with an empty imaginary half), partly filled last ciphertexts,
/// two maps of one input in one call, and weights that vary per token (as
/// RoPE's do).
#[test]
fn wide_map_matches_its_definition() {
    use ensi_ckks::circuits::bootstrap::BootstrapKeys;
    use ensi_infer::block::{bootstrap_config, sum_bootstrap_config};
    use ensi_infer::wide::{encrypt_wide, wide_maps, WideWeight};
    use ensi_model::Matrix;

    let dir = std::env::temp_dir().join(format!("ensi-wide-map-test-{}", std::process::id()));
    ensi_model::write_tiny(&dir, &TinyOptions::new(Family::OneBitLlm, 3)).unwrap();
    let model = BitNetModel::load(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let params = ParametersLiteral::preset("insecure-boot-n12")
        .unwrap()
        .build()
        .unwrap();
    let packing = choose_packing(model.config(), &params, 64, Some(Layout::Wide)).unwrap();
    let (s, nb) = (packing.tokens_pad, packing.blocks);
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let boot_cfg = bootstrap_config(&params, &packing);
    let top = boot_cfg.output_level(&params).unwrap();
    // Every block rotation, whatever baby step the map picks.
    let steps: Vec<i64> = (1..nb).map(|j| (j * s) as i64).collect();
    let sum_cfg = sum_bootstrap_config(&params, &packing).unwrap();
    let keys = BootstrapKeys::generate_for(&params, &[&boot_cfg, &sum_cfg], &sk, &steps, Some(top))
        .unwrap();
    let ctx = ServerContext::new(&params, packing, keys).unwrap();

    let (tokens, w_in, w_out, w_out2) = (40, 3 * nb - 5, 5 * nb - 3, 2 * nb);
    let mut rng = SplitMix64::new(5);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let mut x = Matrix::zeros(tokens, w_in);
    for t in 0..tokens {
        for v in x.row_mut(t) {
            *v = uniform();
        }
    }
    let ternary: Vec<f64> = (0..(w_out + w_out2) * w_in)
        .map(|_| (uniform() * 1.5).round() * 0.1)
        .collect();
    // Map 0 uses rows 0..w_out, map 1 the rest.
    let weight = |row: usize, i: usize, t: usize| {
        ternary[row * w_in + i] * (1.0 + 0.3 * (0.2 * t as f64 + row as f64).cos())
    };
    let (ternary, weight) = (&ternary, &weight);
    let make = |base: usize, rows: usize| {
        move |o: usize, i: usize, out: &mut [f64]| {
            if o >= rows || i >= w_in || ternary[(base + o) * w_in + i] == 0.0 {
                return false;
            }
            for (t, v) in out.iter_mut().enumerate() {
                *v = weight(base + o, i, t);
            }
            true
        }
    };
    let (w0, w1) = (make(0, w_out), make(w_out, w_out2));
    let maps: [(usize, WideWeight); 2] = [(w_out.div_ceil(nb), &w0), (w_out2 / nb, &w1)];
    let input_packing = ensi_infer::packing::Packing {
        hidden: w_in,
        ..packing
    };
    let xs = encrypt_wide(&params, &input_packing, &sk, &x).unwrap();
    assert_eq!(xs.len(), packed(3), "3 real ciphertexts, packed in 2");
    let ys = wide_maps(ctx.eval(), ctx.encoder(), &xs, 3, s, nb, &maps).unwrap();
    assert_eq!((ys[0].len(), ys[1].len()), (packed(5), packed(2)));
    for (y, (base, rows)) in ys.iter().zip([(0, w_out), (w_out, w_out2)]) {
        assert_eq!(y[0].level(), xs[0].level() - 1, "one level");
        let got = decrypt_wide(&params, &sk, y, s, (tokens, rows)).unwrap();
        let mut max_err = 0f64;
        for t in 0..tokens {
            for o in 0..rows {
                let want: f64 = (0..w_in)
                    .map(|i| weight(base + o, i, t) * x.get(t, i))
                    .sum();
                max_err = max_err.max((got.get(t, o) - want).abs());
            }
        }
        println!("map of {rows} outputs: max |err| {max_err:.3e}");
        assert!(max_err < 1e-4, "max |err| {max_err:.3e}");
    }
}
