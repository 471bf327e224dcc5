"""Boundary types shared by every layer: tiers, stop rules, segment jobs and results.

Plain frozen dataclasses and enums with no dependencies, so policies and the controller
stay pure and the transports (Serve handles, gRPC) carry the same values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Markup the relay understands in model text (chat templates open the think block).
THINK_START = "<think>"
THINK_END = "</think>"
THINK_CLOSE_TEXT = "\n</think>"  # appended when the budget ends inside an open think block
CALL_OPEN = "<call>"  # RelayLLM: <call>n</call> asks the large model for n tokens
CALL_CLOSE = "</call>"


class Tier(enum.Enum):
    """Which model writes a segment."""

    LARGE = "large"
    SMALL = "small"

    @property
    def other(self) -> Tier:
        return Tier.SMALL if self is Tier.LARGE else Tier.LARGE


class Phase(enum.Enum):
    """Where the answer is: inside the ``<think>`` trace or after it."""

    REASONING = "reasoning"
    ANSWER = "answer"


class FinishReason(enum.IntEnum):
    """Why a segment (or a whole request) ended."""

    EOS = 1  # the model emitted its end-of-sequence token: ends the request
    LENGTH = 2  # the segment's max_new_tokens was reached
    STOP_STRING = 3  # a stop string matched
    STOP_TOKEN = 4  # a stop token id was emitted
    ENTROPY = 5  # the entropy rule fired
    ABORTED = 6  # cancelled by the caller
    BUDGET = 7  # request level: the request's max_new_tokens was reached
    MAX_SEGMENTS = 8  # request level: safety limit on the number of segments


class Commit(enum.Enum):
    """Whether the token that triggers a stop rule is kept in the output."""

    INCLUSIVE = "inclusive"  # keep it, then stop (RelayGen cues, sentence ends)
    EXCLUSIVE = "exclusive"  # drop it; the other tier writes that position (R-Stitch)


class HandoffMode(enum.Enum):
    """How a prefix crosses from one tier to the other."""

    TOKEN_IDS = "token_ids"  # both tiers share a tokenizer (same fingerprint)
    TEXT = "text"  # tokenizers differ: the receiving tier re-tokenizes the text


class KvSession(enum.Enum):
    """What a tier does with a request's KV cache around one job (``SegmentJob.kv_session``).

    vLLM's prefix cache keeps whole KV blocks only, so a plain job recomputes the partial
    last block of its prefix. A tier that keeps *sessions* (engines/session/) holds a
    request's whole KV, partial block included, between its jobs.
    """

    NONE = "none"  # plain: nothing is kept beyond the prefix cache's whole blocks
    KEEP = "keep"  # more jobs of this request follow on this tier: keep its KV hot, if the tier can
    END = "end"  # the request is over: release its session (the job does nothing else)


@dataclass(frozen=True, slots=True)
class EntropyRule:
    """Stop when the normalized entropy H/log V of a token crosses ``threshold``.

    ``above=True`` stops at the first token with H > threshold, ``above=False`` at the first
    with H < threshold.
    """

    threshold: float
    above: bool
    commit: Commit = Commit.INCLUSIVE


@dataclass(frozen=True, slots=True)
class StopRule:
    """When a tier must end a segment; evaluated inside the tier on every new token.

    Stop strings match the decoded text of the segment (a match may start in the text the
    segment continues, so a cue split across a handoff still counts); with ``EXCLUSIVE``
    commit the tokens overlapping the match are dropped. ``word_start`` requires a stop
    string that begins with a letter to start at a word boundary, so ``"now"`` does not
    fire inside ``"know"``. No rule is evaluated before ``min_new_tokens`` tokens exist;
    ``max_new_tokens`` always applies. ``retract_string`` is not a stop: it tells the tier that
    the policy may drop everything from an occurrence of it (RelayLLM's ``<call>``), so such
    text is not streamed before the segment ends.
    """

    max_new_tokens: int
    min_new_tokens: int = 0
    stop_strings: tuple[str, ...] = ()
    string_commit: Commit = Commit.INCLUSIVE
    word_start: bool = False
    stop_token_ids: tuple[int, ...] = ()
    entropy: EntropyRule | None = None
    retract_string: str = ""

    @property
    def can_stop_early(self) -> bool:
        """Whether a segment under this rule may end before ``max_new_tokens`` (EOS aside)."""
        return bool(self.stop_strings or self.stop_token_ids or self.entropy is not None)


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters of one request; ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: generate exactly max_new_tokens


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """Which per-token signals a segment must return (entropy rules imply top-k logprobs)."""

    logprob: bool = False
    entropy: bool = False
    margin: bool = False

    @property
    def any(self) -> bool:
        return self.logprob or self.entropy or self.margin


@dataclass(frozen=True, slots=True)
class SegmentJob:
    """Continue ``prefix`` under ``stop`` and report the requested signals.

    Exactly one of ``prefix_token_ids`` (token-id handoff) and ``prefix_text`` (text
    handoff) is set. ``request_id`` keys replica affinity; ``segment_index`` orders jobs.
    ``stream_interval_tokens > 0`` asks the tier for partial updates every that many tokens.
    ``stream_block_tokens > 0`` also asks for an update whenever the prefix plus the new
    tokens complete a block of that many tokens (prefill-ahead needs exactly those moments).
    ``prefill_only`` jobs only fill the tier's prefix cache with ``prefix`` (prefill-ahead);
    their result carries no tokens and does not count as generated work.
    ``resume_token_ids`` continue a segment that failed after producing them (migration): they
    follow the prefix, count as the segment's first tokens and are not streamed again.
    ``timeout_s > 0`` bounds the job: the tier aborts it after that long (the request deadline).
    ``kv_session`` asks the tier to keep (or release) the request's KV between its jobs
    (:class:`KvSession`); a tier that cannot runs the job plainly, with the same result.
    """

    request_id: str
    segment_index: int
    stop: StopRule
    sampling: Sampling = Sampling()
    prefix_token_ids: tuple[int, ...] = ()
    prefix_text: str | None = None
    signals: SignalRequest = SignalRequest()
    stream_interval_tokens: int = 0
    stream_block_tokens: int = 0
    prefill_only: bool = False
    resume_token_ids: tuple[int, ...] = ()
    timeout_s: float = 0.0
    kv_session: KvSession = KvSession.NONE


@dataclass(frozen=True, slots=True)
class TokenSignals:
    """Per-token signals; each list is empty unless requested, else one value per token."""

    logprob: tuple[float, ...] = ()
    entropy: tuple[float, ...] = ()
    margin: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class SegmentTiming:
    """Where a segment's time went, in milliseconds, measured inside the tier.

    ``prefill_ms`` is the time to the first new token less ``queue_ms``. Where the engine
    reports its timestamps, it splits into ``engine_in_ms`` (the tier's call until the engine
    core queues the request), ``engine_step_ms`` (scheduled until the first token is emitted)
    and ``engine_out_ms`` (emitted until the tier has it); all three are 0 otherwise.
    """

    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    engine_in_ms: float = 0.0
    engine_step_ms: float = 0.0
    engine_out_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SegmentResult:
    """What a tier returns for a :class:`SegmentJob`.

    ``token_ids`` and ``text`` are the kept tokens only; ``text_offsets[i]`` is the end of
    token ``i``'s text in ``text``. ``num_dropped_tokens`` were generated but not kept
    (exclusive commit). ``num_prompt_tokens``/``num_cached_tokens`` describe the prefix.
    """

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    text_offsets: tuple[int, ...] = ()
    matched_stop: str = ""
    num_dropped_tokens: int = 0
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    signals: TokenSignals = TokenSignals()
    timing: SegmentTiming = SegmentTiming()
    replica_id: str = ""
    endpoint: str = ""  # host:port where that replica serves SegmentService directly, if it does


@dataclass(frozen=True, slots=True)
class SegmentDelta:
    """A partial update of a running segment: new tokens and their text."""

    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True, slots=True)
class TierInfo:
    """What a tier reports about itself at start-up."""

    tier: Tier
    model: str
    tokenizer_fingerprint: str
    vocab_size: int
    max_model_len: int
    eos_token_ids: tuple[int, ...]
    think_close_token_ids: tuple[int, ...] = ()  # tokens of "\n</think>"
    replica_id: str = ""
    block_size: int = 0  # KV block size in tokens (prefix-cache granularity); 0 if unknown


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class PromptInput:
    """A prompt as plain text, as chat messages (rendered with the large tier's template) or
    as token ids of the large tier's tokenizer (used as they are).

    ``special_tokens`` says what the tier does with control-token strings (its tokenizer's
    special and added tokens, e.g. ``<|im_start|>``, ``<think>``) inside chat message content:
    ``reject`` the prompt, ``escape`` them (tokenized as plain text) or ``allow`` them. Plain
    text prompts are tokenized as given (the caller writes the whole context).
    """

    text: str = ""
    messages: tuple[ChatMessage, ...] = ()
    special_tokens: str = "reject"
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    """A prompt rendered and tokenized by the large tier."""

    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """One client request. ``policy_params`` are the policy's typed parameters as a dict."""

    prompt: PromptInput
    policy: str
    policy_params: dict = field(default_factory=dict)
    sampling: Sampling = Sampling()
    max_new_tokens: int = 256
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One finished segment of a request, for responses, streams and telemetry."""

    index: int
    tier: Tier
    text: str
    num_tokens: int
    finish_reason: FinishReason
    matched_stop: str = ""
    num_dropped_tokens: int = 0
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    timing: SegmentTiming = SegmentTiming()
    replica_id: str = ""
    handoff_ms: float = 0.0  # controller_ms + transport_ms: the switch's cost outside the tiers
    controller_ms: float = 0.0  # controller time from the previous result to this job's dispatch
    transport_ms: float = 0.0  # time around the tier call not spent in the tier


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Request-level statistics."""

    tokens_by_tier: dict[Tier, int]
    generated_by_tier: dict[Tier, int]  # includes dropped tokens (they cost compute)
    num_switches: int
    num_segments: int
    latency_ms: float
    finish_reason: FinishReason
    handoff_mode: HandoffMode
    num_migrations: int = 0  # segments re-run on another replica after a tier fault

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens_by_tier.values())

    @property
    def large_token_share(self) -> float:
        total = self.num_tokens
        return self.tokens_by_tier.get(Tier.LARGE, 0) / total if total else 0.0
