"""Read the caller's OpenTelemetry span, when there is one, to record it beside the audit trace."""

from opentelemetry import trace


def current_otel_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) as hex of the active OpenTelemetry span, or None."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
