"""The transducer joiner of the recipe: seqloss's joiner plus how the loss evaluates it (`mode`)."""
import seqloss

MODES = ("dense", "packed", "fused")


class Joiner(seqloss.Joiner):
    """logits(t, u) = W_o act(W_e enc_t + W_p pred_u + b) + b_o, i.e. :class:`seqloss.Joiner`.

    `mode` says how the loss evaluates it: `dense` builds the padded (B, T, U+1, V) tensor,
    `packed` only the valid cells (Σ_b T_b (U_b+1), V), `fused` hands the joiner to
    `seqloss.fused_transducer_loss`, which never builds the 4-D tensor.
    """

    def __init__(self, encoder_dim: int, predictor_dim: int, joiner_dim: int, vocab_size: int,
                 activation: str = "tanh", mode: str = "dense") -> None:
        if mode not in MODES:
            raise ValueError(f"joiner mode must be one of {MODES}, got {mode!r}")
        super().__init__(encoder_dim, predictor_dim, joiner_dim, vocab_size, activation=activation)
        self.mode = mode
