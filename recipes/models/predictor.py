"""The prediction network: token embedding followed by an LSTM, conditioned on the previous tokens."""
import torch
from torch import nn

from recipes.models.lstm_precision import run_lstm

State = tuple[torch.Tensor, torch.Tensor]


class LSTMPredictor(nn.Module):
    """Label-side network of transducer and SSNT models.

    Position u of the output summarises the tokens y_<u; the sequence is fed with the blank id
    as start symbol, so `forward` on targets (B, U) gives (B, U + 1, output_dim).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.1,
        output_dim: int = 256,
        blank_id: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.output_dim = output_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, output_dim)

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        """Returns (B, U + 1, output_dim): output u has seen the start symbol and y_0 .. y_{u-1}."""
        start = torch.full_like(targets[:, :1], self.blank_id)
        out, _ = run_lstm(self.lstm, self.dropout(self.embedding(torch.cat([start, targets], dim=1))))
        return self.output(self.dropout(out))

    def step(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One decoding step: tokens (B,) → output (B, output_dim) and the new LSTM state."""
        out, state = run_lstm(self.lstm, self.embedding(tokens)[:, None], state)
        return self.output(out[:, 0]), state
