"""Each commit rule on hand-built confidences whose outcome follows from method.md §1-2."""

import dataclasses
import math

import pytest
import torch

from r2sft.decoding.config import DecoderConfig
from r2sft.decoding.rules import (
    RULES,
    CommitRule,
    FixedRule,
    StepView,
    TemporalRule,
    TemporalState,
    chosen_confidence,
    commit_step,
    confidence_cluster_commit,
    confidence_cluster_windows,
    factor_commit,
    fixed_commit,
    temporal_commit,
    threshold_commit,
    token_cluster_commit,
    token_runs,
)
from r2sft.decoding.rules import (
    rule_chain as chain_of,
)

T, F_ = True, False


def step(cand, conf, masked, config, temporal=None, cluster_conf=None):
    """One forward of ``config``'s rule chain on a hand-built view: the rule codes and the
    temporal rule's new state (None when it does not run); ``temporal`` is its state before."""
    chain = chain_of(config)
    states = [
        temporal if isinstance(rule, TemporalRule) and temporal is not None
        else rule.init_state(cand.shape[0], cand.shape[1], "cpu")
        for rule in chain
    ]  # fmt: skip
    view = StepView.of(cand, conf, masked, fp32_confidence=cluster_conf)
    codes, new_states = commit_step(view, chain, states)
    pairs = zip(chain, new_states, strict=True)
    new = [state for rule, state in pairs if isinstance(rule, TemporalRule)]
    return codes, (new[0] if new else None)


def rows(*values):
    return torch.tensor(values, dtype=torch.float64)


def mask(*values):
    return torch.tensor(values, dtype=torch.bool)


def test_chosen_confidence_is_softmax_and_keeps_near_one_distinct():
    logits = torch.tensor([[2.0, 0.5, -1.0], [20.0, 0.0, 0.0], [25.0, 0.0, 0.0]])
    cand = torch.tensor([0, 0, 0])
    conf = chosen_confidence(logits, cand)
    expected = torch.softmax(logits.double(), -1)[:, 0]
    torch.testing.assert_close(conf, expected, rtol=1e-6, atol=0)
    assert conf[1] < conf[2] < 1.0  # fp32 exp(l - logsumexp) would give 1.0 for both
    # A non-argmax candidate (Gumbel sample) gets its own probability.
    assert math.isclose(float(chosen_confidence(logits[:1], torch.tensor([2]))),
                        float(torch.softmax(logits[0].double(), -1)[2]), rel_tol=1e-6)  # fmt: skip


def test_threshold_commits_best_plus_all_at_or_above_tau():
    conf = rows([0.5, 0.95, 0.3, 0.9], [0.5, 0.6, 0.7, 0.2], [0.99, 0.4, 0.95, 0.1])
    masked = mask([T, T, T, T], [T, T, T, T], [F_, T, T, T])
    got = threshold_commit(conf, masked, 0.9)
    # row 0: 0.95 and 0.9 (>= is inclusive); row 1: none above, so only the best (0.7);
    # row 2: position 0 is already committed, 0.95 is the best masked one.
    assert got.tolist() == [[F_, T, F_, T], [F_, F_, T, F_], [F_, F_, T, F_]]


def test_fixed_commits_k_most_confident_masked_per_row():
    conf = rows([0.1, 0.9, 0.5, 0.7], [0.9, 0.8, 0.7, 0.6])
    masked = mask([T, T, T, T], [F_, T, T, T])
    got = fixed_commit(conf, masked, torch.tensor([2, 1]))
    assert got.tolist() == [[F_, T, F_, T], [F_, T, F_, F_]]
    # k larger than the masks left commits what is left, nothing else.
    assert fixed_commit(conf, masked, torch.tensor([9, 9])).tolist() == masked.tolist()


