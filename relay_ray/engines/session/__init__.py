"""KV sessions: one relay request's whole KV cache kept hot on a tier between its jobs.

A plain segment job is a new engine request: vLLM's prefix cache gives back the whole KV
blocks of its prefix, and the partial last block plus everything the other tier wrote since
(the *delta*) is computed again. A *session* is instead one resumable engine request per
relay request on a tier replica (vLLM's streaming input: ``AsyncLLM.generate`` with an async
generator of ``StreamingInput``): every job appends its new tokens as one more input chunk to
the KV the session already holds, partial block included. Jobs that only feed tokens (the
controller's prefill-ahead, ``prefill_only``) append the other tier's tokens *while it is
still writing*, so that at the switch only the last few tokens and one decode step are left.

Engine semantics this module relies on (vLLM 0.32, ``v1/core/sched/scheduler.py``
``_handle_stopped_request`` and ``_update_request_as_session``; pinned by
``tests/unit/test_session.py``'s fake engine and by the exactness integration test):

- a chunk generates until its ``max_tokens`` (or EOS); then its *last sampled token is
  discarded* and the other generated tokens stay in the context; the next chunk's tokens are
  appended after them. So a job feeds back the last token it keeps as its next chunk's first;
- chunks added while one runs wait and run in order;
- a chunk cannot be stopped early: a stop rule that fires inside a chunk leaves tokens in the
  context that the relay does not keep. Chunks are therefore sized so that the rule cannot
  fire inside them (:func:`next_chunk`): a fixed-length segment is one chunk, the tokens
  before ``min_new_tokens`` are one chunk, then ``step_tokens`` chunks of one token each; the
  rest of a long segment runs as one chunk, and if the rule fires inside it the session is
  aborted (the next job reopens one from the prefix cache).

Correctness never depends on the bookkeeping being right: each job's full prefix is
compared with the session's context, and any mismatch (a dropped token, a resumed segment,
a lost session) reopens the session from the prefix cache, exactly like a plain job.

Sessions hold a model-runner slot and KV blocks that vLLM cannot preempt, so the pool
bounds them (count and tokens), evicts idle ones least recently used first, reaps those
idle for ``ttl_s`` (a controller that died never sends ``KvSession.END``), and returns
``None`` when it has no room: the job then runs plainly.

Modules: ``chunks`` (cutting a segment into chunks), ``engine_session`` (one engine
request), ``pool`` (a replica's sessions), ``jobs`` (generating and feeding jobs).

Engine-free: the engine is reached through the ``start_stream``/``make_input`` callables
that :class:`~relay_ray.engines.vllm_tier.VllmTierEngine` provides (outputs shaped like
vLLM's ``RequestOutput``).
"""

from relay_ray.engines.session.chunks import FINISH_STOP, Chunk, ChunkSize, SessionLost, extends, next_chunk
from relay_ray.engines.session.engine_session import EngineSession
from relay_ray.engines.session.jobs import InputFactory, PushOutputs, SessionOutcome, feed, generate
from relay_ray.engines.session.pool import MAX_ENDED_IDS, SessionLimits, SessionPool

__all__ = ["FINISH_STOP", "MAX_ENDED_IDS", "Chunk", "ChunkSize", "EngineSession", "InputFactory", "PushOutputs",
           "SessionLimits", "SessionLost", "SessionOutcome", "SessionPool", "extends", "feed", "generate",
           "next_chunk"]
