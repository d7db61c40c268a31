"""Models, objectives and greedy decoders on random batches (no data pipeline needed)."""
import lightning as L
import pytest
import torch
import torchaudio
from torch import nn

from recipes.decoding.greedy import GreedyDecoder, ctc_greedy, ssnt_greedy, transducer_greedy
from recipes.lit.module import ASRLitModule, BatchOutOfMemoryError
from recipes.models import ChooseHead, CTCHead, Joiner, LSTMPredictor, LSTMTranscriber
from recipes.models.objectives import CTCObjective, SSNTObjective, TransducerObjective
from recipes.utils.timing import LossTimer
from seqloss import packed_cells

V = 12
E = 16


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    feature_lengths = torch.tensor([64, 51, 40])
    target_lengths = torch.tensor([5, 3, 1])
    targets = torch.randint(1, V, (3, 5), generator=g) * (torch.arange(5) < target_lengths[:, None])
    return {
        "features": torch.randn(3, 64, 80, generator=g),
        "feature_lengths": feature_lengths,
        "targets": targets,
        "target_lengths": target_lengths,
        "durations": feature_lengths / 100.0,
    }


def _module(objective, mode="dense", seed=0):
    torch.manual_seed(seed)
    objective.joiner_mode = mode  # how the objective evaluates the joiner (config: loss.joiner_mode)
    parts = {"transcriber": LSTMTranscriber(80, 4, 16, 2, True, 0.0, E)}
    if objective.name == "ctc":
        parts["ctc_head"] = CTCHead(E, V)
    else:
        parts["predictor"] = LSTMPredictor(V, 8, 16, 1, 0.0, E)
        parts["joiner"] = Joiner(E, E, 16, V, "tanh")
    if objective.name == "ssnt":
        parts["choose_head"] = ChooseHead(16)
    module = ASRLitModule(objective=objective, optimizer=torch.optim.SGD, **parts)
    return module.eval()


OBJECTIVES = {
    "ctc": lambda: CTCObjective(),
    "rnnt": lambda: TransducerObjective("rnnt"),
    "modified_rnnt": lambda: TransducerObjective("modified_rnnt"),
    "ssnt": lambda: SSNTObjective(),
}


def test_transcriber_subsamples_and_ignores_padding():
    model = LSTMTranscriber(80, 4, 16, 2, True, 0.0, E).eval()
    batch = _batch()
    enc, lengths = model(batch["features"], batch["feature_lengths"])
    assert enc.shape == (3, 16, E)
    assert lengths.tolist() == [16, 12, 10]
    alone, _ = model(batch["features"][1:2, :51], batch["feature_lengths"][1:2])
    torch.testing.assert_close(enc[1, :12], alone[0, :12])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_transcriber_lstm_matches_packed_sequence(bidirectional):
    """The padded LSTM with per-utterance reversal gives the packed-sequence outputs and gradients."""
    torch.manual_seed(0)
    model = LSTMTranscriber(8, 2, 12, 3, bidirectional, 0.0, E).double()
    features = torch.randn(4, 22, 8, dtype=torch.float64, requires_grad=True)
    feature_lengths = torch.tensor([22, 9, 17, 2])
    enc, lengths = model(features, feature_lengths)
    stacked = features.reshape(4, 11, 16)
    packed = nn.utils.rnn.pack_padded_sequence(stacked, lengths, batch_first=True, enforce_sorted=False)
    reference, _ = nn.utils.rnn.pad_packed_sequence(model.lstm(packed)[0], batch_first=True, total_length=11)
    reference = model.output(reference)
    torch.testing.assert_close(enc, reference)
    weights = torch.randn_like(enc)
    grads = torch.autograd.grad((enc * weights).sum(), [features, *model.lstm.parameters()])
    ref_grads = torch.autograd.grad((reference * weights).sum(), [features, *model.lstm.parameters()])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_predictor_step_matches_sequence():
    model = LSTMPredictor(V, 8, 16, 1, 0.0, E).eval()
    targets = torch.tensor([[3, 5, 7]])
    full = model(targets)
    out, state = model.step(torch.tensor([0]), None)
    steps = [out]
    for tok in targets[0]:
        out, state = model.step(tok[None], state)
        steps.append(out)
    torch.testing.assert_close(full[0], torch.cat(steps))


