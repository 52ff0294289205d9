"""Building blocks shared by r2sft's model classes (LLaDA, Dream): one implementation of the
bidirectional pre-norm transformer block, whatever the checkpoint calls its modules.

Both released dLLM families are Llama-style: RMSNorm computed in fp32, half-split
("rotate_half") RoPE, multi-head or grouped-query SDPA attention without a causal mask,
and a SwiGLU MLP ``down(silu(gate(x)) * up(x))``. Each family's block owns its modules under
its official names (so checkpoints load unchanged) and hands them to :func:`block_forward`.

Decoding with an approximate KV cache (Fast-dLLM's prefix and dual cache) is model-agnostic
too: a :class:`KVCache` holds every layer's keys and values of a batch of canvases, and one
forward of a model uses it through a :class:`CacheStep` that the model hands to
:func:`forward_inputs` (positions and attention mask) and to every :func:`block_forward`
(``kv_cache=step, layer_index=i``). Why not transformers' ``DynamicCache``: it appends keys
for autoregressive decoding, while a masked-diffusion block forward replaces a span of a
bidirectional cache per row (rows sit in different blocks) and attends to the rest.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class Fused:
    """A small elementwise function run through ``torch.compile`` (one fused kernel) on
    half-precision GPU tensors without autograd (decoding), and eagerly elsewhere.

    Why: on bf16 activations the fp32 math that LLaDA and Dream do in RMSNorm and RoPE (and
    SwiGLU's gate) costs one pass over the tensor per eager op; at LLaDA-8B's shape those
    passes made the full forward 13% slower than transformers' Llama (H200, batch 32; docs/
    results.md). Fused, each reads its inputs once. The math is the same; the compiled kernel
    may round fp32 intermediates differently in the last bit. fp32 activations (CPU runs, the
    embedded model on a GPU) stay on the eager path, bit for bit as before. A compile failure
    logs one warning and falls back to eager; ``TORCH_COMPILE_DISABLE=1`` turns it off.
    """

    # Where fusing pays (a class attribute, so tests can exercise the compiled path on a CPU).
    device_types: frozenset[str] = frozenset({"cuda"})

    def __init__(self, function: Callable[..., torch.Tensor]) -> None:
        self.function = function
        self.compiled: Callable[..., torch.Tensor] | None = None
        self.failed = False
        functools.update_wrapper(self, function)

    def __call__(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        half = x.dtype in (torch.bfloat16, torch.float16)
        if (
            self.failed
            or not half
            or x.device.type not in self.device_types
            or torch.is_grad_enabled()  # decoding only: no compiled backward to go wrong
            or torch.compiler.is_compiling()
        ):  # inside a compiled model: it fuses them
            return self.function(x, *args)
        if self.compiled is None:
            self.compiled = torch.compile(self.function, dynamic=True)
        try:
            return self.compiled(x, *args)
        except Exception as error:  # noqa: BLE001  (no working compiler: stay eager)
            self.failed = True
            logger.warning("fused %s: torch.compile failed (%s); running it eagerly",
                           self.function.__name__, type(error).__name__)  # fmt: skip
            return self.function(x, *args)


@Fused
def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Normalise in fp32, cast back, then scale (and shift)."""
    in_dtype = x.dtype
    x = x.float()
    x = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(in_dtype)
    if weight is None:
        return x
    x = weight * x
    return x + bias if bias is not None else x


@Fused
def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The SwiGLU MLP's inner product ``silu(gate) * up``."""
    return F.silu(gate) * up


