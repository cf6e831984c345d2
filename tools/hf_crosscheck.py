#!/usr/bin/env python3
"""Cross-check `ensi run --mode original` against Hugging Face transformers.

For each checkpoint layout the script writes a tiny checkpoint with `ensi model init`, loads the
same files in transformers' `BitNetForCausalLM` (float64, CPU), and compares the logits of every
prompt position and every generated position (ensi computes the latter one token at a time
through its KV cache; transformers in one full pass). It also checks that transformers'
tokenizer gives ensi's token ids.

Layouts checked:
  bitnet-2b          packed uint8 + weight_scale, AutoBitLinear "offline" (as bitnet-b1.58-2B-4T)
  bitnet-2b-latent   bf16 latent weights, AutoBitLinear "online" (as bitnet-b1.58-2B-4T-bf16)
  bitnet-2b-sharded  packed, 3 shards + model.safetensors.index.json
  1bitllm            fp16 latent weights (as 1bitLLM/bitnet_b1_58-*)

transformers has no class for the 1bitLLM layout (its own checkpoints ship custom modeling code
that is not part of transformers). Its computation is BitNet's with two sub-norms renamed, so the
script gives transformers' BitNetForCausalLM the same tensors under transformers' names
(`inner_attn_ln` -> `attn_sub_norm`, `ffn_layernorm` -> `ffn_sub_norm`), `hidden_act: silu`, an
untied head and online absmean quantization: the peer computation is still transformers' own.

Pass: max |logit_hf - logit_ensi| / max |logit_hf| <= 1e-3 for every prompt (exit status 1
otherwise).

Usage: python tools/hf_crosscheck.py --ensi target/release/ensi [--workdir DIR] [--seed S]
Needs: torch, transformers (>= 4.52, with transformers.models.bitnet), accelerate, safetensors.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

# transformers' BitNet code decorates its quantizers with torch.compile; on a CPU without a
# compiler tool chain that fails, and eager mode computes the same thing.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

PROMPTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Homomorphic encryption lets a server compute on data it cannot read.",
    "1, 2, 3, 4, 5,",
]
MAX_NEW = 6
TOLERANCE = 1e-3


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout


def to_hf_layout(src, dst):
    """Copies a 1bitLLM-layout checkpoint into transformers' BitNet names and config."""
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["architectures"] = ["BitNetForCausalLM"]
    cfg["model_type"] = "bitnet"
    cfg["hidden_act"] = "silu"
    cfg["tie_word_embeddings"] = False
    cfg["quantization_config"] = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "online",
    }
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    renamed = {
        k.replace("self_attn.inner_attn_ln", "self_attn.attn_sub_norm").replace(
            "mlp.ffn_layernorm", "mlp.ffn_sub_norm"
        ): v
        for k, v in tensors.items()
    }
    save_file(renamed, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(src, "tokenizer.json"), dst)


def load_hf(path):
    from transformers import BitNetForCausalLM

    model = BitNetForCausalLM.from_pretrained(path, dtype=torch.float64, device_map="cpu")
    # The quantizer keeps unpacked weights and scales in the checkpoint's dtype (bf16), and
    # transformers refuses `.to(dtype)` on a quantized model: widen every float tensor by hand
    # (bf16 and f16 values are exact in float64) so the whole computation runs in float64.
    for module in model.modules():
        for key, p in list(module._parameters.items()):
            if p is not None and p.is_floating_point():
                module._parameters[key] = torch.nn.Parameter(p.data.double(), requires_grad=False)
        for key, b in list(module._buffers.items()):
            if b is not None and b.is_floating_point():
                module._buffers[key] = b.double()
    model.eval()
    return model


def check(ensi, name, ensi_dir, hf_dir):
    from tokenizers import Tokenizer

    model = load_hf(hf_dir)
    tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    worst = 0.0
    rows = []
    for prompt in PROMPTS:
        out = json.loads(
            run([ensi, "run", "--model", ensi_dir, "--prompt", prompt, "--max-new-tokens",
                 str(MAX_NEW), "--mode", "original", "--json", "--prompt-logits"])
        )
        ids = out["prompt_ids"]
        gen = out["generated_ids"]
        hf_ids = tok.encode(prompt).ids
        if hf_ids != ids:
            print(f"[{name}] tokenizer mismatch on {prompt!r}: hf {hf_ids} ensi {ids}")
            return float("inf")
        # Full pass over prompt + generated tokens but the last one.
        seq = torch.tensor([ids + gen[:-1]])
        with torch.no_grad():
            hf = model(seq).logits[0].double()
        ours = torch.tensor(out["prompt_logits"] + out["logits"][1:], dtype=torch.float64)
        assert ours.shape == hf.shape, (ours.shape, hf.shape)
        err = (hf - ours).abs().max().item() / hf.abs().max().item()
        hf_greedy = hf[len(ids) - 1:].argmax(-1).tolist()
        same = hf_greedy == gen
        rows.append((prompt, len(ids), len(gen), err, same))
        worst = max(worst, err)
    for prompt, n, g, err, same in rows:
        print(f"[{name}] {n:3d} prompt + {g} generated positions: rel err {err:.2e}, "
              f"greedy tokens {'agree' if same else 'DIFFER'}  ({prompt[:40]!r})")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ensi", default="target/release/ensi", help="path of the ensi binary")
    ap.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    work = args.workdir or tempfile.mkdtemp(prefix="ensi-xcheck-")
    layouts = [
        ("bitnet-2b", ["--family", "bitnet-2b"], False),
        ("bitnet-2b-latent", ["--family", "bitnet-2b", "--latent"], False),
        ("bitnet-2b-sharded", ["--family", "bitnet-2b", "--shards", "3"], False),
        ("1bitllm", ["--family", "1bitllm"], True),
    ]
    worst = {}
    for name, init_args, rename in layouts:
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        run([args.ensi, "model", "init", "--seed", str(args.seed), "--out", d] + init_args)
        hf_dir = d
        if rename:
            hf_dir = d + "-hf"
            shutil.rmtree(hf_dir, ignore_errors=True)
            to_hf_layout(d, hf_dir)
        worst[name] = check(args.ensi, name, d, hf_dir)
    print()
    ok = True
    for name, err in worst.items():
        status = "PASS" if err <= TOLERANCE else "FAIL"
        ok &= err <= TOLERANCE
        print(f"{name:18s} max relative logit error {err:.2e}  {status} (tolerance {TOLERANCE:.0e})")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
