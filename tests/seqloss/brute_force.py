"""Brute-force reference log-likelihoods for the seqloss losses (docs/design.md §3).

Every function here works on ONE utterance, already cut to its lengths, and returns log P as a
0-dim float64 tensor. There is deliberately no dynamic programming: each function lists every path
(alignment) explicitly as a matrix of indices into the flattened score tensor, sums each path's
scores with a single ``gather``, and takes ``torch.logsumexp`` over the paths. The result is
therefore differentiable w.r.t. the score tensors (the gradient of log P is the path posterior
mass on each entry), and it is ``-inf`` (with a zero gradient) when no path exists.

Scores are treated as free numbers: a path's score is just the sum of the entries it picks, so
unnormalised inputs are fine.

Cost grows combinatorially; keep T, U, J, S small (say T <= 8).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "ctc_logp",
    "simple_ctc_logp",
    "rnnt_logp",
    "modified_rnnt_logp",
    "ssnt_logp",
    "ctc_paths",
    "simple_ctc_paths",
    "rnnt_paths",
    "modified_rnnt_paths",
    "ssnt_alignments",
]


# --------------------------------------------------------------------------------------------
# helpers


def _as_list(target: Iterable[int]) -> list[int]:
    if isinstance(target, torch.Tensor):
        return [int(x) for x in target.reshape(-1).tolist()]
    return [int(x) for x in target]


def _logsumexp_paths(flat: torch.Tensor, index_rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """LSE over paths of the sum of ``flat[i]`` for the indices ``i`` of each path.

    All rows must have the same length. With no path the result is -inf, still attached to the
    autograd graph (zero gradient).
    """
    if len(index_rows) == 0:
        return (flat * 0).sum() + float("-inf")
    idx = torch.tensor(index_rows, dtype=torch.long, device=flat.device)
    if idx.dim() == 1 or idx.shape[1] == 0:  # every path has zero steps: each scores 0
        scores = (flat * 0).sum() + flat.new_zeros(len(index_rows))
    else:
        scores = flat[idx].sum(dim=1)
    return torch.logsumexp(scores, dim=0)


def _check_float64(x: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating tensor")
    return x.to(torch.float64)


# --------------------------------------------------------------------------------------------
# CTC (design 3.1)


def _ctc_collapse(seq: Sequence[int], blank: int) -> list[int]:
    out: list[int] = []
    prev = None
    for s in seq:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def ctc_paths(T: int, target: Sequence[int], blank: int) -> list[tuple[int, ...]]:
    """All length-T frame label sequences whose CTC collapse (merge repeats, drop blanks) is ``target``.

    Only symbols in {blank} U set(target) can occur on such a path, so the search runs over that
    alphabet (|A|^T candidates) and filters by the collapse. A target containing ``blank`` has no path.
    """
    target = _as_list(target)
    alphabet = sorted({blank, *target})
    return [seq for seq in itertools.product(alphabet, repeat=T) if _ctc_collapse(seq, blank) == target]


def ctc_logp(log_probs: torch.Tensor, target: Iterable[int], blank: int = 0) -> torch.Tensor:
    """CTC log-likelihood: LSE over ``ctc_paths`` of sum_t log_probs[t, path[t]].

    log_probs: (T, V) scores (normalised or not). target: label ids (length L).
    """
    lp = _check_float64(log_probs, "log_probs")
    T, V = lp.shape
    rows = [[t * V + s for t, s in enumerate(seq)] for seq in ctc_paths(T, _as_list(target), blank)]
    return _logsumexp_paths(lp.reshape(-1), rows)


# --------------------------------------------------------------------------------------------
# simplified CTC (design 3.2)


def simple_ctc_paths(T: int, target: Sequence[int], blank: int) -> list[tuple[int, ...]]:
    """Frame label sequences of the simplified CTC: each frame emits blank or the *next* label.

    A path is a choice of the L frames (in increasing order) that emit y_1..y_L, the other T-L
    frames emit blank; repeats are not merged. There are C(T, L) paths (none when L > T).
    """
    target = _as_list(target)
    L = len(target)
    paths = []
    for frames in itertools.combinations(range(T), L):
        seq = [blank] * T
        for t, y in zip(frames, target):
            seq[t] = y
        paths.append(tuple(seq))
    return paths


def simple_ctc_logp(log_probs: torch.Tensor, target: Iterable[int], blank: int = 0) -> torch.Tensor:
    """Simplified-CTC log-likelihood: LSE over ``simple_ctc_paths`` of sum_t log_probs[t, path[t]].

    log_probs: (T, V) scores. Equals -loss of design 3.2 (alpha_T(L)).
    """
    lp = _check_float64(log_probs, "log_probs")
    T, V = lp.shape
    rows = [[t * V + s for t, s in enumerate(seq)] for seq in simple_ctc_paths(T, _as_list(target), blank)]
    return _logsumexp_paths(lp.reshape(-1), rows)


# --------------------------------------------------------------------------------------------
# RNN-T (design 3.3)


def rnnt_paths(T: int, target: Sequence[int], blank: int) -> list[list[tuple[int, int, int]]]:
    """All RNN-T lattice paths as lists of (t, u, token) steps.

    From (0, 0) to (T-1, U): every step is either a blank at (t, u) (t -> t+1) or the emission of
    y_{u+1} at (t, u) (u -> u+1); these are the C(T-1+U, U) orderings of T-1 blanks and U
    emissions. Every path then ends with the final blank at (T-1, U). No path when T = 0.
    """
    target = _as_list(target)
    U = len(target)
    if T < 1:
        return []
    n = T - 1 + U
    paths = []
    for emit_steps in itertools.combinations(range(n), U):
        emit_set = set(emit_steps)
        t = u = 0
        path = []
        for k in range(n):
            if k in emit_set:
                path.append((t, u, target[u]))
                u += 1
            else:
                path.append((t, u, blank))
                t += 1
        assert (t, u) == (T - 1, U)
        path.append((T - 1, U, blank))
        paths.append(path)
    return paths


def _grid_rows(paths, U1: int, V: int) -> list[list[int]]:
    return [[(t * U1 + u) * V + s for t, u, s in path] for path in paths]


def rnnt_logp(log_probs: torch.Tensor, target: Iterable[int], blank: int = -1) -> torch.Tensor:
    """RNN-T log-likelihood: LSE over ``rnnt_paths`` of the summed log_probs[t, u, token] of each step.

    log_probs: (T, U+1, V) (already log-softmaxed if torchaudio parity is wanted; the sum is taken
    as is). A negative ``blank`` counts from the end, as in torchaudio.
    """
    lp = _check_float64(log_probs, "log_probs")
    T, U1, V = lp.shape
    target = _as_list(target)
    if U1 != len(target) + 1:
        raise ValueError(f"log_probs has {U1} columns, expected len(target)+1 = {len(target) + 1}")
    blank = blank % V
    return _logsumexp_paths(lp.reshape(-1), _grid_rows(rnnt_paths(T, target, blank), U1, V))


# --------------------------------------------------------------------------------------------
# modified (one symbol per frame) transducer (design 3.4)


def modified_rnnt_paths(
    T: int, target: Sequence[int], blank: int, final_blank: bool
) -> list[list[tuple[int, int, int]]]:
    """All one-symbol-per-frame paths as lists of (t, u, token), one step per frame.

    Frame t at state u emits exactly one token: blank (u stays) or y_{u+1} (u -> u+1).
    * final_blank=False (k2 "modified"): frames 0..T-1 carry exactly the U symbols; a path is a
      choice of U frames out of T (C(T, U) paths, none when U > T).
    * final_blank=True (optimized_transducer one_sym_per_frame): frames 0..T-2 carry the U
      symbols (C(T-1, U) choices) and frame T-1 emits blank at (T-1, U) (none when U > T-1).
    """
    target = _as_list(target)
    U = len(target)
    if final_blank and T < 1:
        return []
    n = T - 1 if final_blank else T
    paths = []
    for frames in itertools.combinations(range(n), U):
        frame_set = set(frames)
        u = 0
        path = []
        for t in range(n):
            if t in frame_set:
                path.append((t, u, target[u]))
                u += 1
            else:
                path.append((t, u, blank))
        if final_blank:
            path.append((T - 1, U, blank))
        paths.append(path)
    return paths


def modified_rnnt_logp(
    log_probs: torch.Tensor, target: Iterable[int], blank: int = -1, final_blank: bool = True
) -> torch.Tensor:
    """Modified-transducer log-likelihood: LSE over ``modified_rnnt_paths`` of summed log_probs[t, u, token].

    log_probs: (T, U+1, V). final_blank=True gives alpha(T-1, U) + blank(T-1, U); False gives alpha(T, U).
    """
    lp = _check_float64(log_probs, "log_probs")
    T, U1, V = lp.shape
    target = _as_list(target)
    if U1 != len(target) + 1:
        raise ValueError(f"log_probs has {U1} columns, expected len(target)+1 = {len(target) + 1}")
    blank = blank % V
    rows = _grid_rows(modified_rnnt_paths(T, target, blank, final_blank), U1, V)
    return _logsumexp_paths(lp.reshape(-1), rows)


# --------------------------------------------------------------------------------------------
# SSNT (design 3.5)


def ssnt_alignments(J: int, S: int) -> list[tuple[int, ...]]:
    """All SSNT alignments (a_0, ..., a_{J-1}): the source frame on which target j is emitted.

    0 <= a_0 <= a_1 <= ... <= a_{J-1} = S-1 (the last target is emitted exactly on the last
    source frame; several targets may share a frame). J = 0 has the single empty alignment when
    S = 1 and none otherwise (the model must end at frame S-1 having started at frame 0).
    """
    if S < 1:
        return []
    if J == 0:
        return [()] if S == 1 else []
    return [a + (S - 1,) for a in itertools.combinations_with_replacement(range(S), J - 1)]


def _log1mexp(q: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(q)) for q <= 0, computed stably."""
    return torch.where(q > -0.6931471805599453, torch.log(-torch.expm1(q)), torch.log1p(-torch.exp(q)))


