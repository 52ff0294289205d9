"""Decoding KV cache and position-restricted logits (r2sft.modeling.layers / .forward) and the
sampler's prefix / dual cache modes, on tiny random LLaDA models and hand-built canvases."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from r2sft.decoding import DecoderArgs, DecoderConfig, decoder_config, generate
from r2sft.modeling import DreamConfig, DreamModel, LLaDAConfig, LLaDAModelLM
from r2sft.modeling.forward import CacheUse, predict_logits, supports_decode_cache
from r2sft.modeling.layers import KVCache
from r2sft.specs import ModelSpec, get_spec

VOCAB, MASK, PAD = 48, 47, 46


def tiny_llada(seed: int = 0, **overrides) -> LLaDAModelLM:
    values = dict(
        d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=VOCAB,
        embedding_size=VOCAB, mask_token_id=MASK, eos_token_id=PAD, pad_token_id=PAD,
        max_sequence_length=128, init_std=0.3,
    )  # fmt: skip
    values.update(overrides)
    torch.manual_seed(seed)
    return LLaDAModelLM(LLaDAConfig(**values)).eval()


def Spec(shifted_logits: bool = False) -> ModelSpec:  # noqa: N802  (reads like the class)
    """The LLaDA family spec with the tiny model's ids (and optionally shifted logits)."""
    return dataclasses.replace(get_spec("llada"), mask_token_id=MASK, eos_token_id=PAD,
                               pad_token_id=PAD, shifted_logits=shifted_logits)  # fmt: skip


def padded_canvas() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded rows of width 24: prompts of 6, 9 and 4 tokens, then 15 columns
    (some committed tokens, some masks)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (3, 24), generator=generator)
    attention = torch.ones(3, 24, dtype=torch.long)
    for row, prompt in enumerate([6, 9, 4]):
        ids[row, : 9 - prompt] = PAD
        attention[row, : 9 - prompt] = 0
    ids[:, 15:] = MASK
    ids[0, 12] = MASK
    return ids, attention


def gather(logits: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, columns[..., None].expand(-1, -1, logits.shape[-1]))


@pytest.mark.parametrize("shifted", [False, True])
def test_position_logits_equal_the_sliced_full_logits(shifted):
    model = tiny_llada()
    ids, attention = padded_canvas()
    with torch.no_grad():
        full = model(ids, attention_mask=attention).logits
        positions = torch.tensor([[9, 10, 11], [12, 13, 14], [0, 5, 23]])
        got = predict_logits(model, Spec(shifted_logits=shifted), ids, attention, positions)
        every = predict_logits(model, Spec(shifted_logits=shifted), ids, attention)
    source = (positions - int(shifted)).clamp(min=0)
    torch.testing.assert_close(got, gather(full, source), rtol=0, atol=1e-6)
    expected = torch.cat([full[:, :1], full[:, :-1]], dim=1) if shifted else full
    torch.testing.assert_close(every, expected, rtol=0, atol=0)
    # The output head really runs at the requested rows only.
    with torch.no_grad():
        out = model(ids, attention_mask=attention, output_positions=positions)
    assert out.logits.shape == (3, 3, VOCAB)
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=ids, output_positions=positions)


class PlainMaskedLM(torch.nn.Module):
    """A model without r2sft's decoding arguments (like a transformers masked LM): it
    returns full logits; the shifted variant predicts position i from output row i - 1."""

    def __init__(self, inner: LLaDAModelLM, shifted: bool = False) -> None:
        super().__init__()
        self.inner, self.shifted = inner, shifted
        self.lengths: list[int] = []

    def forward(self, input_ids, attention_mask=None):
        self.lengths.append(input_ids.shape[1])
        logits = self.inner(input_ids, attention_mask=attention_mask).logits
        if self.shifted:  # row i now predicts position i + 1
            logits = torch.cat([logits[:, 1:], logits[:, -1:]], dim=1)
        return SimpleNamespace(logits=logits)


