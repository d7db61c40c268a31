"""Evaluation metrics: word error rate with its edit alignment."""
from recipes.metrics.wer import EditCounts, align, edit_counts, word_error_counts

__all__ = ["EditCounts", "align", "edit_counts", "word_error_counts"]
