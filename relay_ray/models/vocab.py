"""The shared tokenizer of the trained demo models: a small byte-level BPE, digits one by one.

Every digit is its own token (optionally with a leading space: ``" 4"``), so a computed digit
is one prediction; words and the markup of the traces become single tokens. The chat
template and special tokens are those of :mod:`relay_ray.models.build`, so the trained
models serve exactly like the random ones (the template opens ``<think>``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from relay_ray.models.build import CHAT_TEMPLATE, MARKUP_TOKENS, SPECIAL_TOKENS

# A word with its leading space, one digit with its leading space, a run of punctuation, or
# whitespace; byte-level BPE then merges within these pieces only.
_PIECES = r" ?[A-Za-z]+| ?[0-9]|[^\sA-Za-z0-9]+|\s+"


def build_task_tokenizer(out_dir: Path, texts: Iterable[str], vocab_size: int = 320):
    """Train the tokenizer on ``texts``, save it (HF format) in ``out_dir`` and return it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast
