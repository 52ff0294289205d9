"""The batched sampler: rule order within a forward, NFE, step/rule maps, batching."""

import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from r2sft.decoding import CommitRule, DecoderConfig, decoder_config, generate

VOCAB = 16
MASK, EOS, PAD = 0, 1, 2
B, C, K, TC, TM = (int(CommitRule.BASELINE), int(CommitRule.CONFIDENCE_CLUSTER),
                   int(CommitRule.TOKEN_CLUSTER), int(CommitRule.TEMPORAL), 0)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """Stand-in for r2sft.specs.ModelSpec with the fields the sampler reads."""

    mask_token_id: int = MASK
    eos_token_id: int = EOS
    eot_token_id: int | None = None
    pad_token_id: int = PAD
    shifted_logits: bool = False


def logits_for(tokens, confs, vocab=VOCAB):
    """Logit rows whose softmax gives ``tokens[i]`` probability ``confs[i]`` (rest uniform)."""
    rows = []
    for token, conf in zip(tokens, confs, strict=True):
        rest = (1 - conf) / (vocab - 1)
        row = torch.full((vocab,), math.log(rest), dtype=torch.float32)
        row[token] = math.log(conf)
        rows.append(row)
    return torch.stack(rows)


class ScriptedModel:
    """Batch-size-1 model returning hand-built logits for the generated region, forward by
    forward; records the canvas it saw each time."""

    def __init__(self, prompt_length, script, shifted=False):
        self.prompt_length, self.script, self.shifted = prompt_length, script, shifted
        self.seen = []

    def __call__(self, input_ids, attention_mask=None):
        step = len(self.seen)
        self.seen.append(input_ids.clone())
        gen_logits = self.script[step]
        total = input_ids.shape[1]
        logits = torch.zeros(1, total, VOCAB)
        start = self.prompt_length - int(self.shifted)
        logits[0, start : start + gen_logits.shape[0]] = gen_logits
        return SimpleNamespace(logits=logits)


class TinyModel(torch.nn.Module):
    """Deterministic toy bidirectional model. Positions count from the first real token and
    padding is excluded from the context, so left padding does not change its output."""

    def __init__(self, seed=0, sharpness=2.5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(VOCAB, 16, generator=g))
        self.ctx = torch.nn.Parameter(torch.randn(VOCAB, 16, generator=g))
        self.pos = torch.nn.Parameter(torch.randn(256, 16, generator=g))
        self.out = torch.nn.Parameter(torch.randn(16, VOCAB, generator=g) * sharpness)
        self.batch_sizes = []

    def forward(self, input_ids, attention_mask=None):
        self.batch_sizes.append(input_ids.shape[0])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        real = attention_mask.float()[..., None]
        first = (attention_mask.cumsum(-1) == 0).sum(-1, keepdim=True)
        relative = (torch.arange(input_ids.shape[1]) - first).clamp(min=0)
        context = (self.ctx[input_ids] * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)
        hidden = torch.tanh(self.emb[input_ids] + context + self.pos[relative])
        return SimpleNamespace(logits=hidden @ self.out)


PROMPTS = [[3, 4, 5], [6, 7], [8, 9, 10, 11, 3], [4], [12, 13, 14, 15]]


def test_threshold_decode_step_map_and_nfe_by_hand():
    # gen 8, block 4. Tokens 5..12 are the answers; confidences chosen per forward.
    script = [
        logits_for([5, 6, 7, 8], [0.95, 0.5, 0.4, 0.3]),  # commits 0 (>= 0.9)
        logits_for([5, 6, 7, 8], [0.95, 0.95, 0.92, 0.3]),  # commits 1, 2
        logits_for([5, 6, 7, 8], [0.95, 0.95, 0.92, 0.2]),  # none >= 0.9: best masked, 3
        logits_for([5, 6, 7, 8, 9, 10, 11, 12], [0.91] * 8),  # block 2 opens: all 4 commit
    ]
    model = ScriptedModel(2, script)
    result = generate(model, Spec(), [[3, 4]], decoder_config("threshold", gen_length=8,
                      block_length=4))  # fmt: skip
    assert result.tokens.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12]]
    assert result.step_map.tolist() == [[0, 1, 1, 2, 3, 3, 3, 3]]
    assert result.rule_map.tolist() == [[B] * 8]
    assert result.nfe.tolist() == [4]
    # Trace: per forward the block's candidates and confidences, and which block.
    assert result.trace.block.tolist() == [[0, 0, 0, 1]]
    assert result.trace.top1[0, 3].tolist() == [9, 10, 11, 12]
    torch.testing.assert_close(result.trace.conf[0, 1], torch.tensor([0.95, 0.95, 0.92, 0.3]))
    # The model saw the canvas of each forward: prompt, then masks filling in.
    assert model.seen[1][0].tolist() == [3, 4, 5, MASK, MASK, MASK, MASK, MASK, MASK, MASK]


