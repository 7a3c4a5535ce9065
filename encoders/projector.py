"""LLaVA's multi-modal projector, and the image encoder it completes (tower + projector).

Images become the embeddings that replace their `<image>` placeholder tokens, one row per
placeholder. Video frames go through the same tower; with pool_stride > 1 their patch grids are
average-pooled first (LLaVA-NeXT-Video's spatial pooler), which cuts the tokens per frame by
pool_stride ** 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders.encoder_config import ImageEncoderConfig, frame_grid_side
from encoders.vision import VisionTower, get_activation


class LlavaProjector(nn.Module):
    """[..., C_vision * num_feature_layers] -> [..., C_text]: linear, activation, linear."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        in_features = config.vision.hidden_size * len(config.vision_feature_layers)
        self.linear_1 = nn.Linear(in_features, config.text_hidden_size, bias=config.projector_bias)
        self.act = get_activation(config.projector_hidden_act)
        self.linear_2 = nn.Linear(config.text_hidden_size, config.text_hidden_size, bias=config.projector_bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def pool_frame_features(features: torch.Tensor, stride: int) -> torch.Tensor:
    """[N, side * side, C] -> [N, (side // stride) ** 2, C], averaging stride x stride patches
    (a ragged last row or column is dropped, as AvgPool2d does)."""
    num, num_tokens, channels = features.shape
    side = frame_grid_side(num_tokens)
    grid = features.view(num, side, side, channels).permute(0, 3, 1, 2)  # [N, C, side, side]
    pooled = F.avg_pool2d(grid, kernel_size=stride, stride=stride)
    return pooled.flatten(2).transpose(1, 2)


class ImageEncoder(nn.Module):
    """pixel_values [N, 3, S, S] -> embeddings [N, num_tokens, C_text] for N images or frames.

    num_tokens is config.num_image_tokens, or config.num_frame_tokens(pool_stride) when frames
    are pooled. Does not modify its input; images of a batch never influence each other.
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = VisionTower(config)
        self.multi_modal_projector = LlavaProjector(config)

    def forward(self, pixel_values: torch.Tensor, pool_stride: int = 1) -> torch.Tensor:
        if pool_stride < 1:
            raise ValueError(f"pool_stride must be >= 1, got {pool_stride}")
        features = self.vision_tower(pixel_values)
        if pool_stride > 1:
            features = pool_frame_features(features, pool_stride)
        return self.multi_modal_projector(features)
