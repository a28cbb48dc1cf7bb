"""A local run's launcher gives the C heap's free pages back while the run goes (transforms/io/parquet.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import PROJECT

# Leaves 200 MB of small free blocks among live ones (a runner's buffers that came and went), which
# glibc keeps, then waits 3 s inside `giving_back_free_heap` and reports the resident memory.
_FRAGMENTED_HEAP = """
import json, time
from transforms.io.parquet import giving_back_free_heap

def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

blocks = [bytes(1000) + bytes([n % 256]) for n in range(200_000)]
kept = blocks[::100]
del blocks
before = resident_mb()
with giving_back_free_heap(every_seconds=0.5):
    time.sleep(3)
print(json.dumps({"before": before, "after": resident_mb(), "kept": len(kept)}))
"""


def test_the_free_pages_among_live_blocks_are_given_back_while_the_block_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["before"] - figures["after"] > 100, figures  # of the ~200 MB freed


# Frees a 16 MB array (glibc's dynamic mmap threshold rises to its size), then allocates 4 MB arrays,
# each followed by a live block that keeps the heap from shrinking, frees them and reports the
# resident memory before and after.
_ARRAYS_AFTER_A_LARGE_ONE = """
import json
import numpy as np
from transforms.io.parquet import return_freed_memory_at_once

def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

return_freed_memory_at_once()
large = np.ones(16 * 2**20, np.uint8)
del large
before = resident_mb()
arrays, pins = [], []
for _ in range(60):
    arrays.append(np.ones(4 * 2**20, np.uint8))
    pins.append(bytearray(4096))
del arrays
print(json.dumps({"before": before, "after": resident_mb(), "pins": len(pins)}))
"""


def test_arrays_freed_after_a_larger_one_are_unmapped_at_once() -> None:
    """Without the fixed threshold the 4 MB arrays come from the heap and 16 MB of them stay resident."""
    done = subprocess.run(
        [sys.executable, "-c", _ARRAYS_AFTER_A_LARGE_ONE],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["after"] - figures["before"] < 4, figures
