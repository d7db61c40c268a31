"""The fused joiner + loss and the packed joiner give exactly the dense path's values and gradients."""
import pytest
import torch

import seqloss

B, T, U, HE, HP, H, V = 3, 11, 4, 5, 6, 7, 9


class LogSigmoidHead(torch.nn.Module):
    """SSNT choose head: log P(emit) = logsigmoid(w . h + b)."""

    def __init__(self, dim):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)

    def forward(self, hidden):
        return torch.nn.functional.logsigmoid(self.linear(hidden)[..., 0])


def _setup(dtype, seed=0, activation="tanh"):
    torch.manual_seed(seed)
    joiner = seqloss.Joiner(HE, HP, H, V, activation=activation).to(dtype)
    choose = LogSigmoidHead(H).to(dtype)
    enc = torch.randn(B, T, HE, dtype=dtype, requires_grad=True)
    pred = torch.randn(B, U + 1, HP, dtype=dtype, requires_grad=True)
    targets = torch.randint(1, V, (B, U))
    logit_lengths, target_lengths = torch.tensor([11, 8, 6]), torch.tensor([4, 2, 1])
    return joiner, choose, enc, pred, targets, logit_lengths, target_lengths


def _dense(loss, joiner, choose, enc, pred, targets, ll, tl, reduction, **kw):
    if loss == "ssnt":
        hidden = joiner.hidden(joiner.encoder_proj(enc)[:, :, None], joiner.predictor_proj(pred)[:, None])
        log_probs = joiner.output(hidden).log_softmax(-1).transpose(1, 2)[:, :U]
        log_p_choose = choose(hidden).transpose(1, 2)[:, :U]
        return seqloss.ssnt_loss(log_probs, targets, log_p_choose, ll, tl, reduction=reduction)
    fn = seqloss.rnnt_loss if loss == "rnnt" else seqloss.modified_rnnt_loss
    return fn(joiner(enc, pred), targets, ll, tl, blank=0, reduction=reduction, **kw)


def _value_and_grads(fn, params):
    value = fn()
    return value.detach(), torch.autograd.grad(value.sum(), params, allow_unused=True)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("loss,extra", [("rnnt", {}), ("rnnt", {"clamp": 0.2}), ("modified_rnnt", {}),
                                        ("modified_rnnt", {"final_blank": False}), ("ssnt", {})])
@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_fused_equals_dense(dtype, tolerance, reduction, loss, extra, chunk_size):
    joiner, choose, enc, pred, targets, ll, tl = _setup(dtype)
    params = [enc, pred, *joiner.parameters()] + ([*choose.parameters()] if loss == "ssnt" else [])
    dense = _value_and_grads(lambda: _dense(loss, joiner, choose, enc, pred, targets, ll, tl, reduction, **extra),
                             params)
    fused = _value_and_grads(lambda: seqloss.fused_transducer_loss(
        joiner, enc, pred, targets, ll, tl, loss=loss, blank=0, reduction=reduction,
        choose_head=choose if loss == "ssnt" else None, chunk_size=chunk_size, **extra), params)
    torch.testing.assert_close(fused[0], dense[0], rtol=tolerance, atol=tolerance)
    for got, want in zip(fused[1], dense[1]):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


def test_fused_chunk_size_follows_the_memory_budget():
    joiner, _, enc, pred, targets, ll, tl = _setup(torch.float32)
    calls = []
    original = joiner.hidden
    joiner.hidden = lambda e, p: calls.append(e.shape[0]) or original(e, p)
    per_frame_mb = (U + 1) * (V + 6 * H) * 4 / 2**20  # a Linear output layer: applied by hand
    with torch.no_grad():  # the forward chunks only
        seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, blank=0,
                                      memory_budget_mb=3.5 * per_frame_mb)
    # 3 frames (b, t) per chunk; every valid frame once, no padded frame
    assert max(calls) == 3 and sum(calls) == int(ll.sum()) < B * T


