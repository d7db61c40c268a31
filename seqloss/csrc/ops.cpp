// Schemas of the seqloss custom ops. Kernels: cpu/lattice_cpu.cpp (CPU), cuda/lattice_cuda.cu (CUDA);
// fake (meta) kernels and autograd formulas are registered in Python (seqloss/_ops.py).
#include <torch/library.h>

TORCH_LIBRARY(seqloss, m) {
  // Transducer lattice of seqloss/_lattice/transducer.py on the grid extended by one row.
  // blank (B,T,U+1), emit (B,T,U) float32/float64; frames = T_b, labels = U_b int64 (B,).
  // Returns log P (B,) = alpha(T_b, U_b), alpha (B,T+1,U+1) and beta (B,T+1,U+1).
  m.def(
      "transducer_lattice(Tensor blank, Tensor emit, Tensor frames, Tensor labels, bool one_symbol_per_frame)"
      " -> (Tensor, Tensor, Tensor)");
  // CTC lattice of seqloss/_lattice/ctc.py: e (T,B,S) emission scores of the extended labels ext (B,S) int64.
  // Returns log P (B,) and state occupancies gamma (T,B,S) = d log P / d e.
  m.def(
      "ctc_occupancy(Tensor e, Tensor ext, Tensor target_lengths, Tensor input_lengths, int blank)"
      " -> (Tensor, Tensor)");
  // Viterbi (max-plus) over the transducer lattice: best path score (B,) and, for every label u < U_b,
  // the frame t of the cell (t, u) whose emit edge the best path takes (-1 past U_b or without a path).
  m.def(
      "transducer_viterbi(Tensor blank, Tensor emit, Tensor frames, Tensor labels, bool one_symbol_per_frame)"
      " -> (Tensor, Tensor)");
  // Viterbi over the CTC lattice: best path score (B,) and the extended-label state s of every frame
  // (B,T) int64 (-1 for t >= T_b or without a path); ext.gather(1, states) is the frame label path.
  // SSNT forward-backward on gathered scores (seqloss/ssnt.py): token = l_j(i), choose = q_j(i), both (B,J,S).
  // Returns log P (B,), d log P / d token and d log P / d choose (B,J,S). CPU only; CUDA runs SSNT through
  // transducer_lattice.
  m.def(
      "ssnt_lattice(Tensor token, Tensor choose, Tensor source_lengths, Tensor target_lengths)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "ctc_viterbi(Tensor e, Tensor ext, Tensor target_lengths, Tensor input_lengths, int blank)"
      " -> (Tensor, Tensor)");
  // The fused CTC loss of seqloss/ctc.py (CPU only): from (T,B,V) log-probs, padded int64 targets (B,L) and
  // lengths (B,): log P (B,) and the state occupancies gamma (T,B,2L+1) of ctc_occupancy, the emissions
  // gathered inside. ctc_loss_grad: scale[b] times gamma scattered onto the classes l'_s, (T,B,V).
  m.def(
      "ctc_loss(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank)"
      " -> (Tensor, Tensor)");
  m.def(
      "ctc_loss_grad(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, Tensor gamma,"
      " Tensor scale, int blank) -> Tensor");
  // The fused transducer loss of seqloss/rnnt.py (CPU only): from dense (B,T,U+1,V) logits with
  // T = max_frames, U = max_labels, or packed (sum_b T_b (U_b+1), V) ones, and int64 targets (B,U') and
  // lengths (B,). Returns log P (B,) and the (B, max_frames, max_labels+1) grids of the log-sum-exp of
  // each row (fused_log_softmax), occ_blank and occ_emit, zero outside each utterance's valid cells.
  m.def(
      "transducer_loss(Tensor logits, Tensor targets, Tensor logit_lengths, Tensor target_lengths, int blank,"
      " bool fused_log_softmax, bool one_symbol_per_frame, bool final_blank, int max_frames, int max_labels)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
  // d (sum_b scale[b] (-log P_b)) / d logits from those grids, every element clamped to [-clamp, clamp]
  // first when clamp > 0; padded rows of dense logits get 0. The in-place form writes it over the logits.
  m.def(
      "transducer_loss_grad(Tensor logits, Tensor targets, Tensor logit_lengths, Tensor target_lengths, Tensor lse,"
      " Tensor occ_blank, Tensor occ_emit, Tensor scale, int blank, float clamp, bool fused_log_softmax) -> Tensor");
  m.def(
      "transducer_loss_grad_(Tensor(a!) logits, Tensor targets, Tensor logit_lengths, Tensor target_lengths,"
      " Tensor lse, Tensor occ_blank, Tensor occ_emit, Tensor scale, int blank, float clamp, bool fused_log_softmax)"
      " -> ()");
}