def test_r2_rules_apply_in_order_within_one_forward():
    # One block of 8; threshold 0.9, w 3, tau_s 0.8, u_max 1, token cluster, K 2, tau_t 0.8.
    # Forward 0 (conf .95 .85 .85 .60 .82 .85 .40 .30): baseline commits 0. Windows on
    #   [x m m m m m m m]: [0,1,2] (1 committed, mean .85) qualifies -> 1, 2; [1,2,3] .767,
    #   [2,3,4] .757, [3,4,5] .757, [4,5,6] .69, [5,6,7] .52 do not. Token run 9,9 at 3,4
    #   (max .82 > .8) -> its most confident position, 4. Temporal: streaks are 1 < K.
    # Forward 1 (3: .50, 5: .86, 6: .81, 7: .30): nothing >= .9, baseline commits the best
    #   masked, 5. No window qualifies (each holds >= 2 committed tokens or mean < .8), no
    #   run. Temporal: 6 kept token 11 for 2 forwards, last conf .81 >= .8 -> commits;
    #   3 also kept its token but .50 < .8.
    # Forward 2: baseline commits 3 (.95) and 7 (.99).
    tokens = [5, 6, 7, 9, 9, 10, 11, 12]
    script = [
        logits_for(tokens, [0.95, 0.85, 0.85, 0.60, 0.82, 0.85, 0.40, 0.3]),
        logits_for(tokens, [0.95, 0.85, 0.85, 0.50, 0.82, 0.86, 0.81, 0.3]),
        logits_for(tokens, [0.95, 0.85, 0.85, 0.95, 0.82, 0.86, 0.81, 0.99]),
    ]
    config = decoder_config("r2", gen_length=8, block_length=8, temporal_k=2)
    result = generate(ScriptedModel(1, script), Spec(), [[3]], config)
    assert result.step_map.tolist() == [[0, 0, 0, 2, 0, 1, 1, 2]]
    assert result.rule_map.tolist() == [[B, C, C, B, K, B, TC, B]]
    assert result.nfe.tolist() == [3]
    assert result.tokens.tolist() == [tokens]
    # Without the R² rules: 0 | 5 | 3, 7 | then one forward each for 1, 2, 4, 6.
    plain = generate(ScriptedModel(1, script + script[2:] * 5), Spec(), [[3]],
                     decoder_config("threshold", gen_length=8, block_length=8))  # fmt: skip
    assert plain.nfe.tolist() == [7]


def test_fixed_schedule_spreads_block_over_steps():
    # gen 8, block 4, steps 4 -> 2 steps per block, 2 tokens per step.
    confs = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.4, 0.6]
    script = [logits_for(list(range(3, 11)), confs) for _ in range(4)]
    result = generate(ScriptedModel(1, script), Spec(), [[3]],
                      decoder_config("fixed", gen_length=8, block_length=4, steps=4))  # fmt: skip
    assert result.step_map.tolist() == [[1, 0, 1, 0, 3, 3, 2, 2]]
    assert result.nfe.tolist() == [4]


def test_shifted_logits_read_the_previous_row():
    script = [logits_for([5, 6, 7, 8], [0.95] * 4)]
    model = ScriptedModel(2, script, shifted=True)
    spec = Spec(shifted_logits=True)
    result = generate(model, spec, [[3, 4]], decoder_config("threshold", gen_length=4,
                      block_length=4))  # fmt: skip
    assert result.tokens.tolist() == [[5, 6, 7, 8]]


