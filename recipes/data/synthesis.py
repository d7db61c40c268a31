"""The embedded speech corpus: sentences from a small grammar, spoken by espeak-ng voices.

``python data/prepare_synthetic.py`` (or :func:`ensure_synthetic_corpus`) writes the corpus in the
LibriSpeech layout, so that the reader of a real LibriSpeech copy reads it unchanged::

    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   16 kHz, 16-bit FLAC
    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt    "<utt-id> <TEXT>" lines
    <root>/speakers.tsv                                                 who every speaker is
    <root>/manifests/<split>.jsonl                                      JSONL manifests
    <root>/corpus-settings.json        the generator settings, written before any audio
    <root>/corpus.json                 settings + size and SHA-256 of every file above, written last

A speaker is an espeak-ng voice (accent) x variant (timbre) x pitch x rate. The clear-voiced
voice x variant combinations are shuffled by the seed: the first ``num_test_speakers`` are the
test speakers, the next ``num_dev_speakers`` the dev speakers, and training never hears either
group. Train also hears a few klatt-synthesised variants that test never uses. Every sentence
(word sequence) is unique across the whole corpus, so dev and test sentences are never seen in
training; their words are.

Everything is planned from the seed before any audio is made, and every utterance is synthesised
by a freshly loaded espeak-ng, so the corpus is the same on every machine, for any number of
worker processes and after an interrupted run is resumed (files that exist are skipped).

Integrity: ``corpus-settings.json`` claims the folder for one set of settings before any audio
is written, so a folder never mixes two corpora (another preparation is refused with
:class:`CorpusSettingsError`, even after an interrupted run); ``corpus.json`` marks a finished
corpus and lists every file's size and SHA-256, which :func:`ensure_synthetic_corpus` checks
(sizes by default, digests on request) before the corpus is used.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from recipes.data.audio import audio_duration
from recipes.data.librispeech import LibriSpeechCorpus
from recipes.data.manifest import Utterance, drop_empty_transcripts, write_manifest
from recipes.utils.files import create_exclusive, sha256_file, write_text_atomic
from recipes.utils.files import partial_path as partial_path_for

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# Writing a corpus folder, its settings stamp and its checksum list.
SETTINGS_STAMP = "corpus-settings.json"  # claims the folder for one set of settings, before any audio
RECORD = "corpus.json"  # settings + checksum list, written last: marks a finished corpus
VERIFY_LEVELS = ("size", "sha256")
_SHOWN = 5  # problems spelled out in one error message


class CorpusSettingsError(ValueError):
    """A corpus folder holds, or is being filled with, a corpus of other settings."""


class CorpusIntegrityError(RuntimeError):
    """Files of a finished corpus do not match its checksum list.

    ``problems`` lists ``(path relative to the corpus root, what is wrong)`` for every such file.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = list(problems)


def corpus_settings(config: SyntheticCorpusConfig) -> dict:
    """Return the settings recorded for ``config``: its fields and the format version."""
    return {"format_version": FORMAT_VERSION, **dataclasses.asdict(config)}


def _format_settings(settings: dict) -> str:
    return "{" + ", ".join(f"{key}={settings[key]!r}" for key in sorted(settings)) + "}"


def _settings_error(root: Path, holds: str, existing: dict, requested: dict) -> CorpusSettingsError:
    differences = "; ".join(
        f"{key}: {existing.get(key)!r} there, {requested.get(key)!r} requested"
        for key in sorted(set(existing) | set(requested)) if existing.get(key) != requested.get(key)
    )
    return CorpusSettingsError(
        f"root: {root} {holds} with settings {_format_settings(existing)}, not the requested "
        f"{_format_settings(requested)} ({differences}). Prepare into another folder, request the "
        f"same settings, or delete {root} to start over"
    )


def _json_text(value: dict) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def _read_json(path: Path, attempts: int = 1) -> dict:
    """Return the JSON object in ``path``, reading again for a while if it does not parse yet."""
    for attempt in range(attempts):
        try:
            value = json.loads(path.read_text())
            if isinstance(value, dict):
                return value
            error = f"holds a {type(value).__name__}, not an object"
        except json.JSONDecodeError as decode_error:
            error = str(decode_error)
        if attempt + 1 < attempts:
            time.sleep(0.1)  # a stamp made without hard links is written after it appears
    raise CorpusIntegrityError(f"{path} is not a JSON object ({error}); delete it and prepare the "
                               f"corpus again", [(path.name, "not a JSON object")])


