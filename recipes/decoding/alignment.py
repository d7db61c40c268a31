"""Viterbi forced alignment of the references, as token timings (CTM) and occupancy plots.

For each utterance the loss's lattice gives (the objective's ``align`` hook, with seqloss
``*_align`` / ``*_posteriors``):
* the best path given the reference: the encoder frame of every token, written as CTM lines
  ``<utterance> 1 <start s> <duration s> <token>`` (one encoder frame = ``frame_shift`` seconds);
* the posterior occupancy of the lattice, drawn as an image (frames x target positions) with the
  best path over it.
"""
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class LatticeAlignment:
    """What an objective's ``align`` hook returns for a batch of B references of at most U tokens."""

    token_frames: torch.Tensor     # (B, U) encoder frame of each reference token (-1: infeasible utterance)
    scores: torch.Tensor           # (B,) best path log score
    occupancy: list[torch.Tensor]  # per utterance: (frames, positions) posterior occupancy, on the CPU


@dataclass
class UtteranceAlignment:
    utterance_id: str
    tokens: list[int]          # reference token ids
    token_frames: list[int]    # encoder frame of each token (-1: infeasible utterance)
    score: float               # best path log score
    occupancy: torch.Tensor    # (frames, positions) posterior occupancy of the lattice


@torch.no_grad()
def force_align(model, batch: dict) -> list[UtteranceAlignment]:
    """Best paths and occupancies of the references of ``batch`` under ``model``'s objective (its ``align`` hook)."""
    enc, enc_lengths = model.encode(batch["features"], batch["feature_lengths"])
    targets, target_lengths = batch["targets"], batch["target_lengths"]
    lattice = model.objective.align(model, enc, enc_lengths, targets, target_lengths)
    out = []
    for b, uid in enumerate(batch["ids"]):
        length = int(target_lengths[b])
        out.append(UtteranceAlignment(uid, targets[b, :length].tolist(), lattice.token_frames[b, :length].tolist(),
                                      float(lattice.scores[b]), lattice.occupancy[b]))
    return out


def ctm_lines(alignment: UtteranceAlignment, tokenizer, frame_shift: float) -> list[str]:
    """CTM lines of one utterance: each token starts on its frame and lasts one frame."""
    return [f"{alignment.utterance_id} 1 {frame * frame_shift:.3f} {frame_shift:.3f} {_piece(tokenizer, token)}"
            for token, frame in zip(alignment.tokens, alignment.token_frames) if frame >= 0]


def _piece(tokenizer, token: int) -> str:
    text = tokenizer.decode([token]).strip() if tokenizer is not None else ""
    return text or f"<{token}>"


def plot_alignment(alignment: UtteranceAlignment, tokenizer, path, title: str = "") -> Path:
    """PNG of the occupancy (frames across, target positions up) with the best path's tokens marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = alignment.occupancy.numpy().T
    width = max(4.0, min(16.0, grid.shape[1] / 8))
    fig, ax = plt.subplots(figsize=(width, max(2.5, min(10.0, grid.shape[0] / 4))))
    ax.imshow(grid, origin="lower", aspect="auto", cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    points = [(f, u) for u, f in enumerate(alignment.token_frames) if f >= 0]
    if points:
        ax.plot([f for f, _ in points], [u for _, u in points], "r.-", linewidth=1, markersize=5, label="Viterbi")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_yticks(range(len(alignment.tokens)))
    ax.set_yticklabels([_piece(tokenizer, t) for t in alignment.tokens], fontsize=6)
    ax.set_xlabel("encoder frame")
    ax.set_ylabel("target token")
    ax.set_title(title or f"{alignment.utterance_id}  best path score {alignment.score:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class ForcedAligner:
    """``decode.py alignment=viterbi``: align the references instead of recognising; plot ``num_plots`` utterances."""

    def __init__(self, num_plots: int = 10) -> None:
        if num_plots < 0:
            raise ValueError(f"num_plots must be >= 0, got {num_plots}")
        self.num_plots = num_plots

    def __call__(self, model, batch: dict) -> list[UtteranceAlignment]:
        """The alignment of each reference of ``batch`` (see :func:`force_align`)."""
        return force_align(model, batch)
