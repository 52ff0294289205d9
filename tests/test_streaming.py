"""Streaming-dLLM in the sampler: suffix pruning (what a forward sees) and the mask-aware
threshold, per row and batched, in every cache mode, for LLaDA and Dream."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_cache import (
    MASK,
    PAD,
    PROMPTS,
    PlainMaskedLM,
    Recorder,
    Spec,
    padded_canvas,
    r2_config,
    tiny_dream,
    tiny_llada,
)

from r2sft.decoding import DecoderArgs, DecoderConfig, decoder_config, generate
from r2sft.decoding.forwards.view import (
    Pruning,
    pruned_columns,
    seen_after_block,
    visible_mask_ratio,
)
from r2sft.modeling.forward import CacheUse, predict_logits
from r2sft.modeling.layers import KVCache
from r2sft.specs import get_spec

CACHES = ["none", "prefix", "dual"]


def dream_spec():
    return dataclasses.replace(get_spec("dream"), mask_token_id=MASK, eos_token_id=PAD,
                               pad_token_id=PAD, eot_token_id=None)  # fmt: skip


def test_pruned_columns_keep_the_prefix_in_place_then_the_tail_then_filler():
    # width 3, blocks of 4, canvas of 16: rows in blocks 0, 2 and 3 with a window of 2, tail 2.
    columns, kept = pruned_columns([0, 2, 3], width=3, block_length=4, gen_length=16,
                                   pruning=Pruning(window=2, tail=2), device="cpu")  # fmt: skip
    # Row 0 keeps columns 0..8 (prompt, block 0, two window masks) and the tail 17, 18.
    assert columns[0, :11].tolist() == [*range(9), 17, 18]
    assert kept[0].tolist() == [True] * 11 + [False] * 8
    # Row 1 (block 2: columns 11..14, window 15, 16) reaches the tail: it is kept once.
    assert columns[1, :19].tolist() == [*range(17), 17, 18]
    assert kept[1].sum() == 19
    # Row 2 is in the last block: the whole canvas, nothing left to prune.
    assert columns[2].tolist() == list(range(19)) and kept[2].all()


def test_seen_positions_and_the_mask_ratio():
    blocks = torch.tensor([0, 1])
    seen = seen_after_block(blocks, block_length=4, gen_length=12, pruning=Pruning(2, 1))
    assert seen[0].tolist() == [True] * 6 + [False] * 5 + [True]
    assert seen[1].tolist() == [False] * 4 + [True] * 6 + [False, True]
    unpruned = seen_after_block(blocks, 4, 12, None)
    assert unpruned[1].tolist() == [False] * 4 + [True] * 8
    masked = torch.zeros(2, 12, dtype=torch.bool)
    masked[0, :3] = True  # 3 of the 7 positions row 0 sees
    assert visible_mask_ratio(masked, seen).tolist() == pytest.approx([3 / 7, 0.0])


def test_a_tail_longer_than_the_rest_of_the_canvas_does_not_reach_back_before_the_block():
    """The last block (columns 4..7) with a tail of 6: the forward sees the block and nothing
    before it as tail (pruned_columns keeps min(tail, what is left)), so a fully masked last
    block has mask ratio 1, not 4/6."""
    seen = seen_after_block(torch.tensor([1]), block_length=4, gen_length=8, pruning=Pruning(0, 6))
    assert seen[0].tolist() == [False] * 4 + [True] * 4
    masked = torch.tensor([[False] * 4 + [True] * 4])
    assert visible_mask_ratio(masked, seen).tolist() == [1.0]
    columns, kept = pruned_columns([1], 0, 4, 8, Pruning(0, 6), "cpu")
    assert columns[kept].tolist() == list(range(8))  # the forward: the committed block + this one


@pytest.mark.parametrize("shifted", [False, True])
def test_a_pruned_forward_equals_the_full_forward_that_ignores_the_pruned_columns(shifted):
    """Leaving columns out, at their true positions, is exactly attention without them."""
    model = tiny_llada()
    spec = Spec(shifted_logits=shifted)
    ids, attention = padded_canvas()  # width 9, 15 generated columns, left-padded prompts
    pruning = Pruning(window=3, tail=1)
    blocks = [0, 1, 0]
    columns, kept = pruned_columns(blocks, 9, 4, 15, pruning, "cpu")
    block = torch.tensor([[9, 10, 11, 12], [13, 14, 15, 16], [9, 10, 11, 12]])
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    hidden = torch.ones_like(attention)
    hidden.scatter_(1, columns, kept.long())  # columns kept in the pruned view
    hidden[:, :9] = 1
    with torch.no_grad():
        pruned = predict_logits(model, spec, ids.gather(1, columns),
                                attention.gather(1, columns) * kept, block,
                                position_ids=positions.gather(1, columns))  # fmt: skip
        reference = predict_logits(model, spec, ids, attention * _keep_mask(columns, kept, 24),
                                   block, position_ids=positions)  # fmt: skip
        cache = KVCache()
        filled = predict_logits(model, spec, ids.gather(1, columns),
                                attention.gather(1, columns) * kept, block,
                                CacheUse(cache, "fill"),
                                position_ids=positions.gather(1, columns))  # fmt: skip
        first = [9 + 4 * b for b in blocks]
        spans = {mode: predict_logits(model, spec, ids.gather(1, columns), None, block,
                                      CacheUse(cache, mode, first_columns=first))
                 for mode in ("prefix", "dual")}  # fmt: skip
    torch.testing.assert_close(pruned, reference, rtol=0, atol=2e-5)
    torch.testing.assert_close(filled, pruned, rtol=0, atol=0)
    for span in spans.values():  # a fresh cache over the pruned view is exact
        torch.testing.assert_close(span, pruned, rtol=0, atol=2e-5)
    assert not torch.allclose(pruned, predict_logits(model, spec, ids, attention, block),
                              atol=1e-3)  # fmt: skip


def _keep_mask(columns: torch.Tensor, kept: torch.Tensor, total: int) -> torch.Tensor:
    mask = torch.zeros(columns.shape[0], total, dtype=torch.long)
    return mask.scatter(1, columns, kept.long())


def stream_config(**overrides) -> DecoderConfig:
    values = dict(gen_length=24, block_length=4, threshold=0.3, tau_s=0.3, tau_t=0.3,
                  cache_refresh=0, suffix_window=4, suffix_tail=1)  # fmt: skip
    values.update(overrides)
    return decoder_config(values.pop("decoder", "r2"), **values)


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("family", ["llada", "dream"])
def test_pruned_decoding_batched_equals_unbatched(cache, family):
    model = tiny_llada(seed=2) if family == "llada" else tiny_dream(seed=2)
    spec = Spec() if family == "llada" else dream_spec()
    for config in (stream_config(cache=cache),
                   stream_config(cache=cache, decoder="threshold", threshold_alpha=0.5,
                                 cache_refresh=2)):  # fmt: skip
        batched = generate(model, spec, PROMPTS, config)
        assert (batched.tokens != MASK).all()
        assert (batched.step_map.amax(-1) == batched.nfe - 1).all()
        for row, prompt in enumerate(PROMPTS):
            single = generate(model, spec, [prompt], config, seeds=[row])
            assert torch.equal(batched.tokens[row], single.tokens[0])
            assert torch.equal(batched.step_map[row], single.step_map[0])
            assert torch.equal(batched.rule_map[row], single.rule_map[0])
            assert batched.nfe[row] == single.nfe[0]
        split = generate(model, spec, PROMPTS, config, batch_size=2)
        assert torch.equal(split.tokens, batched.tokens)


@pytest.mark.parametrize("cache", CACHES)
def test_a_window_past_the_canvas_end_is_no_pruning(cache):
    model = tiny_llada(seed=2)
    plain = generate(model, Spec(), PROMPTS, stream_config(cache=cache, suffix_window=None))
    wide = generate(model, Spec(), PROMPTS, stream_config(cache=cache, suffix_window=24))
    assert torch.equal(plain.tokens, wide.tokens) and torch.equal(plain.nfe, wide.nfe)
    assert torch.equal(plain.step_map, wide.step_map)


@pytest.mark.parametrize("cache", CACHES)
def test_pruned_forwards_run_over_fewer_columns(cache):
    model = Recorder(tiny_llada(seed=2))
    config = stream_config(cache=cache, suffix_window=4, suffix_tail=1)
    result = generate(model, Spec(), [PROMPTS[0]], config)
    lengths = [length for _, length, mode in model.calls if mode in ("none", "fill")]
    width = len(PROMPTS[0])
    # The first block's forward sees the prompt, the block, 4 window masks and the tail.
    assert lengths[0] == width + 4 + 4 + 1
    assert max(lengths) <= width + config.gen_length
    assert sum(size for size, _, _ in model.calls) == int(result.nfe.sum())
    if cache == "dual":
        assert {length for _, length, mode in model.calls if mode == "dual"} == {4}


def test_mask_aware_threshold_commits_more_as_masks_run_out_and_zero_alpha_is_plain():
    model = tiny_llada(seed=2)
    base = stream_config(decoder="threshold", threshold=0.3, cache="none")
    plain = generate(model, Spec(), PROMPTS, base)
    zero = generate(model, Spec(), PROMPTS, dataclasses.replace(base, threshold_alpha=0.0))
    assert torch.equal(plain.tokens, zero.tokens)
    eager = generate(model, Spec(), PROMPTS, dataclasses.replace(base, threshold_alpha=0.7))
    assert int(eager.nfe.sum()) < int(plain.nfe.sum())


def test_models_that_take_no_positions_refuse_pruning_before_any_work():
    plain = PlainMaskedLM(tiny_llada())
    with pytest.raises(ValueError, match="suffix_window"):
        generate(plain, Spec(), [[1, 2, 3]], stream_config(cache="none"))
    assert plain.lengths == []


def test_streaming_options_are_range_checked():
    with pytest.raises(ValueError, match="suffix_window -1 must be >= 0"):
        DecoderConfig(suffix_window=-1)
    with pytest.raises(ValueError, match="threshold_alpha 1.5 must be in"):
        DecoderConfig(threshold_alpha=1.5)
    with pytest.raises(ValueError, match="--suffix_tail -2 must be >= 0"):
        DecoderArgs(suffix_tail=-2)
    with pytest.raises(ValueError, match="--suffix_tail only matters"):
        DecoderArgs(suffix_tail=2).resolve()
    resolved = DecoderArgs(suffix_window=32, suffix_tail=0, threshold_alpha=0.3).resolve()
    assert (resolved.suffix_window, resolved.suffix_tail, resolved.threshold_alpha) == (32, 0, 0.3)
    assert r2_config().suffix_window is None  # off by default


def test_compiled_dual_step_decodes_the_same_tokens_as_eager(caplog):
    """--compile runs the dual cache's in-block step through torch.compile (CUDA graphs on a
    GPU); on the CPU it must give exactly the eager tokens and NFE, pruned or not."""
    model = tiny_llada(seed=2)
    for config in (r2_config(cache="dual", cache_refresh=2), stream_config(cache="dual")):
        eager = generate(model, Spec(), PROMPTS, config)
        compiled = generate(model, Spec(), PROMPTS, dataclasses.replace(config, compile=True))
        assert torch.equal(compiled.tokens, eager.tokens)
        assert torch.equal(compiled.nfe, eager.nfe)
        assert torch.equal(compiled.step_map, eager.step_map)
    from r2sft.decoding.forwards.cached import CompiledStep

    assert not CompiledStep.of(model).failed
    with caplog.at_level("WARNING"):
        prefix = generate(model, Spec(), PROMPTS, r2_config(cache="prefix", compile=True))
    assert "--cache prefix decodes eagerly" in caplog.text
    assert torch.equal(prefix.tokens, generate(model, Spec(), PROMPTS,
                                               r2_config(cache="prefix")).tokens)  # fmt: skip


def test_a_compiled_step_falls_back_on_a_compiler_error_but_not_on_running_out_of_memory():
    from r2sft.decoding.forwards.cached import CompiledStep

    model = tiny_llada(seed=2)
    step = CompiledStep(model)
    ids = torch.tensor([[3, 4, 5]])

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    step.compiled = out_of_memory
    with pytest.raises(torch.OutOfMemoryError):
        step(input_ids=ids)
    assert not step.failed

    def compiler_error(*args, **kwargs):
        raise RuntimeError("inductor: no C++ compiler")

    step.compiled = compiler_error
    logits = step(input_ids=ids).logits  # the eager model, with one warning
    assert step.failed and torch.equal(logits, model(input_ids=ids).logits)


FIXTURE = Path(__file__).parent / "fixtures" / "streaming_dllm" / "fixture.json"


def test_pruned_threshold_decoding_matches_the_streaming_dllm_sampler():
    """The Streaming-dLLM LLaDA sampler (their code, prefix cache, batch 1, greedy, their
    early exit off) on the embedded model, 48 test prompts: r2sft with the same settings
    gives the same tokens, NFE and step maps, decoding all prompts as one batch
    (tests/fixtures/streaming_dllm/README.md)."""
    from r2sft.paths import EMBEDDED_MODEL_DIR
    from r2sft.specs import load_model

    fixture = json.loads(FIXTURE.read_text())
    loaded = load_model(str(EMBEDDED_MODEL_DIR), dtype="float32", device="cpu")
    assert loaded.spec.mask_token_id == fixture["mask_token_id"]
    prompts = [prompt["prompt_ids"] for prompt in fixture["prompts"]]
    assert len(prompts) >= 40
    for name, reference in fixture["configs"].items():
        config = decoder_config(
            "threshold", gen_length=reference["gen_length"],
            block_length=reference["block_length"], threshold=reference["threshold"],
            threshold_alpha=reference["alpha"], suffix_window=reference["window"],
            suffix_tail=reference["tail"], cache="prefix", cache_refresh=0, early_exit=False,
        )  # fmt: skip
        result = generate(loaded.model, loaded.spec, prompts, config)
        for row, expected in enumerate(reference["rows"]):
            assert result.tokens[row].tolist() == expected["tokens"], (name, row)
            assert int(result.nfe[row]) == expected["nfe"], (name, row)
            assert result.step_map[row].tolist() == expected["step_map"], (name, row)


def test_streaming_options_reach_every_entry_point_and_presets(tmp_path):
    """One declaration: the new options are flags of every command line, lm-eval model args
    and preset fields, resolved into the decoder."""
    from test_harness import harness_args

    from r2sft.collect import CollectConfig
    from r2sft.config import parse_config
    from r2sft.decoding.presets import DecoderPreset, write_preset
    from r2sft.evaluate import EvaluateArgs

    flags = ["--suffix_window", "36", "--suffix_tail", "0", "--threshold_alpha", "0.3",
             "--cache_reuse", "2", "--compile", "true"]  # fmt: skip
    for args in (parse_config(EvaluateArgs, args=flags),
                 parse_config(CollectConfig, args=flags)):  # fmt: skip
        decoder = args.resolve()
        assert (decoder.suffix_window, decoder.suffix_tail, decoder.threshold_alpha,
                decoder.cache_reuse, decoder.compile) == (36, 0, 0.3, 2, True)  # fmt: skip
    model_args = harness_args({"suffix_window": 32, "threshold_alpha": 0.5})
    assert (model_args.resolve().suffix_window, model_args.resolve().threshold_alpha) == (32, 0.5)
    preset = DecoderPreset("p", {"r2": {"suffix_window": 48, "threshold_alpha": 0.1,
                                        "cache_refresh": 4}})  # fmt: skip
    folder = tmp_path / "model"
    folder.mkdir()
    write_preset(folder, preset)
    resolved = DecoderArgs(preset=str(folder)).resolve()
    assert (resolved.suffix_window, resolved.threshold_alpha,
            resolved.cache_refresh) == (48, 0.1, 4)  # fmt: skip