def test_models_without_the_decode_arguments_run_the_full_forward_and_refuse_a_cache():
    inner = tiny_llada()
    ids, attention = padded_canvas()
    positions = torch.tensor([[10, 11], [12, 13], [14, 15]])
    with torch.no_grad():
        expected = gather(inner(ids, attention_mask=attention).logits, positions)
        for shifted in (False, True):
            plain = PlainMaskedLM(inner, shifted)
            assert not supports_decode_cache(plain)
            got = predict_logits(plain, Spec(shifted_logits=shifted), ids, attention, positions)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    config = decoder_config("threshold", gen_length=8, block_length=4, cache="dual")
    with pytest.raises(ValueError, match="--cache none"):
        generate(plain, Spec(), [[1, 2, 3]], config)
    # The default, auto, decodes such a model without a cache.
    auto = generate(plain, Spec(), [[1, 2, 3]], decoder_config("threshold", gen_length=8,
                    block_length=4))  # fmt: skip
    none = generate(plain, Spec(), [[1, 2, 3]], dataclasses.replace(config, cache="none"))
    assert torch.equal(auto.tokens, none.tokens)
    with pytest.raises(ValueError, match="--cache none"):
        predict_logits(plain, Spec(), ids, attention, positions, CacheUse(KVCache(), "fill"))


@pytest.mark.parametrize("mode", ["dual", "prefix"])
@pytest.mark.parametrize("shifted", [False, True])
def test_block_forward_with_a_fresh_cache_equals_the_full_forward(mode, shifted):
    """Filled from the very canvas it reads, the cache is exact: the block forward's logits
    equal the full forward's at the block, for left-padded rows in different blocks, for
    all rows or a subset, and the fill itself returns the full forward's logits."""
    model = tiny_llada()
    spec = Spec(shifted_logits=shifted)
    ids, attention = padded_canvas()
    blocks = torch.tensor([[9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20]])
    cache = KVCache()
    with torch.no_grad():
        full = predict_logits(model, spec, ids, attention, blocks)
        filled = predict_logits(model, spec, ids, attention, blocks, CacheUse(cache, "fill"))
        first = blocks[:, 0].tolist()
        cached = predict_logits(model, spec, ids, attention, blocks,
                                CacheUse(cache, mode, first_columns=first))  # fmt: skip
        rows = torch.tensor([2, 0])
        subset = predict_logits(
            model, spec, ids[rows], attention[rows], blocks[rows],
            CacheUse(cache, mode, rows=rows, first_columns=[first[2], first[0]]),
        )  # fmt: skip
    torch.testing.assert_close(filled, full, rtol=0, atol=0)
    torch.testing.assert_close(cached, full, rtol=0, atol=2e-5)
    torch.testing.assert_close(subset, full[rows], rtol=0, atol=2e-5)


def test_dual_block_forward_reads_the_cache_not_the_current_canvas():
    """Approximate by design: after the block's tokens change, a span forward sees the new
    block but the cached (stale) prompt; a token changed after the block is seen by the
    prefix mode (it recomputes the suffix) and not by the dual one (it caches it)."""
    model = tiny_llada()
    ids, attention = padded_canvas()
    block = torch.tensor([[15, 16, 17, 18]] * 3)
    first = [15] * 3
    cache = KVCache()
    with torch.no_grad():
        before = predict_logits(model, Spec(), ids, attention, block, CacheUse(cache, "fill"))
        changed = ids.clone()
        changed[:, 15] = 7  # one block token committed
        truth = predict_logits(model, Spec(), changed, attention, block)
        for mode in ("dual", "prefix"):
            got = predict_logits(model, Spec(), changed, attention, block,
                                 CacheUse(cache, mode, first_columns=first))  # fmt: skip
            assert (got - truth).abs().max() > 1e-3 and (got - before).abs().max() > 1e-3
        later = ids.clone()
        later[:, 20] = 7
        dual = predict_logits(model, Spec(), later, attention, block,
                              CacheUse(cache, "dual", first_columns=first))  # fmt: skip
        prefix = predict_logits(model, Spec(), later, attention, block,
                                CacheUse(cache, "prefix", first_columns=first))  # fmt: skip
    torch.testing.assert_close(dual, before, rtol=0, atol=2e-5)
    assert (prefix - before).abs().max() > 1e-3


