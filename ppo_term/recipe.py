"""A recipe: TOML in, a typed and validated config out.

Every user mistake becomes one `RecipeError` that names the file, the field path and what was
expected (with a did-you-mean for unknown keys), never a Python traceback.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class RecipeError(Exception):
    """A recipe problem a user can fix: where it is and what was expected."""

    def __init__(self, source: str | Path, field: str, message: str):
        self.source, self.field, self.message = str(source), field, message
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {message}")


class Section(BaseModel):
    """Base for recipe tables: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Section):
    enabled: bool = Field(True, description="false = full fine-tuning with a frozen reference copy")
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="PEFT's lora_dropout; the engine runs in eval mode, "
                           "so it only matters for adapters used elsewhere")
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    first_layer: int = Field(0, ge=0, description="the adapter on the decoder layers from this one up (0 = all): "
                             "the backward pass stops below it, and the layers under it stay the base's")

    @model_validator(mode="after")
    def _layers_need_lora(self) -> "LoraConfig":
        if not self.enabled and self.first_layer:
            raise ValueError("first_layer places the LoRA adapter; full fine-tuning (enabled = false) trains every layer")
        return self


class GenerationConfig(Section):
    n: int = Field(4, gt=0, description="candidates per prompt")
    max_new_tokens: int = Field(48, gt=0)
    min_new_tokens: int = Field(0, ge=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = off")
    system_prompt: str | None = Field(None, description="None keeps the chat template's default")
    stop: list[str] = Field([], description="strings that end a response early")
    openings: list[str] = Field(
        [], description="exploration: of each prompt's n candidates, opening_n start with each of these "
        "words (the model writes the rest); PPO then learns on which prompts that opening pays")
    opening_n: int = Field(1, gt=0, description="candidates per prompt and opening")
    opening_labels: list[str] = Field(
        [], description="only prompts whose 'label' is one of these get the openings (on the others those "
        "candidates sample freely too); empty = every prompt")
    greedy: bool = Field(False, description="one of each prompt's n candidates is its greedy answer (what a "
                         "user sees), so PPO scores and trains that answer itself every step")

    @model_validator(mode="after")
    def _consistent(self) -> "GenerationConfig":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must be <= max_new_tokens")
        if len(self.openings) * self.opening_n + self.greedy >= self.n:
            given = f"openings ({len(self.openings)} x opening_n {self.opening_n})" + (" and greedy" if self.greedy else "")
            raise ValueError(f"{given} must leave at least one of the n={self.n} candidates free")
        if any(not o.strip() for o in self.openings):
            raise ValueError("an opening must not be empty")
        if self.opening_labels and not self.openings:
            raise ValueError("opening_labels says which prompts get the openings; there are no openings")
        return self


class PPOConfig(Section):
    lr: float = Field(1e-4, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning rate over the run: from lr at step 1 to lr * lr_end at the last step")
    lr_end: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction of lr (linear, cosine)")
    lr_decay_from: float = Field(0.0, ge=0, lt=1, description="fraction of the run held at lr before the decay "
                                 "(linear, cosine) begins: 0.6 decays over the last 40% of the steps")
    batch_prompts: int = Field(8, gt=0, description="prompts per step")
    minibatch: int = Field(8, gt=0, description="samples per gradient step")
    epochs: int = Field(2, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    cliprange: float = Field(0.2, gt=0)
    dual_clip: float | None = Field(
        None, gt=1, description="dual-clip PPO: where the advantage is negative, the loss of a token is at most "
        "dual_clip times |advantage|, however far its ratio ran during the update (e.g. 3.0; none: plain PPO)")
    cliprange_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    critic: bool = Field(True, description="learn a value head and subtract it (GAE); false: critic-free, the "
                         "advantage is the reward to go (with score_baseline = group: RLOO's estimator), whitened")
    update_tokens: int | None = Field(
        None, gt=0, description="the loss covers each response's first update_tokens tokens only (where a reply "
        "declines or answers) and the update's passes stop there; the rewards, KL and advantages still see the "
        "whole response (none: every token)")
    ent_coef: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    kl_estimator: Literal["k1", "k3"] = "k1"
    no_eos_penalty: float | None = Field(None, description="score for responses that never end")
    whiten_rewards: bool = False
    score_baseline: Literal["none", "group"] = Field(
        "none", description="group: subtract the mean score of the prompt's other candidates (RLOO)")
    old_logprobs: Literal["auto", "rollout", "recompute"] = Field(
        "auto", description="the policy's log-probs and values before the update: taken while sampling "
        "(rollout: no extra pass) or by a pass over the rollout (recompute); auto: rollout in fp32, "
        "where the two agree to rounding, recompute in bf16")


class KLConfig(BaseModel):
    """`schedule` names a KL schedule plugin; every other key is that schedule's params."""

    model_config = ConfigDict(extra="allow")
    schedule: str = "fixed"
    coef: float = Field(0.05, ge=0, description="initial kl_coef")
    label_scale: dict[str, Annotated[float, Field(ge=0)]] = Field(
        {}, description="kl_coef times this for the samples of prompts with this `label`, e.g. {benign = 4.0}: "
        "a firmer hold on the answers that should not change")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RewardSpec(BaseModel):
    """`name` names a reward plugin; every other key is that reward's params."""

    model_config = ConfigDict(extra="allow")
    name: str
    weight: float = 1.0
    optional: bool = Field(False, description="skip (with a warning) when the plugin is not installed")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SamplerSpec(BaseModel):
    """`name` names a sampler plugin; every other key is that sampler's params."""

    model_config = ConfigDict(extra="allow")
    name: str = "default"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PromptItem(Section):
    prompt: str = Field(min_length=1)
    metadata: dict[str, Any] = {}


class PromptsConfig(Section):
    items: list[str | dict[str, Any]] = []
    file: str | None = Field(None, description="JSONL (a 'prompt' field) or TXT, relative to the recipe")
    stratify: str | None = Field(
        None, description="a field of the prompts (e.g. 'label') whose values every batch mixes in proportion")
    pair_by: str | None = Field(
        None, description="a field of the prompts (e.g. 'label'): each prompt goes into a batch together with the "
        "prompt of another value that shares the most words with it")

    @model_validator(mode="after")
    def _one_order(self) -> "PromptsConfig":
        if self.stratify is not None and self.pair_by is not None:
            raise ValueError("set stratify or pair_by, not both (pairs of two values already mix them)")
        return self


class EvalConfig(Section):
    """Held-out prompts answered greedily every few steps, scored by the recipe's rewards."""

    items: list[str | dict[str, Any]] = []
    file: str | None = Field(None, description="JSONL (a 'prompt' field) or TXT, relative to the recipe; "
                             "prompts the run never trains on")
    every: int = Field(10, ge=1, description="steps between evaluations (and one after the last step)")
    max_new_tokens: int | None = Field(None, gt=0, description="None = generation.max_new_tokens")
    keep_best: bool = Field(False, description="keep the checkpoint of the best mean eval reward as checkpoints/best")


class AverageConfig(Section):
    """The run hands over the average of its last checkpoints (`ppo-term soup` of its own tail,
    exact for LoRA) as checkpoints/average: where the policy still swings from step to step, the
    average sits near the middle of the swing instead of wherever the last step happened to land."""

    last: int = Field(0, ge=0, description="how many checkpoints to average: the last step's and one every "
                      "`every` steps before it; 0 = off (the run hands over its last step), else at least 2")
    every: int = Field(10, ge=1, description="steps between the averaged checkpoints")

    @model_validator(mode="after")
    def _two_or_none(self) -> "AverageConfig":
        if self.last == 1:
            raise ValueError("an average of one checkpoint is the last step: set 0 (off) or at least 2")
        return self


class Recipe(Section):
    name: str = "run"
    model: str = "smollm2-135m-instruct"
    steps: int = Field(20, gt=0)
    seed: int = 0
    save_every: int = Field(10, ge=0, description="0 = only at the end")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="compute dtype; auto = bf16 on CUDA and on CPUs where a bf16 matmul measures faster")
    master_weights: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="dtype of the trained weights and AdamW's moments in full fine-tuning; bf16 rounds "
        "updates stochastically and takes half the memory; auto = bf16 when the compute dtype is bf16 and its "
        "compiled update builds here; a LoRA adapter is always fp32")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    kl: KLConfig = Field(default_factory=KLConfig)
    rewards: list[RewardSpec] = Field(default_factory=list)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    average: AverageConfig = Field(default_factory=AverageConfig)

    # where the recipe came from; relative prompt files resolve against it
    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        return self._source

    def average_steps(self) -> list[int]:
        """The steps whose checkpoints [average] averages, oldest first: those of the `last` that fit
        in the run (a run shortened with --steps may hold fewer); none when it is off or one fits."""
        a = self.average
        steps = [self.steps - a.every * i for i in range(a.last - 1, -1, -1) if self.steps - a.every * i >= 1]
        return steps if len(steps) >= 2 else []

    def prompt_items(self) -> list[PromptItem]:
        """The training prompts with their metadata, inline items first, then the file's."""
        where = str(self._source or "<recipe>")
        out = self._items(self.prompts.items, self.prompts.file, "prompts")
        if not out:
            raise RecipeError(where, "prompts", "at least one prompt is needed (prompts.items or prompts.file)")
        for option, what in [("stratify", "to stratify by"), ("pair_by", "to pair by")]:
            field = getattr(self.prompts, option)
            missing = [item for item in out if field not in item.metadata] if field is not None else []
            if missing:
                raise RecipeError(where, f"prompts.{option}", f"every prompt needs a '{field}' field {what}; "
                                  f"{len(missing)} of {len(out)} have none (the first: {missing[0].prompt[:60]!r})")
        return out


    def eval_items(self) -> list[PromptItem]:
        """The held-out evaluation prompts ([eval]); none when the recipe has no [eval] prompts."""
        out = self._items(self.eval.items, self.eval.file, "eval")
        if self.eval.keep_best and not out:
            raise RecipeError(str(self._source or "<recipe>"), "eval.keep_best",
                              "needs evaluation prompts (eval.items or eval.file)")
        return out

    def _items(self, items: list, file: str | None, section: str) -> list[PromptItem]:
        where = str(self._source or "<recipe>")
        out: list[PromptItem] = []
        for i, item in enumerate(items):
            raw = {"prompt": item} if isinstance(item, str) else item
            out.append(_prompt_item(raw, where, f"{section}.items[{i}]"))
        if file:
            base = self._source.parent if self._source else Path.cwd()
            out.extend(load_prompt_file(base / file, f"{section}.file"))
        return out


def _prompt_item(raw: dict[str, Any], where: str, field: str) -> PromptItem:
    if not isinstance(raw.get("prompt"), str) or not raw["prompt"].strip():
        raise RecipeError(where, field, "expected a non-empty 'prompt' string")
    meta = {k: v for k, v in raw.items() if k != "prompt"}
    meta.update(meta.pop("metadata", {}) or {})
    return PromptItem(prompt=raw["prompt"], metadata=meta)


def load_prompt_file(path: Path, field: str = "prompts.file") -> list[PromptItem]:
    """JSONL (a `prompt` field, other fields become metadata) or TXT (a prompt a line)."""
    if not path.is_file():
        raise RecipeError(path, field, "file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    items: list[PromptItem] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecipeError(path, f"line {n}", f"invalid JSON ({e.msg})") from None
            if not isinstance(raw, dict):
                raise RecipeError(path, f"line {n}", "expected a JSON object with a 'prompt' field")
            items.append(_prompt_item(raw, str(path), f"line {n}"))
        else:
            items.append(PromptItem(prompt=line.strip()))
    return items


# ---- overrides (--set a.b=value) -------------------------------------------------------------

def parse_override(expr: str) -> tuple[list[str], Any]:
    """`ppo.lr=1e-5` -> (["ppo", "lr"], 1e-5); the value is read as TOML, else as a string."""
    key, sep, value = expr.partition("=")
    if not sep or not key.strip():
        raise RecipeError("--set", expr, "expected path.to.field=value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip().split("."), parsed


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        if isinstance(node, list):
            node = node[_index(part, path)]
            continue
        node = node.setdefault(part, {})
    if isinstance(node, list):
        node[_index(path[-1], path)] = value
    else:
        node[path[-1]] = value


def _index(part: str, path: list[str]) -> int:
    if not part.isdigit():
        raise RecipeError("--set", ".".join(path), f"'{part}' should be a list index")
    return int(part)


# ---- loading ---------------------------------------------------------------------------------

def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(path, "", "recipe file not found") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(path, "", f"not valid TOML: {e}") from None
    for expr in overrides or []:
        keys, value = parse_override(expr)
        apply_override(data, keys, value)
    data.setdefault("name", path.stem)
    return recipe_from_dict(data, path)


def recipe_from_dict(data: dict[str, Any], source: str | Path = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise RecipeError(source, _loc(err["loc"]), _explain(err, data)) from None
    recipe._source = Path(source) if str(source) != "<recipe>" else None
    _check_average(recipe, source)
    return recipe


def _check_average(recipe: Recipe, source: str | Path) -> None:
    if recipe.average.last and recipe.eval.keep_best:
        raise RecipeError(source, "average.last", "the run hands over either its best checkpoint "
                          "(eval.keep_best) or the average of its last ones, not both")


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif p in ("str", "dict[str,any]"):  # union branch names pydantic adds
            continue
        else:
            parts.append(str(p))
    return ".".join(parts)


def _explain(err: dict[str, Any], data: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        field = str(err["loc"][-1])
        known = _known_fields(err["loc"][:-1])
        hint = difflib.get_close_matches(field, known, n=1)
        msg = f"unknown key '{field}'"
        if hint:
            msg += f"; did you mean '{hint[0]}'?"
        elif known:
            msg += f"; expected one of: {', '.join(known)}"
        return msg
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{err['msg']}{shown}"


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def check_params(model: type[BaseModel] | None, params: dict[str, Any], source: str | Path, field: str) -> Any:
    """Validate a plugin's params from the recipe; errors name `field.key`."""
    if model is None:
        if params:
            raise RecipeError(source, f"{field}.{next(iter(params))}", "this plugin takes no parameters")
        return None
    try:
        return model.model_validate(params)
    except ValidationError as e:
        err = e.errors()[0]
        key = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            known = list(model.model_fields)
            hint = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            msg = f"unknown parameter '{err['loc'][-1]}'"
            msg += f"; did you mean '{hint[0]}'?" if hint else f"; expected one of: {', '.join(known) or 'none'}"
        else:
            msg = f"{err['msg']} (got {err.get('input')!r})"
        raise RecipeError(source, f"{field}.{key}" if key else field, msg) from None


def recipe_to_toml(recipe: Recipe, prompts_file: str | None = None, eval_file: str | None = None) -> str:
    """The recipe as run, as TOML (for the run directory)."""
    import tomli_w

    data = recipe.model_dump(mode="json", exclude_none=True)
    for section, file in (("prompts", prompts_file), ("eval", eval_file)):
        if file is not None:
            data[section] = {"file": file} | {k: v for k, v in data[section].items() if k not in ("file", "items")}
    return tomli_w.dumps(data)
