"""docs/extending.md's worked example works as written: its margin rule, as a new file plus a
place in the chain, decodes without any change to the sampler."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from test_cache import PROMPTS, Spec, r2_config, tiny_llada

from r2sft.decoding import generate
from r2sft.decoding import sampler as sampler_module
from r2sft.decoding.options import check_options
from r2sft.decoding.rules import RULES, rule_chain
from r2sft.decoding.rules.base import check_registry

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


@pytest.fixture(scope="module")
def margin_module() -> types.ModuleType:
    """The doc's rule file (its first Python block), loaded as a module."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    module = types.ModuleType("margin_rule_from_docs")
    sys.modules[module.__name__] = module
    exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]


def test_the_documented_rule_commits_wide_margins_only(margin_module):
    top2 = torch.tensor([[[0.9, 0.05], [0.5, 0.4], [0.7, 0.1]]])
    masked = torch.tensor([[True, True, False]])
    assert margin_module.margin_commit(top2, masked, 0.5).tolist() == [[True, False, False]]
    rule_class = margin_module.MarginRule
    check_registry([*RULES, rule_class])  # a free code and name
    assert rule_class.from_config(types.SimpleNamespace(margin=0.0)) is None
    assert rule_class.from_config(types.SimpleNamespace(margin=0.4)).margin == 0.4
    with pytest.raises(ValueError, match="margin 1.5 must be in"):
        check_options(margin_module.MarginOptions(margin=1.5))


def test_the_documented_rule_decodes_without_a_sampler_change(margin_module, monkeypatch):
    rule = margin_module.MarginRule(0.05)

    def chain_with_margin(config):
        return [*rule_chain(config), rule]

    monkeypatch.setattr(sampler_module, "rule_chain", chain_with_margin)
    config = r2_config(cache="none", threshold=0.99, temporal_k=0)
    result = generate(tiny_llada(seed=2), Spec(), PROMPTS, config)
    assert (result.tokens != 47).all()
    assert (result.rule_map == margin_module.MarginRule.code).any()
