"""The figures a capacity plan rests on, as one JSON file (``measurements.json``).

``relay-ray plan`` writes it after measuring; ``relay-ray plan --measurements FILE`` plans
from it without running load, e.g. from figures measured on a GPU cluster with the same
command, or written down as assumptions (``cluster/capacity-gpu-assumed.json``). Each tier
and the demand carry a ``source`` saying which.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relay_ray.deploy.capacity import CurvePoint, PolicyDemand, TierCurve


@dataclass(frozen=True)
class Measurements:
    curves: dict[str, TierCurve]
    demand: list[PolicyDemand]
    overhead_s: float  # latency per switch beyond the tiers' token times
    max_new_tokens: int
    source: dict[str, str] = field(default_factory=dict)  # "large" / "small" / "demand" -> where from
    context: dict = field(default_factory=dict)  # machine, config, mix, commands

    def to_json(self) -> dict:
        return {
            "context": self.context,
            "source": self.source,
            "max_new_tokens": self.max_new_tokens,
            "switch_overhead_s": self.overhead_s,
            "tiers": {t: {"replicas": c.replicas, "prefill_per_token": c.prefill_per_token,
                          "prefill_cost": c.prefill_cost, "points": [asdict(p) for p in c.points]}
                      for t, c in self.curves.items()},
            "demand": [asdict(d) for d in self.demand],
        }

    @classmethod
    def from_json(cls, raw: dict) -> Measurements:
        curves = {t: TierCurve(t, int(v["replicas"]), tuple(CurvePoint(**p) for p in v["points"]),
                               float(v.get("prefill_per_token", 0.0)), float(v.get("prefill_cost", 1.0)))
                  for t, v in raw["tiers"].items()}
        demand = [PolicyDemand(**{**d, "generated": dict(d["generated"]), "prefill": dict(d.get("prefill", {}))})
                  for d in raw["demand"]]
        return cls(curves, demand, float(raw.get("switch_overhead_s", 0.0)), int(raw.get("max_new_tokens", 0)),
                   dict(raw.get("source", {})), dict(raw.get("context", {})))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Measurements:
        return cls.from_json(json.loads(Path(path).read_text()))