def test_packed_cells_order():
    b, t, u = packed_cells(torch.tensor([2, 1]), torch.tensor([1, 2]), "cpu")
    assert list(zip(b.tolist(), t.tolist(), u.tolist())) == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 0, 2)]


def test_packed_joiner_equals_dense_cells():
    joiner = Joiner(E, E, 16, V)
    enc, pred = torch.randn(2, 4, E), torch.randn(2, 3, E)
    enc_len, target_len = torch.tensor([4, 2]), torch.tensor([1, 2])
    dense = joiner(enc, pred)
    b, t, u = packed_cells(enc_len, target_len, "cpu")
    torch.testing.assert_close(joiner.packed(enc, pred, enc_len, target_len), dense[b, t, u])


def test_bad_joiner_settings_raise():
    with pytest.raises(ValueError, match=r"loss\.joiner_mode must be one of dense, packed, fused, got 'sparse'"):
        TransducerObjective("rnnt", joiner_mode="sparse")
    with pytest.raises(ValueError, match=r"loss\.joiner_mode must be one of"):
        SSNTObjective(joiner_mode="sparse")
    with pytest.raises(ValueError, match="activation"):
        Joiner(E, E, 16, V, activation="swish")
    # the mode was a joiner setting (model.joiner.mode): the joiner names the key that replaced it
    with pytest.raises(ValueError, match=r"model\.joiner\.mode=packed .* set loss\.joiner_mode=packed"):
        Joiner(E, E, 16, V, mode="packed")


@pytest.mark.parametrize("name", ["rnnt", "modified_rnnt", "ssnt"])
def test_packed_and_fused_losses_equal_dense_loss(name):
    batch = _batch()
    losses = {}
    for mode in ("dense", "packed", "fused"):
        module = _module(OBJECTIVES[name](), mode)
        loss = module.loss_per_utterance(batch)
        loss.sum().backward()
        losses[mode] = (loss.detach(), module.transcriber.output.weight.grad.clone())
    for mode in ("packed", "fused"):
        torch.testing.assert_close(losses[mode][0], losses["dense"][0])
        torch.testing.assert_close(losses[mode][1], losses["dense"][1])


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_is_negative_log_likelihood(name):
    """Per-utterance losses are finite, positive, and give gradients to the transcriber."""
    module = _module(OBJECTIVES[name]())
    loss = module.loss_per_utterance(_batch())
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 0).all()
    loss.mean().backward()
    assert module.transcriber.lstm.weight_ih_l0.grad.abs().sum() > 0
    assert module.objective.last_loss_ms > 0
    # the timer PerfMonitor reads a step later (CUDA events there, no synchronisation per step)
    assert isinstance(module.objective.loss_timer, LossTimer) and not module.objective.loss_timer.cuda


def test_rnnt_objective_equals_torchaudio():
    module = _module(OBJECTIVES["rnnt"]())
    batch = _batch()
    enc, enc_len = module.encode(batch["features"], batch["feature_lengths"])
    logits = module.joiner(enc, module.predictor(batch["targets"]))
    expected = torchaudio.functional.rnnt_loss(logits, batch["targets"].int(), enc_len.int(),
                                               batch["target_lengths"].int(), blank=0, reduction="none")
    torch.testing.assert_close(module.loss_per_utterance(batch), expected)


def test_missing_head_is_a_clear_error():
    with pytest.raises(ValueError, match="choose_head"):
        ASRLitModule(transcriber=LSTMTranscriber(80, 4, 16, 1, False, 0.0, E), objective=SSNTObjective(),
                     optimizer=torch.optim.SGD, predictor=LSTMPredictor(V, 8, 16, 1, 0.0, E),
                     joiner=Joiner(E, E, 16, V))


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    path = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0, 7]])
    log_probs = torch.nn.functional.one_hot(path, V).float().log()
    assert ctc_greedy(log_probs, torch.tensor([9])) == [[3, 3, 5, 7]]
    assert ctc_greedy(log_probs, torch.tensor([5])) == [[3, 3]]


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_batched_greedy_equals_one_by_one(name):
    torch.manual_seed(1)
    module = _module(OBJECTIVES[name]())
    # large output weights make the untrained model emit often, so the search is exercised
    for head in (module.joiner, module.ctc_head, module.choose_head):
        if head is not None:
            head.output.weight.data.mul_(30)
    if module.choose_head is not None:
        module.choose_head.output.bias.data.fill_(40.0)  # P(emit) ~ 1: SSNT emits too
    batch = _batch()
    hyps = module.transcribe(batch["features"], batch["feature_lengths"])
    assert sum(map(len, hyps)) > 0
    for b in range(3):
        length = batch["feature_lengths"][b : b + 1]
        alone = module.transcribe(batch["features"][b : b + 1, : int(length)], length)
        assert alone[0] == hyps[b]
    assert all(0 not in hyp for hyp in hyps)


