"""CLIP and SigLIP vision towers in plain torch, computing what LLaVA takes from them.

Parameter names follow transformers' CLIPVisionModel / SiglipVisionModel, so checkpoint tensors
load by name once their prefix is stripped. Only the layers up to the deepest selected feature
layer exist; the post-layernorm and SigLIP's pooling head are never used by LLaVA and are left
out. The attention and activations here are shared with the audio encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from encoders.encoder_config import ImageEncoderConfig, VisionTowerConfig

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation that transformers' ACT2FN names `name`; ValueError for one not supported."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported (one of {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class EncoderAttention(nn.Module):
    """Bidirectional multi-head self-attention with q/k/v/out projections (k without a bias
    in Whisper). key_padding_mask: bool [B, T], True where a key may be attended to."""

    def __init__(self, hidden_size: int, num_heads: int, k_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=k_bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, hidden = x.shape  # x: [B, T, C]
        # q, k, v: [B, H, T, C / H]
        q, k, v = (proj(x).view(batch, length, self.num_heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, hidden))


class VisionMLP(nn.Module):
    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.act = get_activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionEncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EncoderAttention(config.hidden_size, config.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEmbeddings(nn.Module):
    """Patches (a strided conv) plus learned positions; CLIP prepends a class token."""

    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.config = config
        if config.has_class_token:
            self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                                         stride=config.patch_size, bias=not config.has_class_token)
        self.position_embedding = nn.Embedding(config.num_positions, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if tuple(pixel_values.shape[1:]) != (self.config.num_channels, size, size):
            raise ValueError(f"pixel values of shape {tuple(pixel_values.shape)} do not fit a tower "
                             f"for {size}x{size} images")
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)  # [N, P, C]
        if self.config.has_class_token:
            cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
            patches = torch.cat([cls, patches], dim=1)
        return patches + self.position_embedding.weight


class VisionTower(nn.Module):
    """pixel_values [N, 3, S, S] -> the selected hidden states [N, T, C * len(feature layers)].

    Hidden state 0 is the embedding output (after CLIP's pre-layernorm), state i the output of
    layer i; "default" drops the first token of each selected state, "full" keeps it.
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        vision = config.vision
        self.feature_layers = config.resolved_feature_layers
        self.drop_first_token = config.vision_feature_select_strategy == "default"
        self.embeddings = VisionEmbeddings(vision)
        if vision.has_class_token:
            self.pre_layrnorm = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)  # sic, as in CLIP
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(VisionEncoderLayer(vision) for _ in range(config.num_layers_to_run))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(pixel_values)
        if hasattr(self, "pre_layrnorm"):
            hidden = self.pre_layrnorm(hidden)
        states = {0: hidden}
        for index, layer in enumerate(self.encoder.layers, start=1):
            hidden = layer(hidden)
            states[index] = hidden
        selected = [states[layer] for layer in self.feature_layers]
        if self.drop_first_token:
            selected = [state[:, 1:] for state in selected]
        return selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)

