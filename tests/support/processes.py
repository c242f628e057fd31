"""Processes the test fixtures start in their own process groups."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen | None, wait: float = 20) -> None:
    """SIGTERM to the process group of `proc`, SIGKILL if it outlives `wait` seconds."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
