"""lhotse CutSet manifests (`data=lhotse`): same audio and features as JSONL manifests of the same
utterances (whole files, a segment of a longer recording, another sample rate, one channel of a stereo
file), the transcript rule, bad paths and missing audio, and a short training run."""

import functools
import math

import numpy as np
import pytest
import soundfile
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from recipe_cfg import compose_train

from recipes.data.audio import BadAudioError
from recipes.data.datamodule import ASRDataModule
from recipes.data.dataset import load_waveform
from recipes.data.lhotse_cuts import LhotseCorpus, read_cut_manifests, read_cuts
from recipes.data.manifest import ManifestCorpus, Utterance, read_manifests, write_manifest
from recipes.data.synthesis import SyntheticCorpus
from recipes.data.tokenizer import build_char_tokenizer
from tests.recipe.conftest import TINY_CORPUS
from train import train

PARTS = ("train", "dev", "test")


def _cut(cut_id: str, recording: Recording, texts=None, start: float = 0.0, duration: float | None = None,
         channel: int = 0) -> MonoCut:
    duration = recording.duration - start if duration is None else duration
    texts = [] if texts is None else texts
    supervisions = [SupervisionSegment(id=f"{cut_id}-{i}", recording_id=recording.id, start=0.0,
                                       duration=duration, channel=channel, text=text) for i, text in enumerate(texts)]
    return MonoCut(id=cut_id, start=start, duration=duration, channel=channel, recording=recording,
                   supervisions=supervisions)


def _whole(utterance: Utterance) -> MonoCut:
    return _cut(utterance.id, Recording.from_file(utterance.audio_filepath, recording_id=utterance.id),
                [utterance.text])


@pytest.fixture(scope="module")
def corpora(tiny_corpus, tmp_path_factory):
    """The tiny corpus as lhotse cuts and as JSONL manifests of the same audio: (cuts root, manifests root).

    dev cut 1 is a segment of a recording holding dev utterances 0 and 1; dev cut 2 reads a 22.05 kHz copy
    of its file (so does its manifest line); dev cut 3 is channel 0 of a stereo file whose other channel
    is silence (its manifest line names the original mono file).
    """
    synthetic = SyntheticCorpus(tiny_corpus, **TINY_CORPUS)
    synthetic.prepare()
    base = tmp_path_factory.mktemp("lhotse")
    audio = base / "audio"
    audio.mkdir()
    utterances = {part: read_manifests(synthetic.manifests(part)) for part in PARTS}
    cuts = {part: [_whole(u) for u in utterances[part]] for part in PARTS}
    manifest_utterances = {part: list(utterances[part]) for part in PARTS}

    dev = utterances["dev"]
    first, second = (soundfile.read(dev[i].audio_filepath, dtype="int16")[0] for i in (0, 1))
    long_path = audio / "dev-0-and-1.wav"
    soundfile.write(long_path, np.concatenate([first, second]), 16000, subtype="PCM_16")
    long_recording = Recording.from_file(long_path, recording_id="dev-0-and-1")
    cuts["dev"][1] = _cut(dev[1].id, long_recording, [dev[1].text], start=len(first) / 16000,
                          duration=len(second) / 16000)

    samples, rate = soundfile.read(dev[2].audio_filepath, dtype="float32")
    assert rate == 16000
    resampled = audio / "dev-2-22050.wav"
    soundfile.write(resampled, torchaudio_resample(samples, 16000, 22050), 22050, subtype="FLOAT")
    cuts["dev"][2] = _whole(Utterance(dev[2].id, resampled, 0.0, dev[2].text))
    manifest_utterances["dev"][2] = Utterance(dev[2].id, resampled, soundfile.info(resampled).duration, dev[2].text)

    third = soundfile.read(dev[3].audio_filepath, dtype="int16")[0]
    stereo = audio / "dev-3-stereo.wav"
    soundfile.write(stereo, np.stack([third, np.zeros_like(third)], axis=1), 16000, subtype="PCM_16")
    cuts["dev"][3] = _cut(dev[3].id, Recording.from_file(stereo, recording_id="dev-3-stereo"), [dev[3].text])

    (base / "cuts").mkdir()
    for part in PARTS:
        CutSet.from_cuts(cuts[part]).to_file(base / "cuts" / f"cuts_{part}.jsonl.gz")
        write_manifest(base / "manifests" / f"{part}.jsonl", manifest_utterances[part])
    return base / "cuts", base / "manifests"


