"""The installed node as a process: it starts without a map, says so, and exits cleanly on signals."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTABLE = REPO / "install" / "dsac_ros" / "lib" / "dsac_ros" / "localizer"


@pytest.mark.parametrize("stop_signal, repeats, gap_s", [(signal.SIGINT, 1, 0.0), (signal.SIGTERM, 1, 0.0),
                                                         (signal.SIGINT, 2, 0.05), (signal.SIGINT, 3, 0.0)])
def test_node_process_reports_no_model_and_exits_cleanly(stop_signal, repeats, gap_s):
    """repeats > 1: Ctrl-C under ros2 launch reaches the node twice (the terminal's process group,
    then launch relaying it, within milliseconds); later ones land anywhere in the shutdown path."""
    process = subprocess.Popen(
        [sys.executable, str(EXECUTABLE), "--ros-args", "-p", "image_timeout_s:=0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    output = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "NO_MODEL" in line:
                break
        assert any("NO_MODEL" in line for line in output), "".join(output)
        time.sleep(0.5)  # let the executor be mid-wait when the signal lands
        for repeat in range(repeats):
            process.send_signal(stop_signal)
            time.sleep(gap_s)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(output) + rest
    assert process.returncode == 0, text
    assert "Traceback" not in text, text
