"""Forward strategies: what one decoding forward runs over, and the registry of cache modes.

:data:`FORWARDS` is the one table of cache modes (``--cache``): each entry is a
:class:`ForwardStrategy` subclass that the sampler asks for the logits of every running
row's block. Suffix pruning (Streaming-dLLM, ``--suffix_window``) is an option of all of
them: it changes which columns a full forward runs over and a cache holds, not how the
cache is used. A new strategy is a new file here and one line in :data:`FORWARDS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from r2sft.decoding.forwards.base import Canvas, CanvasView, ForwardStrategy, Running
from r2sft.decoding.forwards.cached import CachedForward, DualCache, PrefixCache
from r2sft.decoding.forwards.uncached import Uncached
from r2sft.decoding.forwards.view import Pruning
from r2sft.decoding.options import at_least, option
from r2sft.modeling.forward import supports_decode_cache

logger = logging.getLogger(__name__)

FORWARDS: dict[str, type[ForwardStrategy]] = {
    strategy.name: strategy for strategy in (Uncached, PrefixCache, DualCache)
}
AUTO = "auto"
CACHE_MODES: tuple[str, ...] = (AUTO, *FORWARDS)
CacheMode = Literal[CACHE_MODES]  # type: ignore[valid-type]


@dataclass
class ForwardOptions:
    cache: CacheMode = option(
        AUTO,
        "KV cache inside a block: auto (dual for models with r2sft's decoding cache, else "
        "none) | " + " | ".join(f"{name} ({cls.description})" for name, cls in FORWARDS.items()),
    )
    cache_refresh: int = option(
        0,
        "with a cache, also refill it (one full forward, one NFE) once this many of the "
        "block's tokens were committed since the last fill (0: only at the block's start, "
        "the official runs' plain cache)",
        check=at_least(0),
    )
    suffix_window: int | None = option(
        None,
        "Streaming-dLLM's suffix pruning: forwards see only this many canvas positions after "
        "the block (plus the tail), each at its true position (None: the whole canvas)",
        check=at_least(0),
    )
    suffix_tail: int = option(
        1, "suffix pruning: the canvas's last positions every forward still sees",
        check=at_least(0),
    )  # fmt: skip
    cache_reuse: int = option(
        0,
        "with a cache, a block opening recomputes only from the block just committed on, "
        "keeping the cached prompt and earlier blocks, for up to this many openings in a row, "
        "then a full fill (0: every opening is a full forward)",
        check=at_least(0),
    )
    compile: bool = option(
        False,
        "compile the dual cache's in-block step with torch.compile (CUDA graphs on a GPU: "
        "small batches are launch-bound); other cache modes decode eagerly, with a warning",
    )


def resolve_cache_mode(model: Any, mode: str) -> str:
    """The cache mode a decode of ``model`` runs: ``"auto"`` is ``"dual"`` where the model
    has r2sft's decoding cache and ``"none"`` elsewhere; asking a model without one for a
    cache is an error that says so."""
    if mode == AUTO:
        return "dual" if supports_decode_cache(model) else "none"
    if mode not in FORWARDS:
        raise ValueError(f"cache mode {mode!r} must be one of {', '.join(CACHE_MODES)}.")
    if mode != "none" and not supports_decode_cache(model):
        raise ValueError(
            f"--cache {mode} needs a model class with r2sft's decoding KV cache (r2sft's LLaDA "
            f"or Dream); {type(model).__name__} has none. Decode it with --cache none (or auto)."
        )
    return mode


def check_forward(model: Any, config: Any) -> type[ForwardStrategy]:
    """The strategy ``config`` asks of ``model``; an error now (before any decoding) when the
    model cannot run it."""
    if config.suffix_window is not None and not supports_decode_cache(model):
        raise ValueError(
            f"--suffix_window needs a model that takes RoPE position ids (r2sft's LLaDA or "
            f"Dream class); {type(model).__name__} does not. Decode it without suffix pruning."
        )
    return FORWARDS[resolve_cache_mode(model, config.cache)]


_WARNED: set[str] = set()


def make_forward(model: Any, spec: Any, config: Any, canvas: Canvas) -> ForwardStrategy:
    """The forward strategy of one decode batch."""
    strategy = check_forward(model, config)
    if config.compile and strategy is not DualCache:
        message = (f"--compile applies to the dual cache's in-block step; --cache "
                   f"{strategy.name} decodes eagerly")  # fmt: skip
        if message not in _WARNED:
            _WARNED.add(message)
            logger.warning(message)
    return strategy(model, spec, config, canvas)


__all__ = [
    "AUTO",
    "CACHE_MODES",
    "FORWARDS",
    "CachedForward",
    "Canvas",
    "CanvasView",
    "ForwardOptions",
    "ForwardStrategy",
    "Pruning",
    "Running",
    "check_forward",
    "make_forward",
    "resolve_cache_mode",
]