def ssnt_logp(log_probs: torch.Tensor, target: Iterable[int], log_p_choose: torch.Tensor) -> torch.Tensor:
    """SSNT log-likelihood A_J(S-1): LSE over ``ssnt_alignments`` of the path scores.

    log_probs: (J, S, V); target: J ids; log_p_choose: (J, S) with q_j(i) = log p(emit target j at frame i).
    With l_j(i) = log_probs[j, i, y_j] and r_j(i) = log(1 - exp(q_j(i))), the alignment a (with
    a_{-1} := 0) scores
        sum_j [ sum_{m=a_{j-1}}^{a_j - 1} r_j(m)  +  q_j(a_j)  +  l_j(a_j) ]
    i.e. under target j the model shifts (prob 1-p) from the previous emission frame a_{j-1} up to
    a_j, then chooses to emit (prob p) and emits y_j there, staying on frame a_j for target j+1.
    """
    lp = _check_float64(log_probs, "log_probs")
    q = _check_float64(log_p_choose, "log_p_choose")
    target = _as_list(target)
    J, S = q.shape
    if lp.shape[:2] != (J, S) or len(target) != J:
        raise ValueError(f"shapes disagree: log_probs {tuple(lp.shape)}, log_p_choose {tuple(q.shape)}, "
                         f"J={len(target)}")
    if J == 0:
        anchor = (lp * 0).sum() + (q * 0).sum()
        return anchor + (0.0 if S == 1 else float("-inf"))
    # flat = [ l_j(i) + q_j(i) for (j, i) ] ++ [ r_j(i) for (j, i) ] ++ [0 (padding)]
    ell = lp.gather(2, torch.tensor(target, dtype=torch.long).view(J, 1, 1).expand(J, S, 1)).squeeze(2)
    flat = torch.cat([(ell + q).reshape(-1), _log1mexp(q).reshape(-1), q.new_zeros(1)])
    pad = 2 * J * S
    rows = []
    for a in ssnt_alignments(J, S):
        row, prev = [], 0
        for j, i in enumerate(a):
            row.extend(J * S + j * S + m for m in range(prev, i))  # shifts under target j
            row.append(j * S + i)  # choose + emit y_j at frame i
            prev = i
        rows.append(row)
    width = max(len(r) for r in rows) if rows else 0
    rows = [r + [pad] * (width - len(r)) for r in rows]
    return _logsumexp_paths(flat, rows)
