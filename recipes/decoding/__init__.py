"""Decoding: batched greedy search for every loss (beam search and alignment come with decode.py)."""
from recipes.decoding.greedy import GreedyDecoder, ctc_greedy, ssnt_greedy, transducer_greedy

__all__ = ["GreedyDecoder", "ctc_greedy", "ssnt_greedy", "transducer_greedy"]
