//! Forward-pass invariants on the built-in tiny models: causality, KV cache against a full
//! pass, traces, generation, and the agreement of the ENSI twin with the original.

use ensi_model::approx::SigmoidBias;
use ensi_model::eval::{compare_modes, Agreement, DEFAULT_PROMPTS};
use ensi_model::generate::{argmax, top_k};
use ensi_model::{
    generate, BitNetModel, EnsiApprox, Family, GenerateOptions, Mode, Sampling, TinyOptions,
    Tokenizer,
};
use std::path::PathBuf;

fn load(family: Family, seed: u64) -> (BitNetModel, Tokenizer) {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "ensi-forward-{}-{}-{seed}",
        std::process::id(),
        family.cli_name()
    ));
    ensi_model::write_tiny(&dir, &TinyOptions::new(family, seed)).unwrap();
    let m = BitNetModel::load(&dir).unwrap();
    let t = Tokenizer::from_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (m, t)
}

fn modes() -> Vec<Mode> {
    vec![
        Mode::original(),
        Mode::original_without_activation_quant(),
        Mode::sigmoid_exact(SigmoidBias::NegLnAttended),
        Mode::twin(&EnsiApprox::default()).unwrap(),
    ]
}

#[test]
fn later_tokens_never_change_earlier_logits() {
    for family in [Family::OneBitLlm, Family::BitNet2B] {
        let (m, tok) = load(family, 1);
        let ids = tok.encode("Causality: the future cannot leak.").unwrap();
        for mode in modes() {
            let full = m.forward(&ids, &mut m.new_cache(), &mode).unwrap().logits;
            let k = ids.len() / 2;
            let prefix = m
                .forward(&ids[..k], &mut m.new_cache(), &mode)
                .unwrap()
                .logits;
            for r in 0..k {
                for (a, b) in full.row(r).iter().zip(prefix.row(r)) {
                    assert!(
                        (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                        "{}: row {r}",
                        mode.name()
                    );
                }
            }
            // Changing the last token changes only the last row.
            let mut other = ids.clone();
            *other.last_mut().unwrap() = 97;
            let alt = m.forward(&other, &mut m.new_cache(), &mode).unwrap().logits;
            let last = ids.len() - 1;
            for r in 0..last {
                assert_eq!(full.row(r), alt.row(r), "{}", mode.name());
            }
            assert_ne!(full.row(last), alt.row(last));
        }
    }
}

#[test]
fn kv_cache_matches_a_full_pass() {
    for family in [Family::OneBitLlm, Family::BitNet2B] {
        let (m, tok) = load(family, 2);
        let ids = tok.encode("one token at a time").unwrap();
        for mode in modes() {
            let full = m.forward(&ids, &mut m.new_cache(), &mode).unwrap().logits;
            let mut cache = m.new_cache();
            let mut rows = m.forward(&ids[..3], &mut cache, &mode).unwrap().logits;
            for t in &ids[3..] {
                rows.append_rows(&m.forward(&[*t], &mut cache, &mode).unwrap().logits);
            }
            assert_eq!(cache.len(), ids.len());
            assert!(full.max_abs_diff(&rows) < 1e-11, "{}", mode.name());
        }
    }
}

#[test]
fn neg_ln_seq_len_bias_depends_on_the_sequence_length() {
    // ENSI's own b = -ln(s) makes earlier rows depend on s; the default b = -ln(i + 1) does not.
    let (m, tok) = load(Family::OneBitLlm, 3);
    let ids = tok.encode("bias choice").unwrap();
    let approx = EnsiApprox {
        sigmoid_bias: SigmoidBias::NegLnSeqLen,
        ..Default::default()
    };
    let mode = Mode::twin(&approx).unwrap();
    let full = m.forward(&ids, &mut m.new_cache(), &mode).unwrap().logits;
    let prefix = m
        .forward(&ids[..4], &mut m.new_cache(), &mode)
        .unwrap()
        .logits;
    assert!(full.row(0) != prefix.row(0));
}

#[test]
fn traces_record_every_step() {
    let (m, tok) = load(Family::BitNet2B, 4);
    let ids = tok.encode("trace me").unwrap();
    let n = ids.len();
    for mode in modes() {
        let (f, trace) = m.forward_traced(&ids, &mut m.new_cache(), &mode).unwrap();
        assert_eq!(f.logits, trace.logits);
        assert_eq!(trace.layers.len(), 2);
        let l = &trace.layers[1];
        assert_eq!((l.q.rows(), l.q.cols()), (n, 64));
        assert_eq!((l.k.rows(), l.k.cols()), (n, 32));
        assert_eq!((l.hidden.rows(), l.hidden.cols()), (n, 128));
        assert_eq!(l.input, trace.layers[0].output);
        assert_eq!(l.attn_weights.len(), 4);
        for w in &l.attn_weights {
            for r in 0..n {
                // Causal: nothing above the diagonal.
                assert!(w.row(r)[r + 1..].iter().all(|x| *x == 0.0));
                let s: f64 = w.row(r).iter().sum();
                if mode.name().starts_with("original") {
                    assert!((s - 1.0).abs() < 1e-12);
                } else if r == 0 {
                    // Sigmoid attention is not normalized: one position with b = -ln 1 = 0
                    // weighs sigma(score), about 1/2.
                    assert!((s - 0.5).abs() < 0.3, "row sum {s}");
                }
            }
        }
        // The residual stream adds the branch outputs.
        for ((o, a), d) in l
            .output
            .data()
            .iter()
            .zip(l.after_attn.data())
            .zip(l.down.data())
        {
            assert!((o - (a + d)).abs() < 1e-12);
        }
    }
}

#[test]
fn twin_agrees_with_the_original_on_the_tiny_models() {
    let approx = EnsiApprox::default();
    for family in [Family::OneBitLlm, Family::BitNet2B] {
        for seed in 0..3 {
            let (m, tok) = load(family, seed);
            let prompts: Vec<Vec<u32>> = DEFAULT_PROMPTS
                .iter()
                .map(|p| tok.encode(p).unwrap())
                .collect();
            let twin = Mode::twin(&approx).unwrap();
            let rep = compare_modes(&m, &prompts, &Mode::original(), std::slice::from_ref(&twin))
                .unwrap();
            let t = &rep.candidates[0];
            // Every polynomial input stayed inside its interval on these prompts.
            assert_eq!(
                t.ranges.outside(),
                0,
                "{family:?} seed {seed}: clamped inputs"
            );
            assert!(
                t.agreement.top1_rate() >= 0.9,
                "{family:?} seed {seed}: {:?}",
                t.agreement
            );
            assert!(
                t.agreement.mean_kl < 0.01,
                "{family:?} seed {seed}: {:?}",
                t.agreement
            );
            // Where the original is decisive, the twin picks the same token.
            for p in &prompts {
                let o = m
                    .forward(p, &mut m.new_cache(), &Mode::original())
                    .unwrap()
                    .logits;
                let w = m.forward(p, &mut m.new_cache(), &twin).unwrap().logits;
                for r in 0..o.rows() {
                    let best = top_k(o.row(r), 2);
                    if best[0].1 - best[1].1 > 1.0 {
                        assert_eq!(
                            argmax(w.row(r)),
                            best[0].0,
                            "{family:?} seed {seed} row {r}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn short_prompts_generate_the_same_first_tokens() {
    let twin = Mode::twin(&EnsiApprox::default()).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 4,
        sampling: Sampling::Greedy,
        stop_tokens: vec![],
    };
    for family in [Family::OneBitLlm, Family::BitNet2B] {
        let (m, tok) = load(family, 0);
        for p in ["Hello", "The cat", "ENSI"] {
            let ids = tok.encode(p).unwrap();
            let a = generate(&m, &ids, &Mode::original(), &opts).unwrap();
            let b = generate(&m, &ids, &twin, &opts).unwrap();
            assert_eq!(a.generated[0], b.generated[0], "{family:?} {p:?}");
            // The first step's logits are the prefill's last row.
            assert_eq!(a.step_logits[0], a.prompt_logits.row(ids.len() - 1));
        }
    }
}

#[test]
fn generation_options_are_honoured() {
    let (m, tok) = load(Family::OneBitLlm, 5);
    let ids = tok.encode("sample").unwrap();
    let opts = |sampling| GenerateOptions {
        max_new_tokens: 6,
        sampling,
        stop_tokens: vec![],
    };
    let s = Sampling::Sample {
        temperature: 0.8,
        top_k: 20,
        seed: 9,
    };
    let a = generate(&m, &ids, &Mode::original(), &opts(s.clone())).unwrap();
    let b = generate(&m, &ids, &Mode::original(), &opts(s)).unwrap();
    assert_eq!(a.generated, b.generated);
    assert_eq!(a.generated.len(), 6);
    for (t, l) in a.generated.iter().zip(&a.step_logits) {
        // Only top-20 candidates may be sampled.
        assert!(top_k(l, 20).iter().any(|(i, _)| *i == *t as usize));
    }
    let g = generate(&m, &ids, &Mode::original(), &opts(Sampling::Greedy)).unwrap();
    let stop = GenerateOptions {
        stop_tokens: vec![g.generated[1]],
        ..opts(Sampling::Greedy)
    };
    let h = generate(&m, &ids, &Mode::original(), &stop).unwrap();
    assert!(h.generated.len() <= 2);
    assert!(generate(
        &m,
        &ids,
        &Mode::original(),
        &opts(Sampling::Sample {
            temperature: 0.0,
            top_k: 0,
            seed: 0
        })
    )
    .is_err());
}

#[test]
fn narrow_intervals_are_reported() {
    let (m, tok) = load(Family::BitNet2B, 0);
    let ids = tok.encode("out of range").unwrap();
    let mut approx = EnsiApprox::default();
    approx.relu2.a = -1.0;
    approx.relu2.b = 1.0;
    let f = m
        .forward(&ids, &mut m.new_cache(), &Mode::twin(&approx).unwrap())
        .unwrap();
    assert!(f.ranges.gate.outside > 0);
    assert_eq!(f.ranges.attention.outside, 0);
}

#[test]
fn agreement_figures_are_right_on_a_hand_example() {
    use ensi_model::Matrix;
    let a = Matrix::from_vec(2, 3, vec![0.0, 1.0, 0.0, 2.0, 0.0, 0.0]);
    let b = Matrix::from_vec(2, 3, vec![0.0, 1.0, 0.0, 0.0, 2.5, 0.0]);
    let g = Agreement::of(&a, &b);
    assert_eq!((g.positions, g.top1_agree), (2, 1));
    assert_eq!(g.max_abs_logit_error, 2.5);
    // Row 2: p = softmax(2,0,0), q = softmax(0,2.5,0).
    let lse = |x: &[f64]| x.iter().map(|v| v.exp()).sum::<f64>().ln();
    let (la, lb) = (lse(&[2.0, 0.0, 0.0]), lse(&[0.0, 2.5, 0.0]));
    let p = [2.0 - la, -la, -la];
    let q = [-lb, 2.5 - lb, -lb];
    let kl: f64 = p.iter().zip(&q).map(|(x, y)| x.exp() * (x - y)).sum();
    assert!((g.mean_kl - kl / 2.0).abs() < 1e-12);
}