def test_factor_commits_largest_prefix_with_n_plus_one_times_doubt_below_f():
    # sorted 0.99, 0.9, 0.8, 0.5: (n+1)(1-c_n) = 0.02, 0.3, 0.8, 2.5 -> n = 3 for f = 1.
    conf = rows([0.8, 0.5, 0.99, 0.9])
    masked = mask([T, T, T, T])
    assert factor_commit(conf, masked, 1.0).tolist() == [[T, F_, T, T]]
    # f = 0.5: 0.02, 0.3 pass, 0.8 fails -> n = 2.
    assert factor_commit(conf, masked, 0.5).tolist() == [[F_, F_, T, T]]
    # nothing passes -> still the single most confident one.
    low = rows([0.2, 0.3, 0.1, 0.25])
    assert factor_commit(low, masked, 1.0).tolist() == [[F_, T, F_, F_]]
    # committed positions are ignored even if confident.
    assert factor_commit(conf, mask([T, T, F_, T]), 1.0).tolist() == [[T, F_, F_, T]]


def test_confidence_cluster_union_of_qualifying_windows():
    # Position 3 already committed. Windows (w=3): [0,1,2] 0 committed, mean 0.8167 -> yes;
    # [1,2,3] 1 committed, mean(0.85, 0.7) = 0.775 -> no; [2,3,4] mean(0.7, 0.95) = 0.825
    # -> yes; [3,4,5] mean 0.925 -> yes. Union of masked positions: all but 3.
    conf = rows([0.9, 0.85, 0.7, 0.0, 0.95, 0.9])
    masked = mask([T, T, T, F_, T, T])
    windows = confidence_cluster_windows(conf, masked, 3, 0.8, 1)
    assert windows.tolist() == [[T, F_, T, T]]
    assert confidence_cluster_commit(conf, masked, 3, 0.8, 1).tolist() == [[T, T, T, F_, T, T]]
    # u_max = 0: only windows without committed tokens -> [0, 1, 2].
    assert confidence_cluster_commit(conf, masked, 3, 0.8, 0).tolist() == [[T, T, T, F_, F_, F_]]
    # A window with no mask never qualifies; block shorter than the window: nothing.
    assert not confidence_cluster_commit(conf, torch.zeros_like(masked), 3, 0.0, 3).any()
    assert confidence_cluster_windows(conf[:, :2], masked[:, :2], 3, 0.8, 1).shape == (1, 0)


def test_confidence_cluster_judges_all_windows_on_the_same_canvas():
    # If [0,1,2] were committed first, window [1,2,3] would hold 2 committed tokens and
    # fail u_max = 1; judged on the incoming canvas it qualifies and commits 3 too.
    conf = rows([0.9, 0.9, 0.9, 0.85])
    masked = mask([T, T, T, T])
    assert confidence_cluster_commit(conf, masked, 3, 0.8, 1).tolist() == [[T, T, T, T]]


def test_token_runs_are_maximal_same_token_runs_of_masks():
    cand = torch.tensor([[5, 5, 5, 7, 7, 3, 5, 5]])
    masked = mask([T, T, T, T, T, T, F_, T])
    conf = rows([0.5, 0.6, 0.85, 0.7, 0.75, 0.99, 0.0, 0.9])
    runs = token_runs(cand, conf, masked)
    assert runs.run_id.tolist() == [[0, 0, 0, 1, 1, 2, 8, 3]]
    assert runs.length[0, :4].tolist() == [3, 2, 1, 1]
    assert runs.start[0, :4].tolist() == [0, 3, 5, 7]
    assert runs.argmax[0, :4].tolist() == [2, 4, 5, 7]


