"""Decodes a trained model and writes WER files:
`python decode.py [ckpt_path=...] [decoding=greedy|beam|beam_lm] [tune=true] [alignment=viterbi]
[device=cpu|cuda|cuda:N] [split=NAME|[A,B]]`.

Loads the training run's resolved config (`<run>/config.yaml`), rebuilds its data module and
model, loads (optionally averages) checkpoints, moves the model and each batch to the device (a
CUDA GPU when one is available, like training; `device=` overrides), then, for each split of
`split=` (`test`, `dev`, or any split the data module knows by name, e.g. `test-other`; or a list
of them, all decoded with the model loaded once), either recognises it (greedy or beam search)
and writes `recogs-<split>-*`, `errs-<split>-*`, `wer-summary-<split>-*` and a JSON under
`<run>/decode/`, or (alignment=viterbi) force-aligns the references and writes a CTM file and
occupancy plots. Outputs are named by the split and every setting, so nothing is overwritten.

decoding=beam_lm adds a word n-gram LM of the training transcripts (built once, kept with the
data); tune=true first grids lm_weight x word_score on the dev split (never test), writes the
grid, and decodes the requested splits with the best dev point.
"""
import copy
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402

from recipes.data.text import normalize_text  # noqa: E402
from recipes.decoding.alignment import ctm_lines, plot_alignment  # noqa: E402
from recipes.decoding.arpa import ArpaLM  # noqa: E402
from recipes.decoding.wer_files import write_results  # noqa: E402
from recipes.metrics.wer import EditCounts, edit_counts  # noqa: E402
from recipes.models.joiner import upgrade_model_config  # noqa: E402
from recipes.utils.checkpoints import checkpoint_problem, readable_checkpoints  # noqa: E402

log = logging.getLogger(__name__)


def resolve_device(spec: str | None) -> torch.device:
    """The device to decode on: `spec` (``cpu``, ``cuda``, ``cuda:N``, ``mps``), or for null/``auto``
    a CUDA GPU when ``torch.cuda.is_available()`` and the CPU otherwise. Raises ValueError naming
    `device` when it is not a device name or that device is not available here."""
    if spec is None or str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(spec))
    except RuntimeError as error:
        raise ValueError(f"device={spec!r} is not a device name (use cpu, cuda, cuda:N or auto)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec}: CUDA is not available on this machine (torch.cuda.is_available() is "
                             f"False); use device=cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device={spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={spec}: MPS is not available on this machine; use device=cpu")
    elif device.type != "cpu":
        raise ValueError(f"device={spec}: decoding runs on cpu, cuda or mps, not {device.type}")
    return device


def to_device(batch: dict, device: torch.device) -> dict:
    """`batch` with every tensor moved to `device` (other entries, e.g. ids and texts, as they are)."""
    return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}


def _load_steps(paths) -> dict[Path, int]:
    """global_step of each readable checkpoint of `paths`; unreadable ones are skipped with a warning."""
    steps = {}
    for path in readable_checkpoints(paths):
        try:
            steps[path] = torch.load(path, map_location="cpu", weights_only=False)["global_step"]
        except Exception as error:  # noqa: BLE001 - any failure to load means the file is unusable
            log.warning(f"skipping unreadable checkpoint {path}: {type(error).__name__}: {error}")
    return steps


def newest_run(log_dir: Path) -> Path:
    """The most recent training run directory holding a checkpoint."""
    runs = [p.parent.parent for p in log_dir.glob("*/runs/*/*/checkpoints/last.ckpt")]
    if not runs:
        raise FileNotFoundError(f"ckpt_path is null and no training run with checkpoints exists under "
                                f"{log_dir}/<task>/runs/: train first, or pass ckpt_path=...")
    return max(runs, key=lambda p: (p / "checkpoints" / "last.ckpt").stat().st_mtime_ns)