def test_kv_cache_rows_refill_and_keep():
    model = tiny_llada()
    ids, attention = padded_canvas()
    block = torch.tensor([[15, 16, 17, 18]] * 3)
    cache = KVCache()
    with pytest.raises(ValueError, match="filled"):
        cache.span("dual", [15, 15, 15], 4)
    with pytest.raises(ValueError, match="fill it first"):
        cache.fill(rows=torch.tensor([0]))
    with torch.no_grad():
        predict_logits(model, Spec(), ids, attention, block, CacheUse(cache, "fill"))
        changed = ids.clone()
        changed[1, 15:18] = 5
        # Refill row 1 only; then rows 0 and 2 leave the batch.
        rows = torch.tensor([1])
        predict_logits(model, Spec(), changed[rows], attention[rows], block[rows],
                       CacheUse(cache, "fill", rows=rows))  # fmt: skip
        cache.keep(torch.tensor([1]))
        assert cache.keys[0].shape[0] == 1 and cache.key_mask.shape == (1, 24)
        got = predict_logits(model, Spec(), changed[rows], attention[rows], block[rows],
                             CacheUse(cache, "dual", first_columns=[15]))  # fmt: skip
        truth = predict_logits(model, Spec(), changed[rows], attention[rows], block[rows])
    torch.testing.assert_close(got, truth, rtol=0, atol=2e-5)


class Recorder(torch.nn.Module):
    """Wraps a model and records, per call, the batch size, input length and cache mode."""

    supports_decode_cache = True

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[int, int, str]] = []

    def forward(self, input_ids, **kwargs):
        step = kwargs.get("kv_cache")
        self.calls.append((input_ids.shape[0], input_ids.shape[1], step.mode if step else "none"))
        return self.inner(input_ids, **kwargs)


PROMPTS = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [20], [21, 22, 23]]


def r2_config(**overrides) -> DecoderConfig:
    """R² with low thresholds (the tiny random model is unsure); the cache refreshes only at
    block starts unless a test says otherwise."""
    values = dict(gen_length=16, block_length=4, threshold=0.3, tau_s=0.3, tau_t=0.3,
                  cache_refresh=0)  # fmt: skip
    values.update(overrides)
    return decoder_config("r2", **values)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_cached_decoding_batch_equals_unbatched_and_counts_every_forward(cache):
    model = Recorder(tiny_llada(seed=2))
    config = r2_config(cache=cache)
    batched = generate(model, Spec(), PROMPTS, config)
    calls = list(model.calls)
    # NFE per row = forwards it took part in; mixed steps run a fill and a span forward.
    assert sum(size for size, _, _ in calls) == int(batched.nfe.sum())
    assert (batched.tokens != MASK).all() and (batched.nfe >= config.num_blocks).all()
    assert (batched.step_map.amax(-1) == batched.nfe - 1).all()
    width = max(map(len, PROMPTS)) + config.gen_length
    modes = {mode for _, _, mode in calls}
    if cache == "none":
        assert modes == {"none"} and all(length == width for _, length, _ in calls)
    else:
        assert modes == {"fill", cache}
        spans = [length for _, length, mode in calls if mode == cache]
        if cache == "dual":
            assert set(spans) == {config.block_length}
        else:  # the block and everything after it
            assert max(spans) < width and min(spans) >= config.block_length
    for row, prompt in enumerate(PROMPTS):
        single = generate(model, Spec(), [prompt], config, seeds=[row])
        assert torch.equal(batched.tokens[row], single.tokens[0])
        assert torch.equal(batched.step_map[row], single.step_map[0])
        assert torch.equal(batched.rule_map[row], single.rule_map[0])
        assert batched.nfe[row] == single.nfe[0]
    split = generate(model, Spec(), PROMPTS, config, batch_size=2)
    assert torch.equal(split.tokens, batched.tokens) and torch.equal(split.nfe, batched.nfe)


