"""seqloss: exact sequence losses (CTC, simplified CTC, RNN-T, modified transducer, SSNT)."""
from .ctc import ctc_loss, simple_ctc_loss
from .rnnt import modified_rnnt_loss, rnnt_loss
from .ssnt import ssnt_loss

__all__ = ["ctc_loss", "simple_ctc_loss", "rnnt_loss", "modified_rnnt_loss", "ssnt_loss"]
