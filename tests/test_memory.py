"""server/memory.py: freed large buffers leave the process, in a fresh interpreter each time."""

import json
import platform
import subprocess
import sys

import pytest

# Asked of the platform, not of server/memory.py: a broken lookup there must fail, not skip.
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc")

# Frees a 30 MB buffer (glibc then serves buffers under 30 MB from its heap), allocates forty
# 8 MB arrays and frees all but the last, which sits on top of the heap and pins it.
PROGRAM = """
import json, sys
import numpy as np
from server.memory import return_large_buffers

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

fixed = return_large_buffers() if sys.argv[1] == "fixed" else None
base = rss()
big = np.ones(30 * 2**20, np.uint8)
del big
arrays = [np.ones(8 * 2**20, np.uint8) for _ in range(40)]
del arrays[:-1]
print(json.dumps({"fixed": fixed, "retained": rss() - base}))
"""


def retained(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@glibc_only
def test_freed_large_buffers_are_returned_to_the_system():
    assert retained("fixed")["fixed"] is True
    # 39 freed arrays of 8 MB: glibc kept all 312 MB with its own threshold, none with ours.
    assert retained("default")["retained"] > 250
    assert retained("fixed")["retained"] < 100


# Under the fixed thresholds (the server's), 64 KiB blocks come from the heap: 1,600 of them,
# every other one freed, leave 51 MB of free memory between blocks in use, which no shrinking
# of the heap's top can reach (trim handed back 33 MB of it here, 64 % of it in every run).
HOLES = """
import json
from server.memory import return_large_buffers, trim

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

return_large_buffers()
blocks = [bytes(64 * 1024) for _ in range(1600)]
del blocks[::2]
before = rss()
trimmed = trim()
print(json.dumps({"trimmed": trimmed, "released": before - rss()}))
"""


@glibc_only
def test_trim_hands_back_the_free_memory_between_blocks_in_use():
    out = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["trimmed"] and result["released"] > 20
