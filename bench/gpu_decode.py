#!/usr/bin/env python3
"""Decoding on a GPU: transformers' dynamic KV cache against a static cache with a compiled decode step.

    python bench/gpu_decode.py --model DIR [--rows 16] [--tokens 48] [--rounds 5] [--json OUT]

A 135M model's decode step on a GPU is kernel launches (one per op, ~15 per layer), not bandwidth:
this measures how much `generate(cache_implementation="static")` gains there (transformers then
compiles the forward with CUDA graphs). Plain sampling at temperature 1, exactly `--tokens` new tokens
a row, bf16; the first call of each kind is its warm-up (and, for the static cache, its compilation,
timed apart). Not wired into ppo-term's rollouts: a measurement of the lever first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--device", default="cuda", help="cpu: a check of this script, not a measurement")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to(args.device).eval()
    prompts = [f"Question {i}: how do I write a loop that counts to {i}?" for i in range(args.rows)]
    enc = tok(prompts, return_tensors="pt", padding=True).to(args.device)
    kwargs = dict(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.tokens,
                  min_new_tokens=args.tokens, pad_token_id=tok.pad_token_id or tok.eos_token_id)

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed(**extra) -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**kwargs, **extra)
        sync()
        assert out.shape[1] == enc.input_ids.shape[1] + args.tokens
        return time.perf_counter() - t

    result: dict = {"rows": args.rows, "tokens": args.tokens, "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
                    "torch": torch.__version__}
    import transformers

    result["transformers"] = transformers.__version__
    kinds = {"dynamic": {}, "static": {"cache_implementation": "static"}}
    first = {name: timed(**extra) for name, extra in kinds.items()}  # warm-up / compile
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.rounds):
        for name, extra in kinds.items():
            times[name].append(timed(**extra))
    for name in kinds:
        med = statistics.median(times[name])
        result[name] = {"first_call_s": first[name], "median_s": med, "times_s": times[name],
                        "tokens_per_s": args.rows * args.tokens / med, "ms_per_decode_step": 1000 * med / args.tokens}
    result["ratio_static_over_dynamic"] = result["static"]["median_s"] / result["dynamic"]["median_s"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
