"""Corpus integrity (settings stamp, checksum list, concurrent and killed preparations) and bad
data whose error or warning names the utterance and the manifest it came from."""

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from recipes.data.audio import BadAudioError
from recipes.data.dataset import load_features
from recipes.data.librispeech import LibriSpeechCorpus, read_librispeech_split
from recipes.data.manifest import ManifestCorpus, read_manifest
from recipes.data.synthesis import (
    RECORD,
    SETTINGS_STAMP,
    CorpusIntegrityError,
    CorpusSettingsError,
    SyntheticCorpus,
    SyntheticCorpusConfig,
    ensure_synthetic_corpus,
    generate_corpus,
    plan_corpus,
    read_corpus_record,
    synthesize_utterance,
    verify_corpus,
)
from recipes.data.text import normalize_text
from recipes.data.tokenizer import (
    TranscriptError,
    build_char_tokenizer,
    build_sentencepiece_tokenizer,
    encode_transcripts,
)
from recipes.utils.files import create_exclusive

REPO = Path(__file__).resolve().parents[2]
SMALL = {"num_train": 20, "num_dev": 4, "num_test": 4, "num_dev_speakers": 2,
         "num_test_speakers": 2, "utts_per_train_speaker": 10}


def _prepare_command(root, config):
    command = [sys.executable, str(REPO / "data" / "prepare_synthetic.py"), "--out", str(root),
               "--workers", "1", "--quiet"]
    for key, value in config.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def _assert_holds_exactly(root, config):
    """``root`` holds the whole corpus of ``config`` and nothing of any other corpus."""
    assert read_corpus_record(root)["settings"]["seed"] == config["seed"]
    assert verify_corpus(root, "sha256") == []
    plan = plan_corpus(SyntheticCorpusConfig(**config))
    flacs = {p.relative_to(root).as_posix() for p in root.rglob("*.flac")}
    assert flacs == {(u.relative_dir() / f"{u.utt_id}.flac").as_posix() for u in plan}
    texts = {u.id: u.text for split in ("train", "dev", "test")
             for u in read_librispeech_split(root / split)[0]}
    assert texts == {u.utt_id: u.text for u in plan}
    for utterance in plan:
        written, _ = soundfile.read(root / utterance.relative_dir() / f"{utterance.utt_id}.flac",
                                    dtype="int16")
        np.testing.assert_array_equal(written, synthesize_utterance(utterance))
    assert not [p for p in root.rglob("*.partial")]


# -- corpus integrity --------------------------------------------------------------------------
def test_create_exclusive_has_one_winner(tmp_path):
    stamp = tmp_path / "stamp.json"
    assert create_exclusive(stamp, "first\n")
    assert not create_exclusive(stamp, "second\n")
    assert stamp.read_text() == "first\n" and [p.name for p in tmp_path.iterdir()] == ["stamp.json"]


