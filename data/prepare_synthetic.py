#!/usr/bin/env python
"""Generate the embedded speech corpus (espeak-ng, offline) in the LibriSpeech layout.

    python data/prepare_synthetic.py                       # 3000/200/200 utterances, seed 0
    python data/prepare_synthetic.py --out data/corpora/synthetic-v2 --num-train 3000 --seed 0

Re-running skips the files that exist; see recipes/data/synthesis.py for the corpus design.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.manifest import read_manifests  # noqa: E402
from recipes.data.synthesis import SyntheticCorpus, SyntheticCorpusConfig  # noqa: E402


def main() -> None:
    defaults = SyntheticCorpusConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "corpora" / "synthetic-v2")
    parser.add_argument("--num-train", type=int, default=defaults.num_train)
    parser.add_argument("--num-dev", type=int, default=defaults.num_dev)
    parser.add_argument("--num-test", type=int, default=defaults.num_test)
    parser.add_argument("--utts-per-train-speaker", type=int, default=defaults.utts_per_train_speaker,
                        help="fewer means more training speakers (voice x variant x pitch x rate)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="synthesis processes (the corpus is the same for any number)")
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = SyntheticCorpus(args.out, workers=args.workers, num_train=args.num_train,
                             num_dev=args.num_dev, num_test=args.num_test, seed=args.seed,
                             utts_per_train_speaker=args.utts_per_train_speaker)
    corpus.prepare()
    elapsed = time.perf_counter() - start
    for part in ("train", "dev", "test"):
        utterances = read_manifests(corpus.manifests(part))
        hours = sum(u.duration for u in utterances) / 3600
        print(f"{part}: {len(utterances)} utterances, {hours:.2f} h -> {corpus.manifests(part)[0]}")
    print(f"corpus ready at {args.out} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
