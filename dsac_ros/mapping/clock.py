"""Where mapping time goes (``StageTimer``) and the progress display over the budget.
"""

from __future__ import annotations

import sys
import time
from typing import Optional


class StageTimer:
    """Accumulates wall time per named part of the pipeline (the "where does time go" record)."""

    def __init__(self, initial: Optional[dict[str, float]] = None) -> None:
        self.seconds: dict[str, float] = dict(initial or {})

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def measure(self, name: str):
        timer = self

        class _Context:
            def __enter__(self_inner):
                self_inner.start = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.add(name, time.perf_counter() - self_inner.start)
                return False

        return _Context()


class Progress:
    """One tqdm bar over the whole wall-clock budget (seconds), with stage, loss and validation."""

    def __init__(self, total_s: float, enabled: bool, start_s: float = 0.0) -> None:
        from dsac_ros.progress import progress_bar

        self.bar = progress_bar(total=round(total_s), unit="s", disable=not enabled, dynamic_ncols=True, file=sys.stderr,
                        bar_format=("{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                                    "[{elapsed}<{remaining}]{postfix}"))
        self.origin = time.monotonic() - start_s
        self.stage, self.loss, self.validation = "", None, "-"

    def elapsed(self) -> float:
        return time.monotonic() - self.origin

    def update(self, stage: Optional[str] = None, loss: Optional[float] = None,
               validation: Optional[str] = None) -> None:
        if stage is not None:
            self.stage = stage
            self.bar.set_description_str(stage)
        if loss is not None:
            self.loss = loss
        if validation is not None:
            self.validation = validation
        loss_text = "-" if self.loss is None else f"{self.loss:.4g}"
        self.bar.set_postfix_str(f"loss {loss_text}, {self.validation}", refresh=False)
        self.bar.n = min(self.elapsed(), self.bar.total)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
