"""NeMo manifests with offset/duration segments: several utterances cut from one long recording."""
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from omegaconf import open_dict
from recipe_cfg import RecordBatches, compose_train

from recipes.data.audio import BadAudioError, read_audio
from recipes.data.datamodule import ASRDataModule
from recipes.data.dataset import load_features
from recipes.data.librispeech import read_librispeech_split
from recipes.data.manifest import ManifestCorpus, Utterance, read_manifest, read_manifests, write_manifest
from train import train


def _concatenate(utterances, path: Path) -> list[dict]:
    """Writes the audio of `utterances` one after the other into one 16-bit file at `path`; returns a
    manifest line (no id) for the segment of each."""
    pieces, lines, start = [], [], 0
    for utterance in utterances:
        samples, rate = soundfile.read(str(utterance.audio_filepath), dtype="int16")
        assert rate == 16000
        pieces.append(samples)
        lines.append({"audio_filepath": str(path), "offset": start / rate, "duration": len(samples) / rate,
                      "text": utterance.text})
        start += len(samples)
    soundfile.write(str(path), np.concatenate(pieces), 16000, subtype="PCM_16")
    return lines


def _write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def segments(tiny_corpus, tmp_path):
    """(the three original test utterances, the manifest of their segments of one long wav)."""
    originals = read_librispeech_split(tiny_corpus / "test")[0][:3]
    lines = _concatenate(originals, tmp_path / "long.wav")
    return originals, _write_lines(tmp_path / "segments.jsonl", lines)


def test_segments_read_exactly_the_original_utterances(segments, monkeypatch):
    originals, manifest = segments
    read = read_manifest(manifest)
    assert [u.offset for u in read] == [json.loads(line)["offset"] for line in manifest.read_text().splitlines()]
    assert [u.duration for u in read] == [o.duration for o in originals]  # the sampler's duration: the segment's
    assert read[0].offset == 0.0 and read[0].id == f"long-00000000-{round(originals[0].duration * 1000):08d}"
    assert len({u.id for u in read}) == 3 and all(u.id.startswith("long-") for u in read)

    requested = []  # frames each SoundFile.read is asked for: only the segment's, never the file's
    original_read = soundfile.SoundFile.read
    monkeypatch.setattr(soundfile.SoundFile, "read", lambda self, frames=-1, *a, **k: (
        requested.append(frames), original_read(self, frames, *a, **k))[1])
    for original, segment in zip(originals, read):
        expected, rate = read_audio(original.audio_filepath)
        requested.clear()
        samples, segment_rate = read_audio(segment.audio_filepath, segment.offset, segment.duration)
        assert requested == [len(expected)] and segment_rate == rate
        assert samples.dtype == expected.dtype and np.array_equal(samples, expected)  # bitwise
        assert torch.equal(load_features(segment), load_features(original))
    whole, _ = read_audio(read[0].audio_filepath)  # without an offset: the whole recording
    assert len(whole) == sum(round(o.duration * 16000) for o in originals)
    roundtrip = read_manifest(write_manifest(manifest.parent / "again" / "m.jsonl", read))
    assert [(u.id, u.offset, u.duration) for u in roundtrip] == [(u.id, u.offset, u.duration) for u in read]


def test_a_line_without_offset_is_the_whole_file(segments, tmp_path):
    originals, _ = segments
    path = _write_lines(tmp_path / "whole.jsonl", [{"audio_filepath": str(tmp_path / "long.wav"), "duration": 9.0,
                                                    "text": "a"}])
    (utterance,) = read_manifest(path)
    assert utterance.offset is None and utterance.id == "long"
    frames = sum(round(o.duration * 16000) for o in originals)
    assert torch.equal(load_features(utterance),
                       load_features(Utterance("x", tmp_path / "long.wav", frames / 16000, "a", offset=0.0)))


