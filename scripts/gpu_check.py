"""Certifies a machine's NVIDIA GPU for seqloss and the recipe; run through scripts/gpu_check.sh.

    bash scripts/gpu_check.sh                 # on a machine with a CUDA GPU (under 8 minutes on an H100)
    bash scripts/gpu_check.sh --cpu-smoke     # every step on the CPU at tiny sizes (under 3 minutes)

Steps, each in its own process with its output in <out>/<step>.log:

* ``build``: the native kernels load; on a GPU run, a CUDA device is visible and
  ``seqloss._ops.available("cuda")`` is true (the CUDA extension was built: scripts/setup_env.sh
  builds it when nvcc is on the PATH);
* ``gpu_tests``: ``pytest tests/seqloss/test_gpu.py`` (CPU == CUDA for every op and loss,
  determinism, bf16, torch.compile); on a GPU run every test must pass (none skipped); in the
  CPU smoke run (which hides any GPU with CUDA_VISIBLE_DEVICES="") they are collected and must
  all report skipped;
* ``bench``: ``benchmarks/bench_gpu.py`` (seqloss vs torchaudio and torch's CTC, LibriSpeech-like
  shapes; tiny shapes on the CPU); fails when a seqloss loss fails or disagrees with its peer;
* ``data``: prepares the embedded corpus (``train.py train=false test=false``; on the CPU a tiny one);
* ``train_<loss>`` for ctc, rnnt, modified_rnnt, ssnt: ``train.py loss=<loss> trainer=gpu
  trainer.max_time=00:00:01:00`` (CPU: ``trainer=cpu`` and a few steps of a tiny model);
  passes when the run ends normally with a readable checkpoints/last.ckpt and a finite loss;
* ``decode_<loss>``: ``decode.py`` on that run's last.ckpt, on the GPU (CPU: on the CPU); passes
  when the results JSON records the expected device and every test utterance.

Prints one table (step, status, seconds, key numbers) and writes <out>/gpu_check.json; the exit
status is 1 when any step failed.
"""
import argparse
import csv
import glob
import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("ctc", "rnnt", "modified_rnnt", "ssnt")
# The tiny corpus and model of the CPU smoke run (those of the recipe tests).
TINY_DATA = ["++data.corpus.num_train=60", "++data.corpus.num_dev=12", "++data.corpus.num_test=12",
             "++data.corpus.num_dev_speakers=2", "++data.corpus.num_test_speakers=2",
             "++data.corpus.utts_per_train_speaker=20", "++data.corpus.seed=0", "data.max_duration=10",
             "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20", "tokenizer.vocab_size=64"]
TINY_ENCODER = ["model.transcriber.hidden_dim=48", "model.transcriber.output_dim=48"]
# the predictor and joiner exist for the transducer losses and SSNT only
TINY_DECODER = ["model.predictor.embed_dim=16", "model.predictor.hidden_dim=48", "model.predictor.output_dim=48",
                "model.joiner.joiner_dim=48"]


class Step:
    """One step's outcome: status PASS/FAIL, seconds, key numbers, the log file, and why it failed."""

    def __init__(self, name: str) -> None:
        self.name, self.status, self.seconds, self.numbers, self.error, self.log = name, "FAIL", 0.0, {}, "", ""

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2), "numbers": self.numbers,
                "error": self.error, "log": self.log}


def run_logged(step: Step, cmd: list[str], out: Path, timeout: float, env: dict | None = None) -> int | None:
    """Runs `cmd` from the repository root with stdout+stderr in <out>/<step>.log; returns its exit
    status (None on timeout, with step.error saying so)."""
    log_path = out / f"{step.name}.log"
    step.log = str(log_path)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  env=env).returncode
        except subprocess.TimeoutExpired:
            step.error = f"timed out after {timeout:.0f} s"
            return None


