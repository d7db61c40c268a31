"""Training-step statistics of one run from its CSV log: optimizer steps, median perf/step_time_s over
the whole run and over its second half (subnormal activations grow as training goes on).

    python scripts/experiments/step_times.py logs/experiments/flush_denormal/true/csv/metrics.csv
"""
import argparse
import csv
import statistics
import sys
from pathlib import Path


def step_times(path: Path) -> list[float]:
    """perf/step_time_s of every logged training step, in order."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "perf/step_time_s" not in reader.fieldnames:
            raise SystemExit(f"{path}: no perf/step_time_s column (was the run made with callbacks=default?)")
        return [float(row["perf/step_time_s"]) for row in reader if row.get("perf/step_time_s")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics_csv", type=Path, nargs="+", help="csv/metrics.csv of one or more runs")
    args = parser.parse_args(argv)
    for path in args.metrics_csv:
        if not path.is_file():
            raise SystemExit(f"{path}: not a file")
        times = step_times(path)
        if not times:
            raise SystemExit(f"{path}: no training steps logged")
        late = times[len(times) // 2:]
        print(f"{path}: {len(times)} steps, median step {statistics.median(times):.3f} s, "
              f"second half {statistics.median(late):.3f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
