"""The tokenizers of the project's models: byte-level BPE with one chat template and markup.

Two flavours share :func:`train_tokenizer`:

- the random test/bench models (:mod:`relay_ray.models.build`): GPT-2 style byte-level
  pieces over the embedded corpus;
- the trained demo models (:func:`build_task_tokenizer`): every digit is its own token
  (optionally with a leading space: ``" 4"``), so a computed digit is one prediction;
  words and the markup of the traces become single tokens.

Both have the same special tokens and chat template (which opens ``<think>``), and the
markup of :mod:`relay_ray.types` as single, visible tokens, so every model serves alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from relay_ray.types import CALL_CLOSE, CALL_OPEN, THINK_END, THINK_START

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n" + THINK_START + "\n{% endif %}"
)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
# Shown in decoded text (special=False) because policies match on them.
MARKUP_TOKENS = (THINK_START, THINK_END, CALL_OPEN, CALL_CLOSE)

# A word with its leading space, one digit with its leading space, a run of punctuation, or
# whitespace; byte-level BPE then merges within these pieces only.
TASK_PIECES = r" ?[A-Za-z]+| ?[0-9]|[^\sA-Za-z0-9]+|\s+"


def train_tokenizer(texts: Iterable[str], vocab_size: int, pieces: str | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``.

    ``pieces``: a regex splitting text into the pieces BPE merges within (``None``: the
    GPT-2 byte-level split).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if pieces is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pieces), behavior="isolated"),
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
    return fast


def build_task_tokenizer(out_dir: Path, texts: Iterable[str], vocab_size: int = 320):
    """Train the task tokenizer on ``texts``, save it (HF format) in ``out_dir`` and return it."""
    fast = train_tokenizer(texts, vocab_size, TASK_PIECES)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast
