#!/usr/bin/env python
"""Train a small Keras 3 model (torch backend) with seqloss's CTC layer on the embedded corpus.

    python examples/keras_ctc.py                                   # 240 train / 40 dev, 10 epochs
    python examples/keras_ctc.py --num-utterances 120 --epochs 5   # quicker
    python examples/keras_ctc.py --corpus data/corpora/synthetic-v2   # read a generated corpus

By default a slice of the synthetic corpus (espeak-ng speech, recipes/data/synthesis.py) is
synthesised in memory: ``--num-utterances`` training utterances and ``--num-dev`` utterances of
held-out dev speakers. With ``--corpus DIR``, the first utterances of the ``train`` and ``dev``
splits of a corpus in the LibriSpeech layout under DIR are read instead.

Features: 80-dim log-mel filterbanks (recipes/data/features.py) normalised with the training
mean and variance, three consecutive frames stacked (30 ms per step). Targets: characters of the
normalised transcript (recipes/data/tokenizer.py, blank = 0). The model is a stack of 1-D
convolutions and a bidirectional GRU; :class:`seqloss.keras.CTCLossLayer` adds the CTC loss,
:class:`seqloss.keras.CTCGreedyDecoder` decodes and :class:`seqloss.keras.LabelErrorRate` scores
the decoding, so ``fit`` reports the training and the dev label error rate every epoch.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from recipes.data.features import GlobalCMVN, fbank  # noqa: E402
from recipes.data.text import normalize_text  # noqa: E402
from recipes.data.tokenizer import SPACE, CharTokenizer  # noqa: E402
from seqloss.keras import CTCGreedyDecoder, CTCLossLayer, LabelErrorRate  # noqa: E402

STACK = 3  # feature frames stacked into one model step


def synthesize_slice(num_train: int, num_dev: int, seed: int) -> dict[str, list[tuple]]:
    """Return {"train": [(samples, text)], "dev": [...]} synthesised from the corpus plan."""
    from recipes.data.synthesis import SyntheticCorpusConfig, plan_corpus, synthesize_utterance

    config = SyntheticCorpusConfig(num_train=num_train, num_dev=num_dev, num_test=0,
                                   num_dev_speakers=4, num_test_speakers=1,
                                   utts_per_train_speaker=10, seed=seed)
    data = {"train": [], "dev": []}
    for utterance in plan_corpus(config):
        samples = synthesize_utterance(utterance).astype(np.float32) / 32768.0
        data[utterance.speaker.split].append((samples, utterance.text))
    return data


def read_corpus(root: Path, num_train: int, num_dev: int) -> dict[str, list[tuple]]:
    """Return the first utterances of the train and dev splits of a LibriSpeech-layout corpus."""
    from recipes.data.audio import read_audio
    from recipes.data.features import SAMPLE_RATE, resample
    from recipes.data.librispeech import read_librispeech_split

    data = {}
    for split, count in (("train", num_train), ("dev", num_dev)):
        utterances, _ = read_librispeech_split(root / split)
        data[split] = []
        for utterance in utterances[:count]:
            samples, rate = read_audio(utterance.audio_filepath)
            samples = resample(torch.from_numpy(samples), rate, SAMPLE_RATE).numpy()
            data[split].append((samples, utterance.text))
    return data


def stack_frames(features: torch.Tensor) -> np.ndarray:
    """Return (T // STACK, STACK * F): each row the concatenation of STACK consecutive frames."""
    frames = features.shape[0] // STACK * STACK
    return features[:frames].reshape(frames // STACK, -1).numpy()


class Batches(keras.utils.PyDataset):
    """Length-sorted batches, each padded to its longest utterance.

    Each item is ``([features, labels, feature_lengths, label_lengths], labels)``; labels are
    padded with -1 (the CTC layer ignores entries beyond the lengths, the metric reads -1 as the
    end of a sequence).
    """

    def __init__(self, examples: list[tuple[np.ndarray, list[int]]], batch_size: int,
                 shuffle: bool, seed: int) -> None:
        super().__init__()
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        self.batches = [[examples[i] for i in order[s:s + batch_size]]
                        for s in range(0, len(order), batch_size)]
        self.shuffle, self.rng = shuffle, np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        batch = self.batches[index]
        frames = max(len(x) for x, _ in batch)
        width = max(len(y) for _, y in batch)
        features = np.zeros((len(batch), frames, batch[0][0].shape[1]), np.float32)
        labels = np.full((len(batch), width), -1, np.int32)
        for b, (x, y) in enumerate(batch):
            features[b, :len(x)] = x
            labels[b, :len(y)] = y
        feature_lengths = np.array([len(x) for x, _ in batch], np.int32)
        label_lengths = np.array([len(y) for _, y in batch], np.int32)
        return (features, labels, feature_lengths, label_lengths), labels

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.batches)


def build_model(input_dim: int, vocab_size: int, width: int) -> keras.Model:
    """Return the training model: inputs (features, labels, both lengths), output the greedy
    decoding; the CTC loss is added by the CTC layer."""
    features = keras.Input((None, input_dim), name="features")
    labels = keras.Input((None,), dtype="int32", name="labels")
    feature_lengths = keras.Input((), dtype="int32", name="feature_lengths")
    label_lengths = keras.Input((), dtype="int32", name="label_lengths")
    x = features
    for _ in range(2):
        x = keras.layers.Conv1D(width, 5, padding="same", activation="relu")(x)
        x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(width // 2, return_sequences=True))(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    logits = CTCLossLayer(name="ctc")(labels, logits, feature_lengths, label_lengths)
    decoded = CTCGreedyDecoder(name="greedy")(logits, feature_lengths)
    return keras.Model([features, labels, feature_lengths, label_lengths], decoded)


class PrintLabelErrorRate(keras.callbacks.Callback):
    """Prints one line per epoch: CTC loss and label error rates, train and dev."""

    def __init__(self) -> None:
        super().__init__()
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        print(f"epoch {epoch + 1:2d}  ctc loss {logs['loss']:.3f}  "
              f"train LER {logs['label_error_rate']:.3f}  "
              f"dev loss {logs['val_loss']:.3f}  dev LER {logs['val_label_error_rate']:.3f}  "
              f"({time.perf_counter() - self.start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-utterances", type=int, default=240, help="training utterances")
    parser.add_argument("--num-dev", type=int, default=40,
                        help="dev utterances (held-out speakers)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=192, help="channels of the hidden layers")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="LibriSpeech-layout corpus with train/ and dev/ (default: synthesise)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("num_utterances", "num_dev", "epochs", "batch_size", "width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    keras.utils.set_random_seed(args.seed)

    start = time.perf_counter()
    if args.corpus is None:
        data = synthesize_slice(args.num_utterances, args.num_dev, args.seed)
    else:
        data = read_corpus(args.corpus, args.num_utterances, args.num_dev)
    features = {split: [fbank(samples) for samples, _ in items] for split, items in data.items()}
    texts = {split: [normalize_text(text) for _, text in items] for split, items in data.items()}
    cmvn = GlobalCMVN.estimate(features["train"])
    all_texts = texts["train"] + texts["dev"]
    symbols = sorted({char for text in all_texts for char in text.replace(" ", SPACE)})
    tokenizer = CharTokenizer(symbols)
    examples = {split: [(stack_frames(cmvn(f)), tokenizer.encode(t))
                        for f, t in zip(features[split], texts[split])] for split in data}
    print(f"{len(examples['train'])} train / {len(examples['dev'])} dev utterances, "
          f"{sum(len(x) for x, _ in examples['train']) * STACK / 100 / 60:.1f} min of training "
          f"speech, {tokenizer.vocab_size} classes (blank + characters), "
          f"prepared in {time.perf_counter() - start:.0f} s", flush=True)

    train = Batches(examples["train"], args.batch_size, shuffle=True, seed=args.seed)
    dev = Batches(examples["dev"], args.batch_size, shuffle=False, seed=args.seed)
    model = build_model(examples["train"][0][0].shape[1], tokenizer.vocab_size, args.width)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate, clipnorm=5.0),
                  metrics=[LabelErrorRate()])
    history = model.fit(train, validation_data=dev, epochs=args.epochs, verbose=0,
                        callbacks=[PrintLabelErrorRate()])

    inputs, references = dev[0]
    hypotheses = keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
    for reference, hypothesis in zip(references[:2], hypotheses[:2]):
        print(f"  ref: {tokenizer.decode([int(i) for i in reference if i >= 0])}")
        print(f"  hyp: {tokenizer.decode([int(i) for i in hypothesis if i >= 0])}")
    rates = history.history["val_label_error_rate"]
    print(f"dev label error rate: {rates[0]:.3f} after epoch 1 -> {rates[-1]:.3f} after epoch "
          f"{len(rates)}")


if __name__ == "__main__":
    main()
