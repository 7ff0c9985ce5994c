"""Progress bars that suit both a terminal and a log file.

On a terminal: an ordinary tqdm bar, redrawn in place. When the stream is not a terminal (CI,
``make demo > log``, ``ros2 launch`` capturing output), carriage-return redraws pile up into
thousands of updates on one line, so the bar prints plain lines instead, at most one every
``LOG_LINE_INTERVAL_S`` seconds, plus the final state when it closes.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm import tqdm

# One line every few seconds keeps a 10-minute mapping run at about a hundred lines.
LOG_LINE_INTERVAL_S = 5.0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogLineBar(tqdm):
    """A tqdm bar that writes one plain line per display, at most every ``line_interval_s``."""

    def __init__(self, *args: Any, line_interval_s: float = LOG_LINE_INTERVAL_S, **kwargs: Any) -> None:
        self._line_interval_s = line_interval_s
        self._last_line_s = -math.inf
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm asks to erase the bar: nothing was drawn in place
            return False
        now = time.monotonic()
        if not self._closing and now - self._last_line_s < self._line_interval_s:
            return True
        self._last_line_s = now
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and hasattr(self, "last_print_t"):
            self._closing = True
            with self._lock:
                self.display()  # the final state, whatever the interval
            self.leave = False  # tqdm would otherwise draw it again and add a blank line
        super().close()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on ``file`` (default stderr): redrawn on a terminal, log lines otherwise."""
    stream = kwargs.setdefault("file", sys.stderr)
    if _is_terminal(stream):
        return tqdm(iterable, **kwargs)
    kwargs.pop("dynamic_ncols", None)  # no terminal to measure
    return LogLineBar(iterable, **kwargs)


__all__ = ["LOG_LINE_INTERVAL_S", "LogLineBar", "progress_bar"]
