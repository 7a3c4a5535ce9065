"""The Whisper encoder as Qwen2-Audio uses it, and its projector, in plain torch.

Qwen2-Audio pads every clip to 30 s of mel frames, masks the padding as attention keys, pools
the encoder output 2x in time and keeps the first `num_audio_tokens(valid frames)` rows. The
rows it keeps depend only on the first 2 * n + 1 mel frames (n = valid positions after conv2:
conv1 looks one frame ahead, conv2 two), so this encoder runs on that prefix instead of the
whole 30 s: the same result, far less work for short clips. Parameter names follow
transformers' Qwen2AudioEncoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from encoders.encoder_config import AudioEncoderConfig, AudioTowerConfig, num_audio_tokens
from encoders.vision import EncoderAttention, get_activation


class WhisperEncoderLayer(nn.Module):
    """Pre-norm layer: x + attn(ln(x)) with padded keys masked, then x + fc2(act(fc1(ln(x))))."""

    def __init__(self, config: AudioTowerConfig) -> None:
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.self_attn = EncoderAttention(config.d_model, config.encoder_attention_heads, k_bias=False)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.act = get_activation(config.activation_function)
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_padding_mask)
        x = x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        if x.dtype == torch.float16:  # as transformers does, against overflow to inf
            limit = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-limit, limit)
        return x


class AudioTower(nn.Module):
    """input_features [B, mels, T] and valid frames [B] (on the CPU) -> hidden states [B, T' // 2, d_model]
    after conv, layers, 2x average pooling and the final layernorm (rows past a clip's
    num_audio_tokens are padding)."""

    def __init__(self, config: AudioTowerConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, config.d_model)
        self.layers = nn.ModuleList(WhisperEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, input_features: torch.Tensor, num_valid_frames: torch.Tensor) -> torch.Tensor:
        num_positions = (num_valid_frames - 1) // 2 + 1  # [B], after conv2
        max_positions = int(num_positions.max())
        frames = input_features[..., :2 * max_positions + 2].to(self.conv1.weight.dtype)
        hidden = F.gelu(self.conv2(F.gelu(self.conv1(frames)))).transpose(1, 2)  # [B, T2, C]
        length = hidden.shape[1]
        hidden = hidden + self.embed_positions.weight[:length]
        mask = None  # [B, T2] keys to attend; built on the CPU, so checking it needs no device sync
        if int(num_positions.min()) < length:
            mask = (torch.arange(length)[None, :] < num_positions[:, None]).to(hidden.device)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        hidden = F.avg_pool1d(hidden.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)
        return self.layer_norm(hidden)


class AudioEncoder(nn.Module):
    """Log-mel features of B clips -> one embedding tensor [num_audio_tokens(frames), C_text] per
    clip, the rows that replace its audio placeholder tokens.

    input_features: [B, num_mel_bins, 2 * max_source_positions], each clip padded as
    Qwen2AudioProcessor pads it; num_valid_frames: the frames each clip covers. Clips of a batch
    never influence each other. ValueError for a clip too short to give a token.
    """

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_tower = AudioTower(config.audio)
        self.multi_modal_projector = nn.Module()
        self.multi_modal_projector.linear = nn.Linear(config.audio.d_model, config.text_hidden_size)

    def forward(self, input_features: torch.Tensor, num_valid_frames: Sequence[int]) -> list[torch.Tensor]:
        tower = self.config.audio
        if tuple(input_features.shape[1:]) != (tower.num_mel_bins, tower.num_input_frames):
            raise ValueError(f"input features of shape {tuple(input_features.shape)} do not fit an encoder of "
                             f"{tower.num_mel_bins} mel bins and {tower.num_input_frames} frames")
        if len(num_valid_frames) != input_features.shape[0]:
            raise ValueError(f"{len(num_valid_frames)} frame counts for {input_features.shape[0]} clips")
        counts = [num_audio_tokens(frames) for frames in num_valid_frames]
        if min(counts) < 1 or max(num_valid_frames) > tower.num_input_frames:
            raise ValueError(f"valid frame counts {list(num_valid_frames)} must give at least one token "
                             f"and be at most {tower.num_input_frames}")
        frames = torch.as_tensor(list(num_valid_frames), dtype=torch.long)
        hidden = self.multi_modal_projector.linear(self.audio_tower(input_features, frames))
        return [hidden[i, :count] for i, count in enumerate(counts)]


def sinusoidal_positions(length: int, channels: int) -> torch.Tensor:
    """Whisper's fixed position table [length, channels]: sines then cosines over timescales
    spaced geometrically from 1 to 10000; for checkpoints that do not store the positions."""
    log_step = math.log(10000) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_step * torch.arange(channels // 2, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # float32, as Whisper computed them