def test_token_cluster_commits_one_position_per_qualifying_run():
    cand = torch.tensor([[5, 5, 5, 7, 7, 3]])
    conf = rows([0.5, 0.6, 0.85, 0.7, 0.75, 0.99])
    masked = mask([T, T, T, T, T, T])
    # Run 5,5,5 has max 0.85 > 0.8 -> commits; 7,7 max 0.75 -> no; a single 3 is no cluster.
    confidence = token_cluster_commit(cand, conf, masked, 0.8, "confidence")
    assert confidence.tolist() == [[F_, F_, T, F_, F_, F_]]
    mid = token_cluster_commit(cand, conf, masked, 0.8, "mid")  # offset 3 // 2 = 1
    assert mid.tolist() == [[F_, T, F_, F_, F_, F_]]
    uniform = torch.zeros(1, 7)
    uniform[0, 0] = 0.0  # offset floor(0.0 * 3) = 0
    assert token_cluster_commit(cand, conf, masked, 0.8, "random", uniform)[0, 0]
    uniform[0, 0] = 0.99  # offset floor(0.99 * 3) = 2
    assert token_cluster_commit(cand, conf, masked, 0.8, "random", uniform)[0, 2]
    # The comparison with tau_s is strict.
    assert not token_cluster_commit(cand, conf, masked, 0.85, "confidence").any()


def test_token_cluster_split_by_committed_position_and_first_max_on_ties():
    cand = torch.tensor([[4, 4, 4, 4, 4]])
    conf = rows([0.9, 0.9, 0.1, 0.95, 0.95])
    masked = mask([T, T, F_, T, T])
    got = token_cluster_commit(cand, conf, masked, 0.8, "confidence")
    assert got.tolist() == [[T, F_, F_, T, F_]]


def run_temporal(cands, confs, k=3, tau_t=0.8, agg="last", masks=None):
    state = TemporalState.empty(1, 1, "cpu")
    commits = []
    for step, (cand, conf) in enumerate(zip(cands, confs, strict=True)):
        masked = torch.tensor([[True if masks is None else masks[step]]])
        state, commit = temporal_commit(
            state, torch.tensor([[cand]]), rows([conf]), masked, k, tau_t, agg
        )
        commits.append(bool(commit))
    return commits


def test_temporal_commits_after_k_stable_forwards():
    assert run_temporal([4, 4, 4], [0.85, 0.82, 0.81]) == [F_, F_, T]
    # A change of top-1 resets the streak.
    assert run_temporal([4, 6, 4, 4], [0.9, 0.9, 0.9, 0.9]) == [F_, F_, F_, F_]
    assert run_temporal([4, 6, 6, 6], [0.9, 0.9, 0.9, 0.9]) == [F_, F_, F_, T]
    # Below tau_t with "last": waits for a confident forward.
    assert run_temporal([4, 4, 4, 4], [0.9, 0.9, 0.7, 0.85]) == [F_, F_, F_, T]
    # A committed position (masked False) drops its streak.
    assert run_temporal([4, 4, 4, 4], [0.9] * 4, masks=[T, F_, T, T]) == [F_, F_, F_, F_]


@pytest.mark.parametrize(
    ("agg", "expected"),
    [("last", [F_, F_, F_]), ("ave", [F_, F_, T]), ("max", [F_, F_, T])],
)
def test_temporal_aggregations(agg, expected):
    # Streak confidences 0.9, 0.85, 0.7: last 0.7 < 0.8; mean 0.8167 >= 0.8; max 0.9.
    assert run_temporal([4, 4, 4], [0.9, 0.85, 0.7], agg=agg) == expected


def _r2_block():
    """One row of 8 positions exercising every rule once (see the expected rules below)."""
    conf = rows([0.95, 0.85, 0.85, 0.2, 0.3, 0.3, 0.5, 0.82]).float()
    cand = torch.tensor([[1, 2, 3, 4, 5, 5, 6, 6]])
    masked = torch.ones(1, 8, dtype=torch.bool)
    state = TemporalState.empty(1, 8, "cpu")
    # Position 5 has shown token 5 once before, at confidence 0.9.
    state.token[0, 5], state.count[0, 5], state.conf_max[0, 5] = 5, 1, 0.9
    return cand, conf, masked, state


