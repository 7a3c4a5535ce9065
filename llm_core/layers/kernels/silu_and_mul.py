"""Triton SiLU-and-mul: silu(gate) * up from the merged gate_up projection, in one pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def silu_and_mul_kernel(gate_up_ptr, out_ptr, stride_in, stride_out, intermediate_size, BLOCK: tl.constexpr):
    # Program (row, column block). Rounds silu(gate) to the output dtype before the product, as
    # F.silu(gate) * up does in that dtype.
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < intermediate_size
    gate = tl.load(gate_up_ptr + row * stride_in + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + row * stride_in + intermediate_size + offs, mask=mask, other=0.0).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_out + offs, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[N, 2 * I] (gate then up, last dim contiguous) -> [N, I]."""
    if gate_up.dim() != 2 or gate_up.stride(-1) != 1 or gate_up.shape[1] % 2:
        raise ValueError(f"silu_and_mul needs [N, 2 * I] with a contiguous last dim, got {tuple(gate_up.shape)}")
    num_rows, intermediate_size = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty(num_rows, intermediate_size, dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(intermediate_size))
    if num_rows:
        silu_and_mul_kernel[(num_rows, triton.cdiv(intermediate_size, block))](
            gate_up, out, gate_up.stride(0), out.stride(0), intermediate_size, BLOCK=block, num_warps=4)
    return out
