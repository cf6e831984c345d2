#!/usr/bin/env python3
"""OpenFHE baseline for `ensi bench ckks --baseline openfhe`.

Measures the same CKKS operations as ensi's ckks suite with the OpenFHE
Python wheel (openfhe 1.6.1 on PyPI, built for CPython 3.10), in the setting
of shared/ANCHORS.md: N = 2^16, full slots, multiplicative depth 20,
hybrid key switching with dnum 3, fixed manual rescaling, 128-bit classical
security checked by OpenFHE. Prints one JSON object on stdout:
{"library": "openfhe", "version": ..., "ops": {op: {"median_ms": .., "runs": ..}}}

Run it with OMP_NUM_THREADS set to the thread count wanted.
"""
import argparse
import json
import math
import statistics
import sys
import time

import openfhe as ofhe


def median_ms(runs, fn):
    fn()  # warm-up, as in ensi's harness
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "runs": runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--log-n", type=int, default=16)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--dnum", type=int, default=3)
    ap.add_argument("--scale-bits", type=int, default=50)
    args = ap.parse_args()

    p = ofhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(args.depth)
    p.SetScalingModSize(args.scale_bits)
    p.SetFirstModSize(60)
    p.SetRingDim(1 << args.log_n)
    p.SetBatchSize(1 << (args.log_n - 1))
    p.SetNumLargeDigits(args.dnum)
    p.SetKeySwitchTechnique(ofhe.KeySwitchTechnique.HYBRID)
    p.SetScalingTechnique(ofhe.ScalingTechnique.FIXEDMANUAL)
    p.SetSecurityLevel(ofhe.SecurityLevel.HEStd_128_classic)
    cc = ofhe.GenCryptoContext(p)
    for f in (ofhe.PKESchemeFeature.PKE, ofhe.PKESchemeFeature.KEYSWITCH, ofhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(f)

    runs = args.runs
    ops = {}
    keys = cc.KeyGen()
    # OpenFHE caches keys per context: clear them so every run really generates.
    def relin_keygen():
        ofhe.ClearEvalMultKeys()
        cc.EvalMultKeyGen(keys.secretKey)

    def rotation_keygen():
        cc.ClearEvalAutomorphismKeys()
        cc.EvalRotateKeyGen(keys.secretKey, [1])

    ops["keygen_relin"] = median_ms(runs, relin_keygen)
    ops["keygen_rotation"] = median_ms(runs, rotation_keygen)
    cc.ClearEvalAutomorphismKeys()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalRotateKeyGen(keys.secretKey, list(range(1, 9)))

    slots = 1 << (args.log_n - 1)
    values = [math.sin(i) for i in range(slots)]
    ops["encode"] = median_ms(runs, lambda: cc.MakeCKKSPackedPlaintext(values))
    pt = cc.MakeCKKSPackedPlaintext(values)
    ops["encrypt"] = median_ms(runs, lambda: cc.Encrypt(keys.publicKey, pt))
    ct = cc.Encrypt(keys.publicKey, pt)
    ct2 = cc.Encrypt(keys.publicKey, pt)
    ops["decrypt"] = median_ms(runs, lambda: cc.Decrypt(ct, keys.secretKey))
    ops["add"] = median_ms(runs, lambda: cc.EvalAdd(ct, ct2))
    ops["mul_plain_rescale"] = median_ms(runs, lambda: cc.Rescale(cc.EvalMult(ct, pt)))
    ops["mul_relin_rescale"] = median_ms(runs, lambda: cc.Rescale(cc.EvalMult(ct, ct2)))
    tensor = cc.EvalMultNoRelin(ct, ct2)
    ops["relinearize"] = median_ms(runs, lambda: cc.Relinearize(tensor))
    prod = cc.EvalMult(ct, ct2)
    ops["rescale"] = median_ms(runs, lambda: cc.Rescale(prod))
    ops["rotate"] = median_ms(runs, lambda: cc.EvalRotate(ct, 1))

    def hoisted():
        pre = cc.EvalFastRotationPrecompute(ct)
        m = 2 * cc.GetRingDimension()
        for s in range(1, 9):
            cc.EvalFastRotation(ct, s, m, pre)

    ops["rotate_hoisted_8"] = median_ms(runs, hoisted)

    out = {
        "library": "openfhe",
        "version": getattr(ofhe, "__version__", "1.6.1"),
        "log_n": args.log_n,
        "q_limbs": args.depth + 1,
        "dnum": args.dnum,
        "ops": ops,
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
