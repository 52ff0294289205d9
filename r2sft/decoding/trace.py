"""What a decode returns: the canvas, how it was committed, and the per-forward trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Trace:
    """Per row and forward, the candidates of the active block (compact, on CPU).

    Forward ``s`` of row ``b`` worked on block ``block[b, s]``; ``top1[b, s, j]`` and
    ``conf[b, s, j]`` are the candidate token and its probability at generated position
    ``block[b, s] * block_length + j``, as the rules saw them (for already committed
    positions too). Entries with ``s >= nfe[b]`` are padding: top1 -1, conf 0, block -1.
    Whether a position was masked at forward s follows from the step map: it was masked
    before forward s iff ``step_map >= s``.
    """

    top1: torch.Tensor  # [B, S, L] int32
    conf: torch.Tensor  # [B, S, L] float32
    block: torch.Tensor  # [B, S] int32
    block_length: int

    def row(self, index: int, nfe: int) -> Trace:
        """The trace of one row, cut to its ``nfe`` forwards (batch dimension kept)."""
        return Trace(
            self.top1[index : index + 1, :nfe],
            self.conf[index : index + 1, :nfe],
            self.block[index : index + 1, :nfe],
            self.block_length,
        )


@dataclass
class DecodeResult:
    """One row per prompt, all tensors on CPU.

    ``tokens``: the whole generated canvas (EOS fill included). ``step_map``: the forward
    index (0-based, per row) that committed each position. ``rule_map``: the
    :class:`~r2sft.decoding.rules.CommitRule` that committed it. ``nfe``: forwards per row
    (every forward in which the row still had masks, block-opening ones included).
    """

    tokens: torch.Tensor  # [B, G] int64
    step_map: torch.Tensor  # [B, G] int32
    rule_map: torch.Tensor  # [B, G] int8
    nfe: torch.Tensor  # [B] int32
    trace: Trace | None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @staticmethod
    def concatenate(results: list[DecodeResult]) -> DecodeResult:
        """Stack results of consecutive batches (traces padded to the longest)."""
        if len(results) == 1:
            return results[0]
        trace = None
        if all(result.trace is not None for result in results):
            steps = max(result.trace.top1.shape[1] for result in results)

            def pad(tensor: torch.Tensor, value: float) -> torch.Tensor:
                missing = steps - tensor.shape[1]
                if missing == 0:
                    return tensor
                shape = (tensor.shape[0], missing, *tensor.shape[2:])
                return torch.cat([tensor, tensor.new_full(shape, value)], dim=1)

            trace = Trace(
                torch.cat([pad(r.trace.top1, -1) for r in results]),
                torch.cat([pad(r.trace.conf, 0.0) for r in results]),
                torch.cat([pad(r.trace.block, -1) for r in results]),
                results[0].trace.block_length,
            )
        return DecodeResult(
            torch.cat([r.tokens for r in results]),
            torch.cat([r.step_map for r in results]),
            torch.cat([r.rule_map for r in results]),
            torch.cat([r.nfe for r in results]),
            trace,
        )
