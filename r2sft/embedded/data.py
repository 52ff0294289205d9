"""Pretraining batches for the embedded model: chat-templated prompt + fixed-length canvas.

Each example is laid out like a LLaDA SFT sample: the chat-rendered question (kept clean),
then the canvas of ``gen_length`` tokens holding the worked answer, the end-of-turn token
and end-of-text fill up to the canvas length. The whole canvas is the "answer" of the LLaDA
SFT objective, fill included, so the model learns where an answer stops.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from r2sft.tasks.arith import Problem, iter_problems


@dataclass
class CanvasBatch:
    """A right-padded batch: prompt, then canvas, then padding (attention 0)."""

    input_ids: torch.Tensor  # (B, L) clean tokens
    attention_mask: torch.Tensor  # (B, L) 1 on prompt + canvas, 0 on padding
    answer_mask: torch.Tensor  # (B, L) bool, True on the canvas


def render_user_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The chat-rendered user turn plus the assistant header (generation prompt)."""
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_canvas(
    tokenizer: PreTrainedTokenizerBase, answers: list[str], gen_length: int
) -> list[list[int]]:
    """Token ids of ``answer + <|eot_id|> + <|endoftext|> fill``, each exactly ``gen_length``."""
    eot_id = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    canvases = []
    for answer, ids in zip(
        answers, tokenizer(answers, add_special_tokens=False).input_ids, strict=True
    ):
        ids = [*ids, eot_id]
        if len(ids) > gen_length:
            raise ValueError(
                f"answer of {len(ids)} tokens (end of turn included) does not fit the canvas of "
                f"{gen_length}: {answer!r}; raise gen_length or generate easier problems"
            )
        canvases.append(ids + [tokenizer.eos_token_id] * (gen_length - len(ids)))
    return canvases


def make_batch(
    tokenizer: PreTrainedTokenizerBase, problems: list[Problem], gen_length: int
) -> CanvasBatch:
    """Tokenise ``problems`` into one right-padded :class:`CanvasBatch`."""
    prompts = [render_user_prompt(tokenizer, p.question) for p in problems]
    prompt_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    canvases = encode_canvas(tokenizer, [p.answer for p in problems], gen_length)
    length = max(len(ids) for ids in prompt_ids) + gen_length
    input_ids = torch.full((len(problems), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(problems), length), dtype=torch.long)
    answer_mask = torch.zeros((len(problems), length), dtype=torch.bool)
    for row, (prompt, canvas) in enumerate(zip(prompt_ids, canvases, strict=True)):
        end = len(prompt) + gen_length
        input_ids[row, :end] = torch.tensor(prompt + canvas)
        attention_mask[row, :end] = 1
        answer_mask[row, len(prompt) : end] = True
    return CanvasBatch(input_ids, attention_mask, answer_mask)


def iter_batches(
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    gen_length: int,
    seed: int,
    pool_batches: int = 1,
) -> Iterator[CanvasBatch]:
    """Endless batches of fresh train-split problems, deterministic from ``seed``.

    With ``pool_batches > 1``, problems are drawn ``pool_batches`` batches at a time, sorted
    by prompt length and cut into batches that are yielded in a seeded random order: the
    rows of a batch then have similar prompt lengths, so little compute goes to padding
    (prompts range from about 40 to 80 tokens, two to four operations).
    """
    if batch_size < 1 or pool_batches < 1:
        raise ValueError(
            f"batch_size ({batch_size}) and pool_batches ({pool_batches}) must be >= 1"
        )
    problems = iter_problems(seed, "train")
    order = random.Random(f"embedded-batches-{seed}")
    while True:
        pool = [next(problems) for _ in range(batch_size * pool_batches)]
        if pool_batches > 1:
            prompts = [render_user_prompt(tokenizer, p.question) for p in pool]
            lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False).input_ids]
            by_length = sorted(range(len(pool)), key=lambda i: (lengths[i], i))
            pool = [pool[i] for i in by_length]
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        order.shuffle(chunks)
        for chunk in chunks:
            yield make_batch(tokenizer, chunk, gen_length)
