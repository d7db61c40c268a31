"""The data pipeline at LibriSpeech-960 scale, simulated: sampler build time and memory, resume, and
loader throughput in seconds of audio per second for 1..N workers.

No 960-hour corpus fits on a laptop, so the simulation keeps what the pipeline's cost depends on:
the number of utterances (281,241, as LibriSpeech's train-clean-100 + train-clean-360 +
train-other-500), their total (960.9 h) and a duration distribution shaped like LibriSpeech's
(most utterances 12-17 s, a tail down to 1 s and up to 35 s; drawn with a fixed seed, then scaled
to the total). The audio is shared: a few dozen FLAC files of synthetic speech-band noise cover the
duration range and every manifest row points to the file closest to its duration, so features are
really decoded and computed (soundfile + 80-bin Kaldi fbank + CMVN, as in training) without 960 h
of disk.

    OMP_NUM_THREADS=1 python benchmarks/bench_data_scale.py --workers 1 2 4 8 --batches 40

Prints one table per measurement and, given a training step time (``--step-time``, seconds per
optimizer step of the model, e.g. perf/step_time_s of a GPU run), how many GPUs one loader
process keeps fed at ``--max-duration`` seconds of audio per batch.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.dataset import ASRBatchDataset  # noqa: E402
from recipes.data.features import SAMPLE_RATE, GlobalCMVN  # noqa: E402
from recipes.data.manifest import Utterance  # noqa: E402
from recipes.data.sampler import DurationBucketSampler  # noqa: E402

NUM_UTTERANCES = 281_241
TOTAL_HOURS = 960.9


def librispeech_like_durations(count: int = NUM_UTTERANCES, total_hours: float = TOTAL_HOURS,
                               seed: int = 0) -> np.ndarray:
    """`count` durations in seconds, total `total_hours`: 70% around 14.5 s (10-17 s), 28% spread over
    0.8-12 s (the ends of chapters), 2% over 17-35 s."""
    rng = np.random.default_rng(seed)
    bulk = rng.normal(14.5, 1.2, size=int(count * 0.70)).clip(10.0, 17.0)
    short = rng.uniform(0.8, 12.0, size=int(count * 0.28))
    long = rng.uniform(17.0, 35.0, size=count - bulk.size - short.size)
    durations = rng.permutation(np.concatenate([bulk, short, long]))
    return (durations * (total_hours * 3600 / durations.sum())).clip(0.5, 35.2)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_sampler(durations: np.ndarray, max_duration: float, num_buckets: int, repeats: int) -> dict:
    """Build time (median of `repeats`), memory growth, batches, padding, and exact resume at mid-epoch."""
    gc.collect()
    before = rss_mb()
    times, sampler = [], None
    for _ in range(repeats):
        del sampler
        gc.collect()
        start = time.perf_counter()
        sampler = DurationBucketSampler(durations.tolist(), max_duration, num_buckets=num_buckets, shuffle=True,
                                        seed=0, equal_shares=True, num_replicas=1, rank=0)
        times.append(time.perf_counter() - start)
    grown = rss_mb() - before
    start = time.perf_counter()
    batches = [b for _, b in sampler]
    iterate_s = time.perf_counter() - start
    padding = statistics.fmean(1 - sum(durations[i] for i in b) / (len(b) * max(durations[i] for i in b))
                               for b in batches[:2000])
    half = len(batches) // 2
    state = {"epoch": 0, "batches_consumed": half}
    start = time.perf_counter()
    resumed = DurationBucketSampler(durations.tolist(), max_duration, num_buckets=num_buckets, shuffle=True,
                                    seed=0, equal_shares=True, num_replicas=1, rank=0)
    resumed.load_state_dict(state)
    remaining = [b for _, b in resumed]
    resume_s = time.perf_counter() - start
    return {"max_duration": max_duration, "build_s": statistics.median(times), "rss_growth_mb": grown,
            "batches": len(batches), "iterate_s": iterate_s, "padding_fraction": padding,
            "resume_s": resume_s, "resume_exact": remaining == batches[half:]}


def make_shared_audio(folder: Path, seconds: list[float], seed: int = 0) -> list[tuple[float, Path]]:
    """One FLAC per duration: band-limited noise with a syllable-rate envelope (16 kHz)."""
    rng = np.random.default_rng(seed)
    files = []
    for k, duration in enumerate(seconds):
        n = int(duration * SAMPLE_RATE)
        noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * np.arange(n) / SAMPLE_RATE) ** 2
        path = folder / f"shared_{k:03d}.flac"
        soundfile.write(path, (0.1 * noise * envelope).astype(np.float32), SAMPLE_RATE)
        files.append((duration, path))
    return files


def bench_loader(durations: np.ndarray, workers: list[int], num_batches: int, max_duration: float,
                 folder: Path) -> list[dict]:
    """Seconds of audio per second through DataLoader(ASRBatchDataset) for each worker count."""
    grid = sorted({round(float(x), 1) for x in np.linspace(1.0, 35.0, 35)})
    files = make_shared_audio(folder, grid)
    keys = np.array([d for d, _ in files])
    nearest = np.abs(durations[:, None] - keys[None, :]).argmin(axis=1) if durations.size < 50_000 else None
    if nearest is None:  # avoid a (281k x 35) matrix: search sorted keys
        nearest = np.clip(np.searchsorted(keys, durations), 0, len(keys) - 1)
    utterances = [Utterance(id=f"u{i}", audio_filepath=files[j][1], duration=float(files[j][0]), text="a")
                  for i, j in enumerate(nearest)]
    dataset = ASRBatchDataset(utterances, ["a"] * len(utterances), [[1]] * len(utterances),
                              GlobalCMVN(torch.zeros(80), torch.ones(80)))
    sampler = DurationBucketSampler([u.duration for u in utterances], max_duration, num_buckets=30, shuffle=True,
                                    seed=0, equal_shares=True, num_replicas=1, rank=0)
    rows = []
    for count in workers:
        loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=count,
                                             persistent_workers=False, prefetch_factor=2 if count else None)
        iterator = iter(loader)
        for _ in range(max(2, count)):  # warm-up: worker start and first batches are excluded
            next(iterator)
        audio, start = 0.0, time.perf_counter()
        for _ in range(num_batches):
            audio += float(next(iterator)["durations"].sum())
        elapsed = time.perf_counter() - start
        del iterator
        rows.append({"workers": count, "batches": num_batches, "audio_s": audio, "elapsed_s": elapsed,
                     "audio_s_per_s": audio / elapsed})
        print(f"  workers={count}: {audio / elapsed:8.1f} s of audio per second ({num_batches} batches)", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per worker count (after warm-up)")
    parser.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch (per GPU)")
    parser.add_argument("--sampler-max-durations", type=float, nargs="+", default=[200.0, 1000.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-time", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="seconds per optimizer step to compute the GPUs one loader feeds")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    durations = librispeech_like_durations()
    print(f"simulated corpus: {durations.size:,} utterances, {durations.sum() / 3600:.1f} h, "
          f"durations min {durations.min():.1f} / median {np.median(durations):.1f} / max {durations.max():.1f} s; "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    results = {"corpus": {"utterances": int(durations.size), "hours": float(durations.sum() / 3600)}, "sampler": [],
               "loader": []}
    print("\nsampler (DurationBucketSampler, 30 buckets; build = sort + pack; median of repeats)")
    print(f"{'max_duration':>12} {'build s':>8} {'RSS +MB':>8} {'batches':>8} {'iterate s':>9} {'padding':>8} "
          f"{'resume s':>8} {'exact':>6}")
    for max_duration in args.sampler_max_durations:
        row = bench_sampler(durations, max_duration, 30, args.repeats)
        results["sampler"].append(row)
        print(f"{row['max_duration']:>12.0f} {row['build_s']:>8.2f} {row['rss_growth_mb']:>8.1f} {row['batches']:>8} "
              f"{row['iterate_s']:>9.2f} {row['padding_fraction']:>8.4f} {row['resume_s']:>8.2f} "
              f"{str(row['resume_exact']):>6}")
    if not args.skip_loader:
        print(f"\nloader (ASRBatchDataset: FLAC decode + fbank + CMVN; batches of {args.max_duration:.0f} s)")
        with tempfile.TemporaryDirectory() as folder:
            results["loader"] = bench_loader(durations, args.workers, args.batches, args.max_duration, Path(folder))
        best = max(results["loader"], key=lambda r: r["audio_s_per_s"])
        print(f"\nGPUs one loader process keeps fed (its best: {best['audio_s_per_s']:.0f} s/s with "
              f"{best['workers']} workers) at {args.max_duration:.0f} s of audio per step:")
        for step in args.step_time:
            need = args.max_duration / step
            print(f"  step {step:.2f} s -> {need:6.0f} s/s per GPU needed -> {best['audio_s_per_s'] / need:5.2f} GPUs")
        results["gpus_fed"] = {str(s): best["audio_s_per_s"] / (args.max_duration / s) for s in args.step_time}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
