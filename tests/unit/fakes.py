"""A scripted tier for unit tests of controller and policy logic (never for measurements).

``ScriptedTier`` continues a fixed document: the token at output position p is
``doc[p]`` whatever the tier, so relays over two ScriptedTiers with the same document
must reproduce it exactly. Each token's text is its vocabulary word; entropies come from
a per-position list. It runs the real :class:`SegmentStopper`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from relay_ray.engines.stopping import SegmentStopper, delta_due
from relay_ray.types import (
    FinishReason, PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, Tier, TierInfo,
    TokenSignals,
)

EOS = 0


class ScriptedTier:
    def __init__(self, tier: Tier, vocab: Sequence[str], doc: Sequence[int], entropies: Sequence[float] = (),
                 fingerprint: str = "shared", max_model_len: int = 4096, prompt: str = "Q: ",
                 block_size: int = 0) -> None:
        self.tier, self.vocab, self.doc = tier, list(vocab), list(doc)
        self.prompt_len = len(self.encode(prompt))
        self.entropies = list(entropies)
        self.fingerprint, self.max_model_len = fingerprint, max_model_len
        self.block_size = block_size
        self.jobs: list[SegmentJob] = []

    def encode(self, text: str) -> list[int]:
        ids, rest = [], text
        while rest:  # greedy longest match over the vocabulary
            best = max((i for i, w in enumerate(self.vocab) if w and rest.startswith(w)),
                       key=lambda i: len(self.vocab[i]), default=None)
            if best is None:
                raise ValueError(f"cannot tokenize {rest[:10]!r}")
            ids.append(best)
            rest = rest[len(self.vocab[best]):]
        return ids

    async def describe(self) -> TierInfo:
        return TierInfo(self.tier, "scripted", self.fingerprint, len(self.vocab), self.max_model_len, (EOS,),
                        tuple(self.encode("\n</think>")) if "</think>" in self.vocab else (),
                        block_size=self.block_size)

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        text = prompt.text or "".join(f"{m.role}: {m.content}\n" for m in prompt.messages)
        return PreparedPrompt(tuple(self.encode(text)), text)

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        self.jobs.append(job)
        prefix = self.encode(job.prefix_text) if job.prefix_text is not None else list(job.prefix_token_ids)
        if job.prefill_only:
            yield SegmentResult(token_ids=(), text="", finish_reason=FinishReason.LENGTH,
                                num_prompt_tokens=len(prefix))
            return
        start = len(prefix) - self.prompt_len
        stopper = SegmentStopper(job.stop, eos_token_ids=(EOS,))
        entropies, decision, finish = [], None, FinishReason.LENGTH  # LENGTH: the document ran out
        emitted = 0
        for pos in range(start, len(self.doc)):
            token = self.doc[pos]
            entropy = self.entropies[pos] if pos < len(self.entropies) else 0.0
            entropies.append(entropy)
            decision = stopper.push(token, self.vocab[token] if token != EOS else "", entropy)
            if decision is not None:
                break
            if delta_due(job, len(prefix), emitted, stopper.num_tokens):
                yield SegmentDelta(tuple(stopper.token_ids[emitted:]), "")
                emitted = stopper.num_tokens
        kept = decision.num_kept_tokens if decision else stopper.num_tokens
        yield SegmentResult(
            token_ids=tuple(stopper.token_ids[:kept]), text=stopper.kept_text(kept),
            finish_reason=decision.finish_reason if decision else finish,
            text_offsets=tuple(stopper.text_offsets[:kept]), matched_stop=decision.matched_stop if decision else "",
            num_dropped_tokens=stopper.num_tokens - kept, num_prompt_tokens=len(prefix),
            signals=TokenSignals(entropy=tuple(entropies[:kept])), replica_id=f"{self.tier.value}-0",
        )