def read_corpus_record(root: str | os.PathLike) -> dict | None:
    """Return ``{"settings": ..., "files": ...}`` of the finished corpus under ``root``, or None.

    ``files`` maps each file's path relative to ``root`` to ``{"bytes", "sha256"}``; it is None
    for a corpus whose ``corpus.json`` holds only its settings (written by earlier versions).
    """
    path = Path(root) / RECORD
    if not path.exists():
        return None
    record = _read_json(path)
    if "settings" in record and "files" in record:
        return record
    return {"settings": record, "files": None}


def _claim_folder(root: Path, settings: dict) -> None:
    """Record ``settings`` as those of ``root`` for good, or raise if it belongs to other ones.

    The stamp is created atomically and exclusively before any audio is written, so of two
    preparations with different settings started at once exactly one proceeds, and a killed
    preparation can only be resumed with its own settings.
    """
    stamp = root / SETTINGS_STAMP
    if create_exclusive(stamp, _json_text(settings)):
        return
    existing = _read_json(stamp, attempts=50)
    if existing != settings:
        raise _settings_error(
            root, f"was claimed by a preparation (finished, running or interrupted; {stamp})",
            existing, settings)


def _file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _flac_name(utterance: PlannedUtterance) -> str:
    return (utterance.relative_dir() / f"{utterance.utt_id}.flac").as_posix()


def _write_utterance(root: Path, utterance: PlannedUtterance,
                     expected: dict | None = None) -> tuple[str, dict]:
    """Make sure the FLAC file of ``utterance`` is in place; return what was done and its entry.

    A missing file is synthesised (``"written"``). An existing one is kept (``"skipped"``) unless
    ``expected``, its entry in an earlier checksum list, differs from it: then it is synthesised
    again (``"repaired"``). The entry is ``{"bytes", "sha256"}`` of the file as it now stands.
    """
    import soundfile

    path = root / _flac_name(utterance)
    status = "written"
    if path.exists():
        entry = _file_entry(path)
        if expected is None or entry == expected:
            return "skipped", entry
        status = "repaired"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = partial_path_for(path)
    soundfile.write(partial_path, synthesize_utterance(utterance), SAMPLE_RATE, format="FLAC",
                    subtype="PCM_16")
    entry = _file_entry(partial_path)
    os.replace(partial_path, path)  # a killed run never leaves a truncated file behind
    return status, entry


def _write_planned(root: Path, item: tuple[PlannedUtterance, dict | None]) -> tuple[str, dict]:
    return _write_utterance(root, *item)


def _write_text_file(path: Path, content: str) -> dict:
    """Write ``content`` to ``path`` atomically unless the file already holds exactly it; return
    its checksum entry."""
    data = content.encode()
    if not (path.exists() and path.read_bytes() == data):
        if path.exists():
            log.warning("rewriting %s: its content differed from the corpus plan", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, content)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _write_utterances(root: Path, items: Sequence[tuple[PlannedUtterance, dict | None]],
                      workers: int) -> Iterator[tuple[str, dict]]:
    """Yield, for every planned utterance in order, :func:`_write_utterance`'s result."""
    if workers == 1:
        yield from (_write_planned(root, item) for item in items)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(functools.partial(_write_planned, root), items, chunksize=16)


def _write_manifests(root: Path, plan: Sequence[PlannedUtterance]) -> dict[str, dict]:
    """Write ``<root>/manifests/<split>.jsonl`` of every split; return their checksum entries."""
    corpus = LibriSpeechCorpus(root, train_splits=["train"], dev_splits=["dev"],
                               test_splits=["test"])
    entries = {}
    for split in SPLITS:
        utterances = sorted(
            (Utterance(u.utt_id, root / _flac_name(u), audio_duration(root / _flac_name(u)), u.text)
             for u in plan if u.speaker.split == split), key=lambda u: u.id)
        path = write_manifest(corpus.manifest_path(split),
                              drop_empty_transcripts(utterances, f"{root / split}"))
        entries[path.relative_to(root).as_posix()] = _file_entry(path)
    return entries