def test_symbols_per_frame_cap():
    torch.manual_seed(0)
    module = _module(OBJECTIVES["rnnt"]())
    module.joiner.output.bias.data[0] = -100.0  # blank never wins: every frame emits up to the cap
    enc = torch.randn(2, 6, E)
    lengths = torch.tensor([6, 4])
    hyps = transducer_greedy(enc, lengths, module.predictor, module.joiner, 0, max_symbols_per_frame=2)
    assert [len(h) for h in hyps] == [12, 8]
    module.objective = TransducerObjective("modified_rnnt")
    assert [len(h) for h in GreedyDecoder(max_symbols_per_frame=3)(module, enc, lengths)] == [6, 4]
    ssnt = _module(OBJECTIVES["ssnt"]())
    ssnt.choose_head.output.bias.data.fill_(100.0)  # always emit
    hyps = ssnt_greedy(enc, lengths, ssnt.predictor, ssnt.joiner, ssnt.choose_head, 0, max_symbols_per_frame=3)
    assert [len(h) for h in hyps] == [16, 10]  # the cap on every frame but the last, where one emission ends the path
    for rule in ("marginal", "best_move"):  # the decoder hands its SSNT rule to the SSNT objective
        assert [len(h) for h in GreedyDecoder(3, ssnt_emit_rule=rule)(ssnt, enc, lengths)] == [16, 10]
    with pytest.raises(ValueError, match="ssnt_emit_rule"):
        GreedyDecoder(3, ssnt_emit_rule="sample")


def test_out_of_memory_names_batch_and_max_duration(monkeypatch):
    module = _module(OBJECTIVES["ctc"]())

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(module, "losses", no_memory)
    with pytest.raises(BatchOutOfMemoryError, match=r"features \(3, 64, 80\).*max_duration="):
        module.training_step(_batch(), 0)


def test_out_of_memory_in_backward_names_the_batch(monkeypatch):
    module = _module(OBJECTIVES["ctc"]())
    module._batch = _batch()

    def no_memory(self, loss, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(L.LightningModule, "backward", no_memory)
    with pytest.raises(BatchOutOfMemoryError, match=r"3 utterances.*max_duration="):
        module.backward(torch.tensor(1.0))


def test_lstm_falls_back_to_float32_where_the_cpu_has_no_bf16_lstm(monkeypatch):
    """Under CPU bf16 autocast on a CPU without a bf16 LSTM (AVX2 only), run_lstm gives the LSTM float32
    input and state with autocast off; where the CPU has one, or without bf16, it passes the call through."""
    from recipes.models import lstm_precision

    seen = []

    def fake_lstm(x, state=None):
        seen.append((x.dtype, None if state is None else state[0].dtype, torch.is_autocast_enabled("cpu")))
        return x, state

    x = torch.randn(2, 3, 4)
    state = (torch.zeros(1, 2, 4, dtype=torch.bfloat16), torch.zeros(1, 2, 4, dtype=torch.bfloat16))
    for supported in (False, True):
        monkeypatch.setattr(lstm_precision, "cpu_bf16_lstm_supported", lambda s=supported: s)
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm_precision.run_lstm(fake_lstm, x, state)
        lstm_precision.run_lstm(fake_lstm, x.bfloat16())
        lstm_precision.run_lstm(fake_lstm, x)
        if supported:
            assert seen == [(torch.float32, torch.bfloat16, True), (torch.bfloat16, None, False),
                            (torch.float32, None, False)]
        else:
            assert seen == [(torch.float32, torch.float32, False), (torch.float32, None, False),
                            (torch.float32, None, False)]
