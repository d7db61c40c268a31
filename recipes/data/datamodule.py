"""The LightningDataModule that feeds every recipe: corpus → manifests → tokenizer → batches."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning
import torch

from recipes.data.audio import BadAudioError
from recipes.data.augment import SpecAugment
from recipes.data.dataset import ASRBatchDataset, load_features
from recipes.data.features import SAMPLE_RATE, GlobalCMVN, load_or_estimate_cmvn, num_frames
from recipes.data.manifest import Utterance, read_manifests
from recipes.data.noise import AdditiveNoise
from recipes.data.sampler import DurationBucketSampler
from recipes.data.text import normalize_text
from recipes.data.tokenizer import encode_transcripts

log = logging.getLogger(__name__)
PARTS = ("train", "dev", "test")


def frames_needed(tokens: Sequence[int]) -> int:
    """Return the fewest encoder frames on which every loss of the recipe can emit ``tokens``.

    CTC needs one frame per token plus a blank between repeated tokens (U + R); the
    one-symbol-per-frame transducer with a final blank needs U + 1. RNN-T, simplified CTC and
    SSNT need no more than the larger of the two.
    """
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:]))
    return max(len(tokens) + repeats, len(tokens) + 1)


class ASRDataModule(lightning.LightningDataModule):
    """Batches of normalised fbank features and token targets from a corpus.

    Construction (what the Hydra ``data/`` configs call)::

        corpus(root) -> an object with prepare(skip_bad_audio), cache_dir and either
                        manifests(part) -> [JSONL Path] (LibriSpeechCorpus, SyntheticCorpus,
                        ManifestCorpus) or utterances(part) -> [Utterance] (LhotseCorpus);
                        optionally split_names() -> [str] and split_manifests(name, skip_bad_audio)
                        -> [Path] for evaluating single splits by name
        tokenizer    -> a tokenizer (vocab_size, blank_id == 0, encode, decode), or a factory
                        tokenizer(texts, out_dir) -> tokenizer (the ``tokenizer/`` configs,
                        ``_partial_: true``), trained once on the training texts under cache_dir

    ``prepare_data`` (one process per node) makes the corpus, its manifests, the tokenizer and the
    global CMVN statistics (``<cache_dir>/cmvn_fbank<bins>.pt``, estimated on up to
    ``cmvn_max_utts`` training utterances); ``setup`` loads them on every process
    (``utterance_mean_norm`` also subtracts each utterance's own mean after them;
    ``cache_features`` keeps the features of every utterance read without speed perturbation in
    memory, for corpora that fit; ``noise``, an :class:`AdditiveNoise` or the mapping
    ``{dir, snr_db, prob}`` of one, mixes noise into training utterances only). Then
    ``tokenizer``, ``feature_dim``, ``train_dataloader`` (train), ``val_dataloader`` (dev) and
    ``test_dataloader`` (test) are available; ``vocab_size`` is ``tokenizer.vocab_size``.
    ``split_dataloader(name)`` evaluates any split the corpus knows by name (``known_splits()``:
    e.g. ``test-other`` of a LibriSpeech folder), never noised or augmented.

    A batch is a dict: ``features`` float32 (B, T_max, F) normalised, 100 frames/s;
    ``feature_lengths`` int64 (B,); ``targets`` int64 (B, U_max) zero-padded; ``target_lengths``
    int64 (B,); ``texts`` normalised references; ``ids``; ``durations`` float32 (B,) seconds.
    With ``skip_bad_audio`` a batch may be smaller than planned, even empty (B = 0).

    Training utterances are dropped (and counted in the log) when their frames after
    ``subsampling_factor``, at the fastest speed factor, are fewer than :func:`frames_needed`, or
    when longer than ``max_utt_duration``. Dev and test keep every utterance so that WER is over
    the whole set; the ones no loss could score are counted in a warning.

    Batches hold at most ``max_duration`` seconds of audio (:class:`DurationBucketSampler`).
    Training batches are re-formed every epoch from ``seed`` and the epoch alone, so their number
    changes a little between epochs: a trainer that fits must reload the training loader every
    epoch (``reload_dataloaders_every_n_epochs=1``, checked); the loaders themselves are built
    once and returned again, so persistent workers and their feature caches live on. Exact
    resume: Lightning stores :meth:`state_dict` in checkpoints (epoch and batches the training
    loop consumed, not those the workers prefetched) and the sampler skips them after
    :meth:`load_state_dict`.

    Distributed (the trainer must keep our samplers: ``use_distributed_sampler=False``): every
    rank trains on a disjoint share of each epoch's batches, all shares of one length; dev and
    test batches are shared out without padding (shares may differ by one batch), so every
    utterance is evaluated exactly once over all ranks and summed metrics are exact.
    """

    def __init__(self, root: str | os.PathLike, corpus: Callable, tokenizer,
                 max_duration: float = 60.0, eval_max_duration: float | None = None,
                 num_buckets: int = 10, num_workers: int = 1, seed: int = 0,
                 subsampling_factor: int = 4, num_mel_bins: int = 80,
                 speed_factors: Sequence[float] = (1.0,), spec_augment: SpecAugment | None = None,
                 max_utt_duration: float | None = None, skip_bad_audio: bool = False,
                 cmvn_max_utts: int = 2000, utterance_mean_norm: bool = False,
                 cache_features: bool = False, noise: AdditiveNoise | Mapping | None = None) -> None:
        super().__init__()
        if not isinstance(subsampling_factor, int) or subsampling_factor < 1:
            raise ValueError(f"subsampling_factor must be an int >= 1, got {subsampling_factor!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if not max_duration > 0:
            raise ValueError(f"max_duration must be > 0, got {max_duration}")
        if not speed_factors or any(f <= 0 for f in speed_factors):
            raise ValueError(f"speed_factors must be positive numbers, got {speed_factors!r}")
        if not isinstance(cmvn_max_utts, int) or cmvn_max_utts < 1:
            raise ValueError(f"cmvn_max_utts must be an int >= 1, got {cmvn_max_utts!r}")
        self.corpus = corpus(root) if callable(corpus) else corpus
        self._tokenizer_spec = tokenizer
        self.max_duration = float(max_duration)
        self.eval_max_duration = float(eval_max_duration or max_duration)
        self.num_buckets, self.num_workers, self.seed = num_buckets, num_workers, seed
        self.subsampling_factor, self.feature_dim = subsampling_factor, num_mel_bins
        self.speed_factors, self.spec_augment = tuple(speed_factors), spec_augment
        self.max_utt_duration, self.skip_bad_audio = max_utt_duration, skip_bad_audio
        self.cmvn_max_utts = cmvn_max_utts
        self.utterance_mean_norm = bool(utterance_mean_norm)
        self.cache_features = bool(cache_features)
        self.noise = AdditiveNoise.from_config(noise)
        self.tokenizer = None
        self.cmvn: GlobalCMVN | None = None
        self.datasets: dict[str, ASRBatchDataset] = {}
        self._train_sampler: DurationBucketSampler | None = None
        self._loaders: dict[str, torch.utils.data.DataLoader] = {}
        self._resume_state: dict | None = None

    # -- preparation ---------------------------------------------------------------------------
    @property
    def cmvn_path(self) -> Path:
        return Path(self.corpus.cache_dir) / f"cmvn_fbank{self.feature_dim}.pt"

    def _utterances(self, part: str) -> list[Utterance]:
        """The corpus's ``utterances(part)`` if it has that method, else its manifests' records."""
        if hasattr(self.corpus, "utterances"):
            return self.corpus.utterances(part)
        return read_manifests(self.corpus.manifests(part))

    def _train_utterances(self) -> list[Utterance]:
        return self._utterances("train")

    def _load_tokenizer(self, train: Sequence[Utterance]):
        if hasattr(self._tokenizer_spec, "encode"):
            return self._tokenizer_spec
        texts = [normalize_text(u.text) for u in train]
        return self._tokenizer_spec(texts, self.corpus.cache_dir)

    def _cmvn_features(self, train: Sequence[Utterance]):
        chosen = sorted(random.Random(self.seed).sample(range(len(train)),
                                                        min(self.cmvn_max_utts, len(train))))
        for index in chosen:
            try:
                yield load_features(train[index], self.feature_dim)
            except BadAudioError:
                if not self.skip_bad_audio:
                    raise
                log.warning("CMVN: skipping unreadable %s", train[index].audio_filepath)

    def prepare_data(self) -> None:
        """Make the corpus, manifests, tokenizer and CMVN statistics where they are missing."""
        self.corpus.prepare(skip_bad_audio=self.skip_bad_audio)
        train = self._train_utterances()
        self._load_tokenizer(train)
        load_or_estimate_cmvn(self.cmvn_path, lambda: self._cmvn_features(train))

    def training_texts(self) -> list[str]:
        """The normalised transcripts of the training split(s), one per utterance."""
        return [normalize_text(u.text) for u in self._train_utterances()]

    def word_lm(self, order: int = 3) -> Path:
        """Return the ARPA file of an ``order``-gram Kneser-Ney word LM of the training transcripts.

        It is estimated on first use (:func:`recipes.decoding.kneser_ney.build_word_lm`) into
        ``<cache_dir>/lm/<training splits>-<hash of their texts>/<order>gram.arpa`` and reused
        afterwards; it does not depend on the tokenizer.
        """
        from recipes.decoding.kneser_ney import build_word_lm, texts_key

        texts = self.training_texts()
        names = [Path(p).name.removesuffix(".jsonl") for p in self.corpus.manifests("train")]
        return build_word_lm(texts, Path(self.corpus.cache_dir) / "lm" / texts_key(names, texts), order)

    # -- datasets ------------------------------------------------------------------------------
    def _setup_shared(self) -> list[Utterance]:
        """Load the tokenizer and the CMVN statistics if not yet loaded; return the training utterances."""
        train = self._train_utterances()
        if self.tokenizer is None:
            self.tokenizer = self._load_tokenizer(train)
        if self.cmvn is None:
            self.cmvn = load_or_estimate_cmvn(self.cmvn_path, lambda: self._cmvn_features(train))
        return train

    def setup(self, stage: str | None = None) -> None:
        """Load tokenizer, statistics and the datasets ``stage`` needs (all for ``None``)."""
        train = self._setup_shared()
        parts = {"fit": ("train", "dev"), "validate": ("dev",), "test": ("test",),
                 "predict": ("test",)}.get(stage, PARTS)
        for part in parts:
            if part not in self.datasets:
                utterances = train if part == "train" else self._utterances(part)
                self.datasets[part] = self._dataset(part, utterances)

    # -- evaluation of any split by name -------------------------------------------------------
    def known_splits(self) -> list[str]:
        """Return every name :meth:`split_dataloader` accepts: ``dev`` and ``test`` (the configured
        parts), then the corpus's own split names (``corpus.split_names()``, sorted)."""
        names = ["dev", "test"]
        split_names = getattr(self.corpus, "split_names", None)
        for name in split_names() if split_names is not None else ():
            if name not in names:
                names.append(name)
        return names

    def split_dataloader(self, name: str):
        """Return an evaluation loader of the split ``name`` (one of :meth:`known_splits`).

        ``dev`` and ``test`` are the configured parts (:meth:`val_dataloader`,
        :meth:`test_dataloader`). Any other name is a split of the corpus (a LibriSpeech folder
        such as ``test-other``, a manifest's file stem, ...): it gets its own dataset, built like
        the test set's (every utterance kept, the same features and CMVN, no speed perturbation,
        no SpecAugment), even when the name is that of a training split. An unknown name raises a
        ValueError naming it and the known names. Call :meth:`prepare_data` first.
        """
        if name in ("dev", "test"):
            self.setup("validate" if name == "dev" else "test")
            return self.val_dataloader() if name == "dev" else self.test_dataloader()
        known = self.known_splits()
        if name not in known:
            raise ValueError(f"split {name!r} is not a split of this data module; known splits: {', '.join(known)}")
        key = f"split/{name}"
        if key not in self.datasets:
            self._setup_shared()
            manifests = self.corpus.split_manifests(name, skip_bad_audio=self.skip_bad_audio)
            self.datasets[key] = self._dataset(name, read_manifests(manifests), training=False)
        return self._eval_loader(key)

    def _dataset(self, part: str, utterances: Sequence[Utterance], training: bool | None = None) -> ASRBatchDataset:
        """The dataset of ``utterances``; a training one (filtered, augmented) when ``training``,
        which defaults to ``part == "train"``."""
        training = part == "train" if training is None else training
        texts = [normalize_text(u.text) for u in utterances]
        targets = encode_transcripts(self.tokenizer, utterances, texts)
        fastest = max(self.speed_factors) if training else 1.0
        kept, too_short, too_long = [], 0, 0
        for index, (utterance, tokens) in enumerate(zip(utterances, targets)):
            frames = num_frames(int(utterance.duration * SAMPLE_RATE / fastest))
            if frames // self.subsampling_factor < frames_needed(tokens):
                too_short += 1
                if training:
                    continue
            if training and self.max_utt_duration and utterance.duration > self.max_utt_duration:
                too_long += 1
                continue
            kept.append(index)
        if training and (too_short or too_long):
            log.warning("train: dropped %d utterances whose frames cannot carry their tokens and "
                        "%d longer than max_utt_duration, of %d", too_short, too_long,
                        len(utterances))
        elif too_short:
            log.warning("%s: %d of %d utterances have too few frames for their tokens",
                        part, too_short, len(utterances))
        log.info("%s: %d utterances, %.2f h", part, len(kept),
                 sum(utterances[i].duration for i in kept) / 3600)
        if training and self.noise is not None:
            log.info("train: %r", self.noise)
        return ASRBatchDataset(
            [utterances[i] for i in kept], [texts[i] for i in kept], [targets[i] for i in kept],
            self.cmvn, num_mel_bins=self.feature_dim,
            speed_factors=self.speed_factors if training else (1.0,),
            spec_augment=self.spec_augment if training else None,
            seed=self.seed, skip_bad_audio=self.skip_bad_audio, utterance_mean_norm=self.utterance_mean_norm,
            cache_features=self.cache_features, noise=self.noise if training else None,
        )

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, dataset: ASRBatchDataset, sampler: DurationBucketSampler):
        return torch.utils.data.DataLoader(
            dataset, sampler=sampler, batch_size=None, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def _durations(self, part: str) -> list[float]:
        if part not in self.datasets:
            raise ValueError(f"the {part} set is not set up: call setup() first")
        return [u.duration for u in self.datasets[part].utterances]

    def _cached_loader(self, part: str, make_sampler: Callable[[], DurationBucketSampler]):
        """The loader of ``part``, built on first use and again only if the process group changed."""
        world = _process_group()
        loader = self._loaders.get(part)
        if loader is None or (loader.sampler.num_replicas, loader.sampler.rank) != world:
            sampler = make_sampler()  # first: it names a part that is not set up
            loader = self._loader(self.datasets[part], sampler)
            self._loaders[part] = loader
        return loader

    def train_dataloader(self):
        """The training loader, its sampler on the trainer's current epoch (see the class doc)."""
        trainer = self.trainer
        if trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                f"reload_dataloaders_every_n_epochs={trainer.reload_dataloaders_every_n_epochs}: "
                "ASRDataModule re-forms its training batches every epoch, so the trainer must read the "
                "number of batches every epoch: set Trainer(reload_dataloaders_every_n_epochs=1)")
        loader = self._cached_loader("train", lambda: DurationBucketSampler(
            self._durations("train"), self.max_duration, num_buckets=self.num_buckets,
            shuffle=True, seed=self.seed, equal_shares=True))
        self._train_sampler = loader.sampler
        if self._resume_state is not None:
            self._train_sampler.load_state_dict(self._resume_state)
            self._resume_state = None
        if trainer is not None:
            # Lightning asks for the loader's length before it selects the epoch of the sampler
            self._train_sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        return loader

    def _eval_loader(self, part: str):
        return self._cached_loader(part, lambda: DurationBucketSampler(
            self._durations(part), self.eval_max_duration, num_buckets=self.num_buckets,
            shuffle=False, equal_shares=False))

    def val_dataloader(self):
        return self._eval_loader("dev")

    def test_dataloader(self):
        return self._eval_loader("test")

    # -- checkpointed state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Return the training sampler's position: ``{"epoch", "batches_consumed"}``.

        Under a trainer the consumed count is the training loop's processed batches of the
        current epoch, which excludes batches that loader workers fetched ahead. An epoch the
        trainer has finished (``num_training_batches`` processed, fewer than the sampler's with
        ``limit_train_batches``) is saved as the start of the next one: Lightning names the
        finished epoch or the next one depending on the hook that saves, and a data loader with
        workers starts iterating the sampler before Lightning selects the epoch.
        """
        if self._train_sampler is None:
            return {}
        if self.trainer is None:
            return self._train_sampler.state_dict()
        state = self._train_sampler.state_dict(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if state["batches_consumed"] >= self.trainer.num_training_batches:
            state = {"epoch": state["epoch"] + 1, "batches_consumed": 0}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume the training sampler at ``state_dict`` (applied when its loader is built)."""
        if not state_dict:
            return
        if self._train_sampler is not None:
            self._train_sampler.load_state_dict(state_dict)
        else:
            self._resume_state = dict(state_dict)


def _process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, else ``(1, 0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0
