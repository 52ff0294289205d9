"""The embedded model's tokenizer: a small byte-level BPE with LLaDA-style special tokens.

Trained with the ``tokenizers`` library on generated arithmetic problems and saved as a
``PreTrainedTokenizerFast`` folder, so ``AutoTokenizer.from_pretrained(path)`` loads it
offline. Byte-level pre-tokenisation makes decoding an exact round trip of any text.

Every number of the task (0..MAX_VALUE) is ONE token, the same token wherever it stands:
a space before a digit is split off as its own token, so ``" 16"`` in a question or after
``=`` and ``"16"`` at the start of the next equation line are both ``16``. Copying a
number (question -> equation, result -> next line, last result -> ``#### N``) is then an
identity map; with separate ``" 16"`` / ``"16"`` tokens a ~1M-parameter model must also
learn that the two spellings are one number. Every equation line
``a op b = c`` is seven tokens, so line k of an answer always starts at the same canvas
offset (with digit-level numbers the lines drift with the digit counts, and a tiny model
trained for 2000 steps never learned to copy: 0% accuracy). Numbers outside the task's
range still tokenise (as several pieces) and round-trip exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from r2sft.tasks.arith import MAX_VALUE, generate_problem

MASK_TOKEN = "<|mdm_mask|>"
EOS_TOKEN = "<|endoftext|>"  # end of text: the canvas fill after the answer, also padding
EOT_TOKEN = "<|eot_id|>"  # end of a chat turn
BOS_TOKEN = "<|startoftext|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
# Order fixes the ids 0..5, so the model config can be written before training.
SPECIAL_TOKENS = [
    EOS_TOKEN,
    BOS_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
    MASK_TOKEN,
]
DEFAULT_VOCAB_SIZE = 1024

# LLaDA-8B-Instruct's chat format: BOS, then per message a header, two newlines, the
# trimmed content and an end-of-turn token; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


def _training_texts(num_problems: int, seed: int) -> Iterator[str]:
    rng = random.Random(f"tokenizer-{seed}")
    for _ in range(num_problems):
        problem = generate_problem(rng)
        yield problem.question
        yield problem.answer
        yield "user\nassistant"  # role names of the chat template, frequent enough to merge
    # Every task number, so each becomes one token (see module doc).
    numbers = [str(n) for n in range(MAX_VALUE + 1)]
    for _ in range(20):
        yield " ".join(numbers)
        yield "\n".join(numbers)


def build_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE, num_problems: int = 5000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on generated problems and wrap it for transformers."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # A space before a digit becomes its own piece: numbers never carry a space.
            pre_tokenizers.Split(Regex(r" (?=\d)"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_texts(num_problems, seed), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=[START_HEADER_TOKEN, END_HEADER_TOKEN, EOT_TOKEN],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """Save in the Hugging Face format (``tokenizer.json`` + config, chat template included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
