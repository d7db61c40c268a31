"""Heads used by single losses: the CTC output layer and the SSNT choose (emit) head."""
import math

import torch
from torch import nn


class CTCHead(nn.Module):
    """Linear layer from encodings (B, T, encoder_dim) to log-probabilities (B, T, vocab_size)."""

    def __init__(self, encoder_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.output = nn.Linear(encoder_dim, vocab_size)

    def forward(self, encodings: torch.Tensor) -> torch.Tensor:
        return self.output(encodings).log_softmax(dim=-1)


class ChooseHead(nn.Module):
    """SSNT emission head: log P(emit at frame i | predictor state j) from the joiner's hidden layer.

    Input is the joiner activation act(W_e enc_i + W_p pred_j) of shape (..., joiner_dim); output
    is log σ(w · h + b) of shape (...); log P(shift) is log(1 − σ(w · h + b)) = log σ(−(w · h + b)).

    `emit_prior` in (0, 1) initialises the head so that P(emit) = emit_prior in every cell:
    w = 0 and b = log(emit_prior / (1 − emit_prior)). The maximum-likelihood constant for a corpus
    is Σ_b U_b / Σ_b (U_b + T_b − 1) (U_b tokens, T_b encoder frames: an SSNT path emits U_b times
    and shifts T_b − 1 times). None keeps PyTorch's default initialisation (P(emit) ≈ 1/2).
    """

    def __init__(self, joiner_dim: int, emit_prior: float | None = None) -> None:
        super().__init__()
        self.output = nn.Linear(joiner_dim, 1)
        if emit_prior is not None:
            if not 0.0 < emit_prior < 1.0:
                raise ValueError(f"emit_prior must be in (0, 1), got {emit_prior}")
            with torch.no_grad():
                self.output.weight.zero_()
                self.output.bias.fill_(math.log(emit_prior / (1.0 - emit_prior)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(self.output(hidden).squeeze(-1))


def ssnt_scores(joiner: nn.Module, choose_head: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSNT scores of joiner activations `hidden` (..., joiner_dim), in float32: the token
    log-probabilities log q (..., vocab) (the joiner's output, log-softmax) and log P(emit) (...).

    The one place where a cell of the SSNT lattice is scored: the objective, forced alignment,
    greedy and beam search all call it.
    """
    return joiner.output(hidden).float().log_softmax(dim=-1), choose_head(hidden).float()
