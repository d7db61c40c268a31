"""The acoustic encoder: frame stacking (subsampling) followed by (bi)LSTM layers."""
import torch
from torch import nn

from recipes.models.lstm_precision import run_lstm


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
        out = run_lstm(self._run_lstm, stacked, lengths)  # float32 where the CPU has no bf16 LSTM
        valid = torch.arange(t_out, device=features.device)[None, :] < lengths.to(features.device)[:, None]
        out = out * valid[:, :, None].to(out.dtype)  # padding frames read as zeros, as a packed LSTM leaves them
        return self.output(self.dropout(out)), lengths

    def _run_lstm(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The LSTM stack over right-padded `x` (B, T', D), exact at every valid frame t < lengths[b].

        A forward-in-time direction over right-padded input never sees the padding before a valid
        frame, so it runs on the padded batch as it is. The backward-in-time direction runs over each
        utterance reversed within its own length (x_rev[b, t] = x[b, L_b - 1 - t] for t < L_b), and its
        outputs are put back in order by the same permutation. This gives the packed-sequence result
        without packing, which the CPU runs faster (oneDNN's LSTM takes the padded batch; README).
        """
        lstm = self.lstm
        if not lstm.bidirectional:
            return lstm(x)[0]
        b, t, _ = x.shape
        steps = torch.arange(t, device=x.device)[None, :]
        ends = lengths.to(x.device)[:, None]
        reverse = torch.where(steps < ends, ends - 1 - steps, steps)[:, :, None]  # (B, T', 1), an involution
        zeros = x.new_zeros(1, b, lstm.hidden_size)
        state = (zeros, zeros)
        out = x
        for layer in range(lstm.num_layers):
            if layer > 0 and lstm.dropout > 0:
                out = nn.functional.dropout(out, lstm.dropout, self.training)
            directions = []
            for suffix in ("", "_reverse"):
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}")
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inputs = out if not suffix else out.gather(1, reverse.expand(-1, -1, out.shape[2]))
                result = torch.lstm(inputs, state, weights, True, 1, 0.0, self.training, False, True)[0]
                directions.append(result if not suffix else result.gather(1, reverse.expand(-1, -1, result.shape[2])))
            out = torch.cat(directions, dim=2)
        return out