def select_checkpoints(cfg: DictConfig) -> tuple[Path, list[Path]]:
    """(run directory, checkpoints to load): ckpt_path itself, or the newest run's best checkpoint
    (ckpt_path null or ``best``) or its last one (``last``); with avg=N, it and the N-1 checkpoints
    of that run before it (by training step), oldest first."""
    if cfg.avg < 1:
        raise ValueError(f"avg must be >= 1, got {cfg.avg}")
    if cfg.ckpt_path and cfg.ckpt_path not in ("best", "last"):
        chosen = Path(cfg.ckpt_path)
        if not chosen.is_file():
            raise FileNotFoundError(f"ckpt_path: no such file {chosen}")
        problem = checkpoint_problem(chosen)
        if problem:
            raise ValueError(f"ckpt_path: cannot read checkpoint {chosen}: {problem}")
        run_dir = chosen.parent.parent
    else:
        run_dir = newest_run(Path(cfg.paths.log_dir))
        folder = run_dir / "checkpoints"
        # best (or last), then the run's other checkpoints newest first: an unreadable file
        # (e.g. truncated by a crash) is skipped with a warning naming it
        best = sorted(folder.glob("best-*.ckpt"), reverse=True) if cfg.ckpt_path != "last" else []
        others = sorted((p for p in folder.glob("*.ckpt") if p not in best and p.name != "last.ckpt"),
                        key=lambda p: p.stat().st_mtime_ns, reverse=True)
        candidates = [*best, folder / "last.ckpt", *others]
        usable = readable_checkpoints(candidates)
        if not usable:
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no readable checkpoint in {folder}; unreadable: "
                                    f"{', '.join(str(p) for p in candidates)}")
        chosen = usable[0]
    if cfg.avg == 1:
        return run_dir, [chosen]
    steps = _load_steps(sorted((run_dir / "checkpoints").glob("*.ckpt")))
    if chosen not in steps:
        raise ValueError(f"ckpt_path: cannot load checkpoint {chosen}")
    by_step = {steps[chosen]: chosen}  # one checkpoint per step: the chosen one, else the first by name
    for path in sorted(steps):
        if steps[path] <= steps[chosen]:
            by_step.setdefault(steps[path], path)
    newest = [by_step[s] for s in sorted(by_step)[-cfg.avg:]]
    if len(newest) < cfg.avg:
        raise ValueError(f"avg={cfg.avg}, but the run has only {len(newest)} checkpoints at distinct steps up to "
                         f"{chosen.name} (keep more with callbacks=[default,epoch_checkpoint])")
    return run_dir, newest


def averaged_state_dict(paths: list[Path]) -> dict:
    """The element-wise mean of the checkpoints' model weights (integer buffers from the newest)."""
    states = [torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in paths]
    out = {}
    for key, value in states[-1].items():
        out[key] = (sum(s[key].double() for s in states) / len(states)).to(value.dtype) \
            if value.is_floating_point() else value
    return out


def settings_suffix(cfg: DictConfig, checkpoints: list[Path]) -> str:
    if cfg.get("alignment") is not None:
        name = cfg.alignment._target_.rsplit(".", 1)[-1]
        parts = {"ForcedAligner": ["viterbi"]}.get(name, [name])
    else:
        name = cfg.decoding._target_.rsplit(".", 1)[-1]
        rule = cfg.decoding.get("ssnt_emit_rule", "best_move")
        parts = {"GreedyDecoder": ["greedy", f"maxsym{cfg.decoding.get('max_symbols_per_frame', 1)}"]
                 + ([f"ssnt-{rule}"] if rule != "best_move" else []),
                 "BeamSearchDecoder": ["beam", f"size{cfg.decoding.get('beam_size')}",
                                       "rescored" if cfg.decoding.get("rescore", True) else "search-scores"],
                 "BeamLMDecoder": ["beamlm", f"size{cfg.decoding.get('beam_size')}",
                                   f"{cfg.decoding.get('lm_order')}gram", f"lmw{cfg.decoding.get('lm_weight')}",
                                   f"ws{cfg.decoding.get('word_score')}",
                                   "lexicon" if cfg.decoding.get("lexicon") else "open",
                                   "rescored" if cfg.decoding.get("rescore", True) else "search-scores"],
                 }.get(name, [name])
    parts.append(checkpoints[-1].stem + (f"-avg{len(checkpoints)}" if len(checkpoints) > 1 else ""))
    return "_".join(parts)


