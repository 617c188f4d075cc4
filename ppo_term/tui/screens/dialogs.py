"""Small dialogs: type an exact kl_coef, confirm stopping."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label


class KLInputScreen(ModalScreen[tuple[float, bool] | None]):
    """Returns (kl_coef, keep_schedule) or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: float | None, keep_schedule: bool):
        super().__init__()
        self.current, self.keep = current, keep_schedule

    def compose(self) -> ComposeResult:
        with Vertical(id="kl-box", classes="dialog"):
            yield Label("New KL coefficient (takes effect at the next step)")
            yield Input(value=f"{self.current:.4g}" if self.current is not None else "", id="kl-value")
            yield Checkbox("keep the KL schedule running from this value", value=self.keep, id="kl-keep")
            yield Label("", id="kl-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = float(event.value)
            if value < 0:
                raise ValueError
        except ValueError:
            self.query_one("#kl-error", Label).update(f"expected a number >= 0, got {event.value!r}")
            return
        self.dismiss((value, self.query_one("#kl-keep", Checkbox).value))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "yes", "Yes"), Binding("n,escape", "no", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
