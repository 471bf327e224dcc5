"""Typed configuration: one :class:`RelayConfig` describes a whole relay deployment.

Validation only; no I/O. Paths are resolved by :meth:`RelayConfig.resolve_paths`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay_ray.autoscale.policy import TierScalingParams
from relay_ray.controller.limits import InputLimits
from relay_ray.policies import REGISTRY
from relay_ray.telemetry.tracing import TracingConfig
from relay_ray.types import Tier


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpeculativeConfig(_Strict):
    """vLLM speculative decoding inside one tier (a peer of relaying, not part of it)."""

    method: Literal["draft", "ngram"] = Field(..., description="draft model or n-gram prompt lookup")
    model: str | None = Field(None, description="draft model folder (method 'draft'); same tokenizer")
    num_speculative_tokens: int = Field(4, ge=1, le=16, description="tokens proposed per step")
    prompt_lookup_max: int = Field(4, ge=1, le=16, description="ngram: longest n-gram matched")
    prompt_lookup_min: int = Field(2, ge=1, le=16, description="ngram: shortest n-gram matched")

    @model_validator(mode="after")
    def _check(self) -> SpeculativeConfig:
        if self.method == "draft" and not self.model:
            raise ValueError("speculative method 'draft' needs a draft model")
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError("prompt_lookup_min must be <= prompt_lookup_max")
        return self

    def engine_config(self) -> dict:
        """The ``speculative_config`` dict vLLM's engine arguments take."""
        if self.method == "ngram":
            return {"method": "ngram", "num_speculative_tokens": self.num_speculative_tokens,
                    "prompt_lookup_max": self.prompt_lookup_max, "prompt_lookup_min": self.prompt_lookup_min}
        return {"model": self.model, "num_speculative_tokens": self.num_speculative_tokens}


class KvSessionConfig(_Strict):
    """KV sessions of a tier (engines/session/): a relay request's whole KV cache, partial
    last block included, kept in one resumable vLLM request between the request's jobs, so a
    handoff computes only the tokens the tier has not seen (and prefill-ahead can feed those
    while the other tier writes). Used for jobs that ask for it (the controller's
    ``kv_session_tiers``); jobs the pool has no room for run plainly."""

    enabled: bool = Field(False, description="keep sessions for jobs that ask (KvSession.KEEP); off by default: "
                          "measured slower for rstitch and relaygen (docs/benchmarks.md, 'Item 3: KV sessions'), and "
                          "a tier that keeps them runs extra warm-up jobs at start")
    step_tokens: int = Field(
        4, ge=0, le=4096, description="tokens of a segment whose stop rule can end it early that run one engine "
        "step per input chunk (an early stop inside a chunk loses the session); the rest run as one chunk")
    max_sessions: int | None = Field(
        None, ge=1, description="sessions per replica (each holds a vLLM slot; default: max_num_seqs // 2)")
    max_kv_share: float = Field(0.5, gt=0, le=0.9, description="share of the KV cache the sessions' tokens may "
                                "hold together (vLLM cannot preempt a paused session's blocks)")
    idle_ttl_s: float = Field(60.0, gt=0, le=3600, description="an idle session is closed after this long "
                              "(its controller normally ends it with the request)")