def requested_splits(split) -> list[str]:
    """The split names of `split=`: one name, or a list of them (duplicates dropped, order kept).
    Raises ValueError naming `split` when it is empty or not names."""
    names = list(split) if isinstance(split, (list, tuple, ListConfig)) else [split]
    if not names or any(not isinstance(name, str) or not name.strip() for name in names):
        raise ValueError(f"split must be a split name or a non-empty list of them (e.g. test, test-other, "
                         f"[test-clean,test-other]), got {split!r}")
    return list(dict.fromkeys(names))


def _check_tuning(cfg: DictConfig) -> None:
    if not cfg.get("tune"):
        return
    if cfg.get("alignment") is not None:
        raise ValueError("tune=true tunes recognition (decoding=beam_lm); it does not apply to alignment=viterbi")
    if cfg.decoding._target_.rsplit(".", 1)[-1] != "BeamLMDecoder":
        raise ValueError("tune=true grids lm_weight x word_score: it needs decoding=beam_lm")
    if cfg.tune_split != "dev":
        raise ValueError(f"tune_split={cfg.tune_split!r}: weights are tuned on the dev split only (tuning on "
                         f"{cfg.tune_split} would make its WER an optimistic estimate)")
    for name in ("tune_lm_weights", "tune_word_scores"):
        if not cfg.get(name):
            raise ValueError(f"{name} must be a non-empty list of numbers, got {cfg.get(name)!r}")


def prepare_word_lm(decoder, datamodule) -> None:
    """Gives a decoder that needs the word LM (decoding=beam_lm) the LM of the training transcripts
    (estimated on first use) and, for its lexicon, the training words. The data module's tokenizer
    must be loaded (a split's loader made)."""
    path = datamodule.word_lm(decoder.lm_order)
    words = sorted({word for text in datamodule.training_texts() for word in text.split()})
    start = time.perf_counter()
    decoder.prepare(ArpaLM.load(path), datamodule.tokenizer, words)
    log.info(f"word LM {path} ({decoder.lm_order}-gram) and {len(words)} training words loaded in "
             f"{time.perf_counter() - start:.1f} s; lexicon {'on' if decoder.lexicon else 'off'}")


def tune_weights(cfg: DictConfig, model, datamodule, decoder, device, out_dir: Path, suffix: str) -> dict:
    """Decodes the dev split once per (lm_weight, word_score) of the grid (the encoder runs once per
    batch); writes ``lm-tune-dev-<suffix>.tsv`` and ``.json``; returns the best point (lowest dev WER,
    the first in grid order on a tie) with the grid file's path."""
    grid = list(itertools.product([float(w) for w in cfg.tune_lm_weights], [float(s) for s in cfg.tune_word_scores]))
    decoders = [decoder.with_weights(w, s) for w, s in grid]
    counts = [EditCounts() for _ in grid]
    tokenizer = datamodule.tokenizer
    utterances = 0
    start = time.perf_counter()
    log.info(f"tuning lm_weight x word_score on dev: {len(grid)} points")
    with torch.no_grad():
        for batch in datamodule.split_dataloader("dev"):
            if cfg.max_utterances is not None and utterances >= cfg.max_utterances:
                break
            batch = to_device(batch, device)
            enc, lengths = model.encode(batch["features"], batch["feature_lengths"])
            for k, point in enumerate(decoders):
                for ref, hyp in zip(batch["texts"], point(model, enc, lengths)):
                    counts[k] += edit_counts(normalize_text(ref).split(), normalize_text(tokenizer.decode(hyp)).split())
            utterances += len(batch["ids"])
    rows = [{"lm_weight": w, "word_score": s, "wer": c.wer, "errors": c.errors, "ref_words": c.ref_words}
            for (w, s), c in zip(grid, counts)]
    best = min(range(len(rows)), key=lambda k: (rows[k]["errors"], k))
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv = out_dir / f"lm-tune-dev-{suffix}.tsv"
    tsv.write_text("lm_weight\tword_score\twer\terrors\tref_words\n" + "".join(
        f"{r['lm_weight']}\t{r['word_score']}\t{100 * r['wer']:.2f}\t{r['errors']}\t{r['ref_words']}\n" for r in rows))
    chosen = {"lm_weight": rows[best]["lm_weight"], "word_score": rows[best]["word_score"],
              "dev_wer": rows[best]["wer"], "tuning_split": "dev", "dev_utterances": utterances, "grid_file": str(tsv)}
    (out_dir / f"lm-tune-dev-{suffix}.json").write_text(json.dumps({"grid": rows, "chosen": chosen}, indent=2))
    log.info(f"tuned on {utterances} dev utterances in {time.perf_counter() - start:.0f} s: lm_weight "
             f"{chosen['lm_weight']}, word_score {chosen['word_score']} (dev WER {100 * chosen['dev_wer']:.2f}%); "
             f"grid in {tsv}")
    return chosen