def test_commit_step_chains_baseline_then_the_r2_rules_in_order():
    cand, conf, masked, state = _r2_block()
    config = DecoderConfig(
        gen_length=8, block_length=8, r2=True, threshold=0.9, window=3, tau_s=0.8, u_max=1,
        temporal_k=2, tau_t=0.8, temporal_agg="max",
    )  # fmt: skip
    rule, new_state = step(cand, conf, masked, config, temporal=state)
    B, C, K, TT = (int(r) for r in (CommitRule.BASELINE, CommitRule.CONFIDENCE_CLUSTER,
                                    CommitRule.TOKEN_CLUSTER, CommitRule.TEMPORAL))  # fmt: skip
    # 0: threshold (>= 0.9). 1-2: window [0, 2] holds one committed token and mean 0.85 of
    # its masks. 7: the run 6,6 peaks at 0.82 > tau_s, its most confident position commits.
    # 5: two forwards on token 5 with max confidence 0.9 >= tau_t. 3, 4, 6 stay masked.
    assert rule.tolist() == [[B, C, C, 0, 0, TT, 0, K]]
    assert rule.dtype == torch.int8
    assert new_state.count[0].tolist() == [0, 0, 0, 1, 1, 2, 1, 0]  # committed: dropped


def test_commit_step_without_r2_is_the_policy_alone():
    cand, conf, masked, state = _r2_block()
    threshold = DecoderConfig(gen_length=8, block_length=8, threshold=0.84)
    rule, new_state = step(cand, conf, masked, threshold, temporal=state)
    assert rule.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]] and new_state is None
    fixed = DecoderConfig(gen_length=8, block_length=8, policy="fixed", steps=4)
    rule, _ = step(cand, conf, masked, fixed)
    assert rule.tolist() == [[1, 1, 0, 0, 0, 0, 0, 0]]  # the two most confident, first on ties


def test_commit_step_r2_rules_see_only_what_earlier_rules_left_open():
    cand, conf, masked, state = _r2_block()
    # A threshold of 0.8 commits 0, 1, 2 and 7 itself: the clusters then have nothing left
    # there, and the run 6,6 is cut to position 6 alone (no token cluster).
    config = DecoderConfig(gen_length=8, block_length=8, r2=True, threshold=0.8, window=3,
                           tau_s=0.8, u_max=1, temporal_k=0)  # fmt: skip
    rule, new_state = step(cand, conf, masked, config, temporal=state)
    assert rule.tolist() == [[1, 1, 1, 0, 0, 0, 0, 1]] and new_state is None


def test_official_factor_rule_commits_the_last_mask_when_only_it_fails():
    # sorted 0.99, 0.9, 0.8, 0.5 with f = 1: the official test c_n >= 1 - 1/(n + 1) reads
    # 0.99 >= 0.5, 0.9 >= 0.667, 0.8 >= 0.75 pass and 0.5 >= 0.8 fails; only the last of the
    # four fails, so the official rule commits all four where the paper's commits three.
    conf = rows([0.8, 0.5, 0.99, 0.9])
    masked = mask([T, T, T, T])
    assert factor_commit(conf, masked, 1.0, "paper").tolist() == [[T, F_, T, T]]
    assert factor_commit(conf, masked, 1.0, "official").tolist() == [[T, T, T, T]]
    # f = 0.5: the third fails too, so both rules stop after two.
    for rule in ("paper", "official"):
        assert factor_commit(conf, masked, 0.5, rule).tolist() == [[F_, F_, T, T]]
    # Two masks left: the first always commits and "only the last fails" -> both commit.
    pair = mask([T, T, F_, F_])
    low = rows([0.3, 0.2, 0.99, 0.99])
    assert factor_commit(low, pair, 1.0, "paper").tolist() == [[T, F_, F_, F_]]
    assert factor_commit(low, pair, 1.0, "official").tolist() == [[T, T, F_, F_]]
    # Equality passes the official test ((n + 1)(1 - c_n) == f), not the paper's (< f).
    tie = rows([0.75, 0.75, 0.75, 0.2])  # n = 3: 4 * 0.25 = 1.0; the last (0.2) fails
    assert factor_commit(tie, masked, 1.0, "paper").tolist() == [[T, T, F_, F_]]
    assert factor_commit(tie, masked, 1.0, "official").tolist() == [[T, T, T, T]]
    with pytest.raises(ValueError, match="factor rule"):
        factor_commit(conf, masked, 1.0, "loose")