def test_rows_in_different_blocks_share_steps_and_finish_independently():
    model = Recorder(tiny_llada(seed=2))
    config = r2_config(cache="dual")
    result = generate(model, Spec(), PROMPTS, config)
    # Some step ran a fill (rows opening a block) beside a dual forward (rows inside one).
    steps, index = [], 0
    while index < len(model.calls):
        size, _, mode = model.calls[index]
        if mode == "fill" and index + 1 < len(model.calls) and model.calls[index + 1][2] == "dual":
            steps.append((size, model.calls[index + 1][0]))
            index += 2
        else:
            index += 1
    assert steps, "expected a step mixing block openings and cached forwards"
    assert len(set(result.nfe.tolist())) > 1  # rows finish at different steps
    # Per row, one fill per block: the block-opening forward (it counts as one NFE).
    fills = sum(size for size, _, mode in model.calls if mode == "fill")
    assert fills == len(PROMPTS) * config.num_blocks


def expected_fills(result, block_length: int, refresh: int) -> int:
    """Fills the refresh policy implies, replayed from the step map: one per block, plus one
    after every forward that brings the commits since the last fill to ``refresh``."""
    fills = 0
    for row in range(len(result)):
        steps = result.step_map[row].view(-1, block_length)
        for block in steps:
            counts = torch.bincount(block - block.min()).tolist()  # commits per forward
            fills += 1
            changed = 0
            for count in counts[:-1]:  # the block's last forward opens no further one
                changed += count
                if changed >= refresh:
                    fills, changed = fills + 1, 0
    return fills


def test_refresh_policy_refills_after_enough_commits_and_1_equals_no_cache():
    model = Recorder(tiny_llada(seed=2))
    plain = generate(model, Spec(), PROMPTS, r2_config(cache="none"))
    every = generate(model, Spec(), PROMPTS, r2_config(cache="dual", cache_refresh=1))
    assert torch.equal(plain.tokens, every.tokens) and torch.equal(plain.nfe, every.nfe)
    assert torch.equal(plain.step_map, every.step_map)
    for refresh in (2, 3):
        model.calls.clear()
        result = generate(model, Spec(), PROMPTS, r2_config(cache="dual", cache_refresh=refresh))
        fills = sum(size for size, _, mode in model.calls if mode == "fill")
        assert fills == expected_fills(result, 4, refresh)
        assert len(PROMPTS) * 4 < fills < int(result.nfe.sum())
        assert sum(size for size, _, _ in model.calls) == int(result.nfe.sum())


def test_shifted_model_decodes_the_same_in_every_cache_mode_when_the_cache_is_exact():
    """A shifted LLaDA (spec says shifted): with a refresh every forward the cached decode
    equals the uncached one, so the shift is applied the same way on every path."""
    model = tiny_llada(seed=3)
    spec = Spec(shifted_logits=True)
    base = generate(model, spec, PROMPTS, r2_config(cache="none"))
    for cache in ("prefix", "dual"):
        got = generate(model, spec, PROMPTS, r2_config(cache=cache, cache_refresh=1))
        assert torch.equal(got.tokens, base.tokens)
    # And the cached span of a shifted model recomputes the column before the block.
    recorder = Recorder(model)
    generate(recorder, spec, [PROMPTS[0]], r2_config(cache="dual"))
    assert {length for _, length, mode in recorder.calls if mode == "dual"} == {5}