def torchaudio_resample(samples: np.ndarray, orig: int, new: int) -> np.ndarray:
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(samples), orig, new).numpy()


def _datamodule(corpus, root) -> ASRDataModule:
    dm = ASRDataModule(root, corpus, build_char_tokenizer, max_duration=10.0, num_workers=0, cmvn_max_utts=20)
    dm.prepare_data()
    dm.setup()
    return dm


def test_cuts_give_the_manifests_audio_and_features(corpora):
    cuts_root, manifests_root = corpora
    dm_cuts = _datamodule(functools.partial(LhotseCorpus, train_cuts="cuts_train.jsonl.gz",
                                            dev_cuts=["cuts_dev.jsonl.gz"], test_cuts=["cuts_test.jsonl.gz"]),
                          cuts_root)
    dm_json = _datamodule(functools.partial(ManifestCorpus, train=["train.jsonl"], dev=["dev.jsonl"],
                                            test=["test.jsonl"]), manifests_root)
    assert (cuts_root / "cmvn_fbank80.pt").is_file() and (manifests_root / "cmvn_fbank80.pt").is_file()
    assert torch.equal(dm_cuts.cmvn.mean, dm_json.cmvn.mean) and torch.equal(dm_cuts.cmvn.std, dm_json.cmvn.std)
    assert dm_cuts.tokenizer.vocab_size == dm_json.tokenizer.vocab_size
    for part in PARTS:
        a, b = dm_cuts.datasets[part], dm_json.datasets[part]
        assert len(a) == len(b) > 10
        batch_a, batch_b = a[(0, list(range(len(a))))], b[(0, list(range(len(b))))]
        assert batch_a["ids"] == batch_b["ids"] and batch_a["texts"] == batch_b["texts"]
        for key in ("features", "feature_lengths", "targets", "target_lengths"):
            assert torch.equal(batch_a[key], batch_b[key]), (part, key)
        assert torch.allclose(batch_a["durations"], batch_b["durations"], atol=1e-4)
    dev_cuts, dev_json = dm_cuts.datasets["dev"].utterances, dm_json.datasets["dev"].utterances
    assert dev_cuts[1].cut.start > 1.0 and dev_cuts[1].audio_filepath.name == "dev-0-and-1.wav"
    for i in range(4):  # the special cuts: the waveforms themselves are the same
        assert torch.equal(load_waveform(dev_cuts[i]), load_waveform(dev_json[i])), i
    assert dev_cuts[2].cut.sampling_rate == 22050
    # the loaders the trainer uses give the same batches
    for batch_a, batch_b in zip(dm_cuts.val_dataloader(), dm_json.val_dataloader(), strict=True):
        assert batch_a["ids"] == batch_b["ids"] and torch.equal(batch_a["features"], batch_b["features"])


def test_the_segment_cut_is_not_its_whole_recording(corpora):
    """The check above would pass if offsets were ignored and both utterances were equal: they are not."""
    (segment,) = [u for u in read_cuts(corpora[0] / "cuts_dev.jsonl.gz") if u.audio_filepath.name.startswith("dev-0")]
    whole = Recording.from_file(segment.audio_filepath).load_audio()
    part = segment.read_audio()[0]
    assert 0 < part.shape[0] < whole.shape[1]
    assert not np.array_equal(part, whole[0, : part.shape[0]])
    assert np.array_equal(part, whole[0, -part.shape[0]:])


