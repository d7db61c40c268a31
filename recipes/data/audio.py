"""Reading audio files (with soundfile), with errors that name the file."""

from __future__ import annotations

import os

import numpy as np
import soundfile


class BadAudioError(RuntimeError):
    """An audio file is missing, unreadable or empty; the message names the file."""


def audio_duration(path: str | os.PathLike) -> float:
    """Return the duration in seconds of the audio file at ``path`` (read from its header)."""
    try:
        info = soundfile.info(str(path))
    except Exception as error:  # soundfile raises several types for missing and corrupt files
        raise BadAudioError(f"cannot read audio file {path}: {error}") from error
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadAudioError(f"audio file {path} is empty")
    return info.frames / info.samplerate


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Return the float32 mono samples in [-1, 1] of the audio file at ``path`` and its rate.

    Several channels are averaged. A missing, corrupt or empty file raises :class:`BadAudioError`.
    """
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for missing and corrupt files
        raise BadAudioError(f"cannot read audio file {path}: {error}") from error
    if samples.shape[0] == 0:
        raise BadAudioError(f"audio file {path} is empty")
    return samples.mean(axis=1), sample_rate
