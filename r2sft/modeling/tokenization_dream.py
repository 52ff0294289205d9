"""Dream's tokenizer without remote code.

The official Dream checkpoints ship a slow ``tokenization_dream.DreamTokenizer`` (named in
``tokenizer_config.json``, with an ``auto_map`` and no ``tokenizer.json``), so
``AutoTokenizer`` wants ``trust_remote_code``. That class is Qwen2's byte-level BPE tokenizer
under another name (same pre-tokenisation regex, NFC normalisation, special-token handling
and decoding defaults). r2sft registers transformers' own fast Qwen2 tokenizer for
``DreamConfig`` as ``DreamTokenizerFast``: ``AutoTokenizer`` looks up the official name
``DreamTokenizer``, then ``DreamTokenizerFast``, finds this class and builds it from
``vocab.json`` / ``merges.txt`` (transformers 4.x converts them through its slow Qwen2
tokenizer), offline and without remote code. No slow class is registered: 4.x converts slow
tokenizers to fast ones by class name, and only Qwen2's name is known to it.
"""

from __future__ import annotations

from transformers import Qwen2TokenizerFast


class DreamTokenizerFast(Qwen2TokenizerFast):
    """The official ``DreamTokenizer``, as transformers' fast Qwen2 tokenizer."""