def test_a_bad_segment_is_named(segments, tmp_path):
    originals, manifest = segments
    length = sum(round(o.duration * 16000) for o in originals) / 16000
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    last = lines[-1]
    past = {**last, "offset": last["offset"] + 0.5}  # ends 0.5 s after the end of the file
    _write_lines(manifest, [*lines, past])
    corpus = ManifestCorpus(tmp_path, train=[], dev=[], test=["segments.jsonl"])
    with pytest.raises(BadAudioError, match=rf"segments.jsonl: 1 segment\(s\) reach past the end of their audio "
                                            rf"file: utterance 'long-\d+-\d+' \(manifest .*segments.jsonl, line 4\): "
                                            rf"offset .* > {length}s"):
        corpus.prepare()
    bad = read_manifest(manifest)[-1]
    with pytest.raises(BadAudioError, match=rf"utterance '{bad.id}' \(manifest .*line 4\): the segment .* lies "
                                            rf"beyond the end of audio file .*long.wav \({length}s long\)"):
        load_features(bad)
    corpus.prepare(skip_bad_audio=True)  # logged; the loader leaves it out

    start = {**last, "offset": length}  # starts at the end
    _write_lines(manifest, [*lines, start])
    with pytest.raises(BadAudioError, match="line 4"):
        corpus.prepare()
    with pytest.raises(BadAudioError, match="lies beyond the end"):
        load_features(read_manifest(manifest)[-1])

    # rounded durations: up to 10 ms past the end are cut at the end, not an error
    _write_lines(manifest, [*lines[:2], {**last, "duration": last["duration"] + 0.005}])
    corpus.prepare()
    tail = read_manifest(manifest)[-1]
    expected, _ = read_audio(originals[-1].audio_filepath)
    assert np.array_equal(read_audio(tail.audio_filepath, tail.offset, tail.duration)[0], expected)

    for field, value in (("offset", -1.0), ("duration", 0.0), ("offset", "soon")):
        _write_lines(manifest, [lines[0], {**lines[1], field: value}])
        with pytest.raises(ValueError, match=rf"manifest .*segments.jsonl, line 2: .*{field}"):
            read_manifest(manifest)
    _write_lines(manifest, [lines[0], lines[0]])
    with pytest.raises(ValueError, match=r"utterance id 'long-\d+-\d+' occurs twice: .*line 1 and .*line 2"):
        read_manifests([manifest])


@pytest.fixture
def segment_corpus(tiny_corpus, tmp_path) -> Path:
    """A manifest corpus whose training set is the tiny corpus's 60 training utterances, cut as
    segments from 20 long recordings of 3 utterances each; dev and test are the tiny corpus's own."""
    train = read_librispeech_split(tiny_corpus / "train")[0]
    lines = []
    for k in range(0, len(train), 3):
        lines += _concatenate(train[k:k + 3], tmp_path / f"rec{k // 3:02d}.flac")
    _write_lines(tmp_path / "train-segments.jsonl", lines)
    return tmp_path


def test_the_sampler_sees_segment_durations(segment_corpus, tiny_datamodule_kwargs, tiny_corpus):
    corpus = functools.partial(ManifestCorpus, train=["train-segments.jsonl"],
                               dev=[str(tiny_corpus / "manifests" / "dev.jsonl")],
                               test=[str(tiny_corpus / "manifests" / "test.jsonl")])
    dm = ASRDataModule(**{**tiny_datamodule_kwargs, "root": segment_corpus, "corpus": corpus})
    dm.prepare_data()
    dm.setup("fit")
    originals = {u.text: u.duration for u in read_librispeech_split(tiny_corpus / "train")[0]}
    utterances = dm.datasets["train"].utterances
    assert len(utterances) > 40 and all(u.offset is not None for u in utterances)
    assert dm._durations("train") == [originals[u.text] for u in utterances]
    assert sum(dm._durations("train")) < sum(soundfile.info(str(p)).duration for p in segment_corpus.glob("*.flac"))
    assert dm.known_splits() == ["dev", "test", "train-segments"]


def test_training_on_a_segment_manifest(segment_corpus, tiny_corpus, tmp_path):
    data = [f"data.root={segment_corpus}", "data.corpus.train=[train-segments.jsonl]",
            f"data.corpus.dev=[{tiny_corpus / 'manifests' / 'dev.jsonl'}]",
            f"data.corpus.test=[{tiny_corpus / 'manifests' / 'test.jsonl'}]", "data.spec_augment=null",
            "data.max_duration=10", "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20",
            "tokenizer.vocab_size=64"]
    cfg = compose_train(["data=manifest", "loss=ctc", "logger=none", "test=false", "trainer.max_steps=2",
                         "trainer.max_epochs=-1", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"],
                        tmp_path / "out", data=data)
    with open_dict(cfg):
        cfg.callbacks.record = {"_target_": "recipe_cfg.RecordBatches", "key": "segments"}
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    seen = [uid for batch in RecordBatches.SEEN["segments"] for uid in batch]
    assert len(seen) > 2 and all(uid.startswith("rec") and uid.count("-") == 2 for uid in seen)
