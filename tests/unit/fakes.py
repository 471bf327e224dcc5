"""A scripted tier for unit tests of controller and policy logic (never for measurements).

``ScriptedTier`` continues a fixed document: the token at output position p is
``doc[p]`` whatever the tier, so relays over two ScriptedTiers with the same document
must reproduce it exactly. Each token's text is its vocabulary word; entropies come from
a per-position list. It runs the real :class:`SegmentRun` (stop rule, deltas, result).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from relay_ray.engines.segment_run import SegmentRun, TokenOutput
from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, Tier, TierInfo

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
        run = SegmentRun(job, prefix, _WordDecoder(self.vocab), max_model_len=self.max_model_len,
                         eos_token_ids=(EOS,))
        pos = len(run.engine_prefix_ids) - self.prompt_len
        while not run.done and pos < len(self.doc) and run.stopper.num_tokens - run.num_resumed < run.max_engine_tokens:
            entropy = self.entropies[pos] if pos < len(self.entropies) else 0.0
            if run.push(TokenOutput(self.doc[pos], entropy=entropy)):
                break
            pos += 1
            delta = run.take_delta()
            if delta is not None:
                yield delta
        # LENGTH when the document ran out
        yield run.result(replica_id=f"{self.tier.value}-0")


class _WordDecoder:
    """Each token decodes to its vocabulary word (EOS to nothing)."""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = vocab

    def push(self, token_id: int) -> str:
        return self.vocab[token_id] if token_id != EOS else ""

    def context_text(self) -> str:
        return ""