def generate_corpus(root: str | os.PathLike, config: SyntheticCorpusConfig, workers: int = 1,
                    progress: bool = True) -> dict[str, int]:
    """Write the synthetic corpus of ``config`` under ``root``; return counts of what was done.

    First ``corpus-settings.json`` claims ``root`` for these settings (a folder claimed by other
    settings raises :class:`CorpusSettingsError`, also when its preparation was interrupted).
    Missing FLAC files are synthesised (``"written"``), existing ones kept (``"skipped"``), or
    synthesised again when an earlier checksum list of the folder says they changed
    (``"repaired"``). Transcripts, ``speakers.tsv`` and the JSONL manifests are (re)written
    where they differ from the plan; ``corpus.json`` (settings and the size and SHA-256 of every
    file) is written last and marks a finished corpus. Runs with the same settings may share
    ``root`` at once: every file is deterministic and replaced atomically.
    """
    from tqdm import tqdm

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    root = Path(root)
    settings = corpus_settings(config)
    record = read_corpus_record(root)
    if record is not None and record["settings"] != settings:
        raise _settings_error(root, f"holds a finished synthetic corpus ({root / RECORD})",
                              record["settings"], settings)
    root.mkdir(parents=True, exist_ok=True)
    _claim_folder(root, settings)
    known = (record or {}).get("files") or {}
    plan = plan_corpus(config)
    items = [(utterance, known.get(_flac_name(utterance))) for utterance in plan]
    counts = {"written": 0, "skipped": 0, "repaired": 0}
    files: dict[str, dict] = {}
    with tqdm(total=len(plan), desc=f"synthesising {root}", unit="utt",
              disable=not progress) as bar:
        for utterance, (status, entry) in zip(plan, _write_utterances(root, items, workers)):
            counts[status] += 1
            files[_flac_name(utterance)] = entry
            if status == "repaired":
                log.warning("re-synthesised %s: it did not match %s", root / _flac_name(utterance),
                            root / RECORD)
            bar.update()
    chapters: dict[Path, list[PlannedUtterance]] = {}
    for utterance in plan:
        chapters.setdefault(utterance.relative_dir(), []).append(utterance)
    for relative_dir, utterances in chapters.items():
        speaker, chapter = utterances[0].speaker.speaker_id, utterances[0].chapter_id
        name = (relative_dir / f"{speaker}-{chapter}.trans.txt").as_posix()
        files[name] = _write_text_file(root / name,
                                       "".join(f"{u.utt_id} {u.text}\n" for u in utterances))
    speaker_lines = ["speaker\tsplit\tvoice\tvariant\tpitch\tintonation\trate\n"] + [
        f"{s.speaker_id}\t{s.split}\t{s.voice}\t{s.variant}\t{s.pitch}\t{s.intonation}\t{s.rate}\n"
        for s in plan_speakers(config)
    ]
    files["speakers.tsv"] = _write_text_file(root / "speakers.tsv", "".join(speaker_lines))
    files.update(_write_manifests(root, plan))
    write_text_atomic(root / RECORD, _json_text({"settings": settings, "files": files}))
    return counts


# ---------------------------------------------------------------------------------------------
# Opening a finished corpus.
def _check_files(root: Path, files: dict[str, dict], level: str) -> list[tuple[str, str]]:
    if level not in VERIFY_LEVELS:
        raise ValueError(f"verify must be one of {VERIFY_LEVELS}, got {level!r}")
    problems = []
    for name, expected in sorted(files.items()):
        path = root / name
        if not path.is_file():
            problems.append((name, "is missing"))
            continue
        size = path.stat().st_size
        if size != expected["bytes"]:
            problems.append((name, f"has {size} bytes, the checksum list says {expected['bytes']} "
                                   f"(truncated or changed)"))
        elif level == "sha256" and sha256_file(path) != expected["sha256"]:
            problems.append((name, "has changed: its SHA-256 differs from the checksum list"))
    for split in SPLITS:  # audio or transcripts that another preparation would have mixed in
        for path in sorted((root / split).rglob("*")) if (root / split).is_dir() else ():
            name = path.relative_to(root).as_posix()
            if path.is_file() and not path.name.startswith(".") and name not in files:
                problems.append((name, "is not in the checksum list"))
    return problems


def verify_corpus(root: str | os.PathLike, level: str = "size") -> list[tuple[str, str]]:
    """Return ``(path, what is wrong)`` for every file of the finished corpus under ``root`` that
    does not match its checksum list; an empty list when all match.

    ``level="size"`` compares sizes (one ``stat`` per file: milliseconds for the embedded
    corpus); ``"sha256"`` also compares content digests (reads every byte). Files in the split
    folders that the list does not name are reported too; hidden files (the per-process
    temporary files of an interrupted run) are ignored.
    """
    root = Path(root)
    record = read_corpus_record(root)
    if record is None:
        raise ValueError(f"root: {root} holds no finished synthetic corpus ({RECORD} is missing)")
    if record["files"] is None:
        return [(RECORD, "has no checksum list (an earlier format): prepare the corpus again")]
    return _check_files(root, record["files"], level)


