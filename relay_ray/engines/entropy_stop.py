"""R-Stitch's small-model stop rule evaluated inside vLLM's sampler, without logprobs.

An entropy rule that drops the token it fires on ("stop at the first token whose normalized
entropy exceeds tau; that token is not kept") needs no per-token logprobs leaving the engine:
the tier only has to learn *where* it fired. This logits processor computes the same signal
the tier computes from top-k logprobs (``engines.signals.normalized_entropy``, the same
function, on the top-k of the step's log-softmaxed logits), and where it fires it
forces a *sentinel* token that is also a stop token of the request: the engine ends the
request on it and the tier drops it, as it drops the uncertain token it replaces. The sentinel
is a token the model does not write (BOS by default); it is not masked elsewhere, so a model
that does write it is not changed: the tier reads the token as a fired rule and the other tier
writes that position instead (the same token, when both tiers serve one model).

Why: returning top-k logprobs costs vLLM about 18% per decoded token on this CPU (measured with
``python -m relay_ray.bench.engine_decode``), for every token the small tier writes; this costs
one batched top-k on the rows that carry the rule.

Per-request arguments travel in ``SamplingParams.extra_args[EXTRA_ARGS_KEY]`` (see
:func:`stop_args`); requests without them are untouched. A greedy row whose top token is one of
``eos_token_ids`` is not forced: the tier's own rule checks EOS before entropy, so the segment
ends with EOS there as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from relay_ray.engines.signals import normalized_entropy

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

EXTRA_ARGS_KEY = "relay_entropy_stop"
PROCESSOR_FQCN = f"{__name__}:EntropyStopProcessor"


def stop_args(threshold: float, min_prior_tokens: int, sentinel_id: int, top_k: int, vocab_size: int,
              eos_token_ids: tuple[int, ...], greedy: bool) -> dict:
    """The request's ``extra_args`` entry: fire at the first token, once the engine request has
    produced ``min_prior_tokens`` before it, whose normalized entropy (top-``top_k`` formula,
    ``log vocab_size``) exceeds ``threshold``."""
    return {EXTRA_ARGS_KEY: {"threshold": float(threshold), "min_prior_tokens": int(min_prior_tokens),
                             "sentinel": int(sentinel_id), "top_k": int(top_k), "vocab_size": int(vocab_size),
                             "eos": [int(i) for i in eos_token_ids], "greedy": bool(greedy)}}


def top_logprobs_rows(logits: torch.Tensor, top_k: int) -> tuple[list[list[float]], list[int]]:
    """Per row of ``logits``: its top-``top_k`` log-probabilities (descending) and its top token."""
    top = torch.topk(torch.log_softmax(logits, dim=-1), min(top_k, logits.shape[-1]), dim=-1)
    return top.values.tolist(), top.indices[:, 0].tolist()


@dataclass(frozen=True, slots=True)
class _RowRule:
    threshold: float
    min_prior_tokens: int
    sentinel: int
    top_k: int
    vocab_size: int
    eos: tuple[int, ...]
    greedy: bool
    output_token_ids: list[int]  # vLLM's running list of the request's output tokens


class EntropyStopProcessor(LogitsProcessor):
    """vLLM v1 logits processor; the tier engine loads it by :data:`PROCESSOR_FQCN`."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, _RowRule] = {}  # batch index -> its rule
        self._order: list[int] = []
        self._picked: torch.Tensor | None = None  # the batch indices of self._order

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        args = (sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if args is not None and not (0 <= args.get("sentinel", -1) < args.get("vocab_size", 0)):
            raise ValueError(f"{EXTRA_ARGS_KEY}: sentinel outside the vocabulary")

    def is_argmax_invariant(self) -> bool:
        return False  # it forces the sentinel

    @staticmethod
    def _new_row(params: SamplingParams, _prompt_ids: list[int] | None, output_ids: list[int]) -> _RowRule | None:
        args = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if args is None:
            return None
        return _RowRule(args["threshold"], args["min_prior_tokens"], args["sentinel"], args["top_k"],
                        args["vocab_size"], tuple(args["eos"]), args["greedy"], output_ids)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if process_dict_updates(self.rows, batch_update, self._new_row) or self._picked is None:
            self._order = sorted(self.rows)
            self._picked = torch.tensor(self._order, dtype=torch.long)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        rows = [self.rows[i] for i in self._order]
        # The same entropy as the tier computes from vLLM's top-k logprobs, by the same function.
        values, top1 = top_logprobs_rows(logits.index_select(0, self._picked.to(logits.device)),
                                         max(r.top_k for r in rows))
        for k, (index, rule) in enumerate(zip(self._order, rows)):
            fires = (len(rule.output_token_ids) >= rule.min_prior_tokens
                     and not (rule.greedy and top1[k] in rule.eos)
                     and normalized_entropy(values[k][:rule.top_k], rule.vocab_size) > rule.threshold)
            if fires:
                logits[index].fill_(-math.inf)
                logits[index, rule.sentinel] = 0.0
        return logits

def resolve_sentinel(tokenizer, configured: str | None, eos_token_ids: tuple[int, ...]) -> int | None:
    """The sentinel's id: ``configured`` (a token string), else the tokenizer's BOS, else UNK;
    None (the tier then returns logprobs instead) if none exists or it is an EOS token."""
    if configured:
        ids = tokenizer.convert_tokens_to_ids([configured])
        candidates = [ids[0]] if ids and ids[0] is not None and ids[0] != tokenizer.unk_token_id else []
        if not candidates:
            raise ValueError(f"entropy_sentinel_token {configured!r} is not a token of the tier's tokenizer")
    else:
        candidates = [tokenizer.bos_token_id, tokenizer.unk_token_id]
    return next((i for i in candidates if i is not None and i not in eos_token_ids), None)
