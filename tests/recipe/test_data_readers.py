"""Readers (LibriSpeech layout, JSONL manifests), the text normaliser and bad audio files."""

import json
import shutil

import pytest

from recipes.data.audio import BadAudioError
from recipes.data.librispeech import LibriSpeechCorpus, read_librispeech_split
from recipes.data.manifest import ManifestCorpus, read_manifest, read_manifests, write_manifest
from recipes.data.text import normalize_text


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "HELLO WORLD"),
    ("  don't   STOP\tnow. ", "DON'T STOP NOW"),
    ("'quoted' words_here -- 42", "QUOTED WORDS HERE 42"),
    ("", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_text_rejects_non_strings():
    with pytest.raises(ValueError, match="text"):
        normalize_text(None)


def test_directory_and_manifest_readers_agree(tiny_corpus, tmp_path):
    utterances, skipped = read_librispeech_split(tiny_corpus / "dev")
    assert skipped == 0 and len(utterances) == 12
    corpus = LibriSpeechCorpus(tiny_corpus, train_splits=["train"], dev_splits=["dev"],
                               test_splits=["test"], cache_dir=tmp_path / "cache")
    corpus.prepare()
    (manifest,) = corpus.manifests("dev")
    assert manifest == tmp_path / "cache" / "manifests" / "dev.jsonl"
    from_manifest = read_manifest(manifest)
    assert [(u.id, u.text, u.duration) for u in from_manifest] == \
        [(u.id, u.text, u.duration) for u in utterances]
    assert [u.audio_filepath.resolve() for u in from_manifest] == \
        [u.audio_filepath.resolve() for u in utterances]
    line = json.loads(manifest.read_text().splitlines()[0])
    assert {"audio_filepath", "duration", "text"} <= set(line)


def test_manifests_are_written_once(tiny_corpus, tmp_path):
    corpus = LibriSpeechCorpus(tiny_corpus, ["train"], ["dev"], ["test"], cache_dir=tmp_path)
    corpus.prepare()
    (path,) = corpus.manifests("test")
    path.write_text(path.read_text().splitlines()[0] + "\n")  # a later prepare must not rewrite it
    corpus.prepare()
    assert len(read_manifest(path)) == 1


def test_nemo_manifest_without_ids_and_duplicate_ids(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio_filepath": "/a/b/x1.wav", "duration": 1.5, "text": "hi"}) + "\n")
    (utterance,) = read_manifest(path)
    assert (utterance.id, utterance.duration, str(utterance.audio_filepath)) == ("x1", 1.5, "/a/b/x1.wav")
    with pytest.raises(ValueError, match=f"twice: manifest {path}, line 1 and manifest {path}, line 1"):
        read_manifests([path, path])
    path.write_text('{"audio_filepath": "x.wav", "text": "no duration"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_manifest(path)


def test_manifest_paths_survive_moving_the_corpus(tiny_corpus, tmp_path):
    utterances, _ = read_librispeech_split(tiny_corpus / "test")
    copy = shutil.copytree(tiny_corpus / "test", tmp_path / "corpus" / "test")
    write_manifest(tmp_path / "corpus" / "manifests" / "test.jsonl",
                   read_librispeech_split(copy)[0])
    moved = shutil.move(tmp_path / "corpus", tmp_path / "moved")
    corpus = ManifestCorpus(moved, train=[], dev=[], test=["manifests/test.jsonl"])
    corpus.prepare()
    for utterance in read_manifests(corpus.manifests("test")):
        assert utterance.audio_filepath.is_file()
    with pytest.raises(ValueError, match="dev"):
        ManifestCorpus(moved, train=[], dev="dev.jsonl", test=[])


@pytest.fixture
def damaged_split(tiny_corpus, tmp_path):
    """A copy of the dev split with one corrupt and one missing FLAC file."""
    split = shutil.copytree(tiny_corpus / "dev", tmp_path / "dev")
    flacs = sorted(split.glob("*/*/*.flac"))
    flacs[0].write_bytes(b"this is not a flac file" * 10)
    flacs[-1].unlink()
    return split, flacs[0], flacs[-1]


def test_bad_audio_is_named_or_skipped_and_counted(damaged_split):
    split, corrupt, missing = damaged_split
    with pytest.raises(BadAudioError, match=corrupt.name):
        read_librispeech_split(split)
    utterances, skipped = read_librispeech_split(split, skip_bad_audio=True)
    assert skipped == 2 and len(utterances) == 10
    assert {corrupt.stem, missing.stem}.isdisjoint(u.id for u in utterances)
