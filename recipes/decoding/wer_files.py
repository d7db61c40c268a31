"""Decoding result files in the icefall manner, named by every setting so nothing is overwritten.

For a test set ``<set>`` and a settings suffix ``<suffix>`` (e.g. ``greedy_epoch-9``):

* ``recogs-<set>-<suffix>.txt``   reference and hypothesis of every utterance;
* ``errs-<set>-<suffix>.txt``     WER header, ins/del/sub counts, per-utterance alignments, and
  the most frequent substitutions, deletions and insertions;
* ``wer-summary-<set>-<suffix>.txt``  one line: settings and WER;
* ``results-<set>-<suffix>.json`` WER, CER, counts, utterances, real-time factor, device and settings.

:func:`read_alignments` reads the per-utterance alignments of an ``errs-*.txt`` file back.

References and hypotheses are normalised with the one normaliser (``recipes.data.text``) and
scored with the same alignment code as ``val/wer`` (``recipes.metrics.wer``).
"""
import json
import re
from collections import Counter
from pathlib import Path

from recipes.data.text import normalize_text
from recipes.metrics.wer import EditCounts, align, edit_counts


def _char_counts(ref: str, hyp: str) -> EditCounts:
    """Character edit counts of the normalised texts, spaces excluded."""
    return edit_counts(list(ref.replace(" ", "")), list(hyp.replace(" ", "")))


def write_results(out_dir, set_name: str, suffix: str, results, settings: dict | None = None,
                  real_time_factor: float | None = None, device: str | None = None) -> dict:
    """Write the four files for ``results`` = [(utterance id, reference, hypothesis)]; return the summary
    (``device``: where the hypotheses were computed, recorded as given)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted((uid, normalize_text(ref), normalize_text(hyp)) for uid, ref, hyp in results)
    words, chars = EditCounts(), EditCounts()
    subs, dels, ins = Counter(), Counter(), Counter()
    aligned = []
    for uid, ref, hyp in rows:
        pairs = align(ref.split(), hyp.split())
        counts = edit_counts(ref.split(), hyp.split())
        words += counts
        chars += _char_counts(ref, hyp)
        rendered = []
        for r, h in pairs:
            if r is None:
                ins[h] += 1
                rendered.append(f"[{h}]")
            elif h is None:
                dels[r] += 1
                rendered.append(f"({r}->*)")
            elif r != h:
                subs[(r, h)] += 1
                rendered.append(f"({r}->{h})")
            else:
                rendered.append(r)
        aligned.append(f"{uid}:\t{' '.join(rendered)}")

    stem = f"{set_name}-{suffix}"
    with open(out_dir / f"recogs-{stem}.txt", "w") as f:
        for uid, ref, hyp in rows:
            f.write(f"{uid}:\tref={ref.split()}\n{uid}:\thyp={hyp.split()}\n")
    with open(out_dir / f"errs-{stem}.txt", "w") as f:
        f.write(f"%WER {100 * words.wer:.2f} [ {words.errors} / {words.ref_words}, {words.insertions} ins, "
                f"{words.deletions} del, {words.substitutions} sub ]\n")
        f.write(f"%CER {100 * chars.wer:.2f} [ {chars.errors} / {chars.ref_words} characters ]\n")
        f.write(f"utterances: {len(rows)}\n\nPER-UTT DETAILS: corr or (ref->hyp); [insertion]\n")
        f.write("\n".join(aligned) + "\n")
        f.write("\nSUBSTITUTIONS: count ref -> hyp\n")
        f.writelines(f"{n}   {r} -> {h}\n" for (r, h), n in subs.most_common(50))
        f.write("\nDELETIONS: count ref\n")
        f.writelines(f"{n}   {r}\n" for r, n in dels.most_common(50))
        f.write("\nINSERTIONS: count hyp\n")
        f.writelines(f"{n}   {h}\n" for h, n in ins.most_common(50))
    with open(out_dir / f"wer-summary-{stem}.txt", "w") as f:
        f.write(f"settings\tWER\n{suffix}\t{100 * words.wer:.2f}\n")
    summary = {
        "set": set_name, "suffix": suffix, "wer": words.wer, "cer": chars.wer, "utterances": len(rows),
        "ref_words": words.ref_words, "substitutions": words.substitutions, "deletions": words.deletions,
        "insertions": words.insertions, "real_time_factor": real_time_factor, "device": device,
        "settings": settings or {},
    }
    with open(out_dir / f"results-{stem}.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


# one token of an errs file's alignment line: (REF->HYP) or (REF->*), [INSERTED], or a correct word
_ALIGNED_TOKEN = re.compile(r"\(([^()\s]+)->([^()\s]+)\)|\[([^\[\]\s]+)\]|(\S+)")


def read_alignments(errs_path) -> dict[str, list[tuple[str | None, str | None]]]:
    """Utterance id -> its aligned (reference word, hypothesis word) pairs, None for the missing side,
    from the PER-UTT DETAILS section of an ``errs-*.txt`` file written by :func:`write_results`.
    Raises ValueError naming the file when it has no such section."""
    text = Path(errs_path).read_text()
    if "PER-UTT DETAILS" not in text:
        raise ValueError(f"{errs_path}: not an errs-*.txt file of decode.py (no PER-UTT DETAILS section)")
    details = text.split("PER-UTT DETAILS", 1)[1].split("\n", 1)[-1].split("\nSUBSTITUTIONS", 1)[0]
    out = {}
    for line in details.splitlines():
        uid, sep, rendered = line.partition(":\t")
        if not sep:
            continue
        pairs = []
        for sub_ref, sub_hyp, inserted, word in _ALIGNED_TOKEN.findall(rendered):
            if inserted:
                pairs.append((None, inserted))
            elif word:
                pairs.append((word, word))
            else:
                pairs.append((sub_ref, None if sub_hyp == "*" else sub_hyp))
        out[uid] = pairs
    return out
