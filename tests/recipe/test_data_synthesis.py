"""The synthetic corpus: layout, held-out speakers and sentences, determinism, idempotence."""

import csv
import re
import shutil

import numpy as np
import pytest
import soundfile

from recipes.data.synthesis import (
    TRAIN_ONLY_VARIANTS,
    SyntheticCorpusConfig,
    generate_corpus,
    plan_corpus,
    synthesize_utterance,
    vocabulary,
)

UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d{4})$")


def _transcripts(root, split):
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1]
            for path in sorted((root / split).glob("*/*/*.trans.txt"))
            for line in path.read_text().splitlines()}


def test_layout_is_librispeech(tiny_corpus, tiny_corpus_config):
    for split in ("train", "dev", "test"):
        transcripts = _transcripts(tiny_corpus, split)
        assert len(transcripts) == tiny_corpus_config[f"num_{split}"]
        flacs = sorted((tiny_corpus / split).glob("*/*/*.flac"))
        assert sorted(f.stem for f in flacs) == sorted(transcripts)
        for flac in flacs:
            speaker, chapter, _ = UTT_ID.match(flac.stem).groups()
            assert flac.parent.name == chapter and flac.parent.parent.name == speaker
            info = soundfile.info(str(flac))
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert 0.5 < info.duration < 4.5
        for text in transcripts.values():
            assert 3 <= len(text.split()) <= 8 and text == text.upper()


def test_test_speakers_and_sentences_are_held_out(tiny_corpus):
    with open(tiny_corpus / "speakers.tsv") as table:
        speakers = list(csv.DictReader(table, delimiter="\t"))
    voices = {split: {(s["voice"], s["variant"]) for s in speakers if s["split"] == split}
              for split in ("train", "dev", "test")}
    assert voices["test"] and not voices["test"] & voices["train"]
    assert voices["dev"] and not voices["dev"] & (voices["train"] | voices["test"])
    assert not {variant for _, variant in voices["test"]} & set(TRAIN_ONLY_VARIANTS)
    train = set(_transcripts(tiny_corpus, "train").values())
    held_out = set(_transcripts(tiny_corpus, "test").values()) | set(_transcripts(tiny_corpus, "dev").values())
    assert not train & held_out
    train_words = {w for text in train for w in text.split()}
    assert {w for text in held_out for w in text.split()} - train_words != set()  # a real test


def test_vocabulary_and_default_plan():
    assert len(vocabulary()) >= 300
    plan = plan_corpus(SyntheticCorpusConfig())
    assert sum(u.speaker.split == "train" for u in plan) == 3000
    assert len({u.text for u in plan}) == len(plan)
    assert len({u.utt_id for u in plan}) == len(plan)
    rates = {u.speaker.rate for u in plan}
    assert 130 <= min(rates) and max(rates) <= 200


def test_plan_is_deterministic_from_seed():
    config = SyntheticCorpusConfig(num_train=30, num_dev=5, num_test=5)
    assert plan_corpus(config) == plan_corpus(config)
    other = plan_corpus(SyntheticCorpusConfig(num_train=30, num_dev=5, num_test=5, seed=1))
    assert [u.text for u in other] != [u.text for u in plan_corpus(config)]


def test_held_out_speakers_do_not_depend_on_the_training_speakers():
    def held_out(utts_per_train_speaker):
        plan = plan_corpus(SyntheticCorpusConfig(utts_per_train_speaker=utts_per_train_speaker))
        return [(u.speaker.split, u.speaker.voice, u.speaker.variant, u.speaker.pitch, u.speaker.intonation,
                 u.speaker.rate, u.text) for u in plan if u.speaker.split != "train"]

    many, few = (plan_corpus(SyntheticCorpusConfig(utts_per_train_speaker=n)) for n in (25, 50))
    assert len({u.speaker for u in many if u.speaker.split == "train"}) == 120
    assert len({u.speaker for u in few if u.speaker.split == "train"}) == 60
    assert held_out(25) == held_out(50)


def test_audio_does_not_depend_on_synthesis_order(tiny_corpus, tiny_corpus_config):
    plan = plan_corpus(SyntheticCorpusConfig(**tiny_corpus_config))
    breathy = [u for u in plan if u.speaker.variant.startswith("f")][:2]
    for utterance in [*plan[-3:], *breathy]:  # a different order than the generator's
        written, _ = soundfile.read(tiny_corpus / utterance.relative_dir() / f"{utterance.utt_id}.flac",
                                    dtype="int16")
        np.testing.assert_array_equal(synthesize_utterance(utterance), written)


def test_rerun_skips_existing_and_completes_missing(tiny_corpus, tiny_corpus_config, tmp_path):
    copy = shutil.copytree(tiny_corpus, tmp_path / "copy")
    config = SyntheticCorpusConfig(**tiny_corpus_config)
    victim = next((copy / "test").glob("*/*/*.flac"))
    original = victim.read_bytes()
    victim.unlink()
    counts = generate_corpus(copy, config, progress=False)
    assert counts == {"written": 1, "skipped": 83, "repaired": 0}
    assert victim.read_bytes() == original
    assert generate_corpus(copy, config, progress=False) == {"written": 0, "skipped": 84, "repaired": 0}


def test_other_settings_in_same_root_are_refused(tiny_corpus, tiny_corpus_config, tmp_path):
    copy = shutil.copytree(tiny_corpus, tmp_path / "copy")
    with pytest.raises(ValueError, match="root"):
        generate_corpus(copy, SyntheticCorpusConfig(**{**tiny_corpus_config, "seed": 1}))


def test_bad_config_names_the_argument():
    with pytest.raises(ValueError, match="num_train"):
        SyntheticCorpusConfig(num_train=-1)
    with pytest.raises(ValueError, match="num_test_speakers"):
        SyntheticCorpusConfig(num_test_speakers=90)


def test_two_processes_preparing_one_corpus_both_succeed(tiny_corpus, tiny_corpus_config, tmp_path):
    """Two runs started at once on a fresh machine generate the same files into the same folder."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "shared"
    config = {**tiny_corpus_config, "num_train": 20, "num_dev": 4, "num_test": 4}
    script = ("import json, sys; from recipes.data.synthesis import SyntheticCorpus; "
              "SyntheticCorpus(sys.argv[1], **json.loads(sys.argv[2])).prepare()")
    repo = Path(__file__).resolve().parents[2]
    runs = [subprocess.Popen([sys.executable, "-c", script, str(root), json.dumps(config)], cwd=repo,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert not [f for f in files if f.name.endswith(".partial")]
    assert len([f for f in files if f.suffix == ".flac"]) == 28
    reference = tmp_path / "alone"
    generate_corpus(reference, SyntheticCorpusConfig(**config), progress=False)
    for flac in (f for f in files if f.suffix == ".flac"):
        assert (root / flac).read_bytes() == (reference / flac).read_bytes()