def test_two_seeds_prepared_into_one_folder_at_once(tmp_path):
    """Both start together; one gets the folder, the other stops naming folder and settings."""
    root = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {seed: subprocess.Popen(_prepare_command(root, {**SMALL, "seed": seed}), cwd=REPO,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
            for seed in (0, 1)}
    results = {seed: (run.communicate(timeout=300), run.returncode) for seed, run in runs.items()}
    winners = [seed for seed, (_, code) in results.items() if code == 0]
    assert len(winners) == 1, results
    (winner,), loser = winners, 1 - winners[0]
    (_, error), code = results[loser]
    assert code == 1 and "Traceback" not in error
    assert f"root: {root} " in error and "seed=0" in error and "seed=1" in error
    assert f"seed: {winner} there, {loser} requested" in error
    _assert_holds_exactly(root, {**SMALL, "seed": winner})


def test_killed_preparation_resumes_with_its_settings_only(tmp_path):
    root = tmp_path / "corpus"
    config = {**SMALL, "num_train": 200, "utts_per_train_speaker": 25, "seed": 0}
    run = subprocess.Popen(_prepare_command(root, config), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not any(root.glob("*/*/*/*.flac")) and time.monotonic() < deadline:
        time.sleep(0.005)
    run.kill()
    run.wait()
    # the test needs a preparation that died half-way: some audio, no finished corpus
    assert any(root.glob("*/*/*/*.flac")) and not (root / RECORD).exists()
    assert json.loads((root / SETTINGS_STAMP).read_text())["seed"] == 0
    with pytest.raises(CorpusSettingsError) as refused:
        ensure_synthetic_corpus(root, progress=False, **{**config, "seed": 1})
    assert f"root: {root} was claimed by a preparation" in str(refused.value)
    assert "seed: 0 there, 1 requested" in str(refused.value)
    assert not (root / RECORD).exists()
    counts = generate_corpus(root, SyntheticCorpusConfig(**config), progress=False)
    assert counts["skipped"] >= 1 and counts["written"] >= 1 and counts["repaired"] == 0
    _assert_holds_exactly(root, config)


def test_finished_corpus_of_other_settings_is_refused(tiny_corpus, tiny_corpus_config):
    for open_corpus in (
        lambda config: ensure_synthetic_corpus(tiny_corpus, progress=False, **config),
        lambda config: SyntheticCorpus(tiny_corpus, progress=False, **config).prepare(),
    ):
        with pytest.raises(CorpusSettingsError) as refused:
            open_corpus({**tiny_corpus_config, "seed": 1, "num_train": 61})
        message = str(refused.value)
        assert f"root: {tiny_corpus} holds a finished synthetic corpus" in message
        assert "num_train: 60 there, 61 requested; seed: 0 there, 1 requested" in message


@pytest.fixture
def corpus_copy(tiny_corpus, tmp_path):
    return shutil.copytree(tiny_corpus, tmp_path / "copy",
                           ignore=shutil.ignore_patterns("lang_*", "cmvn*"))


def test_damaged_files_are_named_and_repaired(corpus_copy, tiny_corpus_config):
    root = corpus_copy
    flacs = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*/*.flac"))
    truncated, flipped, missing = flacs[3], flacs[40], flacs[-1]
    originals = {name: (root / name).read_bytes()
                 for name in (truncated, flipped, missing, "manifests/dev.jsonl")}
    (root / truncated).write_bytes(originals[truncated][: len(originals[truncated]) // 2])
    data = bytearray(originals[flipped])
    data[len(data) // 2] ^= 0xFF  # same size, other content
    (root / flipped).write_bytes(bytes(data))
    (root / missing).unlink()
    (root / "manifests" / "dev.jsonl").write_text(originals["manifests/dev.jsonl"].decode()[:-40])
    extra = Path(flacs[0]).with_name("100-1000-9999.flac").as_posix()  # another corpus's file
    shutil.copy(root / flacs[0], root / extra)

    with pytest.raises(CorpusIntegrityError) as by_size:
        ensure_synthetic_corpus(root, progress=False, **tiny_corpus_config)
    assert {name for name, _ in by_size.value.problems} == \
        {truncated, missing, "manifests/dev.jsonl", extra}  # sizes only: the flip is unseen
    message = str(by_size.value)
    assert f"corpus in {root}" in message and "4 file(s)" in message
    assert f"{truncated} has {len(originals[truncated]) // 2} bytes" in message
    assert f"{missing} is missing" in message and f"{extra} is not in the checksum list" in message

    with pytest.raises(CorpusIntegrityError) as by_digest:
        ensure_synthetic_corpus(root, progress=False, verify="sha256", **tiny_corpus_config)
    assert flipped in {name for name, _ in by_digest.value.problems}
    assert f"{flipped} has changed: its SHA-256 differs" in str(by_digest.value)

    with pytest.raises(CorpusIntegrityError, match="not in the checksum list"):  # kept: not ours
        ensure_synthetic_corpus(root, progress=False, repair=True, **tiny_corpus_config)
    (root / extra).unlink()
    ensure_synthetic_corpus(root, progress=False, verify="sha256", repair=True,
                            **tiny_corpus_config)
    assert verify_corpus(root, "sha256") == []
    for name, content in originals.items():
        assert (root / name).read_bytes() == content, name


def test_corpus_from_an_earlier_format_gets_a_checksum_list(corpus_copy, tiny_corpus_config):
    record = read_corpus_record(corpus_copy)
    (corpus_copy / RECORD).write_text(json.dumps(record["settings"]))  # settings only
    (corpus_copy / SETTINGS_STAMP).unlink()
    assert verify_corpus(corpus_copy) == [(RECORD, "has no checksum list (an earlier format): "
                                                   "prepare the corpus again")]
    ensure_synthetic_corpus(corpus_copy, progress=False, **tiny_corpus_config)
    assert read_corpus_record(corpus_copy) == record
    assert verify_corpus(corpus_copy, "sha256") == []


def test_bad_verify_level_names_the_argument(tiny_corpus, tiny_corpus_config):
    with pytest.raises(ValueError, match="verify"):
        ensure_synthetic_corpus(tiny_corpus, verify="md5", **tiny_corpus_config)


# -- bad data names the culprit ----------------------------------------------------------------
def _write_manifest(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def flacs(tiny_corpus):
    return sorted((tiny_corpus / "dev").glob("*/*/*.flac"))


def test_empty_transcripts_are_dropped_and_named(flacs, tmp_path, caplog):
    manifest = _write_manifest(tmp_path / "m.jsonl", [
        {"audio_filepath": str(flacs[0]), "duration": 1.0, "text": "a good one", "id": "u1"},
        {"audio_filepath": str(flacs[1]), "duration": 1.0, "text": "", "id": "u2"},
        {"audio_filepath": str(flacs[2]), "duration": 1.0, "text": " -- ?! ", "id": "u3"},
        {"audio_filepath": str(flacs[3]), "duration": 1.0, "text": "another", "id": "u4"},
    ])
    with caplog.at_level(logging.WARNING, logger="recipes.data.manifest"):
        assert [u.id for u in read_manifest(manifest)] == ["u1", "u4"]
    assert f"manifest {manifest}: dropped 2 of 4 utterances" in caplog.text
    assert f"'u2' (manifest {manifest}, line 2)" in caplog.text and "'u3'" in caplog.text
    assert len(read_manifest(manifest, drop_empty=False)) == 4

    split = shutil.copytree(flacs[0].parents[2], tmp_path / "dev")
    transcript = sorted(split.glob("*/*/*.trans.txt"))[0]
    lines = transcript.read_text().splitlines()
    emptied = [lines[0].split()[0], lines[1].split()[0]]
    transcript.write_text("\n".join([emptied[0], f"{emptied[1]} ...", *lines[2:]]) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recipes.data.manifest"):
        corpus = LibriSpeechCorpus(tmp_path, ["dev"], ["dev"], ["dev"], cache_dir=tmp_path / "c")
        corpus.prepare()
    assert f"folder {split}: dropped 2 of 12" in caplog.text
    assert f"{emptied[0]!r} ({transcript}, line 1)" in caplog.text
    assert {u.id for u in read_manifest(corpus.manifests("dev")[0])}.isdisjoint(emptied)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_out_of_vocabulary_characters_name_utterance_and_manifest(kind, tiny_corpus, flacs,
                                                                  tmp_path):
    train = [normalize_text(u.text) for u in read_librispeech_split(tiny_corpus / "train")[0]]
    tokenizer = (build_char_tokenizer(train, tmp_path) if kind == "char"
                 else build_sentencepiece_tokenizer(train, tmp_path, vocab_size=48))
    manifest = _write_manifest(tmp_path / "test.jsonl", [
        {"audio_filepath": str(flacs[0]), "duration": 1.0, "text": "the dog", "id": "fine"},
        {"audio_filepath": str(flacs[1]), "duration": 1.0, "text": "the café", "id": "cafe"},
    ])
    utterances = read_manifest(manifest)
    texts = [normalize_text(u.text) for u in utterances]
    assert encode_transcripts(tokenizer, utterances[:1], texts[:1]) == [tokenizer.encode("THE DOG")]
    with pytest.raises(TranscriptError) as raised:
        encode_transcripts(tokenizer, utterances, texts)
    message = str(raised.value)
    assert f"utterance 'cafe' (manifest {manifest}, line 2): 'É' in 'THE CAFÉ'" in message
    assert message.startswith("1 of 2 transcripts") and "'fine'" not in message
    assert str(tmp_path) in message  # the tokenizer's files, the usual cause


def test_datamodule_names_an_out_of_vocabulary_utterance(tiny_corpus, flacs, tmp_path):
    """Through the data module, as train.py and decode.py meet it: a dev transcript outside the
    tokenizer's characters stops set-up with the utterance and its manifest line."""
    from recipes.data.datamodule import ASRDataModule

    rows = [{"audio_filepath": str(flac), "duration": 1.0, "text": text, "id": f"u{k}"}
            for k, (flac, text) in enumerate(zip(flacs, ["the dog", "a cat", "the red dog"]))]
    _write_manifest(tmp_path / "train.jsonl", rows)
    dev = _write_manifest(tmp_path / "dev.jsonl", [rows[0], {**rows[1], "text": "naïve", "id": "oov"}])
    corpus = ManifestCorpus(tmp_path, train=["train.jsonl"], dev=["dev.jsonl"], test=["dev.jsonl"])
    datamodule = ASRDataModule(tmp_path, corpus, tokenizer=functools.partial(build_char_tokenizer),
                               num_workers=0, cmvn_max_utts=3)
    datamodule.prepare_data()
    expected = rf"utterance 'oov' \(manifest {re.escape(str(dev))}, line 2\): .*'Ï' in 'NAÏVE'"
    with pytest.raises(TranscriptError, match=expected):
        datamodule.setup("fit")


def test_missing_or_corrupt_audio_names_utterance_and_manifest(flacs, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio" * 50)
    missing = tmp_path / "missing.flac"
    manifest = _write_manifest(tmp_path / "train.jsonl", [
        {"audio_filepath": str(flacs[0]), "duration": 1.0, "text": "fine", "id": "ok"},
        {"audio_filepath": str(missing), "duration": 1.0, "text": "gone", "id": "lost"},
        {"audio_filepath": str(corrupt), "duration": 1.0, "text": "noise", "id": "broken"},
    ])
    corpus = ManifestCorpus(tmp_path, train=["train.jsonl"], dev=[], test=[])
    with pytest.raises(BadAudioError) as raised:
        corpus.prepare()
    assert str(raised.value) == (f"manifest {manifest}: 1 audio file(s) missing: utterance 'lost' "
                                 f"(manifest {manifest}, line 2): {missing}")
    with caplog.at_level(logging.WARNING, logger="recipes.data.manifest"):
        corpus.prepare(skip_bad_audio=True)
    assert "utterance 'lost'" in caplog.text

    ok, lost, broken = read_manifest(manifest)
    assert load_features(ok).shape[1] == 80
    for utterance, path, line in ((lost, missing, 2), (broken, corrupt, 3)):
        with pytest.raises(BadAudioError) as raised:
            load_features(utterance)
        message = str(raised.value)
        assert message.startswith(f"utterance {utterance.id!r} (manifest {manifest}, line {line})")
        assert f"cannot read audio file {path}" in message

    split = shutil.copytree(flacs[0].parents[2], tmp_path / "dev")
    victim = sorted(split.glob("*/*/*.flac"))[2]
    victim.write_bytes(b"garbage" * 30)
    with pytest.raises(BadAudioError) as raised:
        read_librispeech_split(split)
    transcript = victim.with_name(victim.stem.rsplit("-", 1)[0] + ".trans.txt")
    assert str(raised.value).startswith(f"utterance {victim.stem!r} ({transcript}, line 3)")
    assert str(victim) in str(raised.value)
