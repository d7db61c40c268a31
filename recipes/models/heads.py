"""Heads used by single losses: the CTC output layer and the SSNT choose (emit) head."""
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
    is log σ(w · h + b) of shape (...).
    """

    def __init__(self, joiner_dim: int) -> None:
        super().__init__()
        self.output = nn.Linear(joiner_dim, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(self.output(hidden).squeeze(-1))
