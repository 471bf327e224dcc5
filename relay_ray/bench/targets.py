"""The deployments a bench run measures, derived from one relay config (a model pair).

- ``relay``: the config as given (large tier on one core, small tier on the other);
  large-only, small-only and the fixed-ratio relay patterns run here.
- ``large tp2`` and ``large x2``: large-only vLLM on the same two cores, tensor parallel
  over both, or two replicas of one core each behind Serve's load-balancing router; the
  throughput comparison takes the faster of the two at each concurrency.
- ``large x2 + spec``: the same with vLLM speculative decoding inside each replica, the
  small model as the draft.
- ``relay + spec``: both at once: the relay, its large tier decoding speculatively.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay_ray.bench.scenarios import LARGE_ONLY, SMALL_ONLY, Scenario, relay_matrix
from relay_ray.config import RelayConfig, SpeculativeConfig

APP_NAME = "relay"


@dataclass(frozen=True)
class Target:
    name: str
    config: RelayConfig
    scenarios: list[Scenario] = field(default_factory=list)
    placement: str = ""

    @property
    def is_relay(self) -> bool:
        return any(s.is_relay for s in self.scenarios)


def _two_cores(config: RelayConfig) -> tuple[str, str]:
    return config.large.cpu_threads_bind or "0", config.small.cpu_threads_bind or "1"


def targets_for(pair: str, config: RelayConfig, peers: bool = True, speculative: bool = True,
                speculative_tokens: int = 4) -> list[Target]:
    cores = _two_cores(config)
    targets = [Target(pair, config, [LARGE_ONLY, SMALL_ONLY, *relay_matrix()],
                      f"relay: large on core {cores[0]}, small on core {cores[1]}")]
    if not peers:
        return targets
    x2 = config.model_copy(update={"large": config.large.model_copy(
        update={"num_replicas": 2, "cpu_threads_bind_by_replica": cores, "request_router": "balanced"})})
    tp2 = config.model_copy(update={"large": config.large.model_copy(
        update={"tensor_parallel_size": 2, "cpu_threads_bind": f"{cores[0]}|{cores[1]}"})})
    targets.append(Target(f"{pair} large tp2", tp2, [LARGE_ONLY],
                          f"large-only: 1 replica, tensor parallel over cores {cores[0]} and {cores[1]}"))
    targets.append(Target(f"{pair} large x2", x2, [LARGE_ONLY],
                          f"large-only: 2 replicas (one core each: {cores[0]}, {cores[1]}), balanced routing"))
    if speculative:
        draft = SpeculativeConfig(method="draft", model=config.small.model,
                                  num_speculative_tokens=speculative_tokens)
        spec = x2.model_copy(update={"large": x2.large.model_copy(update={"speculative": draft})})
        targets.append(Target(f"{pair} large x2 + spec", spec, [LARGE_ONLY],
                              f"large-only + draft-model speculative decoding (k={speculative_tokens}), "
                              f"2 replicas, cores {cores[0]} and {cores[1]}"))
        both = config.model_copy(update={"large": config.large.model_copy(update={"speculative": draft})})
        targets.append(Target(f"{pair} relay + spec", both, [LARGE_ONLY, SMALL_ONLY, *relay_matrix()],
                              f"relay whose large tier also decodes speculatively (draft: the small model, "
                              f"k={speculative_tokens}); large on core {cores[0]}, small on core {cores[1]}"))
    return targets


def deploy(target: Target) -> None:
    """Replace the running bench application with ``target`` (blocks until it is ready)."""
    from ray import serve

    from relay_ray.serve.builder import build_app

    if APP_NAME in serve.status().applications:
        serve.delete(APP_NAME)
    serve.run(build_app(target.config), name=APP_NAME, route_prefix="/")
