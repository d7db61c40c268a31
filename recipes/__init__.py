"""The ASR training recipe: models, Lightning modules, data, decoding and metrics."""
