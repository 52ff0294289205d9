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
    from r2sft.sandbox import runner as sandbox

    if mode == "no-namespaces":
        return sandbox.probe(())
    wanted = [p for p in sandbox.namespace_prefixes() if ("--user" in p) == (mode == "userns")]
    if not wanted:
        return "unshare cannot do this here" if mode == "userns" else "not root"
    return sandbox.probe(wanted[0])


SANDBOX_MODES = ("namespaces", "userns", "no-namespaces")
# How a machine refuses namespaces, mounts or pivot_root (EPERM, EACCES, ENOSYS, EOPNOTSUPP).
MACHINE_REFUSALS = (
    "Operation not permitted",
    "Permission denied",
    "Function not implemented",
    "not supported",
)


@pytest.fixture(params=SANDBOX_MODES)
def sandbox_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under each isolation this machine can set up: namespaces as root, in a
    user namespace (what an unprivileged user gets), and none (the fallback)."""
    from r2sft.sandbox import runner as sandbox

    isolation = _sandbox_isolation(request.param)
    if isinstance(isolation, str):
        if "sandbox setup failed" in isolation and not any(
            refusal in isolation for refusal in MACHINE_REFUSALS
        ):
            # Our setup code broke, not the machine's permissions: a skip would hide it (a
            # checkout under /tmp once skipped every namespace test this way).
            pytest.fail(f"sandbox mode {request.param}: {isolation}")
        pytest.skip(f"sandbox mode {request.param} unavailable here: {isolation}")
    monkeypatch.setattr(sandbox, "current_isolation", lambda: isolation)
    return request.param


# Dream's chat format (its tokenizer_config.json template without the tool-call branches): a
# default system turn, then <|im_start|>role\ncontent<|im_end|>\n per message.
DREAM_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Dream's special tokens, in its order (after the BPE vocabulary, as in Qwen2's).
DREAM_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|beginoftext|>",
    "<|mask|>",
]


def write_dream_tokenizer(folder: Path, vocab_size: int = 300, num_problems: int = 200) -> None:
    """A small byte-level BPE written in the official Dream tokenizer layout: vocab.json,
    merges.txt and a tokenizer_config.json naming the remote ``DreamTokenizer`` (auto_map, no
    tokenizer.json), so loading it exercises r2sft's registration, not remote code."""
    import json
    import random

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from r2sft.tasks.arith import generate_problem

    rng = random.Random(0)
    problems = [generate_problem(rng) for _ in range(num_problems)]
    texts = [text for p in problems for text in (p.question, p.answer)] + ["system user assistant"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    folder.mkdir(parents=True, exist_ok=True)
    bpe.model.save(str(folder))  # vocab.json + merges.txt
    first_special = bpe.get_vocab_size()
    added = {
        str(first_special + i): {"content": token, "lstrip": False, "normalized": False,
                                 "rstrip": False, "single_word": False, "special": True}
        for i, token in enumerate(DREAM_SPECIAL_TOKENS)
    }  # fmt: skip
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|beginoftext|>", "<|mask|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>",
        "chat_template": DREAM_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "mask_token": "<|mask|>",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="session")
def tiny_dream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Dream (GQA, untied head) in the official folder layout (config.json with
    auto_map, model.safetensors, Dream's tokenizer files); read-only for the tests using it."""
    from transformers import AutoTokenizer

    from r2sft.modeling import DreamConfig, DreamModel

    out = tmp_path_factory.mktemp("tiny-dream")
    write_dream_tokenizer(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.convert_tokens_to_ids
    config = DreamConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=512,
        rope_theta=1000000.0, mask_token_id=ids("<|mask|>"), pad_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"), bos_token_id=ids("<|beginoftext|>"),
        auto_map={"AutoConfig": "configuration_dream.DreamConfig",
                  "AutoModel": "modeling_dream.DreamModel"},
    )  # fmt: skip
    torch.manual_seed(0)
    DreamModel(config).save_pretrained(out)
    return out
