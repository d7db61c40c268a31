"""seqloss: exact sequence losses (CTC, simplified CTC, RNN-T, modified transducer, SSNT).

Every loss runs in three stages (docs/design.md §2): ``seqloss.scores`` turns logits or
log-probabilities into the scores of each lattice edge, the lattice recursions (``native`` or
``torch`` backend) give log P and the edge occupancies, and each loss module chains them back to
the gradient of its input. ``seqloss.packing`` maps packed (ragged) batches to lattice cells.
"""
from ._selfcheck import SelfCheckReport, check_backend
from .align import (
                    Alignment,
                    SSNTPosteriors,
                    TransducerPosteriors,
                    ctc_align,
                    ctc_posteriors,
                    modified_rnnt_align,
                    modified_rnnt_posteriors,
                    rnnt_align,
                    rnnt_posteriors,
                    simple_ctc_align,
                    simple_ctc_posteriors,
                    ssnt_align,
                    ssnt_posteriors,
)
from .ctc import ctc_loss, simple_ctc_loss
from .joiner import Joiner, fused_transducer_loss
from .packing import packed_cells, packed_offsets, packed_positions, packed_to_padded
from .rnnt import modified_rnnt_loss, rnnt_loss
from .scores import CTCScores, EdgeScores, ctc_scores, simple_ctc_scores, ssnt_scores, transducer_scores
from .ssnt import ssnt_loss, ssnt_loss_gathered

__all__ = [
    "ctc_loss", "simple_ctc_loss", "rnnt_loss", "modified_rnnt_loss", "ssnt_loss", "ssnt_loss_gathered",
    "Alignment", "TransducerPosteriors", "SSNTPosteriors",
    "ctc_align", "ctc_posteriors", "simple_ctc_align", "simple_ctc_posteriors", "rnnt_align", "rnnt_posteriors",
    "modified_rnnt_align", "modified_rnnt_posteriors", "ssnt_align", "ssnt_posteriors",
    "EdgeScores", "CTCScores", "transducer_scores", "simple_ctc_scores", "ctc_scores", "ssnt_scores",
    "packed_cells", "packed_offsets", "packed_positions", "packed_to_padded",
    "Joiner", "fused_transducer_loss", "check_backend", "SelfCheckReport",
]
