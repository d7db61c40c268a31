"""The embedded speech corpus: sentences from a small grammar, spoken by espeak-ng voices.

``python data/prepare_synthetic.py`` (or :func:`ensure_synthetic_corpus`) writes the corpus in the
LibriSpeech layout, so that the reader of a real LibriSpeech copy reads it unchanged::

    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   16 kHz, 16-bit FLAC
    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt    "<utt-id> <TEXT>" lines
    <root>/speakers.tsv                                                 who every speaker is
    <root>/corpus.json                                                  the generator settings

A speaker is an espeak-ng voice (accent) x variant (timbre) x pitch x rate. The clear-voiced
voice x variant combinations are shuffled by the seed: the first ``num_test_speakers`` are the
test speakers, the next ``num_dev_speakers`` the dev speakers, and training never hears either
group. Train also hears a few klatt-synthesised variants that test never uses. Every sentence
(word sequence) is unique across the whole corpus, so dev and test sentences are never seen in
training; their words are.

Everything is planned from the seed before any audio is made, and every utterance is synthesised
by a freshly loaded espeak-ng, so the corpus is the same on every machine, for any number of
worker processes and after an interrupted run is resumed (files that exist are skipped).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import math
import os
import random
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from recipes.data.librispeech import LibriSpeechCorpus
from recipes.utils.files import partial_path as partial_path_for

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
FORMAT_VERSION = 2  # 2: per-split speaker streams (held-out speakers independent of num_train)

VOICES = (
    "en", "en-029", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-gbcwmd", "en-GB-x-rp", "en-US",
    "en-US-nyc",
)
CLEAR_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
TRAIN_ONLY_VARIANTS = ("klatt", "klatt2", "klatt3")

# Speaker parameter ranges (espeak-ng units: pitch and pitch range 0-100, rate in words/minute).
PITCH_RANGE = (35, 65)
INTONATION_RANGE = (30, 70)
RATE_RANGE = (135, 195)

# ---------------------------------------------------------------------------------------------
# The grammar. Nouns take a regular "-s" plural; verbs are in the past tense.
NAMES = (
    "adam alice anna arthur ben carl clara daniel david diana edward ella emily frank george grace "
    "harry helen henry jack james jane john julia kate laura leo lucy mark mary max nina oliver "
    "paul peter rachel robert rose sam sarah simon sophie thomas tom victor william"
).split()
NOUNS = (
    "apple basket bird boat book bottle box bridge brother button cake camera candle car card "
    "castle cat chair cloud coat computer cookie cup desk doctor dog door dragon drum egg farmer "
    "flower forest friend garden gate gift girl glass guitar hammer hat horse house island jacket "
    "key kitchen ladder lamp letter lion map market monkey mountain nest orange painter pencil "
    "piano picture pillow plate pocket pond rabbit river road robot rocket room sailor sandwich "
    "school shirt shoe singer sister spoon star station stone student table teacher tent ticket "
    "tiger towel tower town toy train tree truck tunnel umbrella village wagon wall watch window "
    "wizard whale"
).split()
ADJECTIVES = (
    "angry big black blue brave bright broken busy clean clever cold dark dirty dry empty famous "
    "fast friendly funny gentle giant golden good green happy heavy hungry kind large lazy little "
    "lonely loud lucky new noisy old orange pink polite poor proud purple quiet rich round sad "
    "shiny short silly silver slow small soft strange strong sweet tall tiny tired ugly warm wet "
    "white wild wooden yellow young"
).split()
TRANSITIVE_VERBS = (
    "bought built carried caught chased cleaned cooked counted covered dropped fixed followed "
    "found grabbed helped hid kept kicked lifted liked lost moved needed opened packed painted "
    "pulled pushed sold showed stole threw took touched visited wanted washed watched"
).split()
INTRANSITIVE_VERBS = (
    "arrived cried danced jumped laughed left listened rested ran sang slept smiled stayed "
    "stopped swam waited walked whistled worked yawned"
).split()
ADVERBS = (
    "again always carefully early happily later loudly often quickly quietly sadly slowly "
    "suddenly today together tonight yesterday"
).split()
PREPOSITIONS = "above behind beside inside near under across along around".split()
DETERMINERS = "the a this that my your our their his her every".split()
NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty".split()
PRONOUNS = "i you we they he she".split()
PLURAL_DETERMINERS = "the some many these those".split()

# Templates of slots; a slot is a word list, a fixed word is a one-word tuple. 3 to 8 words each.
_WORD = {
    "NAME": NAMES, "NOUN": NOUNS, "ADJ": ADJECTIVES, "VT": TRANSITIVE_VERBS,
    "VI": INTRANSITIVE_VERBS, "ADV": ADVERBS, "PREP": PREPOSITIONS, "DET": DETERMINERS,
    "NUM": NUMBERS, "PRON": PRONOUNS, "PDET": PLURAL_DETERMINERS,
    "NOUNS": [noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s") for noun in NOUNS],
}
TEMPLATES = (
    "NAME VI ADV",
    "DET ADJ NOUN VI",
    "NAME VT DET NOUN",
    "PRON VT NUM ADJ NOUNS",
    "DET NOUN VT DET ADJ NOUN",
    "NAME VI PREP DET NOUN",
    "PDET ADJ NOUNS VI ADV",
    "DET ADJ NOUN VI PREP DET NOUN",
    "NAME and NAME VT DET NOUN ADV",
    "PRON VT NUM NOUNS PREP DET NOUN",
    "where is DET ADJ NOUN",
    "NAME VT DET ADJ NOUN PREP DET NOUN",
    "PRON VI ADV with DET ADJ NOUN",
    "DET NOUN and DET NOUN VI ADV",
)


def vocabulary() -> list[str]:
    """Return every word the grammar can produce, upper-case and sorted."""
    words = {word for slot in _WORD.values() for word in slot}
    words.update(word for template in TEMPLATES for word in template.split() if word not in _WORD)
    return sorted(word.upper() for word in words)


def random_sentence(rng: random.Random) -> str:
    """Return one upper-case sentence of the grammar drawn with ``rng``."""
    template = rng.choice(TEMPLATES)
    words = [rng.choice(_WORD[slot]) if slot in _WORD else slot for slot in template.split()]
    return " ".join(words).upper()


# ---------------------------------------------------------------------------------------------
# Speakers and the corpus plan.
@dataclasses.dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice and variant spoken at a pitch and a rate."""

    speaker_id: int
    split: str
    voice: str
    variant: str
    pitch: int
    intonation: int
    rate: int

    @property
    def espeak_name(self) -> str:
        """The name ``espeak_SetVoiceByName`` takes: ``<voice>+<variant>``."""
        return f"{self.voice}+{self.variant}"


