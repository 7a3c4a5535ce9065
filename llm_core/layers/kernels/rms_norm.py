"""Triton RMSNorm with the residual add fused in: one read and one write of each row.

It rounds where the torch reference (llm_core/layers/norm.py, which follows transformers)
rounds: the residual sum is rounded to the input dtype before its statistics are taken, the
normalized row is rounded to the input dtype before the weight multiplies it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llm_core.layers.kernels.pdl import pdl_launch_args


@triton.jit
def rms_norm_kernel(
    x_ptr, residual_ptr, out_ptr, residual_out_ptr, weight_ptr, eps,
    stride_x, stride_r, stride_o, stride_ro, hidden_size,
    BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, USE_PDL: tl.constexpr,
):
    # One program per row.
    if USE_PDL:  # programmatic dependent launch (pdl.py)
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden_size
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(residual_out_ptr + row * stride_ro + offs, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, 0) / hidden_size + eps)
    normed = (xf * rstd).to(x_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, (normed * w).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x [N, C] (last dim contiguous) -> weight * x / rms(x); with residual [N, C]: returns
    (norm(x + residual), x + residual), as RMSNorm.forward does. weight: [C] of x's dtype."""
    if x.dim() != 2 or x.stride(-1) != 1 or weight.shape != (x.shape[1],):
        raise ValueError(f"rms_norm needs x [N, C] with a contiguous last dim and weight [C]; got x "
                         f"{tuple(x.shape)} stride {x.stride()}, weight {tuple(weight.shape)}")
    num_rows, hidden_size = x.shape
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    block = triton.next_power_of_2(hidden_size)
    num_warps = min(max(block // 256, 1), 16)
    use_pdl, launch = pdl_launch_args(x.device)
    if residual is None:
        if num_rows:
            rms_norm_kernel[(num_rows,)](x, x, out, out, weight, eps, x.stride(0), 0, out.stride(0), 0, hidden_size,
                                         BLOCK=block, HAS_RESIDUAL=False, num_warps=num_warps,
                                         USE_PDL=use_pdl, **launch)
        return out
    if residual.shape != x.shape or residual.stride(-1) != 1 or residual.dtype != x.dtype:
        raise ValueError(f"residual {tuple(residual.shape)} {residual.dtype} must match x {tuple(x.shape)} {x.dtype}")
    residual_out = torch.empty_like(out)
    if num_rows:
        rms_norm_kernel[(num_rows,)](x, residual, out, residual_out, weight, eps, x.stride(0), residual.stride(0),
                                     out.stride(0), residual_out.stride(0), hidden_size,
                                     BLOCK=block, HAS_RESIDUAL=True, num_warps=num_warps,
                                     USE_PDL=use_pdl, **launch)
    return out, residual_out