def test_mask_token_is_never_a_candidate():
    script = [logits_for([MASK, 6], [0.97, 0.95]), logits_for([MASK, 6], [0.97, 0.95])]
    result = generate(ScriptedModel(1, script), Spec(), [[3]],
                      decoder_config("threshold", gen_length=2, block_length=2))  # fmt: skip
    # Position 0 falls back to its best non-mask token, committed as the best masked one.
    assert MASK not in result.tokens.tolist()[0]
    assert result.step_map.tolist() == [[1, 0]]


@pytest.mark.parametrize("name", ["fixed", "threshold", "factor", "r2"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_batched_equals_unbatched_and_finished_rows_leave(name, temperature):
    model = TinyModel()
    config = decoder_config(name, gen_length=16, block_length=8, threshold=0.6,
                            temperature=temperature, steps=8)  # fmt: skip
    seeds = [11, 12, 13, 14, 15]
    batched = generate(model, Spec(), PROMPTS, config, seeds=seeds)
    sizes = model.batch_sizes
    # Each forward holds exactly the rows that still had masks: sum of sizes = total NFE,
    # and the batch shrinks monotonically as rows finish.
    assert sum(sizes) == int(batched.nfe.sum())
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == sum(int(n) == max(batched.nfe.tolist()) for n in batched.nfe)
    for row, (prompt, seed) in enumerate(zip(PROMPTS, seeds, strict=True)):
        single = generate(model, Spec(), [prompt], config, seeds=[seed])
        assert torch.equal(batched.tokens[row], single.tokens[0])
        assert torch.equal(batched.step_map[row], single.step_map[0])
        assert torch.equal(batched.rule_map[row], single.rule_map[0])
        assert batched.nfe[row] == single.nfe[0]
        steps = int(single.nfe[0])
        assert torch.equal(batched.trace.top1[row, :steps], single.trace.top1[0])
    # Splitting into smaller batches gives the same rows.
    split = generate(model, Spec(), PROMPTS, config, seeds=seeds, batch_size=2)
    assert torch.equal(split.tokens, batched.tokens)
    assert torch.equal(split.step_map, batched.step_map)


def test_every_position_committed_once_and_nfe_bounds():
    model = TinyModel(seed=3, sharpness=1.0)
    for name in ["fixed", "threshold", "factor", "r2"]:
        config = decoder_config(name, gen_length=16, block_length=4)
        result = generate(model, Spec(), PROMPTS, config)
        assert (result.step_map >= 0).all() and (result.rule_map > 0).all()
        assert (result.tokens != MASK).all()
        assert (result.nfe >= config.num_blocks).all() and (result.nfe <= 16).all()
        assert (result.step_map.amax(-1) == result.nfe - 1).all()
        if name == "fixed":
            assert result.nfe.tolist() == [16] * len(PROMPTS)
        if name != "r2":
            assert (result.rule_map == B).all()


def test_sampling_depends_on_seed_and_is_reproducible():
    model = TinyModel(sharpness=0.5)
    config = decoder_config("threshold", gen_length=16, block_length=8, temperature=1.0)
    first = generate(model, Spec(), [PROMPTS[0]] * 3, config, seeds=[1, 1, 2])
    assert torch.equal(first.tokens[0], first.tokens[1])
    assert not torch.equal(first.tokens[0], first.tokens[2])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of block_length"):
        DecoderConfig(gen_length=10, block_length=4)
    with pytest.raises(ValueError, match="unknown decoder"):
        decoder_config("greedy")
    with pytest.raises(ValueError, match="unknown DecoderConfig field"):
        decoder_config("r2", tau=0.3)
    with pytest.raises(ValueError, match="seeds"):
        generate(TinyModel(), Spec(), PROMPTS, decoder_config("r2"), seeds=[1])
    with pytest.raises(ValueError, match="empty prompt"):
        generate(TinyModel(), Spec(), [[]], decoder_config("r2"))