class TierConfig(_Strict):
    """One tier: a vLLM engine per replica, and how Serve places the replicas."""

    model: str = Field(..., description="HF model folder or hub name (hub names only on clusters)")
    tokenizer: str | None = Field(None, description="tokenizer folder; defaults to the model's")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(2048, ge=16, le=1_048_576, description="context length in tokens")
    block_size: int = Field(32, ge=16, le=256, description="KV block size; multiple of 32 on CPU")
    enforce_eager: bool = Field(True, description="skip torch.compile / CUDA graphs (fast start)")
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    kv_cache_space_gib: int | None = Field(None, ge=1, description="CPU: VLLM_CPU_KVCACHE_SPACE (whole GiB)")
    kv_cache_memory_mib: int | None = Field(
        None, ge=16, description="KV cache size in MiB (vLLM kv_cache_memory_bytes; CPU or GPU); finer than "
        "kv_cache_space_gib, which it replaces")
    cpu_threads_bind: str | None = Field(None, description="CPU: VLLM_CPU_OMP_THREADS_BIND, e.g. '0'")
    engine_niceness: int = Field(
        0, ge=0, le=19, description="CPU: niceness of the engine processes, so that Serve's proxy and the "
        "controllers stay responsive when the engines keep every core busy (e.g. 5 on small machines)")
    engine_poll_sleep_us: int = Field(
        0, ge=0, le=10_000, description="CPU: while vLLM's engine core and worker process wait for each other, "
        "sleep this many microseconds between polls instead of busy-looping (0: vLLM's busy loop, which keeps a "
        "core spinning for a second after every step; 30 frees that CPU, but measured no faster at c=1 and 0.88x at c=16 "
        "on 2 cores: docs/benchmarks.md, 'Item 3: rows in turn')")
    engine_poll_spin_us: int = Field(
        0, ge=0, le=1_000_000, description="CPU, with engine_poll_sleep_us: keep vLLM's busy loop this many "
        "microseconds after each message before sleeping between polls, so that steps which follow each other "
        "closely hand over at once (0: sleep from the first poll)")
    cpu_threads_bind_by_replica: tuple[str, ...] = Field(
        (), description="CPU: one binding per replica rank (rank r uses entry r mod n); overrides cpu_threads_bind")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="GPU memory fraction")
    max_num_seqs: int = Field(64, ge=1, le=4096, description="sequences batched per engine step")
    max_logprobs: int = Field(20, ge=1, le=1024, description="top-k logprobs for entropy signals")
    first_chunk_tokens: int = Field(
        0, ge=0, le=1024, description="for segments an entropy rule may end: ask the engine for at most this many "
        "tokens first, and continue in a new engine request only if the rule has not fired. A request the engine "
        "ends itself runs no further step, while one the tier aborts has usually started its next decode step, "
        "which the request's next handoff then waits for. Set 1 on the large tier for R-Stitch (its large segments "
        "are mostly one token: it takes the wait to enter the engine from ~29 to ~2 ms, docs/benchmarks.md); 0: off")
    entropy_in_engine: bool = Field(
        True, description="evaluate rules that drop the token they fire on (R-Stitch's small segments) inside "
        "the engine's sampler (engines/entropy_stop.py) instead of returning top-k logprobs for every token "
        "(about 18% of a small model's decode step on CPU); off without a sentinel token or with speculative "
        "decoding")
    entropy_sentinel_token: str | None = Field(
        None, description="the token the engine writes where such a rule fires (the tier drops it): one the "
        "model does not write (if it does, the other tier writes that position). Default: the tokenizer's "
        "BOS, else UNK; set one for tokenizers without either (Qwen3: '<|fim_pad|>')")
    seed: int = Field(0, ge=0)
    num_replicas: int = Field(1, ge=1, le=1024)
    num_cpus: float = Field(0.0, ge=0, description="Ray CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions pack replicas on a GPU")
    resources: dict[str, float] = Field(
        {}, description="custom Ray resources per replica, e.g. a node-type marker {'relay_small': 1} that only "
        "that node type offers (with tensor parallelism they join the first bundle)")
    max_ongoing_requests: int = Field(64, ge=1, description="segment jobs in flight per replica (Serve handle)")
    max_queued_requests: int = Field(-1, ge=-1, description="segment jobs queued per handle beyond that "
                                     "(-1: unbounded; the controller's admission limit bounds the load)")
    max_direct_segments: int | None = Field(
        None, ge=1, description="segment jobs in flight per replica over its direct gRPC port; more are refused "
        "with RESOURCE_EXHAUSTED and go through Serve instead (default: max_ongoing_requests)")
    request_router: Literal["affinity", "balanced"] = Field(
        "affinity", description="affinity: a request's segments stay on one replica (prefix cache); "
        "balanced: Serve's default power-of-two-choices (single-segment workloads)")
    autoscaling: TierScalingParams | None = Field(
        None, description="scale this tier on its own demand (replaces num_replicas)")
    speculative: SpeculativeConfig | None = Field(None, description="vLLM speculative decoding in this tier")
    kv_sessions: KvSessionConfig = Field(KvSessionConfig(), description="keep requests' KV hot between jobs")
    migration_limit: int = Field(
        3, ge=0, le=100, description="times one segment is re-run on a healthy replica of this tier after "
        "an infrastructure fault (replica or engine died, unreachable, stalled) before the request fails")
    input_limits: InputLimits = Field(InputLimits(), description="bounds the replica checks segment jobs against "
                                      "(the builder copies the controller's)")

    @model_validator(mode="after")
    def _check(self) -> TierConfig:
        if self.tensor_parallel_size > 1 and 0 < self.num_gpus < 1:
            raise ValueError("tensor_parallel_size > 1 needs whole GPUs (num_gpus >= 1)")
        for name, amount in self.resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or amount <= 0:
                raise ValueError(f"resources[{name!r}]: custom resources only, amounts > 0 (use num_cpus/num_gpus)")
        if self.kv_cache_space_gib is not None and self.kv_cache_memory_mib is not None:
            raise ValueError("set kv_cache_memory_mib or kv_cache_space_gib, not both")
        return self

    @property
    def on_gpu(self) -> bool:
        return self.num_gpus > 0

    def for_replica(self, rank: int) -> TierConfig:
        """This config as replica ``rank`` runs it (its own CPU binding, if any)."""
        if not self.cpu_threads_bind_by_replica:
            return self
        binds = self.cpu_threads_bind_by_replica
        return self.model_copy(update={"cpu_threads_bind": binds[rank % len(binds)]})


