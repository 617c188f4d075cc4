#!/usr/bin/env bash
# The CUDA path, run on a GPU machine (see bench/README.md): the engine's tests on CUDA with the
# automatic precision (bf16 there); bench/compare_trl.py there, ppo-term against TRL 0.11.4 on the
# same PPO work; ppo-term's steps in fp32 and on the safety recipe; and a headless `ppo-term run`
# that writes a checkpoint. The default model's weights do not travel to that machine, so everything
# runs a randomly initialised model of the same architecture (config and tokenizer copied from the
# converted default model): the same shapes, the same work per step (responses of a fixed length).
#
#   bash bench/gpu_check.sh ARCH_DIR OUT_DIR [WHEELS_DIR] [TRL_HARNESS_DIR]
#   PARTS="tests record decode master" bash bench/gpu_check.sh ...   # some parts only
#
# PARTS (default: tests compare steps run): tests, the engine's tests on CUDA; compare,
# bench/compare_trl.py; steps, ppo_step.py in fp32 and on the safety recipe; run, a headless run;
# record, the rollout tests on CUDA and bench/old_logprobs.py there (bf16 and fp32) with LoRA steps
# recording or recomputing the old log-probs; decode, bench/gpu_decode.py (dynamic against static
# KV cache); master, full fine-tuning with fp32 master weights and bf16 compute; compile,
# bench/compile_train.py (a training minibatch, eager against a torch.compile'd backbone).
#
# WHEELS_DIR/pt: wheels of ppo-term's dependencies the machine lacks (installed to /tmp/ptsite);
# WHEELS_DIR/trl: TRL 0.11.4 and the versions it needs (transformers 4.46, ...; ../shared's
# requirements-lock.txt), installed apart to /tmp/trlsite so they shadow the machine's only for TRL.
# TRL_HARNESS_DIR: a copy of ../shared/bench/trl_baseline (bench_ppo.py, convert_model.py).
set -uo pipefail
ARCH=${1:-.gpu/smollm2-arch}
OUT=${2:-/tmp/gpu-check}
WHEELS=${3:-.whl}
HARNESS=${4:-.gpu/trl_baseline}
MODEL=/tmp/smollm2-135m-random
PARTS=" ${PARTS:-tests compare steps run} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
install() {  # wheels folder, target
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl
}
if [ -d "$WHEELS/pt" ]; then install "$WHEELS/pt" /tmp/ptsite && export PYTHONPATH=/tmp/ptsite; fi
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

if want tests; then
  echo "== tests on CUDA (precision auto)" | tee -a "$OUT/gpu.txt"
  PPO_TERM_TEST_PRECISION=auto timeout 150 python3 -m pytest -q -p no:cacheprovider \
    tests/test_engine.py tests/test_precision.py tests/test_sampling.py tests/test_ppo_math.py \
    tests/test_rollout_record.py tests/test_openings.py 2>&1 | tail -15 | tee -a "$OUT/gpu.txt"
fi

if want compare && [ -d "$WHEELS/trl" ] && [ -f "$HARNESS/bench_ppo.py" ]; then
  echo "== compare_trl on CUDA: TRL 0.11.4 (fp32) against ppo-term (precision auto)"
  install "$WHEELS/trl" /tmp/trlsite
  printf '#!/bin/sh\nPYTHONPATH=/tmp/trlsite exec python3 "$@"\n' > /tmp/trl-python && chmod +x /tmp/trl-python
  /tmp/trl-python -c "import trl, transformers; print('trl', trl.__version__, 'transformers', transformers.__version__)"
  timeout ${COMPARE_TIMEOUT:-330} python3 bench/compare_trl.py --model "$MODEL" --trl-python /tmp/trl-python --trl-model /tmp/trl-model \
    --harness "$HARNESS" --rounds 1 --warmup 1 --steps ${COMPARE_STEPS:-5} --json "$OUT/compare_trl-gpu.json" --work /tmp/cmp 2>&1 | tail -12
  grep -v -i warn /tmp/cmp/log.txt | tail -c 60000 > "$OUT/compare_trl-gpu.log"
fi

step() {  # name, then ppo_step.py arguments
  local name=$1; shift
  echo "== $name"
  timeout 100 python3 bench/ppo_step.py --warmup 1 --steps 5 --set "model=$MODEL" --json "$OUT/$name.json" "$@" 2>&1 \
    | grep -v -i warn | tail -3
}
if want steps; then
  step lora_fp32 --recipe bench/compare_trl/recipe.toml --set precision=fp32
  step full_fp32 --recipe bench/compare_trl/recipe.toml --set lora.enabled=false --set precision=fp32
  step safety_bf16 --recipe recipes/safety.toml
fi

if want record; then
  for p in bf16 fp32; do
    echo "== old_logprobs $p"
    timeout 90 python3 bench/old_logprobs.py --rounds 3 --set "model=$MODEL" --set precision=$p \
      --json "$OUT/old_logprobs-$p.json" 2>&1 | grep -v -i warn | tail -6
  done
  step lora_bf16_recompute --recipe bench/compare_trl/recipe.toml --set ppo.old_logprobs=recompute
  step lora_bf16_rollout --recipe bench/compare_trl/recipe.toml --set ppo.old_logprobs=rollout
fi

if want master; then
  step full_bf16_master_fp32 --recipe bench/compare_trl/recipe.toml --set lora.enabled=false --set master_weights=fp32
  step full_bf16_master_bf16 --recipe bench/compare_trl/recipe.toml --set lora.enabled=false --set master_weights=bf16
fi

if want decode; then
  echo "== gpu_decode: dynamic against static KV cache"
  timeout 200 python3 bench/gpu_decode.py --model "$MODEL" --rounds 5 --json "$OUT/gpu_decode.json" 2>&1 \
    | grep -v -i warn | grep -E 'ratio|median_s|first_call|Error|error' | tail -12
fi

if want compile; then
  for variant in lora full; do
    echo "== compile_train $variant (bf16)"
    PYTHONPATH=.:${PYTHONPATH:-} timeout ${COMPILE_TIMEOUT:-120} python3 bench/compile_train.py --model "$MODEL" --device cuda \
      $([ $variant = full ] && echo --full) --json "$OUT/compile_train-$variant.json" 2>&1 | grep -v -i warn | tail -6
  done
fi

if want run; then
  echo "== ppo-term run --headless on CUDA"
  timeout 90 python3 -m ppo_term run recipes/safety.toml --headless --steps 2 --set "model=$MODEL" \
    --run-dir /tmp/gpu-run 2>&1 | grep -v -i warn | tail -8
  ls /tmp/gpu-run/checkpoints/*/ 2>&1 | head -12
fi
