"""The PPO step loop: rollouts, scoring, the PPO update, the KL schedule, controls and events."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ppo_term import monitor
from ppo_term.engine import memory, ppo, precision, storage
from ppo_term.engine.controls import Controls
from ppo_term.engine.events import Event, Listener
from ppo_term.engine.optim import AdamWBF16, StepInBackward
from ppo_term.engine.policy import Policy
from ppo_term.engine.prompt_order import contrast_pairs, epoch_order
from ppo_term.engine.rollout import Batch, BoundReward, bind_rewards, generate, score
from ppo_term.plugins.types import KLSchedule, RunContext, Sampler
from ppo_term.recipe import Recipe, RecipeError, check_params


class StepStats(dict):
    """Running means of per-minibatch statistics."""

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.setdefault(k, []).append(float(v))

    def means(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.items()}


@dataclass
class RunResult:
    status: str  # "finished" | "stopped"
    steps_done: int
    last_checkpoint: Path | None
    average: Path | None = None  # checkpoints/average, when the recipe's [average] made one


class Trainer:
    """Runs a recipe. UI-free: listeners get events, `controls` steers it from any thread."""

    def __init__(
        self,
        recipe: Recipe,
        plugins=None,
        listeners: list[Listener] | None = None,
        controls: Controls | None = None,
        run_dir=None,
        progress: bool = True,
        rater=None,
    ):
        from ppo_term.plugins.manager import build_plugins

        self.recipe = recipe
        self.plugins = plugins or build_plugins()
        self.listeners = list(listeners or [])
        self.controls = controls or Controls()
        self.run_dir = run_dir
        self.progress = progress
        self.rater = rater
        self.step = 0
        self.phase = "setup"
        self.last_checkpoint: Path | None = None
        # validate everything that comes from the recipe before loading a model
        self.items = recipe.prompt_items()
        # [prompts] pair_by: the epoch's units, each prompt with its most similar one of another value
        field = recipe.prompts.pair_by
        self._pairs = contrast_pairs(self.items, field) if field is not None else None
        self.eval_items = recipe.eval_items()
        self.best_eval: float | None = None
        self.best_checkpoint: Path | None = None
        self.rewards: list[BoundReward] = bind_rewards(recipe, self.plugins)
        self.kl_schedule = self._make_kl_schedule()
        self._check_label_scale()
        self.sampler = self._make_sampler()
        self.kl_fixed = False  # the user fixed kl_coef from the dashboard
        self.trim_heap = False  # set up: full fine-tuning trims the C heap between phases
        self.history: list[dict[str, Any]] = []
        self.monitor = monitor.Monitor(getattr(self.kl_schedule.params, "target", None))

    # ---- set-up ----
    def _plugin(self, lookup, name: str, field: str):
        """A plugin class by name; an unknown name is a recipe error at `field`."""
        from ppo_term.plugins.manager import PluginError

        try:
            return lookup(name)
        except PluginError as e:
            raise RecipeError(self.recipe.source or "<recipe>", field, str(e)) from None

    def _make_kl_schedule(self) -> KLSchedule:
        cls = self._plugin(self.plugins.kl_schedule, self.recipe.kl.schedule, "kl.schedule")
        params = check_params(cls.Params, self.recipe.kl.params, self.recipe.source or "<recipe>", "kl")
        return cls(self.recipe.kl.coef, params)

    def _check_label_scale(self) -> None:
        labels = {item.metadata.get("label") for item in self.items}
        for label in self.recipe.kl.label_scale:
            if label not in labels:
                known = ", ".join(sorted(repr(x) for x in labels if x is not None)) or "none"
                raise RecipeError(self.recipe.source or "<recipe>", "kl.label_scale",
                                  f"no training prompt has the label {label!r} (labels: {known})")

    def kl_coefs(self, batch: Batch, kl_coef: float) -> float | torch.Tensor:
        """kl_coef for each sample [B, 1]: times `kl.label_scale` of its prompt's label."""
        scale = self.recipe.kl.label_scale
        if not scale:
            return kl_coef
        coefs = [kl_coef * scale.get(item.metadata.get("label"), 1.0) for item in batch.items]
        return torch.tensor(coefs, device=batch.mask.device, dtype=batch.mask.dtype).unsqueeze(-1)

    def _make_sampler(self) -> Sampler:
        source = self.recipe.source or "<recipe>"
        cls = self._plugin(self.plugins.sampler, self.recipe.sampler.name, "sampler.name")
        sampler = cls(check_params(cls.Params, self.recipe.sampler.params, source, "sampler"))
        try:
            sampler.plan(self.items[:1], self.recipe.generation)
        except ValueError as e:
            raise RecipeError(source, "sampler", str(e)) from None
        return sampler

    def setup(self, model_path: str | None = None) -> None:
        """Load the model (resolving the default one), build policy, reference and optimizer."""
        from ppo_term.models import load_causal_lm, load_tokenizer, pick_device, resolve_model

        r = self.recipe
        # full fine-tuning's peak RSS; LoRA's is far lower and it costs LoRA time
        self.trim_heap = not r.lora.enabled and memory.tune_malloc()
        torch.manual_seed(r.seed)
        self.rng = random.Random(r.seed)
        self.device = pick_device(r.device)
        self.model_path = model_path or resolve_model(r.model, progress=self.progress)
        self.tokenizer = load_tokenizer(self.model_path)
        lm = load_causal_lm(self.model_path, self.device)
        self.precision = precision.choose(r.precision, self.device)
        self.master = precision.choose_master(r.master_weights, r.lora.enabled, self.precision)
        if self.master.dtype != torch.float32:
            # the trained weights themselves (and so the reference copy) in bf16; with fp32 compute
            # they are multiplied in fp32, a cast per call (`storage`), not in slow bf16
            if self.precision.dtype == torch.float32:
                try:
                    storage.store_bf16(lm)
                except ValueError as e:
                    raise RecipeError(r.source or "<recipe>", "master_weights", str(e)) from None
            else:
                lm.to(self.master.dtype)
        layers = lm.config.num_hidden_layers
        if r.lora.enabled and r.lora.first_layer >= layers:
            raise RecipeError(r.source or "<recipe>", "lora.first_layer",
                              f"expected a layer below the model's {layers} decoder layers, got {r.lora.first_layer}")
        self.policy = Policy(lm, r.lora, self.device, self.precision.dtype)
        params = self.policy.trainable_parameters()
        if self.master.dtype == torch.bfloat16:
            self.optimizer = AdamWBF16(params, lr=r.ppo.lr, weight_decay=0.0, seed=r.seed)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=r.ppo.lr, weight_decay=0.0,
                                               fused=use_fused_adam(sum(p.numel() for p in params)))
        # full fine-tuning with no clipping steps each weight inside backward(), freeing its gradient
        in_backward = not r.lora.enabled and math.isinf(r.ppo.max_grad_norm)
        self.step_in_backward = StepInBackward(self.optimizer) if in_backward else None
        run_path = self.run_dir.path if self.run_dir is not None else None
        for bound in self.rewards:
            bound.reward.context = RunContext(run_dir=run_path, rater=self.rater, emit=self.emit)
            bound.reward.setup()
        self._order: list[int] = []
        trained = {item.prompt for item in self.items}
        overlap = sum(item.prompt in trained for item in self.eval_items)
        if overlap:
            self.emit("warning", message=f"{overlap} of the {len(self.eval_items)} eval prompts are also training "
                      "prompts: the eval reward then measures memory as well as generalisation")
        self.emit("start", model=r.model, model_path=self.model_path, device=str(self.device),
                  precision=self.precision.name, precision_reason=self.precision.reason,
                  master_weights=self.master.name, master_weights_reason=self.master.reason,
                  trainable_params=sum(p.numel() for p in self.policy.trainable_parameters()))

    def emit(self, kind: str, **data: Any) -> None:
        event = Event(kind, self.step, data)
        for listener in self.listeners:
            listener(event)

    # ---- the loop ----
    def run(self) -> RunResult:
        """Steps until the recipe's count or a stop; saves at save_every and at the end."""
        r = self.recipe
        status = "stopped"
        average_steps = r.average_steps()
        average = None
        if r.average.last and not average_steps:
            self.emit("warning", message=f"[average]: {r.average.last} checkpoints {r.average.every} steps apart "
                      f"do not fit in {r.steps} steps; the run hands over its last step")
        try:
            while self.step < r.steps:
                if not self._boundary("generate"):
                    break
                metrics = self.train_step()
                if self.step < r.steps and r.save_every and self.step % r.save_every == 0:
                    self.save_checkpoint(reason="save_every")
                elif self.step < r.steps and self.step in average_steps:
                    self.save_checkpoint(reason="average")
                held_out = metrics.get("eval/reward")
                if r.eval.keep_best and held_out is not None and (self.best_eval is None or held_out > self.best_eval):
                    self.best_eval = held_out
                    self.best_checkpoint = self.save_checkpoint(reason="best", name="best")
            else:
                status = "finished"
            if self.step > 0 and (self.last_checkpoint is None or self.last_checkpoint.name != f"step-{self.step}"):
                self.save_checkpoint(reason="end" if status == "finished" else "stop")
            if status == "finished" and average_steps:
                average = self.save_average(average_steps)
        except Exception as e:
            self.emit("error", message=str(e), type=type(e).__name__, phase=self.phase)
            raise
        finally:
            for bound in self.rewards:
                try:
                    bound.reward.teardown()
                except Exception as e:  # tear-down errors must not hide the run's own outcome
                    self.emit("warning", message=f"reward '{bound.name}' teardown failed: {e}")
        self.emit("end", status=status, steps_done=self.step)
        return RunResult(status, self.step, self.last_checkpoint, average)

    def _boundary(self, next_phase: str) -> bool:
        """Apply pending controls; wait here while paused. False when the run should stop."""
        while True:
            for cmd in self.controls.drain():
                self._apply(cmd.name, cmd.args)
            if self.controls.stop_requested:
                return False
            if not self.controls.paused:
                break
            self._set_phase("paused")
            self.controls.wait_while_paused(timeout=0.2)
        self._set_phase(next_phase)
        return True

    def _apply(self, name: str, args: dict[str, Any]) -> None:
        if name == "set_kl_coef":
            self.kl_schedule.coef = args["value"]
            self.kl_fixed = not args.get("keep_schedule", True)
        elif name == "save" and self.step > 0:
            self.save_checkpoint(reason="user")
        self.emit("control", command=name, effective_step=self.step + 1, **args)

    def _on_reward(self, name: str, interactive: bool) -> None:
        self.phase = "rating" if interactive else "score"
        self.emit("phase", phase=self.phase, reward=name)

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self.emit("phase", phase=phase)

    def next_prompts(self) -> list:
        """batch_prompts prompts, walking a seeded shuffle of the dataset epoch by epoch."""
        out = []
        while len(out) < self.recipe.ppo.batch_prompts:
            if not self._order:
                self._order = epoch_order(self.items, self.rng, self.recipe.prompts.stratify, self._pairs)
            out.append(self.items[self._order.pop()])
        return out

    def train_step(self) -> dict[str, Any]:
        r, pc = self.recipe, self.recipe.ppo
        t0 = time.perf_counter()
        # 1. rollouts: the sampler's settings, adapter on
        items = self.next_prompts()
        batch = generate(self.policy, self.tokenizer, items, self.sampler.plan(items, r.generation),
                         record=self.record_rollout)
        if self.trim_heap:
            memory.trim()  # what generating freed is not what training asks for
        t_gen = time.perf_counter() - t0
        n_generated, gen_tokens = len(batch.responses), int(batch.mask.sum().item())
        # 2. scores from the recipe's rewards; the sampler may keep a subset to train on
        self._boundary("score")
        t1 = time.perf_counter()
        for bound in self.rewards:
            bound.reward.context.step = self.step + 1
        reward_seconds = score(self.rewards, batch, pc.no_eos_penalty, on_reward=self._on_reward)
        reward_all = float(batch.scores.mean())
        keep = self.sampler.select(batch.groups, batch.scores.tolist(), r.generation.n)
        if keep is not None:
            batch = batch.subset(keep)
        t_score = time.perf_counter() - t1
        self._boundary("train")
        t2 = time.perf_counter()
        kl_coef = self.kl_schedule.coef
        # the learning rate follows the step number (no state: a resumed run picks it up as it was)
        lr = ppo.lr_at(self.step + 1, r.steps, pc.lr, pc.lr_schedule, pc.lr_end, pc.lr_decay_from)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        metrics, token_kl = self.ppo_update(batch, kl_coef)
        if self.trim_heap:
            memory.trim()
        t_train = time.perf_counter() - t2
        # 4. the KL schedule sees the measured KL
        if not self.kl_fixed:
            self.kl_schedule.update(self.step + 1, metrics["kl"], len(batch.responses))
        self.step += 1
        # 5. every eval.every steps (and after the last), the held-out prompts, answered greedily
        held_out: dict[str, float] = {}
        if self.eval_items and (self.step % r.eval.every == 0 or self.step == r.steps):
            self._set_phase("eval")
            t3 = time.perf_counter()
            held_out = self.evaluate_heldout()
            held_out["time/eval"] = time.perf_counter() - t3
        n_tokens = int(batch.mask.sum().item())
        metrics = {
            "step": self.step,
            "reward": float(batch.scores.mean()),
            "reward_generated": reward_all,
            "samples": len(batch.responses),
            "samples_generated": n_generated,
            **{f"reward/{k}": sum(v) / len(v) for k, v in batch.components.items()},
            "kl_coef": kl_coef,
            "lr": lr,
            "kl_coef_next": self.kl_schedule.coef,
            **metrics,
            "response_length": n_tokens / len(batch.responses),
            "eos_frac": float(batch.finished.float().mean()),
            "time/generate": t_gen,
            "time/score": t_score,
            "time/train": t_train,
            **{f"time/reward/{k}": v for k, v in reward_seconds.items()},
            "time/step": time.perf_counter() - t0,
            "tokens_per_s": gen_tokens / max(t_gen, 1e-9),
            **held_out,
        }
        self.history.append(metrics)
        self.emit("metrics", **metrics)
        self.emit("rollouts", samples=self._rollout_rows(batch, token_kl))
        for message in self.monitor.new_warnings(self.history):
            self.emit("warning", message=message)
        return metrics

    # ---- 5. held-out evaluation ----
    @torch.no_grad()
    def evaluate_heldout(self, chunk: int = 32) -> dict[str, float]:
        """The [eval] prompts answered greedily by the policy and scored by the recipe's rewards
        (not the interactive ones): mean reward, each component, the refusal rate (the built-in
        detector) and the share of evasive apologies, over all prompts and per `label`. Greedy
        decoding draws no random numbers, so the training run goes on exactly as it would without it."""
        from ppo_term.builtin.refusal import judge

        r = self.recipe
        gen = r.generation.model_copy(update={
            "n": 1, "openings": [], "opening_labels": [], "greedy": False, "temperature": 0.0,
            "max_new_tokens": r.eval.max_new_tokens or r.generation.max_new_tokens,
        })
        rewards = [b for b in self.rewards if not getattr(b.reward, "interactive", False)]
        rows: list[dict[str, Any]] = []
        for i in range(0, len(self.eval_items), chunk):
            batch = generate(self.policy, self.tokenizer, self.eval_items[i : i + chunk], gen)
            score(rewards, batch, r.ppo.no_eos_penalty)
            for j, (item, response) in enumerate(zip(batch.items, batch.responses)):
                rows.append({"label": item.metadata.get("label"), "reward": float(batch.scores[j]),
                             **judge(response),
                             **{f"reward/{k}": v[j] for k, v in batch.components.items()}})
        out: dict[str, float] = {}
        labels = sorted({str(row["label"]) for row in rows if row["label"] is not None})
        for label in [None, *labels]:
            group = [row for row in rows if label is None or str(row["label"]) == label]
            prefix = "eval/" if label is None else f"eval/{label}/"
            for key in [k for k in group[0] if k != "label"]:
                out[prefix + {"refused": "refusal_rate", "evasive": "evasive_rate"}.get(key, key)] = sum(g[key] for g in group) / len(group)
        return out

    @property
    def record_rollout(self) -> bool:
        """Take the old log-probs and values while sampling (`ppo.old_logprobs`)? In fp32 the decode
        weights (merged, packed) and the update's give the same numbers to rounding (~1e-6); in bf16
        they round apart (on a CPU by ~0.04 a token on average, up to 2% of tokens beyond the clip
        range: bench/README.md), so `auto` recomputes there."""
        choice = self.recipe.ppo.old_logprobs
        return choice == "rollout" or (choice == "auto" and self.policy.dtype == torch.float32)

    # ---- 3. the PPO update ----
    @torch.no_grad()
    def _rollout_stats(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Old logprobs and values (adapter on) and reference logprobs, a pass each, chunked; the
        policy's pass only over the rows whose rollout did not record them (opened or greedy ones decoded
        in calls of their own)."""
        P, temp = batch.query_ids.shape[1], batch.temperature
        ids, att = batch.input_ids, batch.attention_mask
        size = self.recipe.ppo.minibatch
        if batch.old_logprobs is None:
            logprobs, values = torch.zeros_like(batch.mask), torch.zeros_like(batch.mask)
        else:
            logprobs, values = batch.old_logprobs.clone(), batch.old_values.clone()
        todo = torch.tensor([i for i, done in enumerate(batch.recorded) if not done], dtype=torch.long)
        for rows in todo.to(ids.device).split(size) if len(todo) else []:
            logits, v = self.policy.forward(self.policy.lm, ids[rows], att[rows], P)
            logprobs[rows] = ppo.logprobs_from_logits(logits, batch.response_ids[rows], temp)
            values[rows] = v
            del logits
        ref_logprobs = []
        for i in range(0, len(ids), size):
            sl = slice(i, i + size)
            with self.policy.reference() as ref:
                ref_logits, _ = self.policy.forward(ref, ids[sl], att[sl], P, with_values=False)
            ref_logprobs.append(ppo.logprobs_from_logits(ref_logits, batch.response_ids[sl], temp))
            del ref_logits
        return logprobs, values, torch.cat(ref_logprobs)

    def ppo_update(self, batch: Batch, kl_coef: float) -> tuple[dict[str, float], torch.Tensor]:
        pc = self.recipe.ppo
        mask = batch.mask
        logprobs, values, ref_logprobs = self._rollout_stats(batch)
        # per-token KL against the reference, and the per-token rewards it shapes
        kl = ppo.kl_per_token(logprobs, ref_logprobs, pc.kl_estimator) * mask
        scores = batch.scores
        if pc.score_baseline == "group":
            # compare each candidate with its siblings: the prompt's own difficulty drops out
            scores = ppo.leave_one_out(scores, batch.groups)
        scores = scores.to(mask.device)
        rewards = ppo.token_rewards(scores, kl, self.kl_coefs(batch, kl_coef), mask)
        if pc.whiten_rewards:
            rewards = ppo.masked_whiten(rewards, mask, shift_mean=False)
        if not pc.critic:
            # critic-free (RLOO's or GRPO's way): no learnt baseline, the advantage is the reward to go
            values = torch.zeros_like(values)
        advantages, returns = ppo.gae(rewards, values, mask, pc.gamma, pc.lam)
        # update_tokens: only the responses' first K tokens carry the loss, so the passes stop after them
        K = min(pc.update_tokens or mask.shape[1], mask.shape[1])
        advantages = ppo.masked_whiten(advantages[:, :K], mask[:, :K])

        P, temp = batch.query_ids.shape[1], batch.temperature
        ids, att, response_ids = batch.input_ids[:, : P + K], batch.attention_mask[:, : P + K], batch.response_ids[:, :K]
        B = len(ids)
        stats = StepStats()
        params = self.policy.trainable_parameters()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_in_backward is not None:
            self.step_in_backward.sync()
        for _ in range(pc.epochs):
            for idx in torch.randperm(B).split(pc.minibatch):
                idx = idx.to(mask.device)
                m = mask[idx, :K]
                logits, new_values = self.policy.forward(self.policy.lm, ids[idx], att[idx], P, with_values=pc.critic)
                new_logprobs = ppo.logprobs_from_logits(logits, response_ids[idx], temp)
                # entropy needs a graph only when it is part of the loss
                with torch.set_grad_enabled(pc.ent_coef > 0):
                    entropy = ppo.masked_mean(ppo.entropy_from_logits(logits, temp), m)
                pg_loss, clipfrac, approx_kl, dual_clipfrac = ppo.policy_loss(
                    new_logprobs, logprobs[idx, :K], advantages[idx], m, pc.cliprange, pc.dual_clip
                )
                loss = pg_loss - pc.ent_coef * entropy
                if pc.critic:
                    vf_loss, vf_clipfrac = ppo.value_loss(new_values, values[idx, :K], returns[idx, :K], m, pc.cliprange_value)
                    loss = loss + pc.vf_coef * vf_loss
                loss.backward()  # with step_in_backward, this also updates the weights
                if self.step_in_backward is not None:
                    grad_norm = self.step_in_backward.grad_norm()
                else:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, pc.max_grad_norm)
                    self.optimizer.step()
                    # free the gradients before the next forward (full fine-tuning: 4 bytes a weight)
                    self.optimizer.zero_grad(set_to_none=True)
                stats.add(policy_loss=pg_loss.item(), entropy=entropy.item(), clipfrac=clipfrac.item(),
                          approx_kl=approx_kl.item(), grad_norm=grad_norm.item(),
                          **({"value_loss": vf_loss.item(), "vf_clipfrac": vf_clipfrac.item()} if pc.critic else {}),
                          **({"dual_clipfrac": dual_clipfrac.item()} if pc.dual_clip is not None else {}))
        # KL as measured on the policy's own samples: a given opening, or a greedy answer, was not drawn from it
        sampled = torch.tensor(batch.sampled, device=kl.device)
        row_kl = kl.sum(-1)
        seq_kl = row_kl[sampled] if sampled.any() else row_kl  # a sampler may keep only opened ones
        metrics = {
            "kl": float(seq_kl.mean()),
            **self._kl_by_label(batch, row_kl),
            **stats.means(),
            "value_mean": float(ppo.masked_mean(values, mask)),
            "returns_mean": float(ppo.masked_mean(returns, mask)),
        }
        return metrics, kl

    @staticmethod
    def _kl_by_label(batch: Batch, seq_kl: torch.Tensor) -> dict[str, float]:
        """kl/<label>: the mean KL of the sampled responses to prompts with each `label`."""
        groups: dict[str, list[float]] = {}
        for item, sampled, value in zip(batch.items, batch.sampled, seq_kl.tolist()):
            label = item.metadata.get("label")
            if label is not None and sampled:
                groups.setdefault(f"kl/{label}", []).append(value)
        return {key: sum(values) / len(values) for key, values in sorted(groups.items())}

    def _rollout_rows(self, batch: Batch, token_kl: torch.Tensor) -> list[dict[str, Any]]:
        rows = []
        for i, (item, response) in enumerate(zip(batch.items, batch.responses)):
            n = int(batch.mask[i].sum())
            ids = batch.response_ids[i, :n].tolist()
            rows.append({
                "prompt": item.prompt,
                "metadata": item.metadata,
                "response": response,
                "reward": float(batch.scores[i]),
                "components": {k: v[i] for k, v in batch.components.items()},
                "kl": float(token_kl[i].sum()),
                "length": n,
                "finished": bool(batch.finished[i]),
                "opening": batch.openings[i],
                "greedy": batch.greedy[i],
                "tokens": [self.tokenizer.decode([t]) for t in ids],
                "token_kl": [round(x, 4) for x in token_kl[i, :n].tolist()],
            })
        return rows

    # ---- checkpoints ----
    def save_checkpoint(self, reason: str = "user", name: str | None = None) -> Path | None:
        """checkpoints/step-N (or checkpoints/<name>, which is not the run's latest checkpoint)."""
        if self.run_dir is None:
            return None
        path = self.run_dir.write_checkpoint(self.step, self._write_checkpoint, name=name)
        if name is None:
            self.last_checkpoint = path
        self.emit("checkpoint", path=str(path), reason=reason)
        return path

    def save_average(self, steps: list[int]) -> Path | None:
        """checkpoints/average: the soup of the checkpoints at `steps`, the model the run hands over.
        A failure leaves the run's own checkpoints as they are and says so."""
        if self.run_dir is None:
            return None
        from ppo_term.soup import make_soup

        members = [str(self.run_dir.checkpoints / f"step-{s}") for s in steps]
        try:
            path = self.run_dir.write_checkpoint(self.step, lambda out: make_soup(members, out), name="average")
        except Exception as e:  # the steps' checkpoints are all still there to average by hand
            self.emit("warning", message=f"[average]: could not average steps {steps}: {e}")
            return None
        self.emit("checkpoint", path=str(path), reason="average", steps=steps)
        return path

    def _write_checkpoint(self, out: Path) -> None:
        # the adapter in PEFT's own format (or the full model), loadable by from_pretrained
        self.policy.model.save_pretrained(out, safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.policy.value_head.state_dict().items()},
                  out / "value_head.safetensors")
        tensors, meta = optimizer_to_tensors(self.optimizer, self.policy.named_trainable_parameters())
        save_file(tensors, out / "optimizer.safetensors")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        save_file(rng, out / "rng.safetensors")
        state = {
            "step": self.step,
            "kl_schedule": {"name": self.kl_schedule.name, **self.kl_schedule.state_dict()},
            "kl_fixed": self.kl_fixed,
            "python_rng": _jsonable_rng(self.rng.getstate()),
            "prompt_order": self._order,
            "optimizer": meta,
            "model_path": self.model_path,
            "eval": {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith("eval/")},
        }
        (out / "trainer_state.json").write_text(json.dumps(state, indent=2))