class RMSNorm(nn.Module):
    """RMSNorm as LLaDA and Qwen2 (Dream) compute it: normalise in fp32, cast back, then
    scale (and shift, where the checkpoint has a bias)."""

    def __init__(self, size: int, eps: float, affine: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if affine else None
        self.bias = nn.Parameter(torch.zeros(size)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.bias, self.eps)


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


@Fused
def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, L, D) queries or keys; math in the tables' dtype, result in x's dtype.

    Half-split RoPE, ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = (-x2, x1)``.
    fp32 activations (CPU runs, the fixtures) take exactly that formula, so their results
    stay bit for bit what they were. Half-precision activations compute it as ``x * cos``
    with each half's sine term added in place: no rotated copy, a third fewer passes over the
    tensor (with LLaDA's fp32 tables on bf16 activations, those passes were a large share of
    an 8B forward's time outside the matrix products; docs/results.md).
    """
    x_rot = x.to(cos.dtype)
    if x.dtype == torch.float32:
        return ((x_rot * cos) + (_rotate_half(x_rot) * sin)).to(x.dtype)
    half = x.shape[-1] // 2
    out = x_rot * cos
    out[..., :half].addcmul_(x_rot[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x_rot[..., :half], sin[..., half:])
    return out.to(x.dtype)


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
    kv_groups: int = 1,
) -> torch.Tensor:
    """SDPA over (B, H, Lq, D) queries and (B, H_kv, Lk, D) keys / values, no causal mask;
    ``kv_groups = H / H_kv`` (a plain int of the model's config, not read off the shapes: a
    compiled step with dynamic shapes must not turn it into a symbolic value).

    Grouped-query attention: SDPA's native GQA runs on the flash kernel, which takes no mask;
    with a mask it would fall back to the slow math kernel, so the KV heads are shared
    explicitly when a mask is given.
    """
    enable_gqa = kv_groups > 1
    if enable_gqa and mask is not None:
        k, v = k.repeat_interleave(kv_groups, dim=1), v.repeat_interleave(kv_groups, dim=1)
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
    *,
    kv_cache: CacheStep | None = None,
    layer_index: int = 0,
) -> torch.Tensor:
    """One bidirectional pre-norm block: ``x + o(attn(norm(x)))``, then ``+ down(silu(gate)
    * up)`` of the second norm; residual dropout on both branches.

    With ``kv_cache`` (a :class:`CacheStep`) the block's rotated keys and values go through
    ``kv_cache.update(layer_index, ...)``: stored by a fill step, merged with the cached ones
    of the other columns by a span step (``attention_mask`` must then be the step's mask,
    see :func:`forward_inputs`).
    """
    batch, length, width = hidden_states.shape
    head_dim = modules.q_proj.out_features // n_heads
    normed = modules.attn_norm(hidden_states)

    def heads(projection: nn.Linear, count: int) -> torch.Tensor:
        return projection(normed).view(batch, length, count, head_dim).transpose(1, 2)

    q = apply_rope(heads(modules.q_proj, n_heads), cos, sin)
    k = apply_rope(heads(modules.k_proj, n_kv_heads), cos, sin)
    v = heads(modules.v_proj, n_kv_heads)
    if kv_cache is not None:
        k, v = kv_cache.update(layer_index, k, v)
    attn = bidirectional_attention(q, k, v, attention_mask, attention_dropout,
                                   kv_groups=n_heads // n_kv_heads)  # fmt: skip
    attn = attn.transpose(1, 2).reshape(batch, length, n_heads * head_dim)
    hidden_states = hidden_states + modules.dropout(modules.o_proj(attn))

    normed = modules.mlp_norm(hidden_states)
    mlp = modules.down_proj(swiglu(modules.gate_proj(normed), modules.up_proj(normed)))
    return hidden_states + modules.dropout(mlp)


CacheStepMode = Literal["fill", "prefix", "dual", "refill"]


class KVCache:
    """Every layer's keys (after RoPE) and values for a batch of canvases, row by row.

    Filled by full forwards (:meth:`fill`) and read by span forwards (:meth:`span`) that
    compute only some columns of each row and take the others from here. Row ``r`` of the
    cache is row ``r`` of the batch the steps name (``rows``); :meth:`keep` drops finished
    rows. Stored per layer as ``(rows, kv_heads, length, head_dim)`` tensors, plus the padding
    mask and RoPE positions of the filled canvases.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.key_mask: torch.Tensor | None = None  # (rows, length) bool, True = real token
        self.position_ids: torch.Tensor | None = None  # (rows, length)

    @property
    def filled(self) -> bool:
        return self.key_mask is not None

    def fill(
        self, rows: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
    ) -> CacheStep:
        """A full forward that (re)computes its canvas and stores it: for every row when
        ``rows`` is None (the cache then takes the batch's size), else for those cache rows
        (the forward's batch is ``rows``, in that order).

        The canvas need not be the whole sequence: a decoder that leaves columns out (suffix
        pruning) passes the kept columns and their true RoPE ``position_ids``; a cache row
        then holds as many columns as its last fill (shorter fills leave the rest masked;
        a longer one widens the cache).
        """
        if rows is not None and not self.filled:
            raise ValueError("KVCache.fill(rows=...) refills rows of a filled cache; fill it first")
        return CacheStep(self, "fill", rows, position_ids=position_ids)

    @property
    def length(self) -> int:
        """Columns per cache row."""
        return 0 if self.key_mask is None else self.key_mask.shape[1]

    def widen(self, length: int) -> None:
        """Make room for ``length`` columns per row (the new ones masked out)."""
        extra = length - self.length
        if extra <= 0:
            return
        self.keys = [F.pad(k, (0, 0, 0, extra)) for k in self.keys]
        self.values = [F.pad(v, (0, 0, 0, extra)) for v in self.values]
        self.key_mask = F.pad(self.key_mask, (0, extra), value=False)
        self.position_ids = F.pad(self.position_ids, (0, extra))

    def trim(self, length: int) -> None:
        """Keep only the first ``length`` columns per row (no-op when the cache is no wider).
        For columns every row masks: a refill's span reaches past the canvas for rows whose
        block starts later than the batch's earliest."""
        if length >= self.length:
            return
        self.keys = [k[:, :, :length].contiguous() for k in self.keys]
        self.values = [v[:, :, :length].contiguous() for v in self.values]
        self.key_mask = self.key_mask[:, :length].contiguous()
        self.position_ids = self.position_ids[:, :length].contiguous()

    def span(
        self,
        mode: Literal["prefix", "dual", "refill"],
        starts: Sequence[int],
        length: int,
        rows: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> CacheStep:
        """A forward of ``length`` columns per row, from column ``starts[r]`` on (host ints).

        ``"dual"``: the span's keys and values replace the cached ones of its columns and the
        queries attend to the whole cached canvas (Fast-dLLM's dual cache); the span must lie
        inside the canvas. ``"prefix"``: the queries attend to the cached columns before
        ``starts[r]`` and to the span's own keys (Fast-dLLM's prefix cache, which recomputes
        the block and everything after it); span columns past the canvas end are padding,
        masked out. The cached keys stay as filled either way.

        ``"refill"``: attends like ``"prefix"``, then stores the span's keys and values, its
        RoPE ``position_ids`` and ``valid`` (which span columns are real) in the cache: a
        cheaper refill that keeps the cached columns before ``starts[r]`` (the cache widens
        when the span reaches past it; :meth:`trim` takes back what only padding filled).
        """
        if not self.filled:
            raise ValueError("KVCache.span() needs a filled cache: run a fill step first")
        if mode not in ("prefix", "dual", "refill"):
            raise ValueError(f"KVCache.span mode {mode!r} must be prefix, dual or refill")
        if mode == "refill" and (position_ids is None or valid is None):
            raise ValueError("a refill span needs the position_ids and valid of its columns")
        if len(starts) != (self.key_mask.shape[0] if rows is None else len(rows)):
            raise ValueError(f"KVCache.span got {len(starts)} starts for its rows")
        device = self.key_mask.device
        columns = torch.tensor(starts, device=device)[:, None] + torch.arange(length, device=device)
        starts = tuple(int(start) for start in starts)
        if mode == "refill":
            self.widen(max(starts) + length)
            self._store(self.key_mask, rows, columns, valid.bool())
            self._store(self.position_ids, rows, columns, position_ids)
        return CacheStep(self, mode, rows, starts, length, columns=columns)

    @staticmethod
    def _store(target: torch.Tensor, rows: torch.Tensor | None, columns: torch.Tensor,
               values: torch.Tensor) -> None:  # fmt: skip
        """``target[rows[i], ..., columns[i, j]] = values[i, ..., j]`` along the last column
        dimension (dim 1 for masks and positions, dim 2 for keys and values)."""
        dim = 1 if target.dim() == 2 else 2
        index = columns if dim == 1 else columns[:, None, :, None].expand_as(values)
        if rows is None:
            target.scatter_(dim, index, values)
        else:
            target[rows] = target[rows].scatter(dim, index, values)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only cache rows ``rows`` (in that order): rows that finished decoding leave."""
        if not self.filled:
            return
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.key_mask = self.key_mask.index_select(0, rows)
        self.position_ids = self.position_ids.index_select(0, rows)


@dataclass(frozen=True)
class CacheStep:
    """How one forward uses a :class:`KVCache` (see :meth:`KVCache.fill` / :meth:`KVCache.span`)."""

    cache: KVCache
    mode: CacheStepMode
    rows: torch.Tensor | None
    starts: tuple[int, ...] = ()
    length: int = 0
    position_ids: torch.Tensor | None = None  # fill only: RoPE positions of its columns
    columns: torch.Tensor | None = None  # span only: (n, length) cache columns it computes

    def _cached(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.rows is None else tensor.index_select(0, self.rows)

    def inputs(
        self, attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE positions ``(batch, length)`` of this forward's tokens and its SDPA key mask.

        A fill step takes the positions from ``attention_mask`` (:func:`padding_position_ids`)
        and stores both; a span step reads them from the cache (its ``attention_mask`` is
        ignored: the canvas's padding was stored by the fill).
        """
        cache = self.cache
        if self.mode == "fill":
            if attention_mask is not None and attention_mask.dim() != 2:
                raise ValueError("a KV-cache fill needs a (batch, length) padding mask")
            keep = (
                torch.ones(batch, length, dtype=torch.bool, device=device)
                if attention_mask is None
                else attention_mask.bool()
            )
            positions = self.position_ids
            if positions is None:
                positions = padding_position_ids(attention_mask, batch, length, device)
            if self.rows is None:
                cache.key_mask, cache.position_ids = keep, positions
                cache.keys, cache.values = [], []
            else:
                cache.widen(length)
                cache.key_mask[self.rows] = F.pad(keep, (0, cache.length - length), value=False)
                cache.position_ids[self.rows] = F.pad(positions, (0, cache.length - length))
            return positions, sdpa_padding_mask(keep)
        if length != self.length:
            raise ValueError(f"a KV-cache span step of {self.length} columns got {length} tokens")
        total = cache.key_mask.shape[1]
        columns = self.columns
        key_mask = self._cached(cache.key_mask)
        positions = self._cached(cache.position_ids).gather(1, columns.clamp(max=total - 1))
        if self.mode == "dual":
            return positions, sdpa_padding_mask(key_mask)
        # The span's own keys count where they are real columns of the cached canvas (a refill
        # stored its columns' positions and validity before this forward).
        inside = (columns < total) & key_mask.gather(1, columns.clamp(max=total - 1))
        prefix = max(self.starts)
        before = torch.arange(prefix, device=device) < columns[:, :1]
        keys = torch.cat([key_mask[:, :prefix] & before, inside], dim=1)
        return positions, sdpa_padding_mask(keys)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values layer ``layer`` attends to, given this forward's own."""
        cache = self.cache
        if self.mode == "fill":
            if self.rows is None:
                if len(cache.keys) != layer:
                    raise ValueError(f"KVCache fill: layer {layer} out of order")
                # Contiguous (rows, heads, columns, dim): one memory layout whatever the
                # canvas length, so a compiled span step is not specialised to each one.
                cache.keys.append(k.contiguous())
                cache.values.append(v.contiguous())
            else:
                cache.keys[layer][self.rows, :, : k.shape[2]] = k
                cache.values[layer][self.rows, :, : v.shape[2]] = v
            return k, v
        cached_k, cached_v = self._cached(cache.keys[layer]), self._cached(cache.values[layer])
        if self.mode == "dual":
            index = self.columns[:, None, :, None].expand_as(k)
            if torch.compiler.is_compiling():  # a compiled step leaves its inputs unchanged
                return cached_k.scatter(2, index, k), cached_v.scatter(2, index, v)
            # Scattered in place when the step covers every cache row: the span's columns are
            # recomputed by every forward that reads them, so the cache may hold any values there.
            return cached_k.scatter_(2, index, k), cached_v.scatter_(2, index, v)
        prefix = max(self.starts)
        keys = torch.cat([cached_k[:, :, :prefix], k], dim=2)
        values = torch.cat([cached_v[:, :, :prefix], v], dim=2)
        if self.mode == "refill":
            self.cache._store(cache.keys[layer], self.rows, self.columns, k)
            self.cache._store(cache.values[layer], self.rows, self.columns, v)
        return keys, values


def forward_inputs(
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    batch: int,
    length: int,
    device: torch.device,
    kv_cache: CacheStep | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RoPE positions and SDPA mask of one forward: from the cache step when there is one,
    else ``position_ids`` (default :func:`padding_position_ids`) and the padding mask."""
    if kv_cache is not None:
        if position_ids is not None:
            raise ValueError(
                "position_ids go to the KV cache's fill step (KVCache.fill(position_ids=...)); "
                "a span step reads them from the cache"
            )
        return kv_cache.inputs(attention_mask, batch, length, device)
    if position_ids is None:
        position_ids = padding_position_ids(attention_mask, batch, length, device)
    mask = None if attention_mask is None else sdpa_padding_mask(attention_mask)
    return position_ids, mask


def select_positions(hidden: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Rows ``positions`` ((B, P) indices) of ``hidden`` (B, L, D), so that the output head
    runs only where logits are wanted; all rows when ``positions`` is None."""
    if positions is None:
        return hidden
    return hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
