#!/usr/bin/env python
"""Time and memory of the word LM: estimate, write and load a modified Kneser-Ney model of a
Zipf-distributed corpus (docs/lm.md, "The LM file").

    python scripts/experiments/lm_cost.py [--sentences 28000] [--vocab 30000] [--order 3]
"""
import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.decoding.arpa import ArpaLM  # noqa: E402
from recipes.decoding.kneser_ney import KneserNeyEstimate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=28000)
    parser.add_argument("--vocab", type=int, default=30000)
    parser.add_argument("--order", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(args.vocab)]
    weights = [1.0 / (i + 1) for i in range(args.vocab)]
    sentences = [rng.choices(vocab, weights, k=rng.randint(5, 60)) for _ in range(args.sentences)]
    print(f"{args.sentences} sentences, {sum(map(len, sentences))} words")
    start = time.perf_counter()
    model = KneserNeyEstimate(sentences, order=args.order)
    print(f"estimate {time.perf_counter() - start:.1f} s; n-grams per order "
          f"{[len(model.prob[k]) for k in range(1, args.order + 1)]}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = model.write_arpa(Path(folder) / "lm.arpa")
        print(f"write {time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
        start = time.perf_counter()
        ArpaLM.load(path)
        print(f"load {time.perf_counter() - start:.1f} s")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
