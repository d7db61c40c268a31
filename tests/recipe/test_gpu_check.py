"""scripts/gpu_check.sh: the CPU smoke run of every step, and its failure verdicts."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.recipe.recipe_cfg import REPO

STEPS = ["build", "gpu_tests", "bench", "data"] + [f"{kind}_{loss}" for loss in ("ctc", "rnnt", "modified_rnnt", "ssnt")
                                                   for kind in ("train", "decode")]


def _load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, tmp_path, timeout):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.run(["bash", "scripts/gpu_check.sh", *args, "--out", str(tmp_path / "check")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_smoke_runs_every_step(tmp_path):
    result = _run(["--cpu-smoke"], tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = result.stdout.split("\nstep ", 1)[1].splitlines()
    assert table[0].split()[:3] == ["status", "seconds", "key"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:] if line.strip() and not line.startswith("[")}
    assert rows == {name: "PASS" for name in STEPS}
    json_path = tmp_path / "check" / "gpu_check.json"
    assert f"JSON: {json_path}" in result.stdout
    summary = json.loads(json_path.read_text())
    assert summary["mode"] == "cpu-smoke" and summary["passed"] is True
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == STEPS and all(s["status"] == "PASS" and not s["error"] for s in steps.values())
    tests = steps["gpu_tests"]["numbers"]
    assert tests["tests"] > 0 and tests["skipped"] == tests["tests"]  # collected, and skipped without a GPU
    assert steps["bench"]["numbers"]["ok"] > 0
    for loss in ("ctc", "rnnt", "modified_rnnt", "ssnt"):
        assert steps[f"train_{loss}"]["numbers"]["steps"] >= 1
        assert steps[f"decode_{loss}"]["numbers"]["device"] == "cpu"
        assert steps[f"decode_{loss}"]["numbers"]["utterances"] == 12


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the verdict on a machine without a GPU")
def test_a_gpu_run_without_a_gpu_fails_loudly(tmp_path):
    result = _run(["--steps", "build"], tmp_path, timeout=300)
    assert result.returncode == 1
    build = [line for line in result.stdout.splitlines() if line.startswith("build ")][-1]
    assert build.split()[1] == "FAIL" and "torch sees no CUDA device" in build
    summary = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert summary["passed"] is False and summary["steps"][0]["status"] == "FAIL"


def test_build_verdict_requires_the_cuda_kernels_where_a_gpu_is_visible():
    driver = _load_driver()
    info = {"cpu_kernels": True, "cuda_visible": True, "cuda_kernels": False, "cuda_error": "_C_cuda*.so was not built"}
    assert "seqloss._ops.available('cuda') is False: _C_cuda*.so was not built" in driver.build_verdict(info, False)
    assert driver.build_verdict(dict(info, cuda_kernels=True), False) == ""
    assert driver.build_verdict(info, True) == ""  # the CPU smoke run needs the CPU kernels only
    assert "CPU kernels" in driver.build_verdict(dict(info, cpu_kernels=False, cpu_error="x"), True)


def test_tests_verdict():
    driver = _load_driver()
    counts = {"tests": 18, "failures": 0, "errors": 0, "skipped": 18}
    assert driver.tests_verdict(counts, 0, cpu_smoke=True) == ""
    assert "skipped on a GPU run" in driver.tests_verdict(counts, 0, cpu_smoke=False)
    assert driver.tests_verdict(dict(counts, skipped=0), 0, cpu_smoke=False) == ""
    assert "1 failed" in driver.tests_verdict(dict(counts, skipped=0, failures=1), 1, cpu_smoke=False)
    assert "ran without a GPU" in driver.tests_verdict(dict(counts, skipped=17), 0, cpu_smoke=True)
    assert "no GPU tests" in driver.tests_verdict(dict(counts, tests=0, skipped=0), 5, cpu_smoke=True)


def test_the_benchmark_fails_when_seqloss_disagrees_with_its_peer(monkeypatch):
    import seqloss

    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shape = dict(bench.TINY, vocabs=(16,))
    rows, ok = bench.run(torch.device("cpu"), shape, warmup=0, reps=1, rtol=1e-3)
    assert ok and all(r.get("agrees_with_seqloss", True) for r in rows)
    real = seqloss.rnnt_loss
    monkeypatch.setattr(seqloss, "rnnt_loss", lambda *a, **k: real(*a, **k) * 1.01)  # a 1% error
    rows, ok = bench.run(torch.device("cpu"), shape, warmup=0, reps=1, rtol=1e-3)
    assert not ok
    wrong = [r for r in rows if r.get("agrees_with_seqloss") is False]
    assert [(r["case"], r["impl"]) for r in wrong] == [("rnnt", "torchaudio")]


@pytest.mark.parametrize("cpu_smoke", [False, True])
def test_the_train_command_lines_compose(cpu_smoke, tmp_path):
    """The GPU run's command lines (which only a GPU machine executes) are valid configs here."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    driver = _load_driver()
    args = driver.argparse.Namespace(cpu_smoke=cpu_smoke, train_time="00:00:01:00")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for loss in driver.LOSSES:
            cfg = compose("train.yaml", overrides=driver.train_overrides(args, tmp_path, loss))
            assert cfg.loss.name == loss and cfg.paths.log_dir == str(tmp_path / "logs")
            if cpu_smoke:
                assert cfg.trainer.accelerator == "cpu" and cfg.trainer.limit_train_batches == 3
            else:
                assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_time == "00:00:01:00"
                assert cfg.data.root.endswith("corpora/synthetic-v2")  # the embedded corpus
        decode_cfg = compose("decode.yaml", overrides=["device=cuda", "log_to_wandb=false"])
        assert decode_cfg.device == "cuda"
    GlobalHydra.instance().clear()
