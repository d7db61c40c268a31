"""Data pipeline of the recipe: corpora, readers, tokenizers, features, batching, the data module."""
