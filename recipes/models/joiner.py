"""The transducer joiner of the recipe (seqloss's joiner), and how a loss may evaluate it (`MODES`)."""
import seqloss

# how a transducer or SSNT objective evaluates the joiner (its `joiner_mode`, config key `loss.joiner_mode`):
# `dense` builds the padded (B, T, U+1, V) tensor, `packed` only the valid cells (Σ_b T_b (U_b+1), V),
# `fused` hands the joiner to `seqloss.fused_transducer_loss`, which never builds the 4-D tensor
MODES = ("dense", "packed", "fused")


class Joiner(seqloss.Joiner):
    """logits(t, u) = W_o act(W_e enc_t + W_p pred_u + b) + b_o, i.e. :class:`seqloss.Joiner`.

    How the loss evaluates it is the objective's `joiner_mode` (config `loss.joiner_mode`), not the
    joiner's: `mode` is refused with a message naming the key that replaced `model.joiner.mode`
    (configs of runs and model files that still carry it are upgraded by :func:`upgrade_model_config`).
    """

    def __init__(self, encoder_dim: int, predictor_dim: int, joiner_dim: int, vocab_size: int,
                 activation: str = "tanh", mode: str | None = None) -> None:
        if mode is not None:
            raise ValueError(f"model.joiner.mode={mode} is no longer a joiner setting: the loss evaluates the joiner, "
                             f"set loss.joiner_mode={mode} (one of {', '.join(MODES)})")
        super().__init__(encoder_dim, predictor_dim, joiner_dim, vocab_size, activation=activation)


def upgrade_model_config(model_config):
    """A `model:` config (dict or DictConfig, changed in place and returned) written when the joiner mode was
    `model.joiner.mode`: the mode moves to the objective's `joiner_mode`. Runs and model files written before
    the move decode and export as they did. Configs without the old key are returned unchanged."""
    joiner = model_config.get("joiner")
    if joiner is None or "mode" not in joiner:
        return model_config
    mode = joiner.pop("mode")
    objective = model_config.get("objective")
    if objective is not None and "joiner_mode" not in objective:
        objective["joiner_mode"] = mode
    return model_config
