#!/usr/bin/env python
"""Short fixed-step SSNT runs on the embedded corpus, and the dev decodes that compare them (docs/recipe.md, SSNT).

    python scripts/experiments/ssnt_short.py prior                       # the corpus's emit prior
    python scripts/experiments/ssnt_short.py train NAME [overrides...]   # 800 steps, dev WER every 200
    python scripts/experiments/ssnt_short.py decode NAME [--beam]        # dev WER of the last checkpoint
    python scripts/experiments/ssnt_short.py table NAME [NAME...]        # dev WER per step of finished runs

`train` runs `train.py loss=ssnt` (unless the overrides name another loss) on one thread for a fixed
number of optimizer steps, so that the result does not depend on the machine's load; runs go to
logs/experiments/ssnt_short/NAME. `decode` scores the dev set with the current greedy search, the
previous greedy rule (emit while P(emit) > 1/2, then the arg-max token) and, with --beam, beam
search of width 4; it also prints the mean log P(y | x) of the greedy and beam hypotheses and of the
references under the model's own objective (a search error when the reference scores higher than
what the search returns, a model error otherwise).
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "logs" / "experiments" / "ssnt_short"
STEPS, VAL_EVERY = 800, 200


def train(name: str, overrides: list[str]) -> None:
    """Trains STEPS optimizer steps with dev WER every VAL_EVERY steps into RUNS/name."""
    loss = [] if any(o.startswith("loss=") for o in overrides) else ["loss=ssnt"]
    command = [sys.executable, str(ROOT / "train.py"), *loss, f"trainer.max_steps={STEPS}", "trainer.max_time=null",
               "trainer.max_epochs=1000", "num_threads=1", "logger=csv", "test=false",
               f"trainer.val_check_interval={VAL_EVERY}", "trainer.check_val_every_n_epoch=null",
               f"hydra.run.dir={RUNS / name}", *overrides]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def dev_wer_by_step(name: str) -> dict[int, float]:
    """{step: val/wer} from the run's CSV log."""
    path = RUNS / name / "csv" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"run {name!r} has no CSV log at {path}: train it first")
    out = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get("val/wer"):
                out[int(row["step"]) + 1] = float(row["val/wer"])
    return out


def table(names: list[str]) -> None:
    """Prints a Markdown table of dev WER (greedy, as logged during training) per step for each run."""
    rows = {name: dev_wer_by_step(name) for name in names}
    steps = sorted({s for r in rows.values() for s in r})
    print("| run | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * r[s]:.1f}%" if s in r else "" for s in steps) + " |")


def emit_prior() -> None:
    """Prints Σ U_b / Σ (U_b + T_b − 1) over the training set (U_b tokens, T_b encoder frames), and Σ (U_b + 1) /
    Σ (U_b + T_b) for the objective with the end token, from the manifests' durations and the tokenizer (no audio)."""
    sys.path.insert(0, str(ROOT))
    import hydra
    from hydra import compose, initialize_config_dir

    from recipes.data.features import SAMPLE_RATE, num_frames
    from recipes.data.text import normalize_text

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=["loss=ssnt"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    train = datamodule._train_utterances()
    tokenizer = datamodule._load_tokenizer(train)
    stack = int(cfg.model.transcriber.stack)
    tokens = sum(len(tokenizer.encode(normalize_text(u.text))) for u in train)
    frames = sum(num_frames(int(u.duration * SAMPLE_RATE)) // stack for u in train)
    prior = tokens / (tokens + frames - len(train))
    with_end = (tokens + len(train)) / (tokens + frames)  # one more emission per utterance: the end token
    print(json.dumps({"utterances": len(train), "tokens_per_frame": round(tokens / frames, 4),
                      "emit_prior": round(prior, 4), "emit_prior_with_end_token": round(with_end, 4)}))


def _previous_greedy_rule(model, enc, lengths, max_symbols_per_frame=3):
    """The greedy SSNT rule this recipe used before: emit while P(emit) > 1/2, the token the arg-max over non-blank
    ids; no rule for the last frame."""
    from recipes.decoding.greedy import _label_loop

    blank = model.objective.blank_id

    def choose(hidden):
        logits = model.joiner.output(hidden)
        logits[:, blank] = float("-inf")
        return model.choose_head(hidden) > math.log(0.5), logits.argmax(dim=-1)

    return _label_loop(enc, lengths, model.predictor, model.joiner, max_symbols_per_frame, choose)


def decode(name: str, beam: bool) -> None:
    """Dev WER (and S/D/I) of RUNS/name's last checkpoint for each search; mean log P of hypotheses and references."""
    sys.path.insert(0, str(ROOT))
    import hydra
    import torch
    from omegaconf import OmegaConf

    from recipes.data.text import normalize_text
    from recipes.decoding.beam import BeamSearchDecoder, objective_log_likelihood
    from recipes.decoding.greedy import GreedyDecoder
    from recipes.metrics.wer import word_error_counts
    from recipes.models.joiner import upgrade_model_config

    torch.set_num_threads(1)
    run = RUNS / name
    cfg = OmegaConf.load(run / "config.yaml")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    model = hydra.utils.instantiate(upgrade_model_config(cfg.model))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    searches = {"greedy": GreedyDecoder(3)}
    if model.objective.name == "ssnt":
        searches["greedy, previous rule"] = lambda m, e, lengths: _previous_greedy_rule(m, e, lengths, 3)
    if beam:
        searches["beam 4"] = BeamSearchDecoder(beam_size=4)
    refs, hyps = [], {key: [] for key in searches}
    log_p = {key: 0.0 for key in [*searches, "reference"]}
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            enc, lengths = model.encode(batch["features"], batch["feature_lengths"])
            refs += batch["texts"]
            found = {key: search(model, enc, lengths) for key, search in searches.items()}
            for b, length in enumerate(lengths.tolist()):
                reference = batch["targets"][b, : int(batch["target_lengths"][b])].tolist()
                candidates = [found[key][b] for key in searches] + [reference]
                scores = objective_log_likelihood(model, enc[b : b + 1, :length], candidates).tolist()
                for key, score in zip([*searches, "reference"], scores):
                    log_p[key] += score
            for key in searches:
                hyps[key] += [datamodule.tokenizer.decode(h) for h in found[key]]
    step = checkpoint["global_step"]
    for key in searches:
        counts = word_error_counts(refs, hyps[key], normalize_text)
        print(f"{name} step {step} {key}: dev WER {100 * counts.wer:.2f}% (sub {counts.substitutions}, "
              f"del {counts.deletions}, ins {counts.insertions} of {counts.ref_words} words), "
              f"mean log P {log_p[key] / len(refs):.2f}")
    print(f"{name} step {step} reference: mean log P {log_p['reference'] / len(refs):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prior")
    p_train = sub.add_parser("train")
    p_train.add_argument("name")
    p_train.add_argument("overrides", nargs="*")
    p_decode = sub.add_parser("decode")
    p_decode.add_argument("name")
    p_decode.add_argument("--beam", action="store_true")
    p_table = sub.add_parser("table")
    p_table.add_argument("names", nargs="+")
    args = parser.parse_args()
    if args.command == "prior":
        emit_prior()
    elif args.command == "train":
        train(args.name, args.overrides)
    elif args.command == "decode":
        decode(args.name, args.beam)
    else:
        table(args.names)


if __name__ == "__main__":
    main()