FUSED_ADAM_MIN_PARAMS = 20_000_000


def use_fused_adam(n_trainable: int) -> bool:
    """The fused AdamW kernel for full fine-tuning; the default for-loop one for a LoRA adapter.

    On a 2-core CPU an AdamW step over the 135M weights of full fine-tuning measured 0.35 s with
    the default kernel and 0.07 s fused (bench/results/adamw.json), once per minibatch; a LoRA
    adapter's 2M weights take 9 ms against 2 ms, less than the ~1 s import of torch._dynamo that
    the fused kernel's first call costs, so small adapters keep the default.
    """
    return n_trainable >= FUSED_ADAM_MIN_PARAMS


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, named: list[tuple[str, Any]]) -> tuple[dict, dict]:
    """Adam's state as flat safetensors keys plus its param groups as JSON (no pickles)."""
    sd = optimizer.state_dict()
    names = [n for n, _ in named]
    tensors = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{names[idx]}.{key}"] = t.detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "param_names": names}


def load_optimizer_state(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = json.loads((folder / "trainer_state.json").read_text())["optimizer"]
    tensors = load_file(folder / "optimizer.safetensors")
    state: dict[int, dict[str, Any]] = {}
    for idx, name in enumerate(meta["param_names"]):
        entry = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.rsplit(".", 1)[0] == name}
        if entry:
            state[idx] = entry
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _jsonable_rng(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]
