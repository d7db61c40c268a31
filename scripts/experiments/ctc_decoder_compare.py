#!/usr/bin/env python
"""decoding=beam_lm against torchaudio's ctc_decoder (flashlight's lexicon decoder with KenLM) on one
CTC run's dev split, with the same LM file, lexicon (training words spelled by the tokenizer), beam
size and weights (docs/lm.md, "Why not torchaudio's ctc_decoder").

    pip install flashlight-text==0.0.7      # not a dependency of the recipe
    python scripts/experiments/ctc_decoder_compare.py logs/lm_exp/ctc [--lm-weight 0.5] [--word-score 0]

flashlight scores the LM in log10 and the emissions in ln: its lm_weight is ours times ln 10. The
sentencepiece tokens have no silence token, so the blank serves as one (sil_score 0).
"""
import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from decode import averaged_state_dict  # noqa: E402
from recipes.data.text import normalize_text  # noqa: E402
from recipes.decoding.arpa import ArpaLM  # noqa: E402
from recipes.decoding.beam_lm import BeamLMDecoder  # noqa: E402
from recipes.metrics.wer import EditCounts, edit_counts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a CTC training run directory (config.yaml, checkpoints/)")
    parser.add_argument("--lm-weight", type=float, default=0.5)
    parser.add_argument("--word-score", type=float, default=0.0)
    parser.add_argument("--beam-size", type=int, default=8)
    parser.add_argument("--avg", type=int, default=4, help="average the newest N epoch checkpoints")
    args = parser.parse_args()
    from torchaudio.models.decoder import ctc_decoder  # needs flashlight-text

    cfg = OmegaConf.load(args.run / "config.yaml")
    checkpoints = sorted((args.run / "checkpoints").glob("epoch*.ckpt"))[-args.avg:]
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    loader = datamodule.split_dataloader("dev")
    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(averaged_state_dict(checkpoints))
    model.eval()
    if model.objective.name != "ctc":
        raise ValueError(f"run: {args.run} was trained with loss {model.objective.name}, not ctc")
    tokenizer, arpa = datamodule.tokenizer, datamodule.word_lm(3)
    words = sorted({w for text in datamodule.training_texts() for w in text.split()})
    pieces = tokenizer.token_strings()
    with tempfile.TemporaryDirectory() as folder:
        lexicon = Path(folder) / "lexicon.txt"
        lexicon.write_text("".join(f"{w}\t{' '.join(pieces[i] for i in tokenizer.encode(w))}\n" for w in words))
        theirs = ctc_decoder(lexicon=str(lexicon), tokens=pieces, lm=str(arpa), nbest=1, beam_size=args.beam_size,
                             beam_size_token=args.beam_size + 1, lm_weight=args.lm_weight * math.log(10),
                             word_score=args.word_score, sil_score=0.0, blank_token=pieces[0], sil_token=pieces[0],
                             unk_word="<unk>", log_add=True)
    ours = BeamLMDecoder(args.beam_size, args.lm_weight, args.word_score, lexicon=True)
    ours.prepare(ArpaLM.load(arpa), tokenizer, words)
    counts = {"torchaudio ctc_decoder": EditCounts(), "beam_lm": EditCounts()}
    seconds = dict.fromkeys(counts, 0.0)
    with torch.no_grad():
        for batch in loader:
            enc, lengths = model.encode(batch["features"], batch["feature_lengths"])
            start = time.perf_counter()
            results = theirs(model.ctc_head(enc).float().cpu(), lengths.cpu().int())
            seconds["torchaudio ctc_decoder"] += time.perf_counter() - start
            start = time.perf_counter()
            hyps = ours(model, enc, lengths)
            seconds["beam_lm"] += time.perf_counter() - start
            for ref, result, hyp in zip(batch["texts"], results, hyps, strict=True):
                ref = normalize_text(ref).split()
                counts["torchaudio ctc_decoder"] += edit_counts(ref, list(result[0].words))
                counts["beam_lm"] += edit_counts(ref, normalize_text(tokenizer.decode(hyp)).split())
    for name, count in counts.items():
        print(f"{name}: lm_weight {args.lm_weight}, word_score {args.word_score}: dev WER {100 * count.wer:.2f}% "
              f"({count.errors}/{count.ref_words}), search {seconds[name]:.1f} s")


if __name__ == "__main__":
    main()