class ControllerConfig(_Strict):
    num_replicas: int = Field(1, ge=1, le=1024)
    num_cpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(256, ge=1, description="requests relayed at once per controller replica")
    max_queued_requests: int = Field(
        512, ge=-1, description="requests waiting for a controller replica beyond max_ongoing_requests; more are "
        "answered RESOURCE_EXHAUSTED at once (-1: unbounded)")
    max_new_tokens_limit: int = Field(4096, ge=1, description="largest max_new_tokens a request may ask")
    stream_interval_tokens: int = Field(8, ge=1, description="tokens per streamed text delta")
    default_policy: str = Field("relaygen", description="policy used when a request names none")
    transport: Literal["direct", "handle", "grpc"] = Field(
        "direct", description="how the controller reaches tiers: 'direct' routes a request's first segment "
        "per tier through Serve, the rest straight to that replica's gRPC endpoint (fastest, measured); "
        "'handle' always through Serve; 'grpc' to fixed SegmentService endpoints outside Serve")
    prefill_ahead: bool = Field(
        False, description="warm the idle tier's prefix cache while the other generates (more cache hits; "
        "on a 2-core CPU it slowed the generating tier, see docs/benchmarks.md)")
    prefill_ahead_tiers: tuple[Tier, ...] = Field(
        (Tier.LARGE,), min_length=1, description="tiers prefill-ahead warms (the large tier's delta prefill is "
        "the expensive one)")
    prefill_ahead_hide_probability: float = Field(
        0.5, ge=0, le=1, description="send a warm-up only if the generating segment is at least this likely to "
        "outlast it, judged by how long the policy's recent segments on that tier ran (a warm-up still running at "
        "the switch delays it: the engine takes new requests only between steps); 0: whenever the segment's "
        "token budget can hide it")
    kv_session_tiers: tuple[Tier, ...] = Field(
        (), description="tiers asked to keep each relay request's whole KV cache (partial block included) between "
        "its segments, in a KV session (the tier's kv_sessions); with prefill_ahead on such a tier, the other "
        "tier's tokens are fed to it while they are written (every feed_interval_tokens), so a handoff computes "
        "only the last few (docs/benchmarks.md, handoff ablation)")
    feed_interval_tokens: int = Field(4, ge=1, le=1024, description="tokens between prefill-ahead feeds of a KV "
                                      "session tier (one feed in flight at a time: later ones carry all new tokens)")
    migration_backoff_s: float = Field(0.25, gt=0, le=60, description="wait before re-running a failed "
                                       "segment; doubles with each further failure (max 4 s)")
    segment_stall_timeout_s: float = Field(120.0, gt=0, le=3600, description="a segment stream silent for this "
                                           "long counts as a dead replica (its segment is re-run elsewhere)")
    input_limits: InputLimits = Field(InputLimits(), description="bounds on every client input")
    tier_secret_env: str | None = Field(
        None, description="grpc transport: environment variable holding the secret the standalone tier servers "
        "expect (Serve-deployed tiers get the application's secret automatically)")
    large_endpoints: tuple[str, ...] = Field((), description="grpc transport: host:port of large tiers")
    small_endpoints: tuple[str, ...] = Field((), description="grpc transport: host:port of small tiers")

    @model_validator(mode="after")
    def _check(self) -> ControllerConfig:
        if self.default_policy not in REGISTRY:
            raise ValueError(f"default_policy {self.default_policy!r} is not one of {sorted(REGISTRY)}")
        if self.transport == "grpc" and not (self.large_endpoints and self.small_endpoints):
            raise ValueError("transport 'grpc' needs large_endpoints and small_endpoints")
        return self


