"""A relay response printed for a terminal: its segments tagged (or colored) by tier, its stats."""

from __future__ import annotations

TIER_STYLE = {1: ("L", "\033[1;35m"), 2: ("S", "\033[36m")}  # proto Tier values


def render(response, color: bool) -> str:
    """The answer's text, each segment colored by tier (or tagged [L]/[S] without color)."""
    parts = []
    for seg in response.segments:
        tag, style = TIER_STYLE.get(seg.tier, ("?", ""))
        parts.append(f"{style}{seg.text}\033[0m" if color else f"[{tag}]{seg.text}")
    return "".join(parts)


def _finish_name(value: int) -> str:
    from relay_ray.v1 import common_pb2

    return common_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def stats_lines(response) -> list[str]:
    """Two lines: tokens per tier, then segments, switches, handoff, latency and finish."""
    s = response.stats
    share = f"{100 * s.large_token_share:.1f}%"
    return [
        f"tokens: large {s.large_tokens}, small {s.small_tokens} (large share {share}); "
        f"generated incl. dropped: large {s.large_generated_tokens}, small {s.small_generated_tokens}",
        f"segments: {s.num_segments}, switches: {s.num_switches}, handoff: {s.handoff_mode}, "
        f"latency: {s.latency_ms:.0f} ms, finish: {_finish_name(s.finish_reason)}",
    ]


def print_response(response, policy: str, color: bool) -> None:
    """A heading with the policy and the tier legend, the answer, its stats."""
    legend = "\033[1;35mlarge\033[0m / \033[36msmall\033[0m" if color else "[L] large / [S] small"
    print(f"--- policy {policy or '(server default)'} ({legend}) ---")
    print(render(response, color))
    for line in stats_lines(response):
        print(line)
