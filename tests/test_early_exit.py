"""Early exit at the end of the answer: the pure test, the sampler's fill, redundancy, and
identical responses on the embedded model."""

import pytest
import torch
from test_sampler import EOS, MASK, ScriptedModel, Spec, logits_for

from r2sft.decoding import CommitRule, decoder_config, generate, measure_redundancy
from r2sft.decoding.rules import answer_complete

B, X = int(CommitRule.BASELINE), int(CommitRule.EARLY_EXIT)
EOT = 15
M = MASK


def test_answer_complete_needs_a_committed_end_with_everything_before_it_committed():
    tokens = torch.tensor(
        [
            [5, 6, EOS, M, M, M],  # end of text, all before it committed: complete
            [5, M, EOS, M, M, M],  # a hole before the end token: not yet
            [5, 6, 7, 8, M, M],  # no end token committed
            [5, EOT, M, 9, M, M],  # end of turn counts as an end token
            [M, M, M, M, M, EOS],  # an end token far ahead of open positions: not yet
            [5, 6, 7, 8, 9, 10],  # full canvas without an end token
        ]
    )
    ends = torch.tensor([EOS, EOT])
    assert answer_complete(tokens, MASK, ends).tolist() == [True, False, False, True, False, False]


def test_sampler_fills_the_rest_with_end_of_text_and_stops_the_row():
    # gen 8, block 4. Forward 0 commits 5 (0.95) and the end token at 2 (0.93); position 1
    # stays open. Forward 1 commits position 1: the answer "5 6" is complete, so positions
    # 3..7 (block 0's last and all of block 1) become end of text in forward 1.
    script = [
        logits_for([5, 6, EOS, EOS], [0.95, 0.5, 0.93, 0.6]),
        logits_for([5, 6, EOS, EOS], [0.95, 0.91, 0.93, 0.6]),
        logits_for([5, 6, EOS, EOS], [0.95, 0.91, 0.93, 0.95]),
        logits_for([EOS] * 8, [0.99] * 8),
    ]
    early = generate(ScriptedModel(1, script), Spec(), [[3]],
                     decoder_config("threshold", gen_length=8, block_length=4,
                                    early_exit=True))  # fmt: skip
    assert early.tokens.tolist() == [[5, 6, EOS] + [EOS] * 5]
    assert early.step_map.tolist() == [[0, 1, 0, 1, 1, 1, 1, 1]]
    assert early.rule_map.tolist() == [[B, B, B, X, X, X, X, X]]
    assert early.nfe.tolist() == [2]
    # Without early exit: the same tokens, two more forwards (one for position 3, one for
    # block 1).
    plain = generate(ScriptedModel(1, script), Spec(), [[3]],
                     decoder_config("threshold", gen_length=8, block_length=4))  # fmt: skip
    assert plain.tokens.tolist() == early.tokens.tolist()
    assert plain.nfe.tolist() == [4]
    # The fill is no redundant step. Plain decode: position 3 predicted its final end of
    # text while masked after forwards 0 and 1 (2 pairs), position 1 its final 6 after
    # forward 0 (1 pair). With early exit only position 1's pair remains.
    assert measure_redundancy(plain).r_t.item() == 3.0
    assert measure_redundancy(early).r_t.item() == 1.0


def test_rows_exit_independently_in_a_batch():
    from test_sampler import PROMPTS, TinyModel

    model = TinyModel(sharpness=6.0)
    config = decoder_config("r2", gen_length=16, block_length=4, early_exit=True)
    batched = generate(model, Spec(), PROMPTS, config)
    for row, prompt in enumerate(PROMPTS):
        single = generate(model, Spec(), [prompt], config)
        assert torch.equal(batched.tokens[row], single.tokens[0])
        assert batched.nfe[row] == single.nfe[0]


@pytest.mark.parametrize("name", ["threshold", "r2"])
def test_embedded_test_split_responses_are_identical_with_early_exit(name):
    from r2sft.paths import EMBEDDED_MODEL_DIR
    from r2sft.scoring import evaluate
    from r2sft.specs import load_model
    from r2sft.tasks import get_task

    if not EMBEDDED_MODEL_DIR.is_dir():
        pytest.skip("embedded model not built")
    loaded = load_model(str(EMBEDDED_MODEL_DIR))
    task = get_task("arith")
    examples = task.load("test", limit=100)
    plain, early = (
        evaluate(
            loaded,
            task,
            examples,
            decoder_config(name, gen_length=64, block_length=16, early_exit=exit_early),
            progress=False,
        )  # fmt: skip
        for exit_early in (False, True)
    )
    assert [r["response"] for r in early["per_example"]] == [
        r["response"] for r in plain["per_example"]
    ]
    assert early["accuracy"] == plain["accuracy"]
    assert early["mean_nfe"] < plain["mean_nfe"]
    nfe_pairs = zip(early["per_example"], plain["per_example"], strict=True)
    assert all(a["nfe"] <= b["nfe"] for a, b in nfe_pairs)
