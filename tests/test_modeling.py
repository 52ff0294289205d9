"""Tests of r2sft's own LLaDA model (r2sft.modeling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

import r2sft  # noqa: F401  (registers the Auto classes)
from r2sft.modeling import LLaDAConfig, LLaDAModel, LLaDAModelLM

FIXTURES = Path(__file__).parent / "fixtures" / "llada_official"


def tiny_config(**overrides) -> LLaDAConfig:
    values = dict(
        d_model=32,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=48,
        vocab_size=64,
        embedding_size=64,
        mask_token_id=63,
        eos_token_id=62,
        pad_token_id=62,
        max_sequence_length=64,
        init_std=0.2,  # large enough that every weight visibly moves the logits
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(**overrides)).eval()


@pytest.mark.parametrize("variant", ["gqa_untied", "tied_bias"])
def test_official_folder_loads_without_remote_code_and_matches_official_logits(variant):
    folder = FIXTURES / variant
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    assert not list(folder.glob("*.py")), "the fixture must not carry the official code"

    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(model) is LLaDAModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info

    reference = load_file(folder / "reference.safetensors")
    with torch.no_grad():
        logits = model.eval()(reference["input_ids"]).logits
    vocab = model.config.vocab_size
    assert logits.shape == (*reference["input_ids"].shape, vocab)
    diff = (logits - reference["logits"][..., :vocab]).abs().max().item()
    assert diff <= 1e-5, f"max abs diff {diff} vs official logits"


def test_all_auto_classes_resolve_to_r2sft_llada():
    folder = FIXTURES / "gqa_untied"
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is LLaDAConfig
    assert config.effective_n_kv_heads == 2 and config.hidden_size == 64
    for auto_class in (AutoModelForCausalLM, AutoModelForMaskedLM):
        assert type(auto_class.from_pretrained(folder)) is LLaDAModelLM


def test_save_load_round_trip_keeps_official_names_and_logits(tmp_path):
    model = tiny_model(n_kv_heads=2, embedding_size=128)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llada"
    for key in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "rope_theta"):
        assert key in saved, key
    weights = load_file(tmp_path / "model.safetensors")
    assert "model.transformer.ff_out.weight" in weights
    assert "model.transformer.blocks.1.up_proj.weight" in weights

    reloaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        after = reloaded.eval()(ids).logits
    assert torch.equal(before, after)
    assert before.shape == (2, 9, 64)  # sliced to vocab_size, not embedding_size


def test_bf16_round_trip_and_forward(tmp_path):
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        reference = model(ids).logits
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path, dtype="auto").eval()
    assert next(reloaded.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        logits = reloaded(ids).logits
    assert logits.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (logits.float() - reference).abs().max() < 0.1 * scale


def test_meta_device_init_allocates_nothing():
    with torch.device("meta"):
        model = LLaDAModelLM(tiny_config())
    assert all(p.is_meta for p in model.parameters())


def test_from_pretrained_builds_the_model_on_the_meta_device(monkeypatch):
    # An 8B checkpoint must not be randomly initialised on CPU before its weights are read.
    devices = []
    build = LLaDAModel.__init__

    def recording_init(self, config):
        build(self, config)
        devices.append({p.device.type for p in self.parameters()})

    monkeypatch.setattr(LLaDAModel, "__init__", recording_init)
    model = AutoModel.from_pretrained(FIXTURES / "gqa_untied")
    assert devices == [{"meta"}]
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def _pad_row(ids: torch.Tensor, total: int, left: bool, pad_id: int):
    pad = torch.full((total - len(ids),), pad_id)
    row = torch.cat([pad, ids]) if left else torch.cat([ids, pad])
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(ids)])
    return row, mask if left else mask.flip(0)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_padded_rows_give_the_unpadded_logits(n_kv_heads):
    model = tiny_model(n_kv_heads=n_kv_heads)
    torch.manual_seed(1)
    short = torch.randint(0, 64, (11,))
    with torch.no_grad():
        alone = model(short[None]).logits[0]
        rows, masks = zip(
            *(_pad_row(short, 16, left, pad_id=62) for left in (True, False)), strict=True
        )
        ids, mask = torch.stack(rows), torch.stack(masks)
        padded = model(ids, attention_mask=mask).logits
        unmasked = model(ids).logits
    torch.testing.assert_close(padded[0, 5:], alone, atol=1e-5, rtol=0)  # left padded
    torch.testing.assert_close(padded[1, :11], alone, atol=1e-5, rtol=0)  # right padded
    # Without the mask the padding leaks into attention: the test above can fail.
    assert (unmasked[1, :11] - alone).abs().max() > 1e-3


def test_all_padding_row_gives_finite_logits():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 6))
    mask = torch.tensor([[1] * 6, [0] * 6])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all()


def test_gqa_equals_multi_head_attention_with_repeated_kv_heads():
    gqa = tiny_model(n_kv_heads=2)
    mha = LLaDAModelLM(tiny_config(n_kv_heads=4)).eval()
    state = gqa.state_dict()
    head_dim = 32 // 4
    for key, value in state.items():
        if key.endswith(("k_proj.weight", "v_proj.weight")):
            # KV head j serves query heads 2j and 2j+1: repeat each head's rows twice.
            state[key] = value.view(2, head_dim, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    mha.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids).logits, mha(ids).logits, atol=1e-5, rtol=0)


def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_gradients():
    model = tiny_model().train()
    ids = torch.randint(0, 64, (2, 12))
    labels = torch.where(torch.rand(2, 12) < 0.5, ids, torch.full_like(ids, -100))
    labels[0, 0] = ids[0, 0]

    calls = []
    for block in model.model.transformer.blocks:
        # Hook a submodule: transformers 5 checkpoints the block's forward, not its __call__.
        block.attn_norm.register_forward_hook(lambda *_: calls.append(1))

    def gradients():
        model.zero_grad()
        calls.clear()
        model(ids, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)

    plain, plain_calls = gradients()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed, checkpointed_calls = gradients()
    assert plain_calls == 2 and checkpointed_calls == 4  # each block recomputed in backward
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_labels_give_token_cross_entropy_on_labelled_positions():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 5] = 7, 9
    with torch.no_grad():
        out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        torch.stack([out.logits[0, 3], out.logits[1, 5]]), torch.tensor([7, 9])
    )
    torch.testing.assert_close(out.loss, expected)


def test_hidden_states_are_block_inputs_plus_final_norm():
    model = tiny_model()
    with torch.no_grad():
        out = model(torch.randint(0, 64, (1, 5)), output_hidden_states=True)
    assert len(out.hidden_states) == model.config.n_layers + 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("alibi", True), ("block_type", "sequential"), ("layer_norm_type", "default")],
)
def test_unsupported_official_options_are_named_in_the_error(key, value):
    with pytest.raises(ValueError, match=key):
        LLaDAModelLM(tiny_config(**{key: value}))


def test_unexpected_forward_arguments_are_rejected():
    model = tiny_model()
    with pytest.raises(TypeError, match="attention_bias"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_bias=None)


def test_official_config_json_survives_a_save(tmp_path):
    # A fine-tuned model saved by r2sft must stay readable by the official remote code:
    # every official key (auto_map included) is written back with its value.
    original = json.loads((FIXTURES / "gqa_untied" / "config.json").read_text())
    AutoConfig.from_pretrained(FIXTURES / "gqa_untied").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    version_keys = {"transformers_version", "dtype", "torch_dtype"}
    for key, value in original.items():
        if key not in version_keys:
            assert saved.get(key) == value, key