def test_transcript_rule_and_bad_cuts(tiny_corpus, tmp_path):
    flac = sorted((tiny_corpus / "dev").glob("*/*/*.flac"))[0]
    recording = Recording.from_file(flac, recording_id="r")
    joined = _cut("joined", recording, ["world", "hello,"])
    late, early = joined.supervisions
    joined.supervisions = [late.with_offset(0.5), early]  # "world" starts later
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([joined, _cut("blank", recording, ["?!"])]).to_file(path)
    (utterance,) = read_cuts(path)  # "?!" normalises to nothing: dropped
    assert (utterance.id, utterance.text, utterance.duration) == ("joined", "hello, world", recording.duration)
    assert utterance.source == f"lhotse cuts {path}, cut 1"

    CutSet.from_cuts([joined, _cut("silent", recording)]).to_file(path)
    with pytest.raises(ValueError, match=f"cut 'silent' \\(lhotse cuts {path}, cut 2\\) has no supervision"):
        read_cuts(path)
    untexted = _cut("untexted", recording, [None])
    CutSet.from_cuts([untexted]).to_file(path)
    with pytest.raises(ValueError, match="cut 'untexted'.*supervision 'untexted-0' has no text"):
        read_cuts(path)

    CutSet.from_cuts([joined]).to_file(tmp_path / "a.jsonl")
    CutSet.from_cuts([joined]).to_file(tmp_path / "b.jsonl")
    with pytest.raises(ValueError, match="cut id 'joined' occurs twice"):
        read_cut_manifests([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])


def test_bad_paths_are_named(tiny_corpus, tmp_path):
    def prepare(**cuts):
        parts = {"train_cuts": [], "dev_cuts": [], "test_cuts": [], **cuts}
        ASRDataModule(tmp_path, functools.partial(LhotseCorpus, **parts), build_char_tokenizer).prepare_data()

    with pytest.raises(ValueError, match=f"no such file {tmp_path / 'nowhere.jsonl.gz'}"):
        prepare(dev_cuts="nowhere.jsonl.gz")
    (tmp_path / "garbage.jsonl").write_text("this is not json\n")
    with pytest.raises(ValueError, match=f"lhotse cuts {tmp_path / 'garbage.jsonl'}"):
        prepare(test_cuts=["garbage.jsonl"])
    with pytest.raises(ValueError, match="train_cuts must be a path or a list of paths"):
        LhotseCorpus(tmp_path, train_cuts=[1], dev_cuts=[], test_cuts=[])

    flac = sorted((tiny_corpus / "dev").glob("*/*/*.flac"))[0]
    copy = tmp_path / "copy.flac"
    copy.write_bytes(flac.read_bytes())
    good = _cut("good", Recording.from_file(flac, recording_id="good"), ["a b"])
    lost = _cut("lost", Recording.from_file(copy, recording_id="lost"), ["c d"])
    CutSet.from_cuts([good, lost]).to_file(tmp_path / "cuts.jsonl.gz")
    copy.unlink()
    with pytest.raises(BadAudioError, match=f"utterance 'lost' .*cut 2\\): {copy}"):
        prepare(train_cuts="cuts.jsonl.gz")
    (lost_utterance,) = [u for u in read_cuts(tmp_path / "cuts.jsonl.gz") if u.id == "lost"]
    with pytest.raises(BadAudioError, match=f"cut 'lost' from {copy}"):
        lost_utterance.read_audio()


def test_training_two_steps_with_data_lhotse(corpora, tmp_path):
    cuts_root, _ = corpora
    data = [f"data.root={cuts_root}", "data.corpus.train_cuts=cuts_train.jsonl.gz",
            "data.corpus.dev_cuts=[cuts_dev.jsonl.gz]", "data.corpus.test_cuts=cuts_test.jsonl.gz",
            "data.max_duration=10", "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20",
            "tokenizer.vocab_size=64"]
    cfg = compose_train(["data=lhotse", "loss=rnnt", "logger=none", "trainer.max_steps=2", "trainer.max_epochs=-1",
                         "trainer.limit_val_batches=1", "trainer.val_check_interval=2", "trainer.limit_test_batches=1",
                         "trainer.num_sanity_val_steps=0"], tmp_path, data)
    assert cfg.data.corpus._target_ == "recipes.data.lhotse_cuts.LhotseCorpus"
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    assert isinstance(objects["datamodule"].corpus, LhotseCorpus)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"]) and "test/wer" in metrics