def test_commit_step_factor_rule_and_window_zero_turning_the_token_cluster_off():
    conf = rows([0.8, 0.5, 0.99, 0.9])
    cand = torch.tensor([[3, 4, 5, 6]])
    masked = mask([T, T, T, T])
    official = DecoderConfig(gen_length=4, block_length=4, policy="factor", factor_rule="official")
    assert step(cand, conf, masked, official)[0].tolist() == [[1, 1, 1, 1]]
    # Baseline (threshold 0.99) commits the best, 3. Windows of 2 over 0-2 average below
    # tau_s 0.8; the run 7,7,7 peaks at 0.85 > 0.8, so the token cluster commits position 0,
    # unless window = 0, which (as in the official code) turns the token cluster off too.
    cand, conf = torch.tensor([[7, 7, 7, 3]]), rows([0.85, 0.6, 0.5, 0.95])
    on = DecoderConfig(gen_length=4, block_length=4, r2=True, threshold=0.99, temporal_k=0,
                       window=2, tau_s=0.8)  # fmt: skip
    off = dataclasses.replace(on, window=0)
    K = int(CommitRule.TOKEN_CLUSTER)
    assert step(cand, conf, masked, on)[0].tolist() == [[K, 0, 0, 1]]
    assert step(cand, conf, masked, off)[0].tolist() == [[0, 0, 0, 1]]


def test_token_cluster_ranks_by_the_given_cluster_confidences():
    # The official token cluster ranks an fp32 softmax. Near 1 those values are not the fp32
    # rounding of the exact confidences: here both exact values round to 1.0 (a tie: the
    # first position wins), while the fp32 softmax gave the second the higher value.
    cand = torch.tensor([[9, 9, 2]])
    conf = rows([1 - 2e-8, 1 - 1e-8, 0.1])
    softmax32 = torch.tensor([[0.99999994, 1.0, 0.1]], dtype=torch.float32)
    masked = mask([T, T, T])
    assert token_cluster_commit(cand, conf, masked, 0.8).tolist() == [[T, F_, F_]]
    assert token_cluster_commit(cand, softmax32, masked, 0.8).tolist() == [[F_, T, F_]]
    # In commit_step: the baseline (threshold 1.0) commits 4, the best; no window of 3
    # averages 0.8 (the 0.05 at 2 pulls each down); the run 1-3 of token 9 commits one
    # position, ranked by cluster_conf when given.
    cand = torch.tensor([[2, 9, 9, 9, 5]])
    conf = rows([0.5, 1 - 2e-8, 0.05, 1 - 1e-8, 1 - 1e-9])
    softmax32 = torch.tensor([[0.5, 0.99999994, 0.05, 1.0, 1.0]], dtype=torch.float32)
    masked = mask([F_, T, T, T, T])
    config = DecoderConfig(gen_length=5, block_length=5, r2=True, threshold=1.0, temporal_k=0,
                           window=3, tau_s=0.8, u_max=1)  # fmt: skip
    K = int(CommitRule.TOKEN_CLUSTER)
    assert step(cand, conf, masked, config)[0].tolist() == [[0, K, 0, 0, 1]]
    rule, _ = step(cand, conf, masked, config, cluster_conf=softmax32)
    assert rule.tolist() == [[0, 0, 0, K, 1]]


