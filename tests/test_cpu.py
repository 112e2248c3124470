"""keep_freed_memory: glibc's malloc stops giving freed blocks back and faulting them in again."""

import os
import subprocess
import sys

import pytest

from cachekit import cpu

GLIBC = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc") if hasattr(os, "confstr") else False

# Two 20 MB blocks allocated and freed, six times: glibc's default (a dynamic mmap threshold, trim
# at twice it) trims them away each time and faults them in again; kept, they are reused.
_CHILD = """
import resource, sys
import numpy as np
from cachekit.cpu import keep_freed_memory
said = keep_freed_memory()
faults = []
for _ in range(6):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(20 << 20, np.uint8); b = np.ones(20 << 20, np.uint8); del a, b
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(sum(faults[2:]))
print(said)
"""


def _child(**env) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if k not in (cpu.OPT_OUT, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    r = subprocess.run([sys.executable, "-c", _CHILD], env={**base, **env}, capture_output=True, text=True, check=True)
    faults, said = r.stdout.strip().splitlines()
    return int(faults), said


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_freed_blocks_are_reused_not_faulted_in_again():
    kept, said = _child()
    system, said_system = _child(**{cpu.OPT_OUT: "system"})
    assert said.startswith("keeping freed blocks under 32 MB") and "glibc" in said
    assert said_system == "left as the system's (CLIPCACHE_MALLOC=system)"
    assert system >= 40  # the default trims and faults again: ~1,000 faults a round here (10 with huge pages)
    assert kept * 20 < system, (kept, system)


def test_a_users_own_malloc_settings_win():
    _, said = _child(MALLOC_TRIM_THRESHOLD_="1000000")
    assert said == "left as set by MALLOC_TRIM_THRESHOLD_"


def test_once_per_process():
    first = cpu.keep_freed_memory()
    assert cpu.keep_freed_memory() is first
