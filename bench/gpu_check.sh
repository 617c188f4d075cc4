#!/usr/bin/env bash
# The CUDA path, run on a GPU machine (see bench/README.md): the engine's tests on CUDA with the
# automatic precision (bf16 there), then time and memory of PPO steps in bf16 and fp32, and a headless
# `ppo-term run` that writes a checkpoint. The default model's weights do not travel to that machine,
# so the steps run a randomly initialised model of the same architecture (config and tokenizer
# copied from the converted default model): the same shapes, the same work per step.
#
#   bash bench/gpu_check.sh ARCH_DIR OUT_DIR
set -uo pipefail
ARCH=${1:-.gpu/smollm2-arch}
OUT=${2:-/tmp/gpu-check}
MODEL=/tmp/smollm2-135m-random
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"

python3 - "$ARCH" "$MODEL" <<'PY'
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM
arch, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(arch), dtype=torch.float32)
model.save_pretrained(out)
for f in arch.iterdir():
    if f.name != "config.json":
        shutil.copy(f, out / f.name)
print("random model", out, sum(p.numel() for p in model.parameters()), "parameters")
PY

echo "== tests on CUDA (precision auto)"
PPO_TERM_TEST_PRECISION=auto timeout 240 python3 -m pytest -q -p no:cacheprovider -x \
  tests/test_engine.py tests/test_precision.py tests/test_sampling.py tests/test_ppo_math.py 2>&1 | tail -15 | tee "$OUT/pytest.txt"

step() {  # name, then ppo_step.py arguments
  local name=$1; shift
  echo "== $name"
  timeout 150 python3 bench/ppo_step.py --warmup 1 --steps 3 --set "model=$MODEL" --json "$OUT/$name.json" "$@" 2>&1 \
    | grep -v -i warn | tail -6
}
step lora_bf16 --recipe bench/compare_trl/recipe.toml
step lora_fp32 --recipe bench/compare_trl/recipe.toml --set precision=fp32
step full_bf16 --recipe bench/compare_trl/recipe.toml --set lora.enabled=false
step safety_bf16 --recipe recipes/safety.toml
step lora_bf16_64prompts --recipe bench/compare_trl/recipe.toml --set ppo.batch_prompts=64 --set ppo.minibatch=16

echo "== ppo-term run --headless on CUDA"
timeout 120 python3 -m ppo_term run recipes/safety.toml --headless --steps 2 --set "model=$MODEL" \
  --run-dir /tmp/gpu-run 2>&1 | grep -v -i warn | tail -8
ls /tmp/gpu-run/checkpoints/*/ 2>&1 | head -12
