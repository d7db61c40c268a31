"""Stage 2 of every loss: forward/backward recursions over small (B, T, U+1) score tensors.

These are the pure-PyTorch reference recursions. They are vectorised over the batch and the label
positions, loop over time (or anti-diagonals), and are written with out-of-place ops only, so the
same code serves the fast path (under ``no_grad``) and the double-backward path (under autograd).
"""
