//! `ensi bench block` and `ensi bench e2e` at their smallest settings: the
//! binary runs, and the JSON has every field with finite positive values.
//! (insecure-boot-n12, the suites' default: NOT secure, fast.)

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn run_bench(name: &str, args: &[&str]) -> Value {
    let json = std::env::temp_dir().join(format!(
        "ensi-bench-test-{name}-{}.json",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_ensi"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run ensi");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ensi bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("INSECURE"),
        "the insecure preset is not labeled:\n{stdout}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
        .expect("valid JSON");
    let _ = std::fs::remove_file(PathBuf::from(&json));
    v
}

/// The number at `path` (slash-separated keys), which must be finite and > 0.
fn positive(v: &Value, path: &str) -> f64 {
    let mut x = v;
    for key in path.split('/') {
        x = match key.parse::<usize>() {
            Ok(i) => &x[i],
            Err(_) => &x[key],
        };
    }
    let f = x
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {x}"));
    assert!(f.is_finite() && f > 0.0, "{path} = {f}");
    f
}

#[test]
fn bench_block_tiny_writes_every_figure() {
    let v = run_bench(
        "block",
        &["block", "--seq", "2", "--runs", "1", "--threads", "2"],
    );
    assert_eq!(v["suite"], "block");
    assert_eq!(v["shape"], "tiny");
    assert_eq!(v["preset"], "insecure-boot-n12");
    assert_eq!(v["insecure"], true);
    assert_eq!(v["seq"], 2);
    assert_eq!(v["threads"], 2);
    positive(&v, "params/log_n");
    positive(&v, "params/levels");
    for ratio in [
        "pcmm_generic_over_ternary",
        "pcmm_column_over_default",
        "softmax_over_sigmoid",
        "softmax_columns_over_sigmoid",
        "bootstrap_share",
    ] {
        let r = positive(&v, &format!("ratios/{ratio}"));
        assert!(v["ratio_basis"][ratio].is_string(), "{ratio} has no basis");
        if ratio == "bootstrap_share" {
            assert!(r < 1.0);
        }
    }
    for block in ["block", "block_dense"] {
        positive(&v, &format!("{block}/median_ms"));
        positive(&v, &format!("{block}/bootstrap_ms"));
        assert_eq!(v[block]["bootstraps"], 6, "bootstraps only in the RMSNorms");
        let steps = v[block]["steps"].as_array().expect("steps");
        assert!(steps.len() > 5);
        for (i, _) in steps.iter().enumerate() {
            positive(&v, &format!("{block}/steps/{i}/median_ms"));
        }
        // The decrypted output is the twin's.
        let err = v[block]["output_max_abs_err_vs_twin"].as_f64().unwrap();
        assert!(err < 1e-3, "{block}: error {err}");
    }
    for op in ["ternary_column", "generic_column", "ternary_dense"] {
        positive(&v, &format!("pcmm/ops/{op}/median_ms"));
        assert_eq!(v["pcmm"]["ops"][op]["extrapolated"], false);
        assert!(v["pcmm"]["ops"][op]["max_abs_err"].as_f64().unwrap() < 1e-4);
    }
    for op in ["sigmoid", "softmax_columns", "softmax_rows"] {
        positive(&v, &format!("attention/ops/{op}/median_ms"));
        assert!(positive(&v, &format!("attention/precision_bits/{op}")) > 15.0);
    }
}

/// The large shape with a tiny memory budget: every measurement is a slice,
/// scaled and labeled as such, and what cannot run is listed (the whole
/// block, minutes at n16-boot, is skipped; `tests/wide.rs` tests its code).
#[test]
fn bench_block_large_slices_are_labeled() {
    let v = run_bench(
        "block-large",
        &[
            "block",
            "--shape",
            "1bitllm-large",
            "--runs",
            "1",
            "--max-mem-gib",
            "0.05",
            "--skip-block",
        ],
    );
    assert_eq!(v["shape"], "1bitllm-large");
    assert_eq!(v["seq"], 128);
    assert!(v["block"].is_null());
    assert!(v["block_wide"].is_null());
    assert!(v["not_run"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["why"] == "--skip-block"));
    assert!(!v["not_run"].as_array().unwrap().is_empty());
    assert!(v["ratios"]["bootstrap_share"].is_null());
    for ratio in [
        "pcmm_generic_over_ternary",
        "pcmm_column_over_default",
        "softmax_over_sigmoid",
        "softmax_columns_over_sigmoid",
    ] {
        positive(&v, &format!("ratios/{ratio}"));
    }
    for op in ["ternary_column", "generic_column", "ternary_dense"] {
        assert_eq!(v["pcmm"]["ops"][op]["extrapolated"], true, "{op}");
        let measured = positive(&v, &format!("pcmm/ops/{op}/median_ms"));
        assert!(positive(&v, &format!("pcmm/ops/{op}/full_shape_ms")) > measured);
    }
    assert_eq!(v["attention"]["ops"]["sigmoid"]["extrapolated"], true);
    assert!(!v["notes"].as_array().unwrap().is_empty());
}

#[test]
fn bench_e2e_times_every_phase() {
    let v = run_bench(
        "e2e",
        &[
            "e2e",
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "1",
            "--max-tokens",
            "4",
            "--threads",
            "2",
        ],
    );
    assert_eq!(v["suite"], "e2e");
    assert_eq!(v["preset"], "insecure-boot-n12");
    assert_eq!(v["insecure"], true);
    for f in [
        "keygen_s",
        "upload_s",
        "server_load_keys_s",
        "eval_key_bytes",
        "secret_key_bytes",
        "wall_s",
        "rounds/0/encrypt_s",
        "rounds/0/infer_s",
        "rounds/0/decrypt_s",
        "rounds/0/up_bytes",
        "rounds/0/down_bytes",
        "rounds/0/server/total_s",
        "rounds/0/server/head/seconds",
        "rounds/0/server/bootstraps",
    ] {
        positive(&v, f);
    }
    let blocks = v["rounds"][0]["server"]["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "the tiny model has two blocks");
    for i in 0..blocks.len() {
        positive(&v, &format!("rounds/0/server/blocks/{i}/seconds"));
        assert_eq!(v["rounds"][0]["server"]["blocks"][i]["bootstraps"], 6);
    }
    assert_eq!(v["tokens_match_twin"], true);
}