@dataclasses.dataclass(frozen=True)
class PlannedUtterance:
    """An utterance to synthesise: who says what, and where its FLAC file goes."""

    speaker: Speaker
    chapter_id: int
    utt_index: int
    text: str

    @property
    def utt_id(self) -> str:
        return f"{self.speaker.speaker_id}-{self.chapter_id}-{self.utt_index:04d}"

    def relative_dir(self) -> Path:
        return Path(self.speaker.split, str(self.speaker.speaker_id), str(self.chapter_id))


@dataclasses.dataclass(frozen=True)
class SyntheticCorpusConfig:
    """Size and seed of the synthetic corpus; every field is recorded in ``corpus.json``."""

    num_train: int = 3000
    num_dev: int = 200
    num_test: int = 200
    num_dev_speakers: int = 8
    num_test_speakers: int = 8
    utts_per_train_speaker: int = 25
    utts_per_chapter: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{field.name} must be an int, got {value!r}")
        for name in ("num_train", "num_dev", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("num_dev_speakers", "num_test_speakers", "utts_per_train_speaker",
                     "utts_per_chapter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        held_out = self.num_dev_speakers + self.num_test_speakers
        if held_out >= len(VOICES) * len(CLEAR_VARIANTS):
            raise ValueError(
                f"num_dev_speakers + num_test_speakers must leave clear voices for training: "
                f"{held_out} >= {len(VOICES) * len(CLEAR_VARIANTS)}"
            )


def plan_speakers(config: SyntheticCorpusConfig) -> list[Speaker]:
    """Return the train, dev and test speakers drawn from ``config.seed``.

    Dev and test speakers each get their own held-out voice x variant combination (clear variants
    only); train speakers cycle through the remaining combinations, including the train-only
    variants, with their own pitch and rate.
    """
    rng = random.Random(f"speakers-{config.seed}")
    clear = [(voice, variant) for voice in VOICES for variant in CLEAR_VARIANTS]
    rng.shuffle(clear)
    test_combos = clear[: config.num_test_speakers]
    dev_combos = clear[config.num_test_speakers: config.num_test_speakers + config.num_dev_speakers]
    train_combos = clear[config.num_test_speakers + config.num_dev_speakers:]
    train_combos += [(voice, variant) for voice in VOICES for variant in TRAIN_ONLY_VARIANTS]
    rng.shuffle(train_combos)
    num_train_speakers = math.ceil(config.num_train / config.utts_per_train_speaker)
    combos_by_split = {
        "train": [train_combos[i % len(train_combos)] for i in range(num_train_speakers)],
        "dev": dev_combos if config.num_dev else [],
        "test": test_combos if config.num_test else [],
    }
    speakers = []
    for split in SPLITS:
        # each split draws pitch, intonation and rate from its own stream, so that the held-out
        # speakers do not change with the number of training speakers
        voice_rng = random.Random(f"speakers-{config.seed}-{split}")
        for voice, variant in combos_by_split[split]:
            speakers.append(Speaker(
                speaker_id=100 + len(speakers), split=split, voice=voice, variant=variant,
                pitch=voice_rng.randint(*PITCH_RANGE), intonation=voice_rng.randint(*INTONATION_RANGE),
                rate=voice_rng.randint(*RATE_RANGE),
            ))
    return speakers


def _split_evenly(total: int, parts: int) -> list[int]:
    """Return ``parts`` counts that differ by at most one and sum to ``total``."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def plan_corpus(config: SyntheticCorpusConfig) -> list[PlannedUtterance]:
    """Return every utterance of the corpus, in split/speaker/chapter order.

    Sentences are drawn test first, then dev, then train, each distinct from all drawn before, so
    no dev or test word sequence is ever a training sentence.
    """
    speakers = plan_speakers(config)
    sizes = {"train": config.num_train, "dev": config.num_dev, "test": config.num_test}
    grammar_rng = random.Random(f"sentences-{config.seed}")
    seen: set[str] = set()
    sentences: dict[str, list[str]] = {}
    for split in ("test", "dev", "train"):
        sentences[split] = []
        while len(sentences[split]) < sizes[split]:
            sentence = random_sentence(grammar_rng)
            if sentence not in seen:
                seen.add(sentence)
                sentences[split].append(sentence)
    plan = []
    chapter_id = 1000
    for split in SPLITS:
        split_speakers = [s for s in speakers if s.split == split]
        texts = iter(sentences[split])
        for speaker, count in zip(split_speakers, _split_evenly(sizes[split], len(split_speakers))):
            for start in range(0, count, config.utts_per_chapter):
                for index in range(min(config.utts_per_chapter, count - start)):
                    plan.append(PlannedUtterance(speaker, chapter_id, index, next(texts)))
                chapter_id += 1
    return plan


# ---------------------------------------------------------------------------------------------
# espeak-ng through ctypes.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4
_ESPEAK_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def espeak_synthesize(text: str, voice: str, rate: int, pitch: int, intonation: int,
                      noise_seed: int = 0) -> tuple[np.ndarray, int]:
    """Return the int16 samples of ``text`` spoken by the espeak-ng ``voice``, and their rate.

    espeak-ng keeps synthesis state in static variables that no API call resets, so an
    utterance's samples would depend on the utterances synthesised before it in the process.
    Each call therefore loads the library afresh and unloads it afterwards (about 7 ms), and
    replaces the clock-based seed of espeak-ng's noise generator (breathy variants use it) by
    ``noise_seed``: the result is a pure function of the arguments, whatever the time, the order
    or the worker process.
    """
    import _ctypes

    import espeakng_loader

    chunks: list[np.ndarray] = []

    def collect(wav, num_samples, events) -> int:
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    callback = _SYNTH_CALLBACK(collect)
    library = ctypes.CDLL(espeakng_loader.get_library_path())
    try:
        data_path = espeakng_loader.get_data_path().encode()
        sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with {sample_rate}")
        library.espeak_SetSynthCallback(callback)
        if library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"voice: espeak-ng has no voice {voice!r}")
        for parameter, value in ((_ESPEAK_RATE, rate), (_ESPEAK_PITCH, pitch),
                                 (_ESPEAK_RANGE, intonation)):
            library.espeak_SetParameter(parameter, value, 0)
        library.espeak_ng_SetRandSeed(ctypes.c_long(noise_seed))
        encoded = text.encode()
        status = library.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _ESPEAK_CHARS_UTF8,
                                      None, None)
        library.espeak_Synchronize()
    finally:
        library.espeak_Terminate()
        _ctypes.dlclose(library._handle)
    if status != 0 or not chunks:
        raise RuntimeError(f"espeak_Synth failed (status {status}) for {text!r} by {voice}")
    return np.concatenate(chunks), sample_rate


def synthesize_utterance(utterance: PlannedUtterance) -> np.ndarray:
    """Return the 16 kHz int16 waveform of ``utterance``."""
    import torch

    from recipes.data.features import resample

    speaker = utterance.speaker
    samples, sample_rate = espeak_synthesize(
        utterance.text.lower(), speaker.espeak_name, speaker.rate, speaker.pitch,
        speaker.intonation, noise_seed=zlib.crc32(utterance.utt_id.encode()),
    )
    waveform = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    waveform = resample(waveform, sample_rate, SAMPLE_RATE)
    return (waveform.clamp(-1.0, 32767 / 32768) * 32768.0).round().to(torch.int16).numpy()


def _write_utterance(root: Path, utterance: PlannedUtterance) -> bool:
    """Write the FLAC file of ``utterance`` unless it exists; return whether it was written."""
    import soundfile

    path = root / utterance.relative_dir() / f"{utterance.utt_id}.flac"
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = partial_path_for(path)
    soundfile.write(partial_path, synthesize_utterance(utterance), SAMPLE_RATE, format="FLAC",
                    subtype="PCM_16")
    os.replace(partial_path, path)  # a killed run never leaves a truncated file behind
    return True


def _write_text_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` atomically unless the file already holds exactly it."""
    if path.exists() and path.read_text() == content:
        return
    partial_path = partial_path_for(path)
    partial_path.write_text(content)
    os.replace(partial_path, path)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _write_utterances(root: Path, plan: Sequence[PlannedUtterance], workers: int) -> Iterator[bool]:
    """Yield, for every planned utterance, whether its FLAC file had to be written."""
    if workers == 1:
        yield from (_write_utterance(root, utterance) for utterance in plan)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(functools.partial(_write_utterance, root), plan, chunksize=16)


def _read_corpus_config(root: Path) -> dict | None:
    marker = root / "corpus.json"
    return json.loads(marker.read_text()) if marker.exists() else None


def generate_corpus(root: str | os.PathLike, config: SyntheticCorpusConfig, workers: int = 1,
                    progress: bool = True) -> dict[str, int]:
    """Write the synthetic corpus of ``config`` under ``root``; return counts of what was done.

    Existing FLAC files are kept (``"skipped"``), missing ones synthesised (``"written"``);
    ``corpus.json`` is written last and marks a complete corpus. A ``root`` that holds a corpus
    made with other settings is refused with a ValueError rather than mixed into.
    """
    from tqdm import tqdm

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    root = Path(root)
    settings = {"format_version": FORMAT_VERSION, **dataclasses.asdict(config)}
    existing = _read_corpus_config(root)
    if existing is not None and existing != settings:
        raise ValueError(
            f"root: {root} holds a synthetic corpus made with {existing}, not {settings}; "
            f"choose another directory or delete it"
        )
    root.mkdir(parents=True, exist_ok=True)
    plan = plan_corpus(config)
    counts = {"written": 0, "skipped": 0}
    with tqdm(total=len(plan), desc=f"synthesising {root}", unit="utt",
              disable=not progress) as bar:
        for written in _write_utterances(root, plan, workers):
            counts["written" if written else "skipped"] += 1
            bar.update()
    chapters: dict[Path, list[PlannedUtterance]] = {}
    for utterance in plan:
        chapters.setdefault(utterance.relative_dir(), []).append(utterance)
    for relative_dir, utterances in chapters.items():
        speaker, chapter = utterances[0].speaker.speaker_id, utterances[0].chapter_id
        lines = "".join(f"{u.utt_id} {u.text}\n" for u in utterances)
        _write_text_file(root / relative_dir / f"{speaker}-{chapter}.trans.txt", lines)
    speaker_lines = ["speaker\tsplit\tvoice\tvariant\tpitch\tintonation\trate\n"] + [
        f"{s.speaker_id}\t{s.split}\t{s.voice}\t{s.variant}\t{s.pitch}\t{s.intonation}\t{s.rate}\n"
        for s in plan_speakers(config)
    ]
    _write_text_file(root / "speakers.tsv", "".join(speaker_lines))
    _write_text_file(root / "corpus.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return counts


def ensure_synthetic_corpus(root: str | os.PathLike, workers: int = 1, progress: bool = True,
                            **config) -> Path:
    """Return ``root`` after making sure it holds the synthetic corpus of ``config``.

    ``config`` takes the fields of :class:`SyntheticCorpusConfig`. A complete corpus with the same
    settings is returned untouched (nothing is opened but ``corpus.json``); otherwise the corpus is
    generated or completed by :func:`generate_corpus`.
    """
    settings = SyntheticCorpusConfig(**config)
    root = Path(root)
    if _read_corpus_config(root) != {"format_version": FORMAT_VERSION, **dataclasses.asdict(settings)}:
        generate_corpus(root, settings, workers=workers, progress=progress)
    return root


class SyntheticCorpus(LibriSpeechCorpus):
    """The synthetic corpus as a :class:`LibriSpeechCorpus` whose ``prepare`` generates it first.

    Splits are ``train``, ``dev`` and ``test``; the keyword arguments are the fields of
    :class:`SyntheticCorpusConfig` plus ``workers`` (processes used for synthesis).
    """

    def __init__(self, root: str | os.PathLike, workers: int = 1, **config) -> None:
        super().__init__(root, train_splits=["train"], dev_splits=["dev"], test_splits=["test"])
        self.config = SyntheticCorpusConfig(**config)
        self.workers = workers

    def prepare(self, skip_bad_audio: bool = False) -> None:
        """Generate the corpus if it is missing or incomplete, then write its manifests."""
        ensure_synthetic_corpus(self.root, workers=self.workers,
                                **dataclasses.asdict(self.config))
        super().prepare(skip_bad_audio=skip_bad_audio)
