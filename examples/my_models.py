"""Example factory for ``landscape import --factory examples/my_models.py:swin_b_iqa``.

A factory is any function that takes no arguments and returns the ``nn.Module`` your
checkpoint's keys belong to (random weights are fine: the checkpoint's are loaded after).
Its source file's sha256 is recorded at import; analyses refuse the run if it changes.
"""
import timm
from torch import nn


class SwinIQARegressor(nn.Module):
    """Swin-B features -> MLP -> one quality score per image (the layout of your own code)."""

    def __init__(self):
        super().__init__()
        self.backbone = timm.create_model("swin_base_patch4_window7_224", pretrained=False, num_classes=0)
        self.head = nn.Sequential(nn.Linear(self.backbone.num_features, 512), nn.GELU(), nn.Dropout(0.4),
                                  nn.Linear(512, 1))

    def forward(self, x):
        return self.head(self.backbone(x)).squeeze(-1)


def swin_b_iqa():
    return SwinIQARegressor()