def test_default_is_the_plain_dual_cache_and_a_preset_may_refresh_it(tmp_path):
    """The official runs' cache: dual, filled at block starts only; the embedded model's preset
    keeps the refresh after half a block it was measured to need."""
    config = DecoderConfig(gen_length=16, block_length=4)
    assert (config.cache, config.cache_refresh) == ("auto", 0)
    model = Recorder(tiny_llada(seed=2))
    default = generate(model, Spec(), PROMPTS, r2_config(cache="auto"))
    assert {mode for _, _, mode in model.calls} == {"fill", "dual"}
    fills = sum(size for size, _, mode in model.calls if mode == "fill")
    assert fills == len(PROMPTS) * config.num_blocks
    explicit = generate(model, Spec(), PROMPTS, r2_config(cache_refresh=0, cache="dual"))
    assert torch.equal(default.tokens, explicit.tokens)
    from r2sft.paths import EMBEDDED_MODEL_DIR

    for name in ("r2", "threshold"):
        shipped = DecoderArgs(decoder=name).resolve(model=str(EMBEDDED_MODEL_DIR))
        assert (shipped.block_length, shipped.cache_refresh) == (16, 8)
        assert DecoderArgs(decoder=name, preset="official").resolve().cache_refresh == 0


def test_cache_options_are_validated_and_reach_the_decoder():
    with pytest.raises(ValueError, match="cache"):
        DecoderConfig(cache="both")
    with pytest.raises(ValueError, match="cache_refresh"):
        DecoderConfig(cache_refresh=-1)
    with pytest.raises(ValueError, match="factor_rule"):
        DecoderConfig(factor_rule="loose")
    with pytest.raises(ValueError, match="--cache"):
        DecoderArgs(cache="both")
    args = DecoderArgs(decoder="factor", cache="dual", cache_refresh=2, factor_rule="official")
    resolved = args.resolve()
    assert (resolved.cache, resolved.cache_refresh, resolved.factor_rule) == ("dual", 2, "official")
    assert dataclasses.replace(resolved, cache="prefix").cache == "prefix"


def test_bfloat16_decodes_in_every_cache_mode():
    model = tiny_llada(seed=2).to(torch.bfloat16)
    plain = generate(model, Spec(), PROMPTS, r2_config(cache="none"))
    for cache in ("prefix", "dual"):
        result = generate(model, Spec(), PROMPTS, r2_config(cache=cache))
        assert (result.tokens != MASK).all() and (result.nfe >= 4).all()
        exact = generate(model, Spec(), PROMPTS, r2_config(cache=cache, cache_refresh=1))
        assert torch.equal(exact.tokens, plain.tokens)


def tiny_dream(seed: int = 0) -> DreamModel:
    config = DreamConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        intermediate_size=48, vocab_size=VOCAB, mask_token_id=MASK, eos_token_id=PAD,
        pad_token_id=PAD, max_position_embeddings=128, initializer_range=0.3,
    )  # fmt: skip
    torch.manual_seed(seed)
    return DreamModel(config).eval()


@pytest.mark.parametrize("mode", ["dual", "prefix"])
def test_dream_gets_the_cache_through_the_shared_forward(mode):
    """Dream (shifted logits) uses the same cache: a fresh one is exact at the block, and a
    cached decode is the same batched and unbatched."""
    model = tiny_dream()
    spec = dataclasses.replace(get_spec("dream"), mask_token_id=MASK, eos_token_id=PAD,
                               pad_token_id=PAD, eot_token_id=None)  # fmt: skip
    ids, attention = padded_canvas()
    blocks = torch.tensor([[9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20]])
    cache = KVCache()
    with torch.no_grad():
        full = predict_logits(model, spec, ids, attention, blocks)
        predict_logits(model, spec, ids, attention, blocks, CacheUse(cache, "fill"))
        use = CacheUse(cache, mode, first_columns=blocks[:, 0].tolist())
        cached = predict_logits(model, spec, ids, attention, blocks, use)
    torch.testing.assert_close(cached, full, rtol=0, atol=2e-5)
    config = r2_config(cache=mode)
    batched = generate(model, spec, PROMPTS, config)
    for row, prompt in enumerate(PROMPTS):
        single = generate(model, spec, [prompt], config, seeds=[row])
        assert torch.equal(batched.tokens[row], single.tokens[0])
        assert batched.nfe[row] == single.nfe[0]