def _integrity_error(root: Path, problems: Sequence[tuple[str, str]],
                     level: str) -> CorpusIntegrityError:
    shown = "; ".join(f"{name} {problem}" for name, problem in problems[:_SHOWN])
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return CorpusIntegrityError(
        f"root: {len(problems)} file(s) of the synthetic corpus in {root} do not match its "
        f"checksum list {root / RECORD} (verify={level}): {shown}{more}. Preparing again with "
        f"repair (data/prepare_synthetic.py --repair, or +data.corpus.repair=true) re-synthesises "
        f"missing and damaged files; files not in the list must be removed by hand", problems)


def ensure_synthetic_corpus(root: str | os.PathLike, workers: int = 1, progress: bool = True,
                            verify: str = "size", repair: bool = False, **config) -> Path:
    """Return ``root`` after making sure it holds the intact synthetic corpus of ``config``.

    ``config`` takes the fields of :class:`SyntheticCorpusConfig`. A finished corpus with the
    same settings is checked against its checksum list at the ``verify`` level (``"size"`` or
    ``"sha256"``, see :func:`verify_corpus`): a mismatch raises :class:`CorpusIntegrityError`
    naming the files, or, with ``repair``, has :func:`generate_corpus` re-synthesise them (and
    raises if that does not make the corpus match). A finished corpus of other settings raises
    :class:`CorpusSettingsError`. A missing or unfinished corpus is generated or completed.
    """
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"verify must be one of {VERIFY_LEVELS}, got {verify!r}")
    config = SyntheticCorpusConfig(**config)
    root = Path(root)
    record = read_corpus_record(root)
    if record is None or record["files"] is None:
        generate_corpus(root, config, workers=workers, progress=progress)
        return root
    if record["settings"] != corpus_settings(config):
        raise _settings_error(root, f"holds a finished synthetic corpus ({root / RECORD})",
                              record["settings"], corpus_settings(config))
    problems = _check_files(root, record["files"], verify)
    if problems and repair:
        log.warning("%s", _integrity_error(root, problems, verify))
        generate_corpus(root, config, workers=workers, progress=progress)
        problems = verify_corpus(root, verify)
    if problems:
        raise _integrity_error(root, problems, verify)
    return root


class SyntheticCorpus(LibriSpeechCorpus):
    """The synthetic corpus as a :class:`LibriSpeechCorpus` whose ``prepare`` generates it first.

    Splits are ``train``, ``dev`` and ``test``; the keyword arguments are the fields of
    :class:`SyntheticCorpusConfig` plus ``workers`` (processes used for synthesis), ``verify``
    (how a finished corpus is checked when opened: ``"size"`` or ``"sha256"``) and ``repair``
    (re-synthesise files that fail the check instead of raising); ``progress`` shows a progress
    bar while synthesising.
    """

    def __init__(self, root: str | os.PathLike, workers: int = 1, verify: str = "size",
                 repair: bool = False, progress: bool = True, **config) -> None:
        super().__init__(root, train_splits=["train"], dev_splits=["dev"], test_splits=["test"])
        if verify not in VERIFY_LEVELS:
            raise ValueError(f"verify must be one of {VERIFY_LEVELS}, got {verify!r}")
        self.config = SyntheticCorpusConfig(**config)
        self.workers, self.verify, self.repair = workers, verify, bool(repair)
        self.progress = bool(progress)

    def split_names(self) -> list[str]:
        """Return the corpus's splits, ``dev``, ``test`` and ``train`` (other folders under
        ``root`` are not part of it)."""
        return sorted(SPLITS)

    def prepare(self, skip_bad_audio: bool = False) -> None:
        """Generate the corpus if it is missing or unfinished, check it against its checksum list
        (see :func:`ensure_synthetic_corpus`), then make sure its manifests exist."""
        ensure_synthetic_corpus(self.root, workers=self.workers, progress=self.progress,
                                verify=self.verify, repair=self.repair,
                                **dataclasses.asdict(self.config))
        super().prepare(skip_bad_audio=skip_bad_audio)