class _Unfused(torch.nn.Module):
    """An output layer the chunk loops cannot apply by hand (not a plain Linear): autograd differentiates it."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear
        self.out_features = linear.out_features

    def forward(self, hidden):
        return self.linear(hidden)


@pytest.mark.parametrize("loss", ["rnnt", "ssnt"])
@pytest.mark.parametrize("output", ["linear", "module", "linear_without_bias"])
def test_fused_output_layers(loss, output):
    """The hand-written backward of a Linear output layer (with or without bias) and the autograd one of
    any other module give the dense path's gradients."""
    joiner, choose, enc, pred, targets, ll, tl = _setup(torch.float64)
    if output == "module":
        joiner.output = _Unfused(joiner.output)
    elif output == "linear_without_bias":
        joiner.output.bias = None
    params = [enc, pred, *joiner.parameters()] + ([*choose.parameters()] if loss == "ssnt" else [])
    dense = _value_and_grads(lambda: _dense(loss, joiner, choose, enc, pred, targets, ll, tl, "sum"), params)
    fused = _value_and_grads(lambda: seqloss.fused_transducer_loss(
        joiner, enc, pred, targets, ll, tl, loss=loss, blank=0, reduction="sum",
        choose_head=choose if loss == "ssnt" else None, chunk_size=4), params)
    torch.testing.assert_close(fused[0], dense[0], rtol=1e-9, atol=1e-9)
    for got, want in zip(fused[1], dense[1]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_fused_with_other_activations(activation):
    joiner, choose, enc, pred, targets, ll, tl = _setup(torch.float64, activation=activation)
    params = [enc, pred, *joiner.parameters()]
    dense = _value_and_grads(lambda: _dense("rnnt", joiner, choose, enc, pred, targets, ll, tl, "mean"), params)
    fused = _value_and_grads(lambda: seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, blank=0,
                                                                   chunk_size=3), params)
    torch.testing.assert_close(fused[0], dense[0])
    for got, want in zip(fused[1], dense[1]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("loss", ["rnnt", "modified_rnnt"])
def test_packed_joiner_equals_dense(loss):
    joiner, _, enc, pred, targets, ll, tl = _setup(torch.float64, seed=3)
    params = [enc, pred, *joiner.parameters()]
    fn = seqloss.rnnt_loss if loss == "rnnt" else seqloss.modified_rnnt_loss
    dense = _value_and_grads(lambda: fn(joiner(enc, pred), targets, ll, tl, blank=0, reduction="none"), params)
    packed_logits = joiner.packed(enc, pred, ll, tl)
    assert packed_logits.shape == (int((ll * (tl + 1)).sum()), V)
    packed = _value_and_grads(lambda: fn(joiner.packed(enc, pred, ll, tl), targets, ll, tl, blank=0,
                                         reduction="none"), params)
    torch.testing.assert_close(packed[0], dense[0], rtol=1e-12, atol=1e-12)
    for got, want in zip(packed[1], dense[1]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_fused_rejects_bad_arguments():
    joiner, choose, enc, pred, targets, ll, tl = _setup(torch.float32)
    with pytest.raises(ValueError, match="loss"):
        seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, loss="ctc")
    with pytest.raises(ValueError, match="choose_head"):
        seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, loss="ssnt")
    with pytest.raises(ValueError, match="targets"):
        seqloss.fused_transducer_loss(joiner, enc, pred, targets.clamp(max=0), ll, tl, blank=0)
    with pytest.raises(ValueError, match="chunk_size"):
        seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, blank=0, chunk_size=0)
    with pytest.raises(ValueError, match="logit_lengths"):
        seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll + 1, tl, blank=0)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("loss", ["rnnt", "ssnt"])
def test_fused_without_gradients(context, loss):
    joiner, choose, enc, pred, targets, ll, tl = _setup(torch.float64)
    kwargs = {"choose_head": choose} if loss == "ssnt" else {}
    with_grad = seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, loss=loss, blank=0, **kwargs)
    with context():
        value = seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, loss=loss, blank=0, **kwargs)
    assert not value.requires_grad
    torch.testing.assert_close(value, with_grad.detach())


@pytest.mark.parametrize("loss", ["rnnt", "ssnt"])
def test_fused_under_cpu_autocast_with_backward_outside_it(loss):
    """Forward under bf16 autocast, backward after it (as a training loop does): the chunks are recomputed
    in the forward's dtypes, and the result is the dense path's under the same autocast (to bf16 accuracy)."""
    joiner, choose, enc, pred, targets, ll, tl = _setup(torch.float32)
    params = [enc, pred, *joiner.parameters()] + ([*choose.parameters()] if loss == "ssnt" else [])
    kwargs = {"choose_head": choose} if loss == "ssnt" else {}

    def under_autocast(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = fn()
        return value.detach(), torch.autograd.grad(value.sum(), params, allow_unused=True)

    dense = under_autocast(lambda: _dense(loss, joiner, choose, enc, pred, targets, ll, tl, "sum"))
    fused = under_autocast(lambda: seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, loss=loss,
                                                                 blank=0, reduction="sum", chunk_size=4, **kwargs))
    torch.testing.assert_close(fused[0], dense[0], rtol=2e-2, atol=2e-2)
    for got, want in zip(fused[1], dense[1]):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
