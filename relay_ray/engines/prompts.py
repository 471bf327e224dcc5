"""What a tier does with a prompt before the engine sees it: control-token strings in chat
content, the model name it reveals, the tokenizer fingerprint that decides the handoff mode.
Engine-free (tokenizers are passed in)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from relay_ray.errors import RelayInputError


def tokenizer_fingerprint(tokenizer) -> str:
    """Identical for tokenizers that map every string to the same ids."""
    payload = json.dumps(
        {"vocab": tokenizer.get_vocab(), "special": sorted(map(str, tokenizer.all_special_tokens))},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_display_name(model: str) -> str:
    """What a tier tells callers about its model: a hub name as is, a local folder's name only
    (no file-system paths leave the replica)."""
    path = Path(model)
    return path.name if path.is_absolute() or path.exists() else model


ESCAPE = "\u200b"  # zero-width space: breaks a control-token string so it tokenizes as text


def guard_control_tokens(content: str, controls: tuple[str, ...], mode: str, index: int) -> str:
    """``content`` of chat message ``index`` under the special-token ``mode`` (PromptInput)."""
    if mode == "allow":
        return content
    for token in controls:
        if token and token in content:
            if mode == "reject":
                raise RelayInputError(f"prompt.messages[{index}].content",
                                      f"contains the control token {token!r}; remove it or ask the operator for "
                                      "special_tokens 'escape'")
            content = content.replace(token, token[:1] + ESCAPE + token[1:])
    return content
