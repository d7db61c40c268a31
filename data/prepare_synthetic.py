#!/usr/bin/env python
"""Generate the embedded speech corpus (espeak-ng, offline) in the LibriSpeech layout.

    python data/prepare_synthetic.py                       # 3000/200/200 utterances, seed 0
    python data/prepare_synthetic.py --out data/corpora/synthetic-v2 --num-train 3000 --seed 0
    python data/prepare_synthetic.py --repair              # re-synthesise damaged or missing files

Re-running skips the files that exist and checks a finished corpus against its checksum list
(every byte with the default --verify sha256). A folder claimed by other settings is refused;
see recipes/data/synthesis.py for the corpus design and docs/data.md for the integrity rules.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.manifest import read_manifests  # noqa: E402
from recipes.data.synthesis import (  # noqa: E402
    VERIFY_LEVELS,
    CorpusIntegrityError,
    CorpusSettingsError,
    SyntheticCorpus,
    SyntheticCorpusConfig,
)


def main() -> None:
    defaults = SyntheticCorpusConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "corpora" / "synthetic-v2")
    parser.add_argument("--num-train", type=int, default=defaults.num_train)
    parser.add_argument("--num-dev", type=int, default=defaults.num_dev)
    parser.add_argument("--num-test", type=int, default=defaults.num_test)
    parser.add_argument("--num-dev-speakers", type=int, default=defaults.num_dev_speakers)
    parser.add_argument("--num-test-speakers", type=int, default=defaults.num_test_speakers)
    parser.add_argument("--utts-per-train-speaker", type=int, default=defaults.utts_per_train_speaker,
                        help="fewer means more training speakers (voice x variant x pitch x rate)")
    parser.add_argument("--utts-per-chapter", type=int, default=defaults.utts_per_chapter)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="synthesis processes (the corpus is the same for any number)")
    parser.add_argument("--verify", choices=VERIFY_LEVELS, default="sha256",
                        help="how a finished corpus is checked against its checksum list")
    parser.add_argument("--repair", action="store_true",
                        help="re-synthesise files that fail the check instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        corpus = SyntheticCorpus(
            args.out, workers=args.workers, verify=args.verify, repair=args.repair,
            num_train=args.num_train, num_dev=args.num_dev, num_test=args.num_test,
            num_dev_speakers=args.num_dev_speakers, num_test_speakers=args.num_test_speakers,
            utts_per_train_speaker=args.utts_per_train_speaker,
            utts_per_chapter=args.utts_per_chapter, seed=args.seed, progress=not args.quiet,
        )
        corpus.prepare()
    except (CorpusSettingsError, CorpusIntegrityError) as error:
        parser.exit(1, f"error: {error}\n")
    elapsed = time.perf_counter() - start
    for part in ("train", "dev", "test"):
        utterances = read_manifests(corpus.manifests(part))
        hours = sum(u.duration for u in utterances) / 3600
        print(f"{part}: {len(utterances)} utterances, {hours:.2f} h -> {corpus.manifests(part)[0]}")
    print(f"corpus ready at {args.out} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