def test_the_registry_orders_the_chain_and_rejects_clashing_rules():
    names = [rule.name for rule in RULES]
    assert names[:3] == ["fixed", "threshold", "factor"]
    r2 = DecoderConfig(gen_length=8, block_length=8, r2=True)
    assert [rule.name for rule in chain_of(r2)] == ["threshold", "confidence_cluster",
                                                    "token_cluster", "temporal"]  # fmt: skip
    off = dataclasses.replace(r2, window=0, temporal_k=0)
    assert [rule.name for rule in chain_of(off)] == ["threshold", "confidence_cluster"]
    from r2sft.decoding.rules.base import Rule, check_registry

    class Twin(Rule):
        name, code, description = "temporal", 9, "a second rule named temporal"

    with pytest.raises(TypeError, match="already taken"):
        check_registry([*RULES, Twin])

    class EarlyExitCode(Rule):
        name, code, description = "mine", int(CommitRule.EARLY_EXIT), "takes the sampler's code"

    with pytest.raises(TypeError, match="reserved"):
        check_registry([*RULES, EarlyExitCode])


def test_fixed_rule_keeps_its_step_count_per_row_and_restarts_it_with_each_block():
    # Block of 8 in 3 forwards: 3, 3, 2 tokens (the remainder goes to the first forwards).
    config = DecoderConfig(gen_length=16, block_length=8, policy="fixed", steps=6)
    (rule,) = chain_of(config)
    assert isinstance(rule, FixedRule) and (rule.per_step, rule.remainder) == (2, 2)
    from r2sft.decoding.rules import ChainState

    states = ChainState([rule], rows=2, block_length=8, device="cpu")
    conf = rows([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], [0.9] * 8)
    cand = torch.zeros(2, 8, dtype=torch.long)
    masked = torch.ones(2, 8, dtype=torch.bool)
    everyone = torch.tensor([0, 1])
    counts = []
    for forward in range(3):
        codes, new = commit_step(StepView.of(cand, conf, masked), [rule], states.select(everyone))
        counts.append((codes > 0).sum(-1).tolist())
        masked = masked & (codes == 0)
        # Row 1's block "ends" after its first forward: its count starts again.
        states.write(everyone, new, block_done=torch.tensor([False, forward == 0]))
    assert counts == [[3, 3], [3, 3], [2, 2]]
    assert states.states[0].count.tolist() == [3, 2]


def test_mask_aware_threshold_lowers_tau_as_the_visible_masks_run_out():
    from r2sft.decoding.rules import mask_aware_threshold

    ratio = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    start = torch.tensor([False, False, False])
    tau = mask_aware_threshold(0.9, 0.3, ratio, start)
    assert tau.shape == (3, 1)
    assert torch.allclose(tau.squeeze(-1), torch.tensor([0.9, 0.9 * 0.85, 0.9 * 0.7],
                                                        dtype=torch.float64))  # fmt: skip
    opening = mask_aware_threshold(0.9, 0.3, ratio, torch.tensor([True, True, False]))
    assert opening.squeeze(-1).tolist()[:2] == [0.9, 0.9]  # a block's first forward: tau0
    # In the chain: conf 0.7 passes tau 0.9 * 0.7 = 0.63 (no masks left in view), not 0.9.
    cand = torch.tensor([[1, 2, 3]])
    conf = rows([0.95, 0.7, 0.5])
    masked = torch.ones(1, 3, dtype=torch.bool)
    config = DecoderConfig(gen_length=3, block_length=3, threshold=0.9, threshold_alpha=0.3)
    (threshold,) = chain_of(config)
    low = StepView.of(cand, conf, masked, mask_ratio=torch.tensor([0.0], dtype=torch.float64))
    assert threshold.commit(low, masked, None)[0].tolist() == [[T, T, F_]]
    first = StepView.of(cand, conf, masked, mask_ratio=torch.tensor([0.0], dtype=torch.float64),
                        block_start=torch.tensor([True]))  # fmt: skip
    assert threshold.commit(first, masked, None)[0].tolist() == [[T, F_, F_]]