def decode(cfg: DictConfig) -> dict:
    """Runs the configured decoding on every split of `split=`; returns the summary (WER, counts,
    ...) or the alignment stats of a single split name, or a dict {split: summary} for a list."""
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    splits = requested_splits(cfg.split)
    _check_tuning(cfg)
    device = resolve_device(cfg.get("device"))
    run_dir, checkpoints = select_checkpoints(cfg)
    train_cfg = OmegaConf.load(run_dir / "config.yaml")
    log.info(f"run {run_dir}; checkpoints {[p.name for p in checkpoints]}; device {device}; splits {splits}")

    datamodule = hydra.utils.instantiate(train_cfg.data)
    datamodule.prepare_data()
    known = datamodule.known_splits()
    unknown = [name for name in splits if name not in known]
    if unknown:
        raise ValueError(f"split: unknown split name(s) {', '.join(map(repr, unknown))}; the data module of "
                         f"{run_dir} knows: {', '.join(known)}")
    model = hydra.utils.instantiate(upgrade_model_config(train_cfg.model))
    model.load_state_dict(averaged_state_dict(checkpoints))
    model.to(device)
    model.eval()
    aligner = hydra.utils.instantiate(cfg.alignment) if cfg.get("alignment") is not None else None
    decoder = hydra.utils.instantiate(cfg.decoding) if aligner is None else None
    tuned = None
    if getattr(decoder, "needs_word_lm", False):
        # loads the tokenizer: tuning reads dev first (and nothing of test), otherwise the first split
        datamodule.split_dataloader("dev" if cfg.get("tune") else splits[0])
        prepare_word_lm(decoder, datamodule)
        if cfg.get("tune"):
            cfg = copy.deepcopy(cfg)
            cfg.decoding.lm_weight = cfg.decoding.word_score = "grid"
            tuned = tune_weights(cfg, model, datamodule, decoder, device, run_dir / "decode",
                                 settings_suffix(cfg, checkpoints))
            decoder = decoder.with_weights(tuned["lm_weight"], tuned["word_score"])
            cfg.decoding.lm_weight, cfg.decoding.word_score = tuned["lm_weight"], tuned["word_score"]
    suffix = settings_suffix(cfg, checkpoints)
    summaries = {}
    for name in splits:
        loader = datamodule.split_dataloader(name)
        if aligner is not None:
            summaries[name] = _align(model, loader, datamodule.tokenizer, aligner, cfg, name, suffix, run_dir,
                                     device)
        else:
            summaries[name] = _recognise(model, loader, datamodule.tokenizer, decoder, cfg, name, suffix,
                                         checkpoints, run_dir, device, tuned)
    return summaries if isinstance(cfg.split, ListConfig | list | tuple) else summaries[splits[0]]


