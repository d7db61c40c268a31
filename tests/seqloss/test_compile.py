"""torch.compile(fullgraph=True) of a training-style function calling each loss matches eager.

fullgraph=True fails on any graph break, so this proves the losses trace whole. The "aot_eager"
backend runs dynamo + AOT autograd (forward and backward graphs) without inductor's C++ code
generation, which would cost minutes per loss on a cold 2-core CI machine; one inductor case
checks the generated code too.
"""
import pytest
import torch
from helpers import ctc_batch, ssnt_batch, transducer_batch

import seqloss


def _cases():
    x, tg, il, tl = ctc_batch(0, 6, 2, 5, 2, dtype=torch.float32)
    logits, rtg, ll, rtl = transducer_batch(0, 2, 4, 2, 5, dtype=torch.float32)
    lp, stg, ch, sl, stl = ssnt_batch(0, 2, 2, 4, 3, dtype=torch.float32)
    return {
        "ctc": (lambda v: seqloss.ctc_loss(v.log_softmax(-1), tg, il, tl), (x,)),
        "simple_ctc": (lambda v: seqloss.simple_ctc_loss(v.log_softmax(-1), tg, il, tl), (x,)),
        "rnnt": (lambda v: seqloss.rnnt_loss(v * 2.0, rtg, ll, rtl, blank=0), (logits,)),
        "modified_rnnt": (lambda v: seqloss.modified_rnnt_loss(v * 2.0, rtg, ll, rtl, blank=0), (logits,)),
        "ssnt": (lambda a, b: seqloss.ssnt_loss(a.log_softmax(-1), stg, torch.nn.functional.logsigmoid(b), sl, stl),
                 (lp, ch)),
    }


def _run(fn, inputs):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    loss = fn(*inputs)
    return loss.detach(), torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("name", ["ctc", "simple_ctc", "rnnt", "modified_rnnt", "ssnt"])
def test_fullgraph_compile_matches_eager(name):
    torch._dynamo.reset()
    fn, inputs = _cases()[name]
    eager = _run(fn, inputs)
    compiled = _run(torch.compile(fn, fullgraph=True, backend="aot_eager"), inputs)
    torch.testing.assert_close(compiled[0], eager[0])
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b)


def test_inductor_compile_matches_eager():
    torch._dynamo.reset()
    fn, inputs = _cases()["ctc"]
    eager = _run(fn, inputs)
    compiled = _run(torch.compile(fn, fullgraph=True), inputs)
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1][0], eager[1][0])