class AuthConfig(_Strict):
    """Client authentication: where the valid bearer tokens are (never the tokens themselves)."""

    tokens_file: str | None = Field(None, description="file with one token per line (re-read when it changes)")
    tokens_env: str | None = Field(None, description="environment variable with comma-separated tokens")

    @property
    def enabled(self) -> bool:
        return bool(self.tokens_file or self.tokens_env)


class RelayConfig(_Strict):
    """A relay deployment: two tiers and the controller in front of them."""

    name: str = Field("relay", description="Serve application name")
    route_prefix: str = Field("/", description="Serve route prefix (gRPC needs one)")
    large: TierConfig
    small: TierConfig
    controller: ControllerConfig = ControllerConfig()
    tracing: TracingConfig = Field(TracingConfig(), description="OpenTelemetry exporter (set before Ray starts)")
    auth: AuthConfig = Field(AuthConfig(), description="client authentication (off unless a token source is named)")

    def resolve_paths(self, base_dir: Path) -> RelayConfig:
        """Make relative local model/tokenizer paths absolute against ``base_dir``."""

        def fix(tier: TierConfig) -> TierConfig:
            updates = {}
            for key in ("model", "tokenizer"):
                value = getattr(tier, key)
                if value and not Path(value).is_absolute() and (base_dir / value).exists():
                    updates[key] = str((base_dir / value).resolve())
            spec = tier.speculative
            if spec and spec.model and not Path(spec.model).is_absolute() and (base_dir / spec.model).exists():
                updates["speculative"] = spec.model_copy(update={"model": str((base_dir / spec.model).resolve())})
            return tier.model_copy(update=updates)

        return self.model_copy(update={"large": fix(self.large), "small": fix(self.small)})

    @model_validator(mode="after")
    def _check(self) -> RelayConfig:
        for tier in self.controller.kv_session_tiers:
            if not getattr(self, tier.value).kv_sessions.enabled:
                raise ValueError(f"controller.kv_session_tiers names the {tier.value} tier, whose sessions are off: "
                                 f"set {tier.value}.kv_sessions.enabled: true")
        return self
