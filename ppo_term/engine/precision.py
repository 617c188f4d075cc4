"""The compute dtype: bf16 where the hardware really runs it fast, fp32 otherwise.

On CUDA bf16 is the rule when the GPU supports it. On a CPU it depends on the chip: with AVX-512
BF16 (or AMX) torch's bf16 matmuls run about twice as fast as fp32, on an AVX2-only CPU they run
7-100x slower. So `auto` takes bf16 where the CPU flags say AVX-512 BF16 or AMX, fp32 below
AVX-512, and in between (AVX-512 without BF16, or no flags to read) times one matmul of a
training-sized shape in both dtypes and takes bf16 only when it is clearly faster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# bf16 must beat fp32 by this factor to be chosen on a CPU
MIN_SPEEDUP = 1.3


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"


def _matmul_seconds(dtype: torch.dtype, shape=(256, 576, 1536), repeats: int = 5) -> float:
    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up: oneDNN picks its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is none to read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of one matmul on this CPU (best of a few)."""
    return _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)


def choose(requested: str, device: torch.device) -> Precision:
    """`requested` is the recipe's precision: auto, fp32 or bf16."""
    if requested == "fp32":
        return Precision(torch.float32, "requested: fp32")
    if device.type == "cuda":
        if requested == "bf16" or torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, f"{requested}: CUDA")
        return Precision(torch.float32, "auto: this GPU has no bf16")
    if requested == "bf16":
        return Precision(torch.bfloat16, "requested: bf16")
    capability = torch.backends.cpu.get_cpu_capability()
    if "AVX512" not in capability:
        return Precision(torch.float32, f"auto: CPU capability {capability}, bf16 would be slow")
    # bf16 dot products in hardware: fast without asking. A timing can be fooled: one run of the
    # TRL comparison measured 1.2x on a CPU that measures 2.1-3.0x, ran fp32 and took twice as long
    native = {"avx512_bf16", "amx_bf16"} & (cpu_flags() or set())
    if native:
        return Precision(torch.bfloat16, f"auto: this CPU has {sorted(native)[0]}")
    speedup = cpu_bf16_speedup()
    if speedup >= MIN_SPEEDUP:
        return Precision(torch.bfloat16, f"auto: bf16 matmul {speedup:.1f}x fp32 on this CPU")
    return Precision(torch.float32, f"auto: bf16 matmul only {speedup:.1f}x fp32 on this CPU")


def choose_master(requested: str, lora: bool, compute: Precision) -> Precision:
    """The dtype full fine-tuning keeps its weights and AdamW moments in (`master_weights`).

    bf16 halves them and drops the bf16 copy of the weights each pass makes under autocast; the
    update then rounds stochastically (`ppo_term.engine.optim.AdamWBF16`). Where the compute
    dtype is fp32, bf16 weights (asked for) are stored in bf16 and multiplied in fp32
    (`ppo_term.engine.storage`). A LoRA adapter is small and stays fp32.
    """
    if lora:
        return Precision(torch.float32, "LoRA adapter: fp32")
    if requested == "fp32":
        return Precision(torch.float32, "requested: fp32")
    from ppo_term.engine.optim import compiled_update

    if requested == "bf16":
        # with fp32 compute the bf16 weights are multiplied in fp32 (`storage.store_bf16`)
        how = ", fp32 arithmetic" if compute.dtype == torch.float32 else ""
        if compiled_update() is None:
            return Precision(torch.bfloat16, f"requested: bf16{how} (update not compiled here: slow)")
        return Precision(torch.bfloat16, f"requested: bf16{how}, stochastic rounding")
    if compute.dtype != torch.bfloat16:
        return Precision(torch.float32, "auto: the compute dtype is fp32")
    if compiled_update() is None:
        return Precision(torch.float32, "auto: the bf16 update does not compile here")
    return Precision(torch.bfloat16, "auto: bf16 compute, stochastic rounding")
