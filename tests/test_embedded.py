import json
from itertools import islice

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

import r2sft  # noqa: F401  (registers the LLaDA Auto classes)
from r2sft.embedded.data import encode_canvas, iter_batches, make_batch, render_user_prompt
from r2sft.embedded.pretrain import PretrainConfig, pretrain
from r2sft.embedded.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    EOT_TOKEN,
    MASK_TOKEN,
    build_tokenizer,
    save_tokenizer,
)
from r2sft.paths import EMBEDDED_GEN_LENGTH, EMBEDDED_MODEL_DIR
from r2sft.tasks.arith import MAX_VALUE, generate_problem, iter_problems


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tokenizer as built from scratch, saved and reloaded through AutoTokenizer."""
    path = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(build_tokenizer(), path)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def test_tokenizer_round_trips_text_exactly(tokenizer):
    texts = [
        "Mia has 12 marbles. She finds 7 more.",
        "12 + 7 = 19\n19 - 5 = 14\n#### 14",
        "Unseen wörds, tabs\tand  double  spaces 1,234.5 ±∞",
    ]
    for text in texts:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text


def test_task_numbers_are_single_tokens_so_equation_lines_have_fixed_length(tokenizer):
    for number in range(MAX_VALUE + 1):
        assert tokenizer.tokenize(str(number)) == [str(number)]
        # The same token after a space: the space is a token of its own.
        assert tokenizer.tokenize(f"x {number}")[-1] == str(number)
    lines = ["19 + 1 = 20", "3 * 4 = 12", "18 / 2 = 9", "20 - 9 = 11"]
    assert {len(tokenizer(line, add_special_tokens=False).input_ids) for line in lines} == {7}


def test_special_tokens_and_ids(tokenizer):
    assert tokenizer.mask_token == MASK_TOKEN
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == EOS_TOKEN
    assert tokenizer.bos_token == BOS_TOKEN
    ids = {
        tokenizer.convert_tokens_to_ids(t) for t in (MASK_TOKEN, EOS_TOKEN, EOT_TOKEN, BOS_TOKEN)
    }
    assert len(ids) == 4 and all(i < len(tokenizer) for i in ids)
    # Special tokens are atomic and vanish with skip_special_tokens.
    ids = tokenizer(f"7{EOT_TOKEN}{EOS_TOKEN}{EOS_TOKEN}", add_special_tokens=False).input_ids
    assert len(ids) == 4
    assert tokenizer.decode(ids, skip_special_tokens=True) == "7"
    assert len(tokenizer) <= 1024


def test_chat_template_is_llada_instruct_style(tokenizer):
    rendered = render_user_prompt(tokenizer, "  What is 2 + 3?  ")
    assert rendered == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_canvas_holds_answer_end_of_turn_and_fill(tokenizer):
    answer = "3 + 4 = 7\n#### 7"
    (canvas,) = encode_canvas(tokenizer, [answer], EMBEDDED_GEN_LENGTH)
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    assert len(canvas) == EMBEDDED_GEN_LENGTH
    assert canvas[: len(answer_ids)] == answer_ids and canvas[len(answer_ids)] == eot
    assert set(canvas[len(answer_ids) + 1 :]) == {tokenizer.eos_token_id}
    with pytest.raises(ValueError, match="does not fit the canvas"):
        encode_canvas(tokenizer, ["1 + 1 = 2\n" * 20], EMBEDDED_GEN_LENGTH)


def test_every_generated_answer_fits_with_fill(tokenizer):
    problems = list(islice(iter_problems(0), 3000))
    lengths = [len(ids) for ids in tokenizer([p.answer for p in problems]).input_ids]
    assert max(lengths) + 1 + 8 <= EMBEDDED_GEN_LENGTH  # end of turn + at least 8 fill tokens


def test_batch_layout(tokenizer):
    import random

    rng = random.Random(1)
    problems = [generate_problem(rng) for _ in range(3)]
    batch = make_batch(tokenizer, problems, EMBEDDED_GEN_LENGTH)
    for row, problem in enumerate(problems):
        prompt = tokenizer(render_user_prompt(tokenizer, problem.question)).input_ids
        length = batch.attention_mask[row].sum().item()
        assert length == len(prompt) + EMBEDDED_GEN_LENGTH
        assert batch.input_ids[row, : len(prompt)].tolist() == prompt
        assert batch.answer_mask[row].sum().item() == EMBEDDED_GEN_LENGTH
        assert batch.answer_mask[row, len(prompt) : length].all()
        assert not batch.attention_mask[row, length:].any()


def test_length_pooled_batches_cut_padding_and_keep_every_problem(tokenizer):
    def padding_and_batches(pool_batches):
        batches = list(islice(iter_batches(tokenizer, 8, EMBEDDED_GEN_LENGTH, 0, pool_batches), 4))
        return sum((b.attention_mask == 0).sum().item() for b in batches), batches

    plain_padding, plain = padding_and_batches(1)
    pooled_padding, pooled = padding_and_batches(4)
    assert pooled_padding < plain_padding / 2

    def prompts(batches):
        rows = []
        for b in batches:
            for ids, answer in zip(b.input_ids, b.answer_mask, strict=True):
                rows.append(tuple(ids[: answer.nonzero()[0].item()].tolist()))
        return sorted(rows)

    # The same 32 problems, only regrouped; and a pool is deterministic from the seed.
    assert prompts(plain) == prompts(pooled)
    again = list(islice(iter_batches(tokenizer, 8, EMBEDDED_GEN_LENGTH, 0, 4), 4))
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(pooled, again, strict=True))


_TINY = dict(d_model=32, n_layers=1, n_heads=2, mlp_hidden_size=64, batch_size=4, threads=1)


def test_pretrain_resume_and_stop_step_match_an_unbroken_run(tmp_path):
    config = PretrainConfig(steps=5, save_every=2, warmup_steps=1, **_TINY)
    unbroken = pretrain(config, tmp_path / "a")
    # A run stopped at step 3 left its step-2 checkpoint; resuming it finishes the same run.
    pretrain(PretrainConfig(**{**config.__dict__, "stop_step": 3}), tmp_path / "b")
    resumed = pretrain(config, tmp_path / "b", resume=True)
    pairs = zip(unbroken.state_dict().items(), resumed.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    loaded = AutoModel.from_pretrained(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "training_args.json").read_text())["steps"] == 5
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(ids).logits, unbroken(ids).logits)


def test_shipped_model_loads_offline_and_is_small():
    files = [p for p in EMBEDDED_MODEL_DIR.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in files
    }
    config = AutoConfig.from_pretrained(EMBEDDED_MODEL_DIR, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR, local_files_only=True)
    model = AutoModel.from_pretrained(EMBEDDED_MODEL_DIR, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000
    assert config.mask_token_id == tokenizer.mask_token_id
    assert config.eos_token_id == config.pad_token_id == tokenizer.eos_token_id
    assert config.eot_token_id == tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    prompt = tokenizer(render_user_prompt(tokenizer, "Mia has 3 apples."), return_tensors="pt")
    with torch.no_grad():
        logits = model(prompt.input_ids, attention_mask=prompt.attention_mask).logits
    assert logits.shape == (1, prompt.input_ids.shape[1], config.embedding_size)
