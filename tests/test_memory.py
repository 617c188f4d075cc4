"""The C heap's tuning for training: a tensor of 1 MB or more gets its own mapping."""

import platform
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import ctypes, sys
    import torch
    from ppo_term.engine import memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    big = torch.empty(20_000_000, dtype=torch.uint8)  # freeing a 20 MB mapping raises glibc's threshold to 20 MB
    del big
    tuned = sys.argv[1] == "tuned" and memory.tune_malloc()
    before = libc.mallinfo2().hblkhd
    t = torch.empty(1_200_000, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd - before
    del t
    print(tuned, mapped >= 1_200_000, libc.mallinfo2().hblkhd - before < 1_200_000)
""")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
@pytest.mark.parametrize("mode, expected", [("tuned", "True True True"), ("default", "False False True")])
def test_a_tensor_of_a_megabyte_is_mapped_and_returned(mode, expected):
    """In a fresh process, as a run starts: untuned, glibc serves 1.2 MB from its heap."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == expected.split()
