"""Fixtures shared by several test files."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer LLaDA with the embedded tokenizer (chat template included), saved as
    a model folder; read-only for the tests that use it."""
    from r2sft.embedded.tokenizer import EOT_TOKEN, build_tokenizer
    from r2sft.modeling.configuration_llada import LLaDAConfig
    from r2sft.modeling.modeling_llada import LLaDAModelLM

    out = tmp_path_factory.mktemp("tiny-llada")
    tokenizer = build_tokenizer(vocab_size=300, num_problems=200)
    config = LLaDAConfig(
        d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, mlp_hidden_size=64,
        vocab_size=len(tokenizer), embedding_size=len(tokenizer), max_sequence_length=512,
        rope=True, weight_tying=False, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        init_device=None, precision=None,
    )  # fmt: skip
    config.eot_token_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    torch.manual_seed(0)
    LLaDAModelLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@functools.cache
def _sandbox_isolation(mode: str) -> object:
    """The sandbox isolation of ``mode`` on this machine, or why it is unavailable."""
    from r2sft.tasks import sandbox

    if mode == "no-namespaces":
        return sandbox.probe(())
    wanted = [p for p in sandbox.namespace_prefixes() if ("--user" in p) == (mode == "userns")]
    if not wanted:
        return "unshare cannot do this here" if mode == "userns" else "not root"
    return sandbox.probe(wanted[0])


SANDBOX_MODES = ("namespaces", "userns", "no-namespaces")


@pytest.fixture(params=SANDBOX_MODES)
def sandbox_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under each isolation this machine can set up: namespaces as root, in a
    user namespace (what an unprivileged user gets), and none (the fallback)."""
    from r2sft.tasks import sandbox

    isolation = _sandbox_isolation(request.param)
    if isinstance(isolation, str):
        pytest.skip(f"sandbox mode {request.param} unavailable here: {isolation}")
    monkeypatch.setattr(sandbox, "current_isolation", lambda: isolation)
    return request.param
