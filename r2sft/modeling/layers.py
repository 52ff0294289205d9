"""Building blocks shared by r2sft's model classes (LLaDA, Dream): one implementation of the
bidirectional pre-norm transformer block, whatever the checkpoint calls its modules.

Both released dLLM families are Llama-style: RMSNorm computed in fp32, half-split
("rotate_half") RoPE, multi-head or grouped-query SDPA attention without a causal mask,
and a SwiGLU MLP ``down(silu(gate(x)) * up(x))``. Each family's block owns its modules under
its official names (so checkpoints load unchanged) and hands them to :func:`block_forward`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm as LLaDA and Qwen2 (Dream) compute it: normalise in fp32, cast back, then
    scale (and shift, where the checkpoint has a bias)."""

    def __init__(self, size: int, eps: float, affine: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if affine else None
        self.bias = nn.Parameter(torch.zeros(size)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x = x.float()
        x = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(in_dtype)
        if self.weight is None:
            return x
        x = self.weight * x
        return x + self.bias if self.bias is not None else x


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of shape (B, 1, L, head_dim) for half-split RoPE.

    Computed per forward from the positions (a few KB) rather than cached in a buffer, so no
    buffer needs initialising after meta-device loading and any position ids work.
    """
    exponents = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float)
    inv_freq = 1.0 / (theta ** (exponents / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # (B, L, head_dim / 2)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, L, D) queries or keys; math in the tables' dtype, result in x's dtype."""
    x_rot = x.to(cos.dtype)
    return ((x_rot * cos) + (_rotate_half(x_rot) * sin)).to(x.dtype)


def padding_position_ids(attention_mask: torch.Tensor | None, batch: int, length: int,
                         device: torch.device) -> torch.Tensor:  # fmt: skip
    """Default RoPE positions: the count of real tokens before each position when a 2-D
    padding mask is given (a left-padded row gets the positions of its unpadded self),
    else ``0..L-1``."""
    if attention_mask is not None and attention_mask.dim() == 2:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.arange(length, device=device).expand(batch, length)


def sdpa_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Turn a (B, L) padding mask (1 = real token) into a (B, 1, 1, L) boolean SDPA mask.

    A 4-D mask (boolean, or additive float) is passed through unchanged. A row with no real
    token at all attends everywhere instead of producing NaNs (SDPA on an all-False row).
    """
    if attention_mask.dim() == 4:
        return attention_mask
    if attention_mask.dim() != 2:
        raise ValueError(
            "attention_mask must be (batch, length) or 4-D, got shape "
            f"{tuple(attention_mask.shape)}"
        )
    keep = attention_mask.bool()
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]


def bidirectional_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """SDPA over (B, H, Lq, D) queries and (B, H_kv, Lk, D) keys / values, no causal mask.

    Grouped-query attention: SDPA's native GQA runs on the flash kernel, which takes no mask;
    with a mask it would fall back to the slow math kernel, so the KV heads are shared
    explicitly when a mask is given.
    """
    enable_gqa = k.shape[1] != q.shape[1]
    if enable_gqa and mask is not None:
        repeats = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
        enable_gqa = False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=False, enable_gqa=enable_gqa
    )


@dataclass(frozen=True)
class BlockModules:
    """The modules of one pre-norm block, under whatever names the checkpoint uses."""

    attn_norm: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    mlp_norm: nn.Module
    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear
    dropout: nn.Module


def block_forward(
    modules: BlockModules,
    hidden_states: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    attention_mask: torch.Tensor | None,
    n_heads: int,
    n_kv_heads: int,
    attention_dropout: float = 0.0,
) -> torch.Tensor:
    """One bidirectional pre-norm block: ``x + o(attn(norm(x)))``, then ``+ down(silu(gate)
    * up)`` of the second norm; residual dropout on both branches."""
    batch, length, width = hidden_states.shape
    head_dim = modules.q_proj.out_features // n_heads
    normed = modules.attn_norm(hidden_states)

    def heads(projection: nn.Linear, count: int) -> torch.Tensor:
        return projection(normed).view(batch, length, count, head_dim).transpose(1, 2)

    q = apply_rope(heads(modules.q_proj, n_heads), cos, sin)
    k = apply_rope(heads(modules.k_proj, n_kv_heads), cos, sin)
    v = heads(modules.v_proj, n_kv_heads)
    attn = bidirectional_attention(q, k, v, attention_mask, attention_dropout)
    attn = attn.transpose(1, 2).reshape(batch, length, n_heads * head_dim)
    hidden_states = hidden_states + modules.dropout(modules.o_proj(attn))

    normed = modules.mlp_norm(hidden_states)
    mlp = modules.down_proj(F.silu(modules.gate_proj(normed)) * modules.up_proj(normed))
    return hidden_states + modules.dropout(mlp)
