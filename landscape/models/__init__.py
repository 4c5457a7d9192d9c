"""Model factory: ``create_model(config)`` builds any registered IQA model from its config."""
from landscape.models.swin_iqa import PRESETS, SwinIQA, SwinIQAConfig, create_model, model_config

__all__ = ["PRESETS", "SwinIQA", "SwinIQAConfig", "create_model", "model_config"]
