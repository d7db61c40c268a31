"""The LightningModule that trains any of the recipe's losses, and its schedulers."""
from recipes.lit.module import ASRLitModule

__all__ = ["ASRLitModule"]
