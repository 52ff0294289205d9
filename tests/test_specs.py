"""Tests of the model-spec registry, model loading, prompts and LoRA (r2sft.specs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

import r2sft  # noqa: F401
from r2sft.modeling import DreamModel, DreamTokenizerFast, LLaDAConfig, LLaDAModelLM
from r2sft.specs import (
    LoadedModel,
    apply_lora,
    encode_prompt,
    family_for_config,
    get_spec,
    load_model,
    render_prompt,
    resolve_spec,
)

WORDS = ["[UNK]", "[PAD]", "[MASK]", "[SEP]", "<|eot_id|>", "<bos>", "user", "assistant"]
WORDS += [f"w{i}" for i in range(40)]
CHAT_TEMPLATE = (
    "<bos> {% for m in messages %}{{ m['role'] }} {{ m['content'] }} <|eot_id|> {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


def word_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        sep_token="[SEP]",
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llada_config(**overrides) -> LLaDAConfig:
    values = dict(
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        n_layers=2,
        mlp_hidden_size=48,
        vocab_size=len(WORDS),
        embedding_size=len(WORDS),
        mask_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
        init_std=0.2,
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def tiny_llada(**overrides) -> LLaDAModelLM:
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_llada_config(**overrides)).eval()


# --- registry ---------------------------------------------------------------------------------


def test_family_defaults():
    llada, dream = get_spec("llada"), get_spec("dream")
    assert (llada.mask_token_id, llada.eos_token_id, llada.eot_token_id) == (126336, 126081, 126348)
    assert not llada.shifted_logits
    assert (dream.mask_token_id, dream.eos_token_id, dream.pad_token_id) == (151666, 151643, 151643)
    assert (dream.eot_token, dream.eot_token_id, dream.shifted_logits) == (
        "<|im_end|>",
        151645,
        True,
    )
    assert get_spec("masked_lm").mask_token_id is None


def test_unknown_family_error_lists_the_known_ones():
    with pytest.raises(ValueError, match="llada") as error:
        get_spec("llama")
    assert "'llama'" in str(error.value)


def test_family_follows_model_type():
    assert family_for_config(tiny_llada_config()) == "llada"
    assert family_for_config(SimpleNamespace(model_type="Dream")) == "dream"
    assert family_for_config(BertConfig()) == "masked_lm"


def test_ids_resolve_config_then_tokenizer_then_family_default():
    big = LLaDAConfig(n_layers=1)  # the 8B vocabulary, ids from its config
    spec = resolve_spec(big, None)
    assert (spec.mask_token_id, spec.eos_token_id, spec.pad_token_id) == (126336, 126081, 126081)
    assert spec.eot_token_id == 126348  # not in the config: family default

    # The tiny model has its own vocabulary: config ids win, eot comes from the tokenizer.
    spec = resolve_spec(tiny_llada_config(), word_tokenizer())
    assert (spec.mask_token_id, spec.eos_token_id, spec.pad_token_id) == (2, 3, 1)
    assert spec.eot_token_id == WORDS.index("<|eot_id|>")

    # Without a tokenizer, the 8B eot default does not fit the small vocabulary: no eot.
    assert resolve_spec(tiny_llada_config(), None).eot_token_id is None

    # Ids missing from the config come from the tokenizer.
    config = tiny_llada_config()
    config.mask_token_id = None
    assert resolve_spec(config, word_tokenizer()).mask_token_id == WORDS.index("[MASK]")


def test_an_id_outside_the_vocabulary_is_an_error_naming_it():
    config = tiny_llada_config()
    config.mask_token_id = None  # falls back to the 8B default 126336
    with pytest.raises(ValueError, match="mask_token_id=126336"):
        resolve_spec(config, None)


def test_masked_lm_takes_ids_from_its_tokenizer():
    config = BertConfig(vocab_size=len(WORDS), pad_token_id=1)
    spec = resolve_spec(config, word_tokenizer())
    assert spec.family == "masked_lm"
    assert (spec.mask_token_id, spec.eos_token_id, spec.pad_token_id) == (2, 3, 1)


def test_masked_lm_without_mask_token_is_an_error():
    with pytest.raises(ValueError, match="mask_token_id"):
        resolve_spec(BertConfig(vocab_size=len(WORDS)), None)


# --- prompts ----------------------------------------------------------------------------------


def test_render_prompt_uses_the_tokenizer_chat_template():
    tokenizer = word_tokenizer()
    text = render_prompt(tokenizer, "w1 w2")
    assert text == "<bos> user w1 w2 <|eot_id|> assistant "
    assert encode_prompt(tokenizer, "w1 w2") == [5, 6, 9, 10, 4, 7]


def test_render_prompt_without_chat_template_is_a_clear_error():
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(word_tokenizer(chat_template=None), "w1")


# --- loading ----------------------------------------------------------------------------------


def test_load_model_llada_folder(tmp_path):
    tiny_llada().save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="bfloat16")
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model) is LLaDAModelLM and not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert (loaded.spec.family, loaded.spec.mask_token_id, loaded.spec.eos_token_id) == (
        "llada",
        2,
        3,
    )
    assert render_prompt(loaded.tokenizer, "w3").endswith("assistant ")


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_load_model_dream_folder_uses_r2sfts_classes(tiny_dream, trust_remote_code):
    # The folder has Dream's official auto_map (config and tokenizer) but no .py files: remote
    # code would fail to load, so passing trust_remote_code must not switch to it.
    assert not list(tiny_dream.glob("*.py"))
    loaded = load_model(str(tiny_dream), trust_remote_code=trust_remote_code)
    assert type(loaded.model) is DreamModel and not loaded.model.training
    assert type(loaded.tokenizer) is DreamTokenizerFast
    tokenizer, spec = loaded.tokenizer, loaded.spec
    ids = tokenizer.convert_tokens_to_ids
    assert (spec.family, spec.shifted_logits) == ("dream", True)
    assert (spec.mask_token_id, spec.eos_token_id, spec.pad_token_id, spec.eot_token_id) == (
        ids("<|mask|>"), ids("<|endoftext|>"), ids("<|endoftext|>"), ids("<|im_end|>"),
    )  # fmt: skip
    prompt = render_prompt(tokenizer, "What is 2 + 3?")
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(encode_prompt(tokenizer, "What is 2 + 3?")) == prompt


def test_load_model_masked_lm_folder(tmp_path):
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pad_token_id=1,
    )
    BertForMaskedLM(config).save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.spec.family == "masked_lm" and loaded.spec.mask_token_id == 2
    assert loaded.model(torch.tensor([[5, 2, 9]])).logits.shape == (1, 3, len(WORDS))


def test_load_model_rejects_an_unknown_dtype(tmp_path):
    tiny_llada().save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="dtype='bf17'"):
        load_model(str(tmp_path), dtype="bf17")


# --- LoRA -------------------------------------------------------------------------------------


def test_default_llada_lora_adapts_every_block_projection_but_not_the_head():
    model = tiny_llada()
    peft_model = apply_lora(model, resolve_spec(model.config), r=4, alpha=8, dropout=0.0)
    adapted = {
        name.removeprefix("base_model.model.").removesuffix(".lora_A")
        for name, _ in peft_model.named_modules()
        if name.endswith(".lora_A")
    }
    projections = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
    expected = {f"model.transformer.blocks.{i}.{p}" for i in range(2) for p in projections}
    assert adapted == expected


DREAM_PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]  # fmt: skip


@pytest.mark.parametrize(
    "targets", [None, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"]
)
def test_dream_lora_adapts_every_layer_projection_but_never_lm_head(tiny_dream, targets):
    model = DreamModel.from_pretrained(tiny_dream)
    spec = resolve_spec(model.config)
    peft_model = apply_lora(model, spec, r=4, alpha=8, dropout=0.0, target_modules=targets)
    adapted = {
        name.removeprefix("base_model.model.").removesuffix(".lora_A")
        for name, _ in peft_model.named_modules()
        if name.endswith(".lora_A")
    }
    expected = {f"model.layers.{i}.{p}" for i in range(2) for p in DREAM_PROJECTIONS}
    assert adapted == expected
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)


def test_lora_targets_matching_nothing_are_all_named():
    spec = resolve_spec(tiny_llada_config())
    with pytest.raises(ValueError, match=r"\['o_proj', 'gate_proj'\]"):
        apply_lora(tiny_llada(), spec, 4, 8, 0.0, target_modules=["q_proj", "o_proj", "gate_proj"])
    with pytest.raises(ValueError, match=r"\['o_proj', 'down_proj'\]"):
        apply_lora(tiny_llada(), spec, 4, 8, 0.0, r".*\.blocks\.\d+\.(q_proj|o_proj|down_proj)")
    with pytest.raises(ValueError, match="gate_proj"):
        apply_lora(tiny_llada(), spec, 4, 8, 0.0, target_modules="q_proj,gate_proj")


def test_lora_merge_and_adapter_reload_round_trip(tmp_path):
    from peft import PeftModel

    model = tiny_llada()
    ids = torch.randint(0, len(WORDS), (2, 9))
    with torch.no_grad():
        base_logits = model(ids).logits
    peft_model = apply_lora(model, resolve_spec(model.config), r=4, alpha=8, dropout=0.0)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; make the adapter do something
                param.normal_(0.0, 0.3)
        adapted_logits = peft_model(ids).logits
    assert (adapted_logits - base_logits).abs().max() > 1e-2

    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_llada(), tmp_path / "adapter").eval()
    merged = peft_model.merge_and_unload()
    assert type(merged) is LLaDAModelLM
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, adapted_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(merged(ids).logits, adapted_logits, atol=1e-5, rtol=0)