@pytest.mark.parametrize("shifted", [False, True])
def test_a_refill_span_keeps_the_cached_prefix_and_stores_the_rest(shifted):
    """A refill from a column on attends to the cached columns before it and stores its own
    keys and values: over a fresh cache it equals the full forward, and a dual span then reads
    what it stored (a cache with those columns zeroed would not)."""
    model = tiny_llada()
    spec = Spec(shifted_logits=shifted)
    ids, attention = padded_canvas()
    blocks = torch.tensor([[13, 14, 15, 16], [13, 14, 15, 16], [17, 18, 19, 20]])
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = KVCache()
    with torch.no_grad():
        full = predict_logits(model, spec, ids, attention, blocks)
        predict_logits(model, spec, ids, attention, blocks, CacheUse(cache, "fill"))
        for layer in range(len(cache.keys)):  # forget what the refill must store
            for row, start in enumerate((9, 9, 13)):
                cache.keys[layer][row, :, start:] = 0
                cache.values[layer][row, :, start:] = 0
        use = CacheUse(cache, "refill", first_columns=[9, 9, 13])
        refilled = predict_logits(model, spec, ids, attention, blocks, use,
                                  position_ids=positions)  # fmt: skip
        dual = predict_logits(model, spec, ids, None, blocks,
                              CacheUse(cache, "dual", first_columns=[13, 13, 17]))  # fmt: skip
    torch.testing.assert_close(refilled, full, rtol=0, atol=2e-5)
    torch.testing.assert_close(dual, full, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="refill takes them"):
        predict_logits(model, spec, ids, attention, blocks, use)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_reuse_refills_block_openings_and_decodes_batch_independently(cache):
    model = Recorder(tiny_llada(seed=2))
    config = r2_config(cache=cache, cache_reuse=2)
    batched = generate(model, Spec(), PROMPTS, config)
    modes = [mode for _, _, mode in model.calls]
    assert "refill" in modes
    # Per row: the first block and every third opening fill, the other openings refill.
    fills = sum(size for size, _, mode in model.calls if mode == "fill")
    refills = sum(size for size, _, mode in model.calls if mode == "refill")
    assert (fills, refills) == (len(PROMPTS) * 2, len(PROMPTS) * 2)
    assert sum(size for size, _, _ in model.calls) == int(batched.nfe.sum())
    for row, prompt in enumerate(PROMPTS):
        single = generate(model, Spec(), [prompt], config, seeds=[row])
        assert torch.equal(batched.tokens[row], single.tokens[0])
        assert batched.nfe[row] == single.nfe[0]
    pruned = generate(model, Spec(), PROMPTS, r2_config(cache=cache, cache_reuse=1,
                                                        suffix_window=4))  # fmt: skip
    assert (pruned.tokens != MASK).all()
    off = generate(tiny_llada(seed=2), Spec(), PROMPTS, r2_config(cache=cache))
    same = generate(tiny_llada(seed=2), Spec(), PROMPTS, r2_config(cache=cache, cache_reuse=0))
    assert torch.equal(off.tokens, same.tokens)


def test_a_refill_does_not_leave_the_cache_wider_than_the_canvas(monkeypatch):
    """Rows in different blocks refill one span length from the earliest start; the columns
    that reach past the canvas are padding, taken back after the forward (else every later
    step attends over them)."""
    widths = []
    span = KVCache.span

    def recorded(self, mode, *args, **kwargs):
        widths.append((mode, self.length))
        return span(self, mode, *args, **kwargs)

    monkeypatch.setattr(KVCache, "span", recorded)
    config = r2_config(gen_length=32, cache="dual", cache_reuse=3)
    generate(tiny_llada(seed=2), Spec(), PROMPTS, config)
    canvas = max(map(len, PROMPTS)) + config.gen_length
    assert "refill" in {mode for mode, _ in widths}
    assert max(width for _, width in widths) == canvas
