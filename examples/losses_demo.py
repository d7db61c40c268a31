"""A short tour of seqloss: every loss on random inputs, checked against torch / torchaudio.

    python examples/losses_demo.py
"""
import torch
import torch.nn.functional as F

import seqloss


def main():
    torch.manual_seed(0)
    T, B, V, U = 50, 4, 20, 10
    log_probs = torch.randn(T, B, V).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, V, (B, U))
    input_lengths, target_lengths = torch.tensor([50, 45, 40, 30]), torch.tensor([10, 8, 6, 4])

    ctc = seqloss.ctc_loss(log_probs, targets, input_lengths, target_lengths)
    ctc.backward()
    reference = F.ctc_loss(log_probs, targets, input_lengths, target_lengths)
    print(f"ctc_loss         {ctc.item():.6f}   torch.nn.functional.ctc_loss {reference.item():.6f}")
    print(f"simple_ctc_loss  {seqloss.simple_ctc_loss(log_probs, targets, input_lengths, target_lengths).item():.6f}")

    logits = torch.randn(B, T, U + 1, V, requires_grad=True)
    rnnt = seqloss.rnnt_loss(logits, targets.int(), input_lengths.int(), target_lengths.int(), blank=0)
    rnnt.backward()
    line = f"rnnt_loss        {rnnt.item():.6f}"
    try:
        import torchaudio.functional as TAF
        ref = TAF.rnnt_loss(logits, targets.int(), input_lengths.int(), target_lengths.int(), blank=0)
        line += f"   torchaudio.functional.rnnt_loss {ref.item():.6f}"
    except (ImportError, OSError):
        pass
    print(line)
    for final_blank in (True, False):
        value = seqloss.modified_rnnt_loss(logits, targets, input_lengths, target_lengths, blank=0,
                                           final_blank=final_blank)
        print(f"modified_rnnt_loss(final_blank={final_blank})  {value.item():.6f}")

    # SSNT: log_probs (B, J, S, V) over target positions j and source frames i, plus log P(choose).
    ssnt_log_probs = torch.randn(B, U, T, V).log_softmax(-1)
    log_p_choose = F.logsigmoid(torch.randn(B, U, T))
    ssnt = seqloss.ssnt_loss(ssnt_log_probs, targets, log_p_choose, input_lengths, target_lengths)
    print(f"ssnt_loss        {ssnt.item():.6f}")


if __name__ == "__main__":
    main()
