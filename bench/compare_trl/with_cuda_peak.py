#!/usr/bin/env python3
"""Runs the TRL harness's bench_ppo.py as it is, then adds its peak CUDA memory (when it ran on a
GPU) to the summary of the JSON file it wrote.

    python with_cuda_peak.py HARNESS/bench_ppo.py --variant lora ... --out OUT.json
"""
import json
import runpy
import sys

import torch

script, args = sys.argv[1], sys.argv[2:]
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
    out = args[args.index("--out") + 1]
    with open(out) as f:
        result = json.load(f)
    result["summary"]["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
