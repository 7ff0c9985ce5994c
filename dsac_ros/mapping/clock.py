"""Where mapping time goes (``StageTimer``), the run's budget clock, and the progress display."""

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


class BudgetClock:
    """Wall time of a mapping run against its budget: what a resumed run had spent, plus this process's."""

    def __init__(self, total_s: float, spent_s: float = 0.0) -> None:
        self.total_s = float(total_s)
        self._origin = time.monotonic() - float(spent_s)

    def elapsed(self) -> float:
        return time.monotonic() - self._origin


class Progress:
    """One progress bar over the run's budget (seconds), with stage, loss and validation; it reads
    the run's ``BudgetClock`` and only displays."""

    def __init__(self, clock: BudgetClock, enabled: bool) -> None:
        from dsac_ros.progress import progress_bar

        self.clock = clock
        self.bar = progress_bar(total=round(clock.total_s), unit="s", disable=not enabled, dynamic_ncols=True,
                                file=sys.stderr, bar_format=("{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                                                             "[{elapsed}<{remaining}]{postfix}"))
        self.stage, self.loss, self.validation = "", None, "-"

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
        self.bar.n = min(self.clock.elapsed(), self.bar.total)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
