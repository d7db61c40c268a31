"""With SEQLOSS_HUGE_PAGES=1 the CPU ops back their large dense gradients with transparent huge pages (a
first write of a fresh 160 MB gradient is then about 2x-4x cheaper); without it (the default) they do not;
values never change.

Checked in the memory map of a real process: the gradient's mapping holds huge pages when the hint
is on, and none when it is off. Where the kernel's THP mode is not "madvise" the hint cannot be
told apart from the default, so the test does not apply."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MODE = THP.read_text().split("[")[1].split("]")[0] if THP.exists() else None

SCRIPT = r"""
import torch, seqloss
torch.manual_seed(0)
B, T, U, V = 4, 100, 40, 500                     # dense gradient: 4 * 100 * 41 * 500 * 4 bytes = 33 MB
logits = torch.randn(B, T, U + 1, V, requires_grad=True)
targets = torch.randint(1, V, (B, U), dtype=torch.int32)
lengths = torch.full((B,), T, dtype=torch.int32), torch.full((B,), U, dtype=torch.int32)
loss = seqloss.rnnt_loss(logits, targets, *lengths, blank=0, reduction="sum", backend="native")
(grad,) = torch.autograd.grad(loss, logits)
# the hint splits the gradient's mapping at 2 MiB boundaries: add up every mapping it overlaps
first, last, huge_kb = grad.data_ptr(), grad.data_ptr() + grad.nbytes, 0
with open("/proc/self/smaps") as f:
    inside = False
    for line in f:
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start < last and first < end
        elif inside and head == "AnonHugePages:":
            huge_kb += int(line.split()[1])
print(huge_kb, float(grad.double().abs().sum()))
"""


def _run(flag):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SEQLOSS_HUGE_PAGES", None)
    if flag is not None:
        env["SEQLOSS_HUGE_PAGES"] = flag
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    huge_kb, total = out.stdout.split()
    return int(huge_kb), float(total)


@pytest.mark.skipif(MODE != "madvise", reason=f"transparent huge pages are {MODE!r} here, not 'madvise'")
def test_dense_gradient_uses_huge_pages_only_when_asked():
    on_kb, on_total = _run("1")
    off_kb, off_total = _run("0")
    default_kb, _ = _run(None)
    assert on_kb >= 2048, "the gradient's mapping holds no huge page with SEQLOSS_HUGE_PAGES=1"
    assert off_kb == 0 and default_kb == 0, "without SEQLOSS_HUGE_PAGES=1 the gradient should stay on 4 KiB pages"
    assert on_total == off_total  # the same gradient, bit for bit in its sum
