"""Network pieces of the recipe: transcriber (encoder), predictor, joiner and the per-loss heads."""
from recipes.models.heads import ChooseHead, CTCHead
from recipes.models.joiner import Joiner
from recipes.models.predictor import LSTMPredictor
from recipes.models.transcriber import LSTMTranscriber

__all__ = ["CTCHead", "ChooseHead", "Joiner", "LSTMPredictor", "LSTMTranscriber"]
