"""seqloss: exact sequence losses (CTC, simplified CTC, RNN-T, modified transducer, SSNT)."""
from .ctc import ctc_loss, simple_ctc_loss
from .rnnt import modified_rnnt_loss, rnnt_loss
from .ssnt import ssnt_loss, ssnt_loss_gathered
from .joiner import Joiner, fused_transducer_loss
from ._selfcheck import SelfCheckReport, check_backend
from .align import (Alignment, SSNTPosteriors, TransducerPosteriors, ctc_align, ctc_posteriors,
                    modified_rnnt_align, modified_rnnt_posteriors, rnnt_align, rnnt_posteriors, simple_ctc_align,
                    simple_ctc_posteriors, ssnt_align, ssnt_posteriors)

__all__ = [
    "ctc_loss", "simple_ctc_loss", "rnnt_loss", "modified_rnnt_loss", "ssnt_loss", "ssnt_loss_gathered",
    "Alignment", "TransducerPosteriors", "SSNTPosteriors",
    "ctc_align", "ctc_posteriors", "simple_ctc_align", "simple_ctc_posteriors", "rnnt_align", "rnnt_posteriors",
    "modified_rnnt_align", "modified_rnnt_posteriors", "ssnt_align", "ssnt_posteriors",
    "Joiner", "fused_transducer_loss", "check_backend", "SelfCheckReport",
]
