"""A sample in full: each response token coloured by its per-token KL (policy vs reference)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


def kl_text(tokens: list[str], token_kl: list[float]) -> Text:
    """Red where the policy up-weighted a token (log p_policy > log p_ref), blue where it down-weighted it."""
    text = Text()
    for tok, kl in zip(tokens, token_kl):
        strength = min(abs(kl) / 1.0, 1.0)  # saturates at 1 nat
        level = int(40 + 160 * strength)
        colour = f"rgb({level},40,40)" if kl > 0 else f"rgb(40,40,{level})"
        text.append(tok, style=f"on {colour}" if abs(kl) >= 0.02 else "")
    return text


class SampleScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "dismiss", "Back")]

    def __init__(self, sample: dict[str, Any]):
        super().__init__()
        self.sample = sample

    def compose(self) -> ComposeResult:
        s = self.sample
        comps = "  ".join(f"{k} {v:+.3f}" for k, v in s.get("components", {}).items())
        with VerticalScroll(id="sample-box"):
            yield Static(Text.assemble(("prompt\n", "bold"), s["prompt"]), classes="sample-prompt")
            yield Static(Text.assemble(("response", "bold"), ("  (token colour: red = policy up-weighted, "
                                                             "blue = down-weighted vs the reference)\n", "dim"),
                                       kl_text(s.get("tokens", []), s.get("token_kl", []))
                                       if s.get("tokens") else s["response"]), classes="sample-response")
            yield Static(f"reward {s['reward']:+.3f}   {comps}   KL {s['kl']:.3f}   "
                         f"{s.get('length', '?')} tokens{'' if s.get('finished', True) else ', no EOS'}",
                         classes="sample-stats")
        yield Footer()
