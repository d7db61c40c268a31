"""The acoustic encoder: frame stacking (subsampling) followed by (bi)LSTM layers."""
import torch
from torch import nn


class LSTMTranscriber(nn.Module):
    """Maps features (B, T, input_dim) to encodings (B, T // stack, output_dim).

    Every `stack` consecutive frames are concatenated into one (a trailing partial group is
    dropped), which subsamples time by `stack`; then `num_layers` LSTM layers (bidirectional if
    asked) run over the stacked frames and a linear layer projects to `output_dim`.
    """

    def __init__(
        self,
        input_dim: int = 80,
        stack: int = 4,
        hidden_dim: int = 256,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.1,
        output_dim: int = 256,
    ) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        self.input_dim = input_dim
        self.stack = stack
        self.output_dim = output_dim
        self.lstm = nn.LSTM(
            input_size=input_dim * stack,
            hidden_size=hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim * (2 if bidirectional else 1), output_dim)

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        """Number of encoder frames for each input length (floor division by `stack`)."""
        return torch.div(feature_lengths, self.stack, rounding_mode="floor")

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns encodings (B, T', output_dim) and their lengths (B,), T' = T // stack."""
        if features.dim() != 3 or features.shape[-1] != self.input_dim:
            raise ValueError(f"features must be (B, T, {self.input_dim}), got {tuple(features.shape)}")
        b, t, d = features.shape
        t_out = t // self.stack
        if t_out == 0:
            raise ValueError(f"features have {t} frames, fewer than the stacking factor {self.stack}")
        stacked = features[:, : t_out * self.stack].reshape(b, t_out, d * self.stack)
        lengths = self.output_lengths(feature_lengths).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(stacked, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t_out)
        return self.output(self.dropout(out)), lengths