def log_tail(step: Step, lines: int = 3) -> str:
    """The last non-empty lines of the step's log, for an error message."""
    try:
        text = [line for line in Path(step.log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]


def timed(function):
    def wrapper(step: Step, *args, **kwargs):
        start = time.perf_counter()
        try:
            function(step, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a step's failure must not stop the others
            step.status, step.error = "FAIL", f"{type(error).__name__}: {error}"
        step.seconds = time.perf_counter() - start
        return step
    return wrapper


BUILD_PROBE = """
import json, torch
from seqloss import _ops
info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_visible": torch.cuda.is_available(),
        "cpu_kernels": _ops.available("cpu"), "cuda_kernels": _ops.available("cuda"),
        "cpu_error": _ops.LOAD_ERROR, "cuda_error": _ops.CUDA_LOAD_ERROR}
if info["cuda_visible"]:
    info["gpu"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
print(json.dumps(info))
"""


def build_verdict(info: dict, cpu_smoke: bool) -> str:
    """Why the kernels are not fit for this run ('' when they are): the CPU kernels must load;
    on a GPU run a CUDA device must be visible and the CUDA kernels must load."""
    if not info.get("cpu_kernels"):
        return f"the native CPU kernels did not load: {info.get('cpu_error')}"
    if cpu_smoke:
        return ""
    if not info.get("cuda_visible"):
        return ("torch sees no CUDA device (torch.cuda.is_available() is False; torch CUDA build "
                f"{info.get('torch_cuda')}): run on a machine with an NVIDIA GPU, or use --cpu-smoke")
    if not info.get("cuda_kernels"):
        return (f"a CUDA device is visible but seqloss._ops.available('cuda') is False: {info.get('cuda_error')}; "
                "put nvcc on the PATH and rerun scripts/setup_env.sh (or rebuild with SEQLOSS_BUILD_CUDA=1)")
    return ""


@timed
def step_build(step: Step, args, out: Path) -> None:
    rc = run_logged(step, [args.python, "-c", BUILD_PROBE], out, 300)
    lines = Path(step.log).read_text().strip().splitlines()
    if rc != 0 or not lines[-1].startswith("{"):
        step.error = step.error or f"the kernel probe failed (exit {rc}): {log_tail(step)}"
        return
    info = json.loads(lines[-1])
    step.numbers = {k: info[k] for k in ("torch", "cpu_kernels", "cuda_kernels", "cuda_visible", "gpu", "capability")
                    if k in info}
    step.error = build_verdict(info, args.cpu_smoke)
    step.status = "FAIL" if step.error else "PASS"


def junit_counts(path: Path) -> dict:
    """tests/failures/errors/skipped/passed summed over a JUnit XML report's test suites."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def tests_verdict(counts: dict, rc: int | None, cpu_smoke: bool) -> str:
    """Why the GPU test run is not acceptable ('' when it is)."""
    if counts["tests"] == 0:
        return "no GPU tests were collected"
    if counts["failures"] or counts["errors"]:
        return f"{counts['failures']} failed, {counts['errors']} errors"
    if cpu_smoke:
        return "" if counts["skipped"] == counts["tests"] else "some GPU tests ran without a GPU"
    if counts["skipped"]:
        return f"{counts['skipped']} GPU tests were skipped on a GPU run (see the log for why)"
    return "" if rc == 0 else f"pytest exited with {rc}"


@timed
def step_gpu_tests(step: Step, args, out: Path) -> None:
    report = out / "gpu_tests.xml"
    rc = run_logged(step, [args.python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/seqloss/test_gpu.py", f"--junitxml={report}"], out, args.tests_timeout)
    if not report.exists():
        step.error = step.error or f"pytest wrote no report (exit {rc}): {log_tail(step)}"
        return
    counts = junit_counts(report)
    step.numbers = {k: counts[k] for k in ("tests", "passed", "skipped", "failures", "errors")}
    step.error = tests_verdict(counts, rc, args.cpu_smoke)
    step.status = "FAIL" if step.error else "PASS"


@timed
def step_bench(step: Step, args, out: Path) -> None:
    report = out / "bench.json"
    cmd = [args.python, "benchmarks/bench_gpu.py", "--json", str(report)]
    cmd += ["--tiny", "--device", "cpu", "--warmup", "1", "--reps", "3"] if args.cpu_smoke else ["--device", "cuda"]
    rc = run_logged(step, cmd, out, args.bench_timeout)
    if not report.exists():
        step.error = step.error or f"the benchmark wrote no report (exit {rc}): {log_tail(step)}"
        return
    result = json.loads(report.read_text())
    rows = result["rows"]
    step.numbers = {"rows": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
                    "peer unsupported": sum(r["status"] == "unsupported" for r in rows)}
    largest = max((r["V"] for r in rows), default=None)
    for case, peer in (("rnnt", "torchaudio"), ("ctc", "torch cudnn"), ("joiner+rnnt", "dense+torchaudio")):
        for r in rows:
            if (r["case"], r["impl"], r["V"], r["dtype"]) == (case, peer, largest, "float32") and \
                    "time_ratio_seqloss_to_peer" in r:
                step.numbers[f"{case} V={largest} time seqloss/{peer}"] = round(r["time_ratio_seqloss_to_peer"], 2)
                if "memory_ratio_seqloss_to_peer" in r:
                    step.numbers[f"{case} V={largest} mem seqloss/{peer}"] = round(r["memory_ratio_seqloss_to_peer"], 2)
    if rc != 0 or not result["ok"]:
        bad = [f"{r['case']} V={r['V']} {r['dtype']} {r['impl']}: {r.get('error', 'loss mismatch')}" for r in rows
               if r["status"] == "failed" or r.get("agrees_with_seqloss") is False]
        step.error = step.error or "; ".join(bad)[:400] or f"exit {rc}: {log_tail(step)}"
        return
    step.status = "PASS"


def common_overrides(args, out: Path) -> list[str]:
    overrides = [f"paths.log_dir={out / 'logs'}", "logger=csv"]
    if args.cpu_smoke:
        overrides += [f"data.root={out / 'data' / 'synthetic-tiny'}", *TINY_DATA]
    return overrides


def train_overrides(args, out: Path, loss: str) -> list[str]:
    overrides = [f"loss={loss}", *common_overrides(args, out), "test=false"]
    if args.cpu_smoke:
        return overrides + ["trainer=cpu", "num_threads=1", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                            "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
                            "callbacks=[model_checkpoint,last_checkpoint]", *TINY_ENCODER,
                            *(TINY_DECODER if loss != "ctc" else [])]
    return overrides + ["trainer=gpu", f"trainer.max_time={args.train_time}", "trainer.max_epochs=1000"]


@timed
def step_data(step: Step, args, out: Path) -> None:
    # train=false test=false: prepares the corpus, manifests, tokenizer and CMVN, builds the model, exits
    cmd = [args.python, "train.py", "train=false", "test=false", "trainer=cpu", *common_overrides(args, out),
           f"hydra.run.dir={out / 'logs' / 'data_preparation'}"]
    rc = run_logged(step, cmd, out, args.data_timeout)
    step.status = "PASS" if rc == 0 else "FAIL"
    if rc != 0:
        step.error = step.error or f"exit {rc}: {log_tail(step)}"


def _last_metric(metrics_csv: Path, name: str) -> float | None:
    value = None
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            if row.get(name) not in (None, ""):
                value = float(row[name])
    return value


@timed
def step_train(step: Step, args, out: Path, loss: str, runs: dict) -> None:
    rc = run_logged(step, [args.python, "train.py", *train_overrides(args, out, loss)], out, args.train_timeout)
    lasts = sorted(glob.glob(str(out / "logs" / "train" / "runs" / loss / "*" / "checkpoints" / "last.ckpt")))
    if rc != 0 or not lasts:
        step.error = step.error or f"exit {rc}, last.ckpt {'found' if lasts else 'missing'}: {log_tail(step)}"
        return
    import torch

    sys.path.insert(0, str(REPO))
    from recipes.utils.checkpoints import checkpoint_problem

    last = Path(lasts[-1])
    problem = checkpoint_problem(last)
    if problem:
        step.error = f"{last}: {problem}"
        return
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    run_dir = last.parent.parent
    metrics = sorted(run_dir.glob("csv/**/metrics.csv"))
    train_loss = _last_metric(metrics[-1], "train/loss") if metrics else None
    val_wer = _last_metric(metrics[-1], "val/wer") if metrics else None
    step.numbers = {"steps": int(ckpt["global_step"]), "epochs": int(ckpt["epoch"]) + 1}
    if train_loss is not None:
        step.numbers["train/loss"] = round(train_loss, 3)
    if val_wer is not None:
        step.numbers["val/wer"] = round(val_wer, 3)
    runs[loss] = last
    if ckpt["global_step"] < 1:
        step.error = "no optimizer step was taken"
    elif train_loss is None or not math.isfinite(train_loss):
        step.error = f"the logged train/loss is {train_loss}"
    step.status = "FAIL" if step.error else "PASS"


@timed
def step_decode(step: Step, args, out: Path, loss: str, runs: dict) -> None:
    if loss not in runs:
        step.error = f"train_{loss} produced no checkpoint"
        return
    last = runs[loss]
    device = "cpu" if args.cpu_smoke else "cuda"
    cmd = [args.python, "decode.py", f"ckpt_path={last}", f"device={device}", "log_to_wandb=false",
           f"paths.log_dir={out / 'logs'}", f"hydra.run.dir={out / 'logs' / 'decode' / loss}"]
    if args.cpu_smoke:
        cmd.append("num_threads=1")
    rc = run_logged(step, cmd, out, args.decode_timeout)
    results = sorted((last.parent.parent / "decode").glob("results-test-*.json"))
    if rc != 0 or not results:
        step.error = step.error or f"exit {rc}: {log_tail(step)}"
        return
    summary = json.loads(results[-1].read_text())
    step.numbers = {"device": summary.get("device"), "utterances": summary["utterances"],
                    "wer": round(summary["wer"], 3), "rtf": round(summary["real_time_factor"], 4)}
    if not str(summary.get("device")).startswith(device):
        step.error = f"decoded on {summary.get('device')}, expected {device}"
    elif summary["utterances"] < 1 or not math.isfinite(summary["wer"]):
        step.error = f"{summary['utterances']} utterances, WER {summary['wer']}"
    step.status = "FAIL" if step.error else "PASS"


def train_and_decode(args, out: Path, loss: str, runs: dict) -> list[Step]:
    train = step_train(Step(f"train_{loss}"), args, out, loss, runs)
    return [train, step_decode(Step(f"decode_{loss}"), args, out, loss, runs)]


def print_table(steps: list[Step]) -> None:
    def numbers(step):
        return ", ".join(f"{k}={v}" for k, v in step.numbers.items())

    rows = [(s.name, s.status, f"{s.seconds:.1f}", numbers(s) + (f"  [{s.error}]" if s.error else "")) for s in steps]
    widths = [max(len(r[i]) for r in rows + [("step", "status", "seconds", "")]) for i in range(3)]
    print(f"{'step':<{widths[0]}}  {'status':<{widths[1]}}  {'seconds':>{widths[2]}}  key numbers")
    for name, status, seconds, text in rows:
        print(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {seconds:>{widths[2]}}  {text}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU at tiny sizes")
    parser.add_argument("--out", help="output folder (default logs/gpu_check/<time>)")
    parser.add_argument("--steps", nargs="+", help="run only these steps (build gpu_tests bench data train decode)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter for every step")
    parser.add_argument("--train-time", default="00:00:01:00", help="trainer.max_time of each GPU training run")
    parser.add_argument("--train-jobs", type=int, default=None,
                        help="training runs at once (default: 4 on a GPU, where they share the device; 2 on the CPU)")
    for name, seconds in (("tests", 300), ("bench", 300), ("data", 600), ("train", 420), ("decode", 300)):
        parser.add_argument(f"--{name}-timeout", type=float, default=seconds, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    wanted = set(args.steps or ["build", "gpu_tests", "bench", "data", "train", "decode"])
    unknown = wanted - {"build", "gpu_tests", "bench", "data", "train", "decode"}
    if unknown:
        parser.error(f"--steps: unknown {sorted(unknown)}")
    out = Path(args.out or REPO / "logs" / "gpu_check" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    print(f"[gpu_check] mode {mode}; logs in {out}", flush=True)
    if args.cpu_smoke:
        # every step on the CPU, also where a GPU exists: the GPU tests must report skipped
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    steps: list[Step] = []

    def report(step: Step) -> Step:
        print(f"[gpu_check] {step.name}: {step.status} ({step.seconds:.1f} s){' ' + step.error if step.error else ''}",
              flush=True)
        steps.append(step)
        return step

    build_ok = True
    if "build" in wanted:
        build_ok = report(step_build(Step("build"), args, out)).status == "PASS"
    for name, function in (("gpu_tests", step_gpu_tests), ("bench", step_bench), ("data", step_data)):
        if name in wanted:
            report(function(Step(name), args, out))
    if "train" in wanted:
        data_ok = all(s.status == "PASS" for s in steps if s.name == "data")
        runs: dict = {}
        if not (build_ok and data_ok):
            for loss in LOSSES:
                skipped = Step(f"train_{loss}")
                skipped.error = "not run: the build or data step failed"
                report(skipped)
        else:
            jobs = args.train_jobs or (2 if args.cpu_smoke else len(LOSSES))
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                if "decode" in wanted:
                    futures = [pool.submit(train_and_decode, args, out, loss, runs) for loss in LOSSES]
                    for future in futures:
                        for step in future.result():
                            report(step)
                else:
                    for step in pool.map(lambda loss: step_train(Step(f"train_{loss}"), args, out, loss, runs), LOSSES):
                        report(step)
    passed = bool(steps) and all(s.status == "PASS" for s in steps)
    total = time.perf_counter() - start
    print()
    print_table(steps)
    summary = {"mode": mode, "passed": passed, "seconds": round(total, 1), "python": args.python,
               "steps": [s.as_dict() for s in steps]}
    json_path = out / "gpu_check.json"
    json_path.write_text(json.dumps(summary, indent=2))
    print(f"\n[gpu_check] {'PASSED' if passed else 'FAILED'} in {total:.0f} s; JSON: {json_path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
