"""Progress output: redrawn bars on a terminal, a few plain lines in a log."""

import io

from dsac_ros import progress
from dsac_ros.progress import LogLineBar, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_at_most_one_per_interval_and_the_final_state():
    log = io.StringIO()
    bar = progress_bar(total=1000, unit="frame", file=log, desc="map", dynamic_ncols=True)
    assert isinstance(bar, LogLineBar)
    for _ in range(1000):
        bar.update(1)
        bar.set_postfix_str("loss 0.5", refresh=False)
        bar.refresh()  # mapping's Progress forces a redraw on every step
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # Everything ran well within one interval: the line at the start and the final one.
    assert len(lines) <= 2, lines
    assert "1000/1000" in lines[-1] and "map" in lines[-1]


def test_lines_follow_the_interval(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = progress_bar(total=100, file=log)
    for step in range(100):
        clock[0] = step * 1.0  # one second per update
        bar.update(1)
        bar.refresh()
    bar.close()
    lines = log.getvalue().splitlines()
    # 100 s of updates at one line per LOG_LINE_INTERVAL_S (5 s), plus the final line.
    assert 100 / progress.LOG_LINE_INTERVAL_S <= len(lines) <= 100 / progress.LOG_LINE_INTERVAL_S + 2, len(lines)


def test_a_terminal_gets_the_ordinary_redrawn_bar():
    terminal = FakeTerminal()
    bar = progress_bar(total=10, file=terminal, mininterval=0)
    assert not isinstance(bar, LogLineBar)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert "\r" in terminal.getvalue()
