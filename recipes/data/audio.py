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


# How far a segment (offset + duration) may reach past the end of its file and be cut at the end
# instead of raising: manifests round durations (to 10 ms at worst, e.g. 3.21 for a 3.2049 s tail).
SEGMENT_END_TOLERANCE = 0.01


def read_audio(path: str | os.PathLike, offset: float | None = None,
               duration: float | None = None) -> tuple[np.ndarray, int]:
    """Return the float32 mono samples in [-1, 1] of the audio file at ``path`` and its rate.

    With ``offset`` (seconds), only the segment of ``duration`` seconds from there is read (the
    file is seeked, never read whole): samples ``round(offset * rate)`` to
    ``round((offset + duration) * rate)``. A segment that ends up to :data:`SEGMENT_END_TOLERANCE`
    seconds after the end of the file is cut at the end; one that ends later, or starts at or after
    the end, raises :class:`BadAudioError` giving the segment and the file's length.

    Several channels are averaged. A missing, corrupt or empty file raises :class:`BadAudioError`.
    """
    if offset is not None:
        return _read_segment(path, offset, duration)
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for missing and corrupt files
        raise BadAudioError(f"cannot read audio file {path}: {error}") from error
    if samples.shape[0] == 0:
        raise BadAudioError(f"audio file {path} is empty")
    return samples.mean(axis=1), sample_rate


def _read_segment(path: str | os.PathLike, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    if not offset >= 0 or duration is None or not duration > 0:  # also catches NaN
        raise BadAudioError(f"audio file {path}: a segment needs offset >= 0 and duration > 0 seconds, got "
                            f"offset={offset}, duration={duration}")
    try:
        with soundfile.SoundFile(str(path)) as audio:
            rate, total = audio.samplerate, audio.frames
            start, stop = round(offset * rate), round((offset + duration) * rate)
            if start >= total or stop - total > round(SEGMENT_END_TOLERANCE * rate):
                raise BadAudioError(f"the segment {offset}s to {offset + duration}s (offset {offset}, duration "
                                    f"{duration}) lies beyond the end of audio file {path} ({total / rate}s long)")
            audio.seek(start)
            samples = audio.read(min(stop, total) - start, dtype="float32", always_2d=True)
    except BadAudioError:
        raise
    except Exception as error:  # soundfile raises several types for missing and corrupt files
        raise BadAudioError(f"cannot read audio file {path}: {error}") from error
    if samples.shape[0] == 0:
        raise BadAudioError(f"the segment at {offset}s of audio file {path} is empty")
    return samples.mean(axis=1), rate
