"""Self-contained model files: a trained model plus everything needed to transcribe audio with it.

``export.py`` writes one file (a ``torch.save`` dictionary, ``format == "seqloss-asr-model"``)
holding the (optionally averaged) weights, the resolved model config, the tokenizer (the
sentencepiece model's bytes, or the character list), the global CMVN statistics, the feature
settings (mel bins, per-utterance mean normalisation) and the loss and decoding settings of the
training run. :class:`ExportedModel` loads it without the run folder or the corpus and turns
audio files into text exactly as ``decode.py`` does for the same weights and decoder:
soundfile reads the audio (any rate; several channels averaged), it is resampled to 16 kHz,
80-bin Kaldi fbank, ``(x - mean) / std``, minus the utterance's own mean where the run did that,
then the model's encoder and the chosen decoder.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from recipes.data.dataset import load_features
from recipes.data.features import GlobalCMVN
from recipes.data.manifest import Utterance
from recipes.data.tokenizer import BLANK, CharTokenizer, SentencePieceTokenizer
from recipes.models.joiner import upgrade_model_config
from recipes.utils.files import partial_path

FORMAT = "seqloss-asr-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not a seqloss ASR model file; the message names it."""


class _SentencePieceFromBytes:
    """A sentencepiece tokenizer (blank at id 0) loaded from the serialised model, no file needed."""

    blank_id = 0

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece

        self.model_proto = model_proto
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        if self._processor.id_to_piece(0) != BLANK:
            raise ValueError(f"tokenizer: the sentencepiece model does not have {BLANK} at id 0")

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def token_strings(self) -> list[str]:
        """The piece of every id (``<blk>`` first); ``▁`` starts a word."""
        return [self._processor.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode([int(i) for i in ids if i != self.blank_id])


def tokenizer_state(tokenizer) -> dict:
    """The tokenizer as plain data: ``{"kind": "sentencepiece", "model": bytes}`` or ``{"kind": "char", ...}``."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return {"kind": "sentencepiece", "model": Path(tokenizer.model_path).read_bytes()}
    if isinstance(tokenizer, _SentencePieceFromBytes):
        return {"kind": "sentencepiece", "model": tokenizer.model_proto}
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "tokens": list(tokenizer.tokens[1:])}
    raise TypeError(f"tokenizer: cannot export a {type(tokenizer).__name__} (sentencepiece or char tokenizers only)")


def tokenizer_from_state(state: dict):
    """Inverse of :func:`tokenizer_state`."""
    if state["kind"] == "sentencepiece":
        return _SentencePieceFromBytes(state["model"])
    if state["kind"] == "char":
        return CharTokenizer(state["tokens"])
    raise ValueError(f"tokenizer: unknown kind {state['kind']!r}")


def build_model_file(model_config: dict, state_dict: dict, tokenizer, cmvn: GlobalCMVN, num_mel_bins: int,
                     utterance_mean_norm: bool, loss: str, decoding: dict, checkpoints: Sequence[str]) -> dict:
    """The dictionary :func:`save_model_file` writes (see the module docstring)."""
    return {
        "format": FORMAT, "version": VERSION,
        "model_config": model_config,
        "state_dict": {key: value.detach().cpu() for key, value in state_dict.items()},
        "tokenizer": tokenizer_state(tokenizer),
        "cmvn": {"mean": cmvn.mean.clone(), "std": cmvn.std.clone()},
        "features": {"num_mel_bins": int(num_mel_bins), "utterance_mean_norm": bool(utterance_mean_norm)},
        "loss": loss, "decoding": decoding, "checkpoints": [str(p) for p in checkpoints],
    }


def save_model_file(contents: dict, path: str | os.PathLike) -> Path:
    """Writes `contents` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    buffer = io.BytesIO()
    torch.save(contents, buffer)
    with open(tmp, "wb") as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_model_file(path: str | os.PathLike) -> dict:
    """The dictionary stored by :func:`save_model_file`; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"--model: no such file {path}")
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file raises many types
        raise ModelFileError(f"--model: cannot read {path} ({type(error).__name__}: {error})") from error
    if not isinstance(contents, dict) or contents.get("format") != FORMAT:
        raise ModelFileError(f"--model: {path} is not a {FORMAT} file (write one with export.py)")
    if contents.get("version") != VERSION:
        raise ModelFileError(f"--model: {path} has format version {contents.get('version')}, this code reads {VERSION}")
    return contents


class ExportedModel:
    """A model file loaded for transcription (see the module docstring)."""

    def __init__(self, contents: dict, device: str | torch.device = "cpu") -> None:
        import hydra

        self.device = torch.device(device)
        self.loss = contents["loss"]
        self.decoding = contents["decoding"]
        self.tokenizer = tokenizer_from_state(contents["tokenizer"])
        self.cmvn = GlobalCMVN(contents["cmvn"]["mean"], contents["cmvn"]["std"])
        self.num_mel_bins = contents["features"]["num_mel_bins"]
        self.utterance_mean_norm = contents["features"]["utterance_mean_norm"]
        self.model = hydra.utils.instantiate(upgrade_model_config(contents["model_config"]))
        self.model.load_state_dict(contents["state_dict"])
        self.model.tokenizer = self.tokenizer
        self.model.to(self.device).eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> ExportedModel:
        return cls(load_model_file(path), device)

    def features(self, audio_path: str | os.PathLike) -> torch.Tensor:
        """The normalised (T, num_mel_bins) features of one audio file, as the training data module makes them."""
        utterance = Utterance(id=str(audio_path), audio_filepath=Path(audio_path), duration=0.0, text="")
        features = self.cmvn(load_features(utterance, self.num_mel_bins))
        if self.utterance_mean_norm:
            features = features - features.mean(dim=0, keepdim=True)
        return features

    @torch.no_grad()
    def transcribe(self, audio_paths: Sequence[str | os.PathLike], decoder, batch_size: int = 16) -> list[str]:
        """The text `decoder` finds in each audio file, in the order given.

        Files are batched by length (longest first) so that little padding is computed.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        features = [self.features(path) for path in audio_paths]
        order = sorted(range(len(features)), key=lambda i: -features[i].shape[0])
        texts: list[str] = [""] * len(features)
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            lengths = torch.tensor([features[i].shape[0] for i in chosen], dtype=torch.int64)
            padded = torch.zeros(len(chosen), int(lengths.max()), self.num_mel_bins)
            for row, index in enumerate(chosen):
                padded[row, : features[index].shape[0]] = features[index]
            enc, enc_lengths = self.model.encode(padded.to(self.device), lengths.to(self.device))
            for index, ids in zip(chosen, decoder(self.model, enc, enc_lengths), strict=True):
                texts[index] = self.tokenizer.decode(ids)
        return texts