def _recognise(model, loader, tokenizer, decoder, cfg, split, suffix, checkpoints, run_dir, device,
               tuned: dict | None = None) -> dict:
    """Recognises every utterance of `loader` and writes the WER files of `split`; returns the summary
    (`tuned`: the point chosen on dev by tune=true, recorded in the settings)."""
    out_dir = run_dir / "decode"
    results, audio_s, decode_s = [], 0.0, 0.0
    with torch.no_grad():
        for batch in loader:
            if cfg.max_utterances is not None and len(results) >= cfg.max_utterances:
                break
            start = time.perf_counter()
            batch = to_device(batch, device)
            enc, lengths = model.encode(batch["features"], batch["feature_lengths"])
            hyps = decoder(model, enc, lengths)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the time includes the queued kernels
            decode_s += time.perf_counter() - start
            audio_s += float(batch["durations"].sum())
            results += [(uid, ref, tokenizer.decode(h)) for uid, ref, h in zip(batch["ids"], batch["texts"], hyps)]
    settings = {"decoding": OmegaConf.to_container(cfg.decoding), "checkpoints": [str(p) for p in checkpoints],
                "split": split, "loss": model.objective.name, "device": str(device)}
    if tuned is not None:
        settings["tuned"] = tuned
    summary = write_results(out_dir, split, suffix, results, settings,
                            real_time_factor=decode_s / max(audio_s, 1e-9), device=str(device))
    log.info(f"{split} WER {100 * summary['wer']:.2f}% ({summary['utterances']} utterances, "
             f"RTF {summary['real_time_factor']:.3f} on {device}); files in {out_dir} with suffix {suffix}")
    summary_file = out_dir / f"wer-summary-{split}-{suffix}.txt"
    print(f"{model.objective.name} {split} WER {100 * summary['wer']:.2f}%  ({summary_file})")
    if cfg.log_to_wandb:
        _log_wandb(run_dir, {f"decode/{split}_wer_{suffix}": summary["wer"]})
    return summary


def _align(model, loader, tokenizer, aligner, cfg, split, suffix, run_dir, device) -> dict:
    """Force-aligns the references of `loader`: a CTM file and occupancy plots of `split`."""
    out_dir = run_dir / "decode"
    frame_shift = 0.01 * getattr(model.transcriber, "stack", 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctm_path = out_dir / f"ctm-{split}-{suffix}.ctm"
    plots, count, infeasible = [], 0, 0
    with open(ctm_path, "w") as ctm:
        for batch in loader:
            if cfg.max_utterances is not None and count >= cfg.max_utterances:
                break
            for alignment in aligner(model, to_device(batch, device)):
                count += 1
                infeasible += int(alignment.score == float("-inf"))
                ctm.writelines(line + "\n" for line in ctm_lines(alignment, tokenizer, frame_shift))
                if len(plots) < aligner.num_plots:
                    plot_dir = out_dir / f"align-{split}-{suffix}"
                    plots.append(plot_alignment(alignment, tokenizer, plot_dir / f"{alignment.utterance_id}.png"))
    log.info(f"{split}: aligned {count} utterances ({infeasible} infeasible): {ctm_path}, {len(plots)} plots")
    print(f"{model.objective.name} {split}: aligned {count} utterances -> {ctm_path}")
    if cfg.log_to_wandb and plots:
        _log_wandb(run_dir, {f"decode/alignments_{split}": plots})
    return {"utterances": count, "infeasible": infeasible, "ctm": str(ctm_path), "plots": [str(p) for p in plots],
            "device": str(device), "split": split}


def _log_wandb(run_dir: Path, values: dict) -> None:
    """Adds values (numbers, or PNG paths as images) to the training run's wandb run, if it has one."""
    runs = sorted((run_dir / "wandb").glob("*run-*"))
    if not runs:
        return
    import wandb

    run_id = runs[-1].name.rsplit("-", 1)[-1]
    mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    run = wandb.init(id=run_id, resume="allow", dir=str(run_dir), mode=mode, project="seqloss-asr")
    run.log({k: ([wandb.Image(str(p)) for p in v] if isinstance(v, list) else v) for k, v in values.items()})
    run.finish()


@hydra.main(version_base="1.3", config_path="conf", config_name="decode.yaml")
def main(cfg: DictConfig) -> None:
    decode(cfg)


def moved_override_message(argv: list[str]) -> str | None:
    """The message for `decoding=viterbi`, which became `alignment=viterbi` (else None)."""
    if "decoding=viterbi" in argv:
        return ("decode.py: decoding=viterbi is now alignment=viterbi (forced alignment is decode.py's other mode, "
                "not a decoder): python decode.py alignment=viterbi ...")
    return None


if __name__ == "__main__":
    if moved := moved_override_message(sys.argv[1:]):
        sys.exit(moved)
    main()
