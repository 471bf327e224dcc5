"""OpenTelemetry tracing configuration and the exporter hook Ray Serve calls.

Serve creates the tracer provider in every process (proxy, controller and tier replicas)
from ``RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`` / ``RAY_SERVE_TRACING_SAMPLING_RATIO``; only
these environment variables reach Serve's gRPC proxy in Ray 2.60 (its ``tracing_config``
does not), so they must be set before Ray starts: ``relay-ray serve`` sets them from
``RelayConfig.tracing``; on a cluster, export :func:`tracing_env` before ``ray start``.
The proxy continues a W3C ``traceparent`` sent by the client in gRPC metadata.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EXPORTER_HOOK = "relay_ray.telemetry.tracing:span_processors"
_ENV_EXPORTER = "RELAY_RAY_TRACE_EXPORTER"
_ENV_ENDPOINT = "RELAY_RAY_OTLP_ENDPOINT"
_ENV_FILE = "RELAY_RAY_TRACE_FILE"


class TracingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "console", "otlp", "file"] = Field("none", description="where spans go")
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC collector, e.g. localhost:4317")
    file_path: str | None = Field(None, description="file exporter: JSON lines, one span per line")
    sampling_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of new traces recorded")

    @model_validator(mode="after")
    def _check(self) -> TracingConfig:
        if self.exporter == "otlp" and not self.otlp_endpoint:
            raise ValueError("exporter 'otlp' needs otlp_endpoint")
        if self.exporter == "file" and not self.file_path:
            raise ValueError("exporter 'file' needs file_path")
        return self


def tracing_env(config: TracingConfig) -> dict[str, str]:
    """Environment variables that turn tracing on in every Ray process (empty if off)."""
    if config.exporter == "none":
        return {}
    env = {
        "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": EXPORTER_HOOK,
        "RAY_SERVE_TRACING_SAMPLING_RATIO": str(config.sampling_ratio),
        _ENV_EXPORTER: config.exporter,
    }
    if config.otlp_endpoint:
        env[_ENV_ENDPOINT] = config.otlp_endpoint
    if config.file_path:
        env[_ENV_FILE] = os.path.abspath(config.file_path)
    return env


class JsonLinesSpanExporter:
    """Appends finished spans as JSON lines (one writer per process, line-atomic appends)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = []
        for span in spans:
            ctx, parent = span.context, span.parent
            lines.append(json.dumps({
                "name": span.name,
                "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
                "parent_id": f"{parent.span_id:016x}" if parent else None,
                "start_ns": span.start_time, "end_ns": span.end_time,
                "attributes": dict(span.attributes or {}),
                "pid": os.getpid(),
            }, default=str))
        with open(self.path, "a") as fh:
            fh.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_processors() -> list:
    """Serve's exporter hook: span processors for this process, from the environment."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    exporter = os.environ.get(_ENV_EXPORTER, "none")
    if exporter == "file":
        return [SimpleSpanProcessor(JsonLinesSpanExporter(os.environ[_ENV_FILE]))]
    if exporter == "console":
        return [SimpleSpanProcessor(ConsoleSpanExporter())]
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return [BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ[_ENV_ENDPOINT], insecure=True))]
    return []
