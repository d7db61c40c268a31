"""seqloss.keras: the Keras 3 (torch backend) layers, loss, decoder and metric.

Runs where keras is installed (CI installs it); KERAS_BACKEND is set to torch before keras is
imported.
"""
import importlib
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")

from helpers import transducer_batch  # noqa: E402

import seqloss  # noqa: E402
from seqloss.keras import (  # noqa: E402
    CTCGreedyDecoder,
    CTCLoss,
    CTCLossLayer,
    LabelErrorRate,
    RNNTLossLayer,
    ctc_greedy_decode,
    edit_distance,
)

# keras's torch backend calls np.array(tensor) when it logs; torch's __array__ has no `copy`
# keyword, which numpy 2 reports on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def _ctc_inputs(seed=0, batch=3, frames=9, classes=5, labels=4):
    """Batch-major logits (B, T, V), labels padded with -1, ragged lengths (one full)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, classes, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, classes, (batch, labels), generator=gen)
    logit_lengths = torch.tensor([frames, frames - 2, frames - 4][:batch])
    label_lengths = torch.tensor([labels, labels - 1, 2][:batch])
    targets[torch.arange(labels)[None, :] >= label_lengths[:, None]] = -1
    return logits, targets, logit_lengths, label_lengths


# ---------------------------------------------------------------------------------------------
# Import guard.
def test_import_without_keras_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # makes `import keras` fail
    monkeypatch.delitem(sys.modules, "seqloss.keras")
    with pytest.raises(ImportError, match=r"pip install keras.*KERAS_BACKEND=torch"):
        importlib.import_module("seqloss.keras")


def test_import_on_another_backend_names_the_torch_requirement(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.delitem(sys.modules, "seqloss.keras")
    with pytest.raises(ImportError, match=r"KERAS_BACKEND=torch.*'jax' backend"):
        importlib.import_module("seqloss.keras")


def test_seqloss_does_not_import_keras():
    code = "import sys, seqloss; assert 'keras' not in sys.modules, 'seqloss imported keras'"
    env = {**os.environ, "PYTHONPATH": str(Path(seqloss.__file__).parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Loss values and gradients against seqloss on the same tensors.
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ctc_layer_loss_equals_seqloss(reduction):
    logits, targets, logit_lengths, label_lengths = _ctc_inputs()
    layer = CTCLossLayer(reduction=reduction)
    out = layer(targets, logits, logit_lengths, label_lengths)
    assert out is logits
    assert len(layer.losses) == 1
    expected = seqloss.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, logit_lengths,
                                label_lengths, reduction=reduction)
    torch.testing.assert_close(layer.losses[0], expected, rtol=0, atol=0)
    # and the value is CTC's (torch's own loss on normalised scores)
    reference = torch.nn.functional.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), targets.clamp_min(0), logit_lengths,
        label_lengths, reduction=reduction)
    torch.testing.assert_close(layer.losses[0], reference)


def test_ctc_layer_gradient_equals_seqloss_and_options():
    logits, targets, logit_lengths, label_lengths = _ctc_inputs(seed=1)
    x1 = logits.clone().requires_grad_()
    layer = CTCLossLayer()
    layer(targets, x1, logit_lengths[:, None], label_lengths[:, None])  # (B, 1) lengths accepted
    (g1,) = torch.autograd.grad(layer.losses[0], x1)
    x2 = logits.clone().requires_grad_()
    loss = seqloss.ctc_loss(x2.log_softmax(-1).transpose(0, 1), targets, logit_lengths,
                            label_lengths)
    (g2,) = torch.autograd.grad(loss, x2)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    # from_logits=False takes the scores as they are; blank is passed through
    log_probs = logits.log_softmax(-1)
    layer = CTCLossLayer(from_logits=False, blank=2)
    layer(targets, log_probs, logit_lengths, label_lengths)
    expected = seqloss.ctc_loss(log_probs.transpose(0, 1), targets, logit_lengths,
                                label_lengths, blank=2)
    torch.testing.assert_close(layer.losses[0], expected, rtol=0, atol=0)


def test_ctc_layer_zero_infinity_and_validation():
    logits = torch.randn(2, 3, 4, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 1, 2], [1, 2, -1, -1]])  # first infeasible: 4 labels, 3 frames
    lengths = (torch.tensor([3, 3]), torch.tensor([4, 2]))
    layer = CTCLossLayer(reduction="sum")
    layer(targets, logits, *lengths)
    assert torch.isinf(layer.losses[0])
    layer = CTCLossLayer(reduction="sum", zero_infinity=True)
    layer(targets, logits, *lengths)
    expected = seqloss.ctc_loss(logits[1:].log_softmax(-1).transpose(0, 1), targets[1:],
                                lengths[0][1:], lengths[1][1:], reduction="sum")
    torch.testing.assert_close(layer.losses[0], expected)
    with pytest.raises(ValueError, match="reduction"):
        CTCLossLayer(reduction="none")
    with pytest.raises(ValueError, match="label_lengths"):
        CTCLossLayer()(targets, logits, lengths[0], torch.tensor([4, 2, 1]))
    with pytest.raises(ValueError, match="logits"):
        CTCLossLayer()(targets, logits[0], *lengths)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_rnnt_layer_loss_and_gradient_equal_seqloss(reduction):
    logits, targets, logit_lengths, target_lengths = transducer_batch(3, 3, 5, 3, 6, blank=5)
    x1 = logits.clone().requires_grad_()
    layer = RNNTLossLayer(reduction=reduction, clamp=0.5)
    assert layer(targets, x1, logit_lengths, target_lengths) is x1
    x2 = logits.clone().requires_grad_()
    expected = seqloss.rnnt_loss(x2, targets, logit_lengths, target_lengths, clamp=0.5,
                                 reduction=reduction)
    torch.testing.assert_close(layer.losses[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(layer.losses[0], x1)[0],
                               torch.autograd.grad(expected, x2)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="logits"):
        layer(targets, logits[0], logit_lengths, target_lengths)


def test_ctc_keras_loss_equals_seqloss_per_utterance():
    logits, targets, _, label_lengths = _ctc_inputs(seed=2)  # every frame counts for CTCLoss
    frames = torch.full((3,), logits.shape[1])
    per_utt = seqloss.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, frames,
                               label_lengths, reduction="none")
    torch.testing.assert_close(CTCLoss()(targets, logits), per_utt.mean().float(),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(CTCLoss(normalize_by_length=True)(targets, logits),
                               (per_utt / label_lengths).mean().float(), rtol=1e-6, atol=0)
    weights = torch.tensor([1.0, 0.0, 2.0])
    torch.testing.assert_close(CTCLoss(reduction="sum")(targets, logits, sample_weight=weights),
                               (per_utt * weights).sum().float(), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# Training through model.fit.
def _tiny_ctc_problem(seed=0, batch=8, frames=12, features=6, classes=5, labels=4):
    rng = np.random.default_rng(seed)
    targets = rng.integers(1, classes, size=(batch, labels)).astype("int32")
    label_lengths = rng.integers(2, labels + 1, size=batch).astype("int32")
    frame_lengths = rng.integers(frames - 3, frames + 1, size=batch).astype("int32")
    targets[np.arange(labels)[None, :] >= label_lengths[:, None]] = -1
    # the features carry the label sequence: learnable by a per-frame classifier
    x = rng.normal(size=(batch, frames, features)).astype("float32")
    x[:, :, 0] += np.repeat(np.where(targets >= 0, targets, 0), 3, axis=1)[:, :frames]
    return x, targets, frame_lengths, label_lengths


def test_fit_through_ctc_layer_lowers_loss_and_label_error_rate():
    keras.utils.set_random_seed(0)
    x, targets, frame_lengths, label_lengths = _tiny_ctc_problem()
    features = keras.Input((None, x.shape[-1]))
    labels = keras.Input((None,), dtype="int32")
    feature_lengths = keras.Input((), dtype="int32")
    target_lengths = keras.Input((), dtype="int32")
    hidden = keras.layers.Dense(32, activation="tanh")(features)
    logits = keras.layers.Dense(5)(hidden)
    logits = CTCLossLayer()(labels, logits, feature_lengths, target_lengths)
    decoded = CTCGreedyDecoder()(logits, feature_lengths)
    model = keras.Model([features, labels, feature_lengths, target_lengths], decoded)
    model.compile(optimizer=keras.optimizers.Adam(0.03), metrics=[LabelErrorRate()])
    inputs = [x, targets, frame_lengths, label_lengths]
    history = model.fit(inputs, targets, epochs=60, batch_size=8, verbose=0).history
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert history["label_error_rate"][-1] < 0.3 * history["label_error_rate"][0]
    # the layer's loss is what fit minimised: recompute it on the trained model
    dense_model = keras.Model(model.inputs, logits)
    trained_logits = dense_model(inputs)
    expected = seqloss.ctc_loss(trained_logits.log_softmax(-1).transpose(0, 1),
                                torch.as_tensor(targets), torch.as_tensor(frame_lengths),
                                torch.as_tensor(label_lengths))
    evaluated = model.evaluate(inputs, targets, verbose=0, return_dict=True)["loss"]
    torch.testing.assert_close(float(evaluated), expected.item(), rtol=1e-5, atol=1e-6)


def test_fit_with_ctc_keras_loss_lowers_loss():
    keras.utils.set_random_seed(1)
    x, targets, _, _ = _tiny_ctc_problem(seed=1)
    model = keras.Sequential([keras.Input((x.shape[1], x.shape[2])),
                              keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(5)])
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss=CTCLoss())
    history = model.fit(x, targets, epochs=15, batch_size=8, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]


def test_fit_through_rnnt_layer_lowers_loss():
    keras.utils.set_random_seed(2)
    x, targets, frame_lengths, label_lengths = _tiny_ctc_problem(seed=2, batch=6)
    classes, blank = 5, 0
    features = keras.Input((None, x.shape[-1]))
    labels = keras.Input((None,), dtype="int32")
    feature_lengths = keras.Input((), dtype="int32")
    target_lengths = keras.Input((), dtype="int32")
    encoder = keras.layers.Dense(16)(features)
    # predictor input: blank as start symbol, then the labels (padding mapped to blank)
    history_ids = keras.ops.pad(keras.ops.maximum(labels, 0), [[0, 0], [1, 0]])
    predictor = keras.layers.Embedding(classes, 16)(history_ids)
    joint = keras.ops.tanh(keras.ops.expand_dims(encoder, 2) + keras.ops.expand_dims(predictor, 1))
    logits = keras.layers.Dense(classes)(joint)
    logits = RNNTLossLayer(blank=blank)(labels, logits, feature_lengths, target_lengths)
    model = keras.Model([features, labels, feature_lengths, target_lengths], logits)
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    inputs = [x, np.maximum(targets, 1), frame_lengths, label_lengths]  # no blank within lengths
    history = model.fit(inputs, epochs=10, batch_size=6, verbose=0).history
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < 0.6 * history["loss"][0]


# ---------------------------------------------------------------------------------------------
# Decoder, edit distance and metric on hand-computed cases.
def _one_hot_logits(paths, classes=4):
    """Logits whose arg-max at frame t of row b is paths[b][t]."""
    return torch.nn.functional.one_hot(torch.tensor(paths), classes).double() * 5.0


def test_greedy_decoder_hand_cases():
    logits = _one_hot_logits([[1, 1, 0, 1, 2, 2, 0, 3],
                              [0, 0, 0, 0, 0, 0, 0, 0],
                              [3, 0, 3, 3, 2, 1, 1, 1]])
    decoded, lengths = ctc_greedy_decode(logits, torch.tensor([8, 8, 3]))
    assert decoded.tolist() == [[1, 1, 2, 3, -1, -1, -1, -1],
                                [-1] * 8,
                                [3, 3, -1, -1, -1, -1, -1, -1]]
    assert lengths.tolist() == [4, 0, 2]
    decoded, lengths = ctc_greedy_decode(logits, merge_repeated=False)
    assert decoded[0].tolist() == [1, 1, 1, 2, 2, 3, -1, -1]
    assert decoded[2].tolist() == [3, 3, 3, 2, 1, 1, 1, -1]
    decoded, _ = ctc_greedy_decode(logits, blank=3)  # blank last: 0 is a label now
    assert decoded[0].tolist() == [1, 0, 1, 2, 0, -1, -1, -1]
    assert decoded[1].tolist() == [0, -1, -1, -1, -1, -1, -1, -1]
    # the layer gives the same, and numpy input is accepted
    layer_out = CTCGreedyDecoder()(logits.numpy(), np.array([8, 8, 3], dtype="int32"))
    assert layer_out.tolist() == ctc_greedy_decode(logits, torch.tensor([8, 8, 3]))[0].tolist()
    with pytest.raises(ValueError, match="logit_lengths"):
        ctc_greedy_decode(logits, torch.tensor([8, 9, 1]))
    with pytest.raises(ValueError, match="blank"):
        ctc_greedy_decode(logits, blank=4)


def test_edit_distance_hand_cases():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([1, 2, 3], []) == 3
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3, 4], [2, 3, 4, 5]) == 2
    assert edit_distance([1, 2], [2, 1]) == 2


def test_label_error_rate_hand_cases():
    metric = LabelErrorRate()
    assert float(metric.result()) == 0.0
    # refs [1,2,3] and [4,5]; hyps [1,3] (one deletion) and [4,5,6] (one insertion): 2 / 5
    metric.update_state(np.array([[1, 2, 3, -1], [4, 5, -1, -1]]),
                        np.array([[1, 3, -1], [4, 5, 6]]))
    assert float(metric.result()) == pytest.approx(2 / 5)
    # accumulates: ref [1,1] vs hyp [] (two deletions) -> (2 + 2) / (5 + 2)
    metric.update_state(torch.tensor([[1, 1]]), torch.tensor([[-1, -1, -1]]))
    assert float(metric.result()) == pytest.approx(4 / 7)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    # sample weights scale both edits and reference length: (0*1 + 2*1) / (0*3 + 2*2)
    metric.update_state(np.array([[1, 2, 3], [4, 5, -1]]), np.array([[7, -1, -1], [4, 6, -1]]),
                        sample_weight=np.array([0.0, 2.0]))
    assert float(metric.result()) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="y_pred"):
        metric.update_state(np.array([[1, 2]]), np.array([[1], [2]]))


def test_layers_round_trip_through_config():
    for layer in (CTCLossLayer(blank=3, reduction="sum", zero_infinity=True, from_logits=False),
                  RNNTLossLayer(blank=0, clamp=1.0),
                  CTCGreedyDecoder(blank=2, merge_repeated=False)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    loss = CTCLoss(blank=1, normalize_by_length=True)
    assert CTCLoss.from_config(loss.get_config()).get_config() == loss.get_config()


def test_example_trains_and_prints_label_error_rate(monkeypatch, capsys):
    """examples/keras_ctc.py end to end on a tiny synthesised slice (a smoke test)."""
    path = Path(__file__).resolve().parents[2] / "examples" / "keras_ctc.py"
    spec = importlib.util.spec_from_file_location("keras_ctc_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(sys, "argv", ["keras_ctc.py", "--num-utterances", "12", "--num-dev", "4",
                                      "--epochs", "2", "--width", "16", "--batch-size", "4"])
    example.main()
    out = capsys.readouterr().out
    assert "12 train / 4 dev utterances" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("dev LER" in line for line in epochs)
    assert "dev label error rate:" in out
