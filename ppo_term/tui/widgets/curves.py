"""Live curves over the steps, drawn with plotext."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from ppo_term.tui.state import RunView

# title -> the metric keys drawn in it ("reward/*" expands to each reward component);
# a key ending in ">" is drawn against the right-hand axis (its own scale)
PANELS = {
    "reward": ["reward", "reward/*", "eval/reward"],  # eval/reward: held-out prompts, greedy, every eval.every steps
    "KL | kl_coef": ["kl", "kl_coef>"],
    "policy | value loss": ["policy_loss", "value_loss>"],
    "entropy | length": ["entropy", "response_length>"],
    "tokens/s": ["tokens_per_s"],
}


class Curve(PlotextPlot):
    def __init__(self, title: str, keys: list[str], **kwargs):
        super().__init__(**kwargs)
        self.title, self.keys = title, keys
        self.border_title = title

    def show(self, view: RunView) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        keys = []
        for k in self.keys:
            keys += view.reward_components() if k == "reward/*" else [k]
        for key in keys:
            right = key.endswith(">")
            key = key.rstrip(">")
            xs, ys = view.series(key)
            if xs:
                plt.plot(xs, ys, marker="braille", yside="right" if right else "left",
                         label=key.removeprefix("reward/") if key != "reward" else "total")
        plt.xlabel("step")
        self.refresh()
