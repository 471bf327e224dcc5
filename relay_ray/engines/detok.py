"""Incremental detokenization of a segment that continues a token prefix.

The engine runs with ``detokenize=False`` (no per-step text or logprob-token decoding in
vLLM); the tier decodes only what it keeps. Each step decodes a short window
(prefix_offset..end) so the cost per token is constant, and text is held back while the
window ends in an incomplete UTF-8 sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

_CONTEXT_TOKENS = 6


class IncrementalDecoder:
    def __init__(self, tokenizer, context_ids: Sequence[int]) -> None:
        # The Rust tokenizer decodes ~100x faster than the transformers wrapper.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._decode_fn = backend.decode if backend is not None else tokenizer.decode
        self._ids = list(context_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        # A previous segment that ended inside a multi-byte character held those bytes
        # back; treat them as pending so the character is emitted whole, here, once complete.
        while self._read_offset > 0 and self._decode(self._ids[: self._read_offset]).endswith("\ufffd"):
            self._read_offset -= 1

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decode_fn(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes ("" while a character is partial)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text):]
        return ""

    def context_text(self) -> str:
        """Decoded text of the complete context (for word-boundary checks)."""
        return self._decode(self._ids[: self._read_offset])
