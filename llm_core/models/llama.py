"""The Llama family decoder (Llama, Mistral, Qwen2, Qwen3) over a flattened, paged batch.

Differences between the four are flags of ArchConfig: Qwen2 has biases on q/k/v, Qwen3
normalizes q and k per head before the rotary embedding. q/k/v and gate/up are each one
merged projection; the loader fills their slices from the checkpoint's separate tensors.

Fused decode (`fused_decode`, set with the skinny GEMV kernels: enable_skinny_kernels): a step of
at most FUSED_DECODE_MAX_ROWS tokens, one per sequence, runs each layer as eight kernels launched
with programmatic dependent launch (llm_core/layers/kernels/pdl.py): input RMSNorm (adding the
residual); q/k/v GEMV; rotary + KV store in one kernel; decode attention; o GEMV; post-attention
RMSNorm (adding the residual); gate/up GEMV whose column blocks of gate and up meet in one program
that writes SiLU-and-mul (gemv.py); down GEMV. Each rounds where the unfused layers round. (The
GEMV can also add the residual and write the next RMSNorm in its last program; on the H100 that
cost what the norm kernels did, docs/performance.md.) Not for tensor parallelism or q/k norms (Qwen3).

Persistent decode (`persistent_decode`, with the fused path): a step of one token runs every layer
in one kernel whose programs pass grid barriers between the stages (llm_core/layers/kernels/
persistent_decode.py), then the final RMSNorm. `ws_decode` (True, False, or None for
WS_DECODE_DEFAULT): on Hopper, where the sizes fit it (bf16, no biases, no sliding window), that
step runs the kernel's warp-specialized form instead (llm_core/layers/kernels/ws_decode.py).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from llm_core.attention.metadata import AttentionMetadata
from llm_core.distributed.group import SINGLE, TensorParallelGroup
from llm_core.distributed.layers import (
    MergedColumnParallelLinear, ParallelLMHead, QKVParallelLinear, RowParallelLinear, VocabParallelEmbedding,
    vocab_parallel_logits,
)
from llm_core.layers.activation import silu_and_mul
from llm_core.layers.norm import RMSNorm
from llm_core.layers.rotary import RotaryEmbedding
from llm_core.models.arch_config import ArchConfig

KVCache = tuple[torch.Tensor, torch.Tensor]
logger = logging.getLogger(__name__)

# Steps of up to this many tokens take the fused decode path (where it is on): its GEMVs lose to
# cuBLAS from two rows (gemv.DISPATCH_MAX_ROWS).
FUSED_DECODE_MAX_ROWS = 1
# Batch-1 greedy steps take the token from the LM head GEMV's argmax epilogue (greedy_tokens);
# False: from the logits (bench_throughput --no-lm-head-argmax, to compare).
GREEDY_TOKENS_FROM_LM_HEAD = True
# Whether one-token steps take the persistent kernel's warp-specialized form (ws_decode.py) where the
# engine's ws_decode option is None and the model fits it.
WS_DECODE_DEFAULT = True


def uses_triton_kernels(backend) -> bool:
    """The dense layers use the fused Triton kernels (layers/kernels/) exactly when attention does."""
    return getattr(backend, "name", None) == "triton"


class Attention(nn.Module):
    def __init__(self, cfg: ArchConfig, backend, rotary: RotaryEmbedding, tp: TensorParallelGroup = SINGLE,
                 **factory) -> None:
        super().__init__()
        # This rank's heads (all of them at tensor-parallel size 1).
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads,
                                          bias=cfg.attention_bias, tp=tp, **factory)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_rank_heads, self.qkv_proj.num_rank_kv_heads
        self.head_dim = cfg.head_dim
        self.q_size = self.num_heads * cfg.head_dim
        self.kv_size = self.num_kv_heads * cfg.head_dim
        o_bias = cfg.attention_bias and cfg.architecture != "Qwen2ForCausalLM"
        self.o_proj = RowParallelLinear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=o_bias, tp=tp, **factory)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, **factory)  # on [T, H, D] views: torch
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, **factory)
        else:
            self.q_norm = self.k_norm = None
        self.rotary = rotary  # shared by all layers
        self.backend = backend
        self.scale = cfg.head_dim ** -0.5
        self.sliding_window = cfg.sliding_window

    def forward(self, positions: torch.Tensor, x: torch.Tensor, kv_cache: KVCache,
                meta: AttentionMetadata) -> torch.Tensor:
        num_tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)  # [T, H, D]
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(positions, q, k)
        out = self.backend.forward(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale, self.sliding_window)
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class MLP(nn.Module):
    def __init__(self, cfg: ArchConfig, use_triton: bool = False, tp: TensorParallelGroup = SINGLE,
                 **factory) -> None:
        super().__init__()
        self.use_triton = use_triton
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [cfg.intermediate_size] * 2,
                                                       bias=cfg.mlp_bias, tp=tp, **factory)
        self.down_proj = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias, tp=tp,
                                           **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x), self.use_triton))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ArchConfig, backend, rotary: RotaryEmbedding, tp: TensorParallelGroup = SINGLE,
                 **factory) -> None:
        super().__init__()
        fused = uses_triton_kernels(backend)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, use_triton=fused, **factory)
        self.self_attn = Attention(cfg, backend, rotary, tp, **factory)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, use_triton=fused, **factory)
        self.mlp = MLP(cfg, use_triton=fused, tp=tp, **factory)

    def forward(self, positions, x, residual, kv_cache: KVCache, meta: AttentionMetadata):
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, kv_cache, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaForCausalLM(nn.Module):
    """forward(input_ids [T], positions [T], kv_caches, meta) -> hidden [T, hidden_size].

    With a tensor-parallel group `tp` of size > 1 this is one rank's shard (llm_core/distributed):
    every rank runs forward on the same inputs; compute_logits gathers whole logits on the driver.
    """

    def __init__(self, cfg: ArchConfig, backend, *, max_position: int, dtype: torch.dtype,
                 device: torch.device | str, tp: TensorParallelGroup = SINGLE) -> None:
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.config = cfg
        self.tp = tp
        fused = uses_triton_kernels(backend)
        self.rotary = RotaryEmbedding(cfg.head_dim, max_position, cfg.rope_theta, cfg.rope_scaling, device=device,
                                      use_triton=fused)
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, tp=tp, **factory)
        self.layers = nn.ModuleList(DecoderLayer(cfg, backend, self.rotary, tp, **factory)
                                    for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, use_triton=fused, **factory)
        # The fused decode path (module docstring): off until enable_skinny_kernels turns it on.
        self.fused_decode = False
        self._fused_capable = fused and tp.size == 1 and not cfg.qk_norm
        self.persistent_decode = False  # set by enable_skinny_kernels too, as are:
        self.ws_decode: bool | None = False  # the persistent kernel's warp-specialized form (None: default)
        self._ws_checked, self._ws_workspace = False, None  # whether this model fits it (_ws_decode_workspace)
        self.skinny_lm_head = False  # logits of one row on the Triton GEMV
        self._persistent_capable = False
        if self._fused_capable:  # the kernels package imports Triton: only with the Triton backend
            from llm_core.layers.kernels.persistent_decode import persistent_decode_supported
            self._persistent_capable = persistent_decode_supported(
                cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size)
        if cfg.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size, tp=tp, **factory)
        self.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[KVCache],
                meta: AttentionMetadata, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if (self.fused_decode and self._fused_capable and meta.is_decode_only
                and x.shape[0] <= FUSED_DECODE_MAX_ROWS and x.stride(-1) == 1):
            if self.persistent_decode and self._persistent_capable and x.shape[0] == 1:
                return self._persistent_decode_forward(positions, x, kv_caches, meta, owned=inputs_embeds is None)
            return self._fused_decode_forward(positions, x, kv_caches, meta)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches):
            x, residual = layer(positions, x, residual, kv_cache, meta)
        x, _ = self.norm(x, residual)
        return x

    def _fused_decode_forward(self, positions: torch.Tensor, x: torch.Tensor, kv_caches: list[KVCache],
                              meta: AttentionMetadata) -> torch.Tensor:
        """forward() of a decode step of few tokens on the fused kernels (module docstring)."""
        from llm_core.attention.kernels import decode_attention
        from llm_core.attention.kernels.rotary_store import rotary_store
        from llm_core.layers.kernels.gemv import skinny_linear
        from llm_core.layers.kernels.rms_norm import rms_norm

        num_tokens = x.shape[0]
        num_real_tokens = meta.query_start_loc_cpu[-1]
        first = self.layers[0].input_layernorm
        h = x.contiguous()  # the residual stream
        normed = rms_norm(h, first.weight, first.eps)
        next_norms = [layer.input_layernorm for layer in self.layers[1:]] + [self.norm]
        for layer, (k_cache, v_cache), next_norm in zip(self.layers, kv_caches, next_norms):
            attn, mlp = layer.self_attn, layer.mlp
            qkv = skinny_linear(normed, attn.qkv_proj.weight, attn.qkv_proj.bias)
            q = rotary_store(qkv, positions, self.rotary.cos_sin, meta.slot_mapping, k_cache, v_cache, attn.num_heads)
            out = torch.empty_like(q)  # [T, H, D]
            if num_real_tokens < num_tokens:
                out[num_real_tokens:].zero_()
            decode_attention(q, k_cache, v_cache, meta, attn.scale, out=out, sliding_window=attn.sliding_window)
            o = skinny_linear(out.view(num_tokens, attn.q_size), attn.o_proj.weight, attn.o_proj.bias)
            ln = layer.post_attention_layernorm
            normed, h = rms_norm(o, ln.weight, ln.eps, residual=h)
            act = skinny_linear(normed, mlp.gate_up_proj.weight, mlp.gate_up_proj.bias, silu_pairs=True)
            down = skinny_linear(act, mlp.down_proj.weight, mlp.down_proj.bias)
            normed, h = rms_norm(down, next_norm.weight, next_norm.eps, residual=h)
        return normed

    def _persistent_decode_forward(self, positions: torch.Tensor, x: torch.Tensor, kv_caches: list[KVCache],
                                   meta: AttentionMetadata, owned: bool = False) -> torch.Tensor:
        """forward() of a one-token decode step: every layer and the final RMSNorm in one persistent
        kernel (module docstring). owned: x is this forward's own embedding, free to become the
        residual stream (else it is copied: the caller's embeddings stay as they were)."""
        from llm_core.layers.kernels.persistent_decode import persistent_decode

        attn = self.layers[0].self_attn
        h = x.reshape(-1) if owned else x.reshape(-1).clone()  # the residual stream, updated in place
        normed = torch.empty_like(h)
        step = dict(positions=positions, slot_mapping=meta.slot_mapping, block_table=meta.block_tables[0],
                    seq_lens=meta.seq_lens, cos_sin=self.rotary.cos_sin, scale=attn.scale,
                    eps=self.layers[0].input_layernorm.eps, final_norm=(self.norm.weight, self.norm.eps),
                    normed=normed)
        use_ws = WS_DECODE_DEFAULT if self.ws_decode is None else self.ws_decode
        workspace = self._ws_decode_workspace(h.device) if use_ws else None
        layers = self._decode_layers(kv_caches)
        if workspace is not None:
            from llm_core.layers.kernels.ws_decode import attach_ws_weights, ws_decode

            try:  # the kernel's addressing (once per table of layers)
                attach_ws_weights(layers)
            except ValueError as e:  # tensors placed where it cannot address them: for good
                logger.warning("warp-specialized decode off: %s; one-token steps take the persistent kernel", e)
                workspace = self._ws_workspace = None
        if workspace is not None:
            ws_decode(h, layers, workspace=workspace, **step)
        else:
            persistent_decode(h, layers, sliding_window=attn.sliding_window, **step)
        return normed.view(1, -1)

    def _ws_decode_workspace(self, device: torch.device):
        """The warp-specialized kernel's workspace where this model and device fit it (made on the first
        one-token step, before CUDA graph capture), else None; decided once, with a log line saying why not."""
        if self._ws_checked:
            return self._ws_workspace
        self._ws_checked = True
        attn, mlp = self.layers[0].self_attn, self.layers[0].mlp
        reason = None
        if device.type != "cuda" or attn.qkv_proj.weight.dtype != torch.bfloat16:
            reason = "it needs bf16 weights on a CUDA device"
        elif any(b is not None for b in (attn.qkv_proj.bias, attn.o_proj.bias, mlp.gate_up_proj.bias,
                                         mlp.down_proj.bias)) or attn.sliding_window is not None:
            reason = "it takes no biases or sliding window"
        else:
            try:
                from llm_core.layers.kernels import ws_decode as wd
            except ImportError as e:  # a Triton without Gluon's Hopper module
                reason = f"Triton lacks Gluon ({e})"
            else:
                from llm_core.layers.kernels.persistent_decode import (DecodeWorkspace, attention_splits,
                                                                       default_num_programs)
                cfg = self.config
                splits = attention_splits(cfg.num_kv_heads, default_num_programs(device))
                if not wd.ws_decode_available(device):
                    reason = "it needs a Hopper GPU"
                elif not wd.ws_decode_supported(cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                                                cfg.intermediate_size, splits):
                    reason = "the model's sizes do not fit its tiles"
                else:
                    self._ws_workspace = DecodeWorkspace(cfg.num_heads, cfg.head_dim, cfg.intermediate_size, splits,
                                                         torch.bfloat16, device)
        if reason is not None:
            logger.info("warp-specialized decode off: %s; one-token steps take the persistent kernel", reason)
        return self._ws_workspace

    def _decode_layers(self, kv_caches: list[KVCache]):
        """The persistent kernel's table of layer weights and these caches, built on first use (which
        must come before CUDA graph capture) and again when the caches change."""
        from llm_core.layers.kernels.persistent_decode import DecodeLayers

        key = tuple(k.data_ptr() for k, _ in kv_caches) + tuple(v.data_ptr() for _, v in kv_caches)
        cached = getattr(self, "_decode_layers_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("the persistent decode table is built on the first decode step, which must come "
                               "before CUDA graph capture")
        tables = []
        for layer, (k_cache, v_cache) in zip(self.layers, kv_caches):
            attn, mlp = layer.self_attn, layer.mlp
            tables.append({
                "ln1": layer.input_layernorm.weight, "qkv": attn.qkv_proj.weight, "qkv_bias": attn.qkv_proj.bias,
                "o": attn.o_proj.weight, "o_bias": attn.o_proj.bias, "ln2": layer.post_attention_layernorm.weight,
                "gate_up": mlp.gate_up_proj.weight, "gate_up_bias": mlp.gate_up_proj.bias,
                "down": mlp.down_proj.weight, "down_bias": mlp.down_proj.bias, "k_cache": k_cache,
                "v_cache": v_cache})
        layers = DecodeLayers(tables, self.layers[0].self_attn.num_heads)
        self._decode_layers_cache = (key, layers)
        return layers

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [S, hidden_size] -> fp32 logits [S, vocab_size] (on tensor-parallel ranks > 0: the
        rank's own vocabulary shard, see vocab_parallel_logits)."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return vocab_parallel_logits(hidden, weight, self.config.vocab_size, self.tp, self.skinny_lm_head)

    def greedy_tokens(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """compute_logits(hidden).argmax(-1) (int64 [S]) without writing the logits, where the LM head of
        one row runs on the Triton GEMV on one rank: its argmax epilogue (gemv.skinny_argmax), ties to
        the lowest token as torch.argmax. None elsewhere (the caller takes the logits' argmax)."""
        if (not GREEDY_TOKENS_FROM_LM_HEAD or not self.skinny_lm_head or self.tp.size != 1 or hidden.dim() != 2
                or hidden.shape[0] != 1 or hidden.stride(-1) != 1
                or not (hidden.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")):
            return None
        from llm_core.layers.kernels.gemv import skinny_argmax
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return skinny_argmax(hidden, weight, self.config.vocab_size)

    # Checkpoint name -> (parameter name, shard) for the merged projections.
    stacked_params = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def shard_slice(self, param_name: str, shard) -> slice:
        """Rows of a merged parameter (this rank's part of it) that a checkpoint tensor fills."""
        layer = self.layers[0]
        merged = layer.self_attn.qkv_proj if param_name == "qkv_proj" else layer.mlp.gate_up_proj
        return merged.shard_slice(shard)
