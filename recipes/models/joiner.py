"""The transducer joiner: out(act(W_e enc + W_p pred)), evaluated dense, packed or fused."""
import torch
from torch import nn

import seqloss

MODES = ("dense", "packed", "fused")


class Joiner(nn.Module):
    """Combines encoder frames and predictor states into vocabulary logits.

    logits(t, u) = W_o act(W_e enc_t + W_p pred_u) + b. `mode` says how the loss evaluates it:
    `dense` builds the padded (B, T, U+1, V) tensor, `packed` only the valid cells
    (Σ_b T_b (U_b+1), V), `fused` hands the joiner to `seqloss.fused_transducer_loss`, which never
    builds the 4-D tensor.
    """

    def __init__(
        self,
        encoder_dim: int,
        predictor_dim: int,
        joiner_dim: int,
        vocab_size: int,
        activation: str = "tanh",
        mode: str = "dense",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"joiner mode must be one of {MODES}, got {mode!r}")
        if mode == "fused" and not hasattr(seqloss, "fused_transducer_loss"):
            raise NotImplementedError(
                "model.joiner.mode=fused needs seqloss.fused_transducer_loss, which this seqloss "
                "version does not provide; use model.joiner.mode=dense or packed"
            )
        activations = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in activations:
            raise ValueError(f"joiner activation must be one of {sorted(activations)}, got {activation!r}")
        self.mode = mode
        self.activation = activation
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joiner_dim, bias=False)
        self.act = activations[activation]()
        self.output = nn.Linear(joiner_dim, vocab_size)

    def hidden(self, enc_proj: torch.Tensor, pred_proj: torch.Tensor) -> torch.Tensor:
        """act(enc_proj + pred_proj) for already projected, broadcastable inputs."""
        return self.act(enc_proj + pred_proj)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Dense logits (B, T, U+1, V) from enc (B, T, E) and pred (B, U+1, P)."""
        return self.output(self.hidden(self.encoder_proj(enc)[:, :, None], self.predictor_proj(pred)[:, None]))

    def packed(
        self, enc: torch.Tensor, pred: torch.Tensor, enc_lengths: torch.Tensor, pred_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the valid cells only, (Σ_b T_b·P_b, V), rows ordered b, then t, then u.

        `pred_lengths` P_b = U_b + 1 counts predictor states; this is the layout of
        `seqloss.rnnt_loss`'s packed input (optimized_transducer's layout).
        """
        b_idx, t_idx, u_idx = valid_cells(enc_lengths, pred_lengths)
        enc_proj = self.encoder_proj(enc)[b_idx, t_idx]
        pred_proj = self.predictor_proj(pred)[b_idx, u_idx]
        return self.output(self.hidden(enc_proj, pred_proj))


def valid_cells(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (b, r, c) of every cell r < rows[b], c < cols[b], ordered b, then r, then c."""
    rows, cols = rows.long(), cols.long()
    device = rows.device
    sizes = rows * cols
    b_idx = torch.repeat_interleave(torch.arange(rows.numel(), device=device), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    flat = torch.arange(int(sizes.sum()), device=device) - starts[b_idx]
    cols_b = cols[b_idx]
    return b_idx, torch.div(flat, cols_b, rounding_mode="floor"), flat % cols_b
