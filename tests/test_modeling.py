"""Tests of r2sft's own model classes (r2sft.modeling): LLaDA and Dream against their official
code's fixtures, and the contract both share (padding, GQA, checkpointing, save / load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

import r2sft  # noqa: F401  (registers the Auto classes)
from r2sft.modeling import (
    DreamBaseModel,
    DreamConfig,
    DreamModel,
    LLaDAConfig,
    LLaDAModel,
    LLaDAModelLM,
)

FIXTURES = Path(__file__).parent / "fixtures" / "llada_official"
DREAM_FIXTURES = Path(__file__).parent / "fixtures" / "dream_official"
FAMILIES = ["llada", "dream"]


# The tiny models' sizes and token ids (62 pads and ends text, 63 masks) under the standard
# (Dream / Qwen2) config names; initializer_range is large enough that every weight visibly
# moves the logits.
TINY = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
            intermediate_size=48, vocab_size=64, mask_token_id=63, eos_token_id=62,
            pad_token_id=62, max_position_embeddings=64, initializer_range=0.2)  # fmt: skip
# The same keys under LLaDA's official names (its config's attribute_map, plus n_kv_heads).
LLADA_NAMES = {**LLaDAConfig.attribute_map, "num_key_value_heads": "n_kv_heads"}


def tiny_config(**overrides) -> LLaDAConfig:
    values = {LLADA_NAMES.get(key, key): value for key, value in TINY.items()}
    return LLaDAConfig(**{**values, "embedding_size": TINY["vocab_size"], **overrides})


def tiny_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(**overrides)).eval()


def tiny_dream_config(**overrides) -> DreamConfig:
    return DreamConfig(**{**TINY, **overrides})


def family_model(family: str, seed: int = 0, n_kv_heads: int = 4, **overrides):
    """A tiny random model of either family (sizes: TINY)."""
    torch.manual_seed(seed)
    if family == "llada":
        return LLaDAModelLM(tiny_config(**{"n_kv_heads": n_kv_heads, **overrides})).eval()
    return DreamModel(tiny_dream_config(**{"num_key_value_heads": n_kv_heads, **overrides})).eval()


# (family, fixture folder) pairs made by the official code; see each folder's README.
OFFICIAL_FOLDERS = [
    ("llada", FIXTURES / "gqa_untied"),
    ("llada", FIXTURES / "tied_bias"),
    ("dream", DREAM_FIXTURES / "gqa_untied"),
    ("dream", DREAM_FIXTURES / "tied_mha"),
]
MODEL_CLASSES = {"llada": LLaDAModelLM, "dream": DreamModel}


@pytest.mark.parametrize(
    ("family", "folder"), OFFICIAL_FOLDERS, ids=lambda x: getattr(x, "name", x)
)
def test_official_folder_loads_without_remote_code_and_matches_official_logits(family, folder):
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    assert not list(folder.glob("*.py")), "the fixture must not carry the official code"

    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(model) is MODEL_CLASSES[family]
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info

    reference = load_file(folder / "reference.safetensors")
    with torch.no_grad():
        logits = model.eval()(reference["input_ids"]).logits
    vocab = model.config.vocab_size
    assert logits.shape == (*reference["input_ids"].shape, vocab)
    diff = (logits - reference["logits"][..., :vocab]).abs().max().item()
    assert diff <= 1e-5, f"max abs diff {diff} vs official logits"


@pytest.mark.parametrize("variant", ["gqa_untied", "tied_mha"])
def test_dream_left_padded_row_with_a_2d_mask_matches_the_official_padded_forward(variant):
    # The official code needs a [B, 1, N, N] boolean mask and position ids cumsum(mask) - 1;
    # r2sft takes the plain (B, N) padding mask and derives both.
    folder = DREAM_FIXTURES / variant
    reference = load_file(folder / "reference.safetensors")
    mask = reference["padded_attention_mask"]
    assert (mask[0] == 0).any() and (mask[1] == 1).all()  # row 0 left padded, row 1 full
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(reference["padded_input_ids"], attention_mask=mask).logits
    real = mask.bool()
    diff = (logits[real] - reference["padded_logits"][real]).abs().max().item()
    assert diff <= 1e-5, f"max abs diff {diff} vs official padded logits"


def test_dream_7b_config_builds_exactly_the_official_layout():
    # Dream-v0-Instruct-7B's sizes, config.json and state-dict layout written by the official
    # code (no weights; see the fixture README): the model r2sft builds from that config has
    # exactly the official parameter names, shapes and bf16 byte size.
    folder = DREAM_FIXTURES / "7b_layout"
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is DreamConfig and config.num_key_value_heads == 4
    with torch.device("meta"):
        model = AutoModel.from_config(config, dtype=torch.bfloat16)
    layout = json.loads((folder / "official_layout.json").read_text())
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert shapes == layout["parameters"] and len(shapes) == 339
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    assert size == layout["total_size"] == 15231233024


@pytest.mark.parametrize(("family", "folder"), [OFFICIAL_FOLDERS[0], OFFICIAL_FOLDERS[2]])
def test_all_auto_classes_resolve_to_r2sft_classes(family, folder):
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is {"llada": LLaDAConfig, "dream": DreamConfig}[family]
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    for auto_class in (AutoModelForCausalLM, AutoModelForMaskedLM):
        assert type(auto_class.from_pretrained(folder)) is MODEL_CLASSES[family]


# Official parameter names a saved model must keep, per family.
OFFICIAL_NAMES = {
    "llada": ["model.transformer.ff_out.weight", "model.transformer.blocks.1.up_proj.weight"],
    "dream": ["lm_head.weight", "model.layers.1.self_attn.q_proj.bias",
              "model.layers.1.mlp.down_proj.weight", "model.norm.weight"],
}  # fmt: skip
CONFIG_KEYS = {
    "llada": ["d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "rope_theta"],
    "dream": ["hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
              "intermediate_size", "rope_theta", "rope_scaling", "mask_token_id"],
}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_keeps_official_names_and_logits(family, tmp_path):
    extra = {"embedding_size": 128} if family == "llada" else {}
    model = family_model(family, n_kv_heads=2, **extra)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == model.config.model_type
    for key in CONFIG_KEYS[family]:
        assert key in saved, key
    weights = load_file(tmp_path / "model.safetensors")
    for name in OFFICIAL_NAMES[family]:
        assert name in weights, name

    reloaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        after = reloaded.eval()(ids).logits
    assert torch.equal(before, after)
    assert before.shape == (2, 9, 64)  # LLaDA: sliced to vocab_size, not embedding_size


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_round_trip_and_forward(family, tmp_path):
    model = family_model(family)
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


@pytest.mark.parametrize("family", FAMILIES)
def test_meta_device_init_allocates_nothing(family):
    with torch.device("meta"):
        model = family_model(family)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize(
    ("body", "folder"),
    [(LLaDAModel, FIXTURES / "gqa_untied"), (DreamBaseModel, DREAM_FIXTURES / "gqa_untied")],
)
def test_from_pretrained_builds_the_model_on_the_meta_device(body, folder, monkeypatch):
    # A 7-8B checkpoint must not be randomly initialised on CPU before its weights are read.
    devices = []
    build = body.__init__

    def recording_init(self, config):
        build(self, config)
        devices.append({p.device.type for p in self.parameters()})

    monkeypatch.setattr(body, "__init__", recording_init)
    model = AutoModel.from_pretrained(folder)
    assert devices == [{"meta"}]
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def _pad_row(ids: torch.Tensor, total: int, left: bool, pad_id: int):
    pad = torch.full((total - len(ids),), pad_id)
    row = torch.cat([pad, ids]) if left else torch.cat([ids, pad])
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(ids)])
    return row, mask if left else mask.flip(0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_padded_rows_give_the_unpadded_logits(family, n_kv_heads):
    model = family_model(family, n_kv_heads=n_kv_heads)
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


@pytest.mark.parametrize("family", FAMILIES)
def test_all_padding_row_gives_finite_logits(family):
    model = family_model(family)
    ids = torch.randint(0, 64, (2, 6))
    mask = torch.tensor([[1] * 6, [0] * 6])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_gqa_equals_multi_head_attention_with_repeated_kv_heads(family):
    gqa = family_model(family, n_kv_heads=2)
    mha = family_model(family, n_kv_heads=4)
    state = gqa.state_dict()
    head_dim = 32 // 4
    for key, value in state.items():
        if key.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias")):
            # KV head j serves query heads 2j and 2j+1: repeat each head's rows twice.
            rows = value.reshape(2, head_dim, -1).repeat_interleave(2, dim=0)
            state[key] = rows.reshape(32, *value.shape[1:])
    mha.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids).logits, mha(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_gradients(family):
    model = family_model(family).train()
    ids = torch.randint(0, 64, (2, 12))
    labels = torch.where(torch.rand(2, 12) < 0.5, ids, torch.full_like(ids, -100))
    labels[0, 1] = ids[0, 1]

    calls = []
    for block in model.decoder_blocks():
        # Hook a submodule: transformers 5 checkpoints the block's forward, not its __call__.
        block.block_modules().attn_norm.register_forward_hook(lambda *_: calls.append(1))

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


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_give_token_cross_entropy_on_labelled_positions(family):
    model = family_model(family)
    ids = torch.randint(0, 64, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 5] = 7, 9
    with torch.no_grad():
        out = model(ids, labels=labels)
    # Dream's row i predicts token i + 1, so the label at position p is scored by row p - 1.
    shift = 1 if family == "dream" else 0
    expected = torch.nn.functional.cross_entropy(
        torch.stack([out.logits[0, 3 - shift], out.logits[1, 5 - shift]]), torch.tensor([7, 9])
    )
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_are_block_inputs_plus_final_norm(family):
    model = family_model(family)
    with torch.no_grad():
        out = model(torch.randint(0, 64, (1, 5)), output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


@pytest.mark.parametrize(
    ("family", "key", "value"),
    [
        ("llada", "alibi", True),
        ("llada", "block_type", "sequential"),
        ("llada", "layer_norm_type", "default"),
        ("dream", "rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
        ("dream", "rope_scaling", {"type": "linear", "factor": 2.0}),
        ("dream", "hidden_act", "gelu"),
        ("llada", "n_kv_heads", 3),
        ("dream", "num_key_value_heads", 3),
        ("dream", "num_attention_heads", 5),
    ],
)
def test_unsupported_official_options_are_named_in_the_error(family, key, value):
    with pytest.raises(ValueError, match=key):
        family_model(family, **{key: value})


def test_dream_rope_scaling_in_config_json_fails_at_load_naming_the_key(tmp_path):
    config = json.loads((DREAM_FIXTURES / "tied_mha" / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"rope_scaling.*'dynamic'"):
        AutoModel.from_config(AutoConfig.from_pretrained(tmp_path))


def test_dream_rope_theta_comes_from_the_config():
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        base = family_model("dream", rope_theta=10000.0)(ids).logits
        other = family_model("dream", rope_theta=1000000.0)(ids).logits
    assert (base - other).abs().max() > 1e-3  # same weights (seed 0), other positions' angles


@pytest.mark.parametrize("family", FAMILIES)
def test_unexpected_forward_arguments_are_rejected(family):
    model = family_model(family)
    with pytest.raises(TypeError, match="attention_bias"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_bias=None)


@pytest.mark.parametrize("folder", [FIXTURES / "gqa_untied", DREAM_FIXTURES / "gqa_untied"])
def test_official_config_json_survives_a_save(folder, tmp_path):
    # A fine-tuned model saved by r2sft must stay readable by the official remote code:
    # every official key (auto_map included) is written back with its value.
    original = json.loads((folder / "config.json").read_text())
    AutoConfig.from_pretrained(folder).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    version_keys = {"transformers_version", "dtype", "torch_dtype"}
    for key, value in original.items():
        if key not in version_keys:
            assert saved.get(key) == value, key


def test_fused_elementwise_ops_equal_the_eager_ones_and_fall_back(monkeypatch, caplog):
    """On half-precision GPU activations RMSNorm, RoPE and SwiGLU run through torch.compile;
    here the compiled path is forced on the CPU: the same values (bf16 rounding), and a
    compiler failure falls back to eager with one warning."""
    from r2sft.modeling import layers

    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    x, weight = rand(2, 5, 16), rand(16)
    q, angles = rand(2, 3, 5, 8), torch.randn(2, 1, 5, 8, generator=generator)
    calls = {
        "rms_norm": (layers.rms_norm, (x, weight, None, 1e-5)),
        "apply_rope": (layers.apply_rope, (q, angles.cos(), angles.sin())),
        "swiglu": (layers.swiglu, (x, rand(2, 5, 16))),
    }
    eager = {name: fused.function(*args) for name, (fused, args) in calls.items()}
    monkeypatch.setattr(layers.Fused, "device_types", frozenset({"cpu"}))
    for name, (fused, args) in calls.items():
        monkeypatch.setattr(fused, "compiled", None)
        assert fused(*args) is not None and fused.compiled is None  # autograd on: eager
        with torch.no_grad():  # decoding
            got = fused(*args)
        assert fused.compiled is not None and not fused.failed, name
        torch.testing.assert_close(got, eager[name], rtol=1e-2, atol=1e-2, msg=name)

    def broken(function, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    fused, args = calls["swiglu"]
    monkeypatch.setattr(fused, "compiled", None)
    with caplog.at_level("WARNING"), torch.no_grad():
        assert torch.equal(fused(*args), eager["swiglu"])
    assert fused.failed and "fused swiglu: torch.compile failed" in caplog.text
    monkeypatch.setattr(fused, "failed", False)
