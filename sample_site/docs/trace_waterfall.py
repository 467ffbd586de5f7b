"""A deferred call's OpenTelemetry span, in its request's trace, drawn as a waterfall.

Run from the repository root (matplotlib, opentelemetry-sdk and
opentelemetry-instrumentation-django installed)::

    python sample_site/docs/trace_waterfall.py

It configures Django in this process, sends one request through the WSGI handler to a view
that defers ``send_notification(pk)``, and waits for the call. The call's span,
``after_response <module.qualname>``, is a child of the request's server span, in the same
trace, and the spans the call makes are its children: the waterfall shows the call starting
after the "response sent" line, on the request's own timeline. It prints the span tree and
writes ``sample_site/docs/trace-waterfall.png``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "sample_site" / "docs" / "trace-waterfall.png"
sys.path.insert(0, str(ROOT))  # this checkout's after_response, installed or not

tracer = trace.get_tracer("trace_waterfall")


def send_notification(pk: int) -> None:
    with tracer.start_as_current_span("render email"):
        time.sleep(0.006)
    with tracer.start_as_current_span("smtp send"):
        time.sleep(0.012)


def notify(request: HttpRequest, pk: int) -> HttpResponse:
    with tracer.start_as_current_span("load book"):
        time.sleep(0.003)
    request.defer(send_notification, pk)  # type: ignore[attr-defined]
    return HttpResponse(f"notifying about book {pk}")


urlpatterns = [path("books/<int:pk>/notify/", notify)]


def run_request() -> list[ReadableSpan]:
    """One request through Django's WSGI handler; the finished spans, once the call ran."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # before django.setup(), as a real site would
    database = str(Path(tempfile.mkdtemp()) / "db.sqlite3")  # worker threads: not :memory:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="trace-waterfall",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "after_response"],
        MIDDLEWARE=["after_response.middleware.AfterResponseMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
        AFTER_RESPONSE_WORKERS=2,
    )
    django.setup()
    import after_response
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import RequestFactory
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument()
    environ = RequestFactory().get("/books/42/notify/").environ
    response = WSGIHandler()(environ, lambda status, headers, exc_info=None: None)
    b"".join(response)
    response.close()  # the WSGI server's close(): this hands the deferred call off
    assert after_response.drain(10), "the deferred call did not finish"
    return sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0)


def depth(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> int:
    parent = span.parent
    if parent is None or parent.span_id not in by_id:
        return 0
    return 1 + depth(by_id[parent.span_id], by_id)


def trace_id(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"


def main() -> None:
    spans = run_request()
    by_id = {span.context.span_id: span for span in spans}
    server = next(span for span in spans if span.kind == trace.SpanKind.SERVER)
    call = next(span for span in spans if span.name.startswith("after_response "))
    for span in spans:
        parent = by_id[span.parent.span_id].name if span.parent else "-"
        print(f"{'  ' * depth(span, by_id)}{span.name}  (parent: {parent}, trace {trace_id(span)})")
    print("after_response span attributes:")
    for key, value in (call.attributes or {}).items():
        print(f"  {key} = {value}")
    assert call.parent is not None and call.parent.span_id == server.context.span_id
    assert call.context.trace_id == server.context.trace_id
    draw(spans, by_id, server, call)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


Spans = dict[int, ReadableSpan]


def draw(spans: list[ReadableSpan], by_id: Spans, server: ReadableSpan, call: ReadableSpan) -> None:
    """One bar per span, indented by depth; the call and its spans in orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    start = min(span.start_time or 0 for span in spans)

    def ms(ns: int | None) -> float:
        return ((ns or 0) - start) / 1e6

    def under_call(span: ReadableSpan) -> bool:
        while span is not call and span.parent and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
        return span is call

    fig, ax = plt.subplots(figsize=(9, 3), dpi=100)
    fig.subplots_adjust(left=0.41, right=0.97, top=0.88, bottom=0.17)
    labels = blended_transform_factory(fig.transFigure, ax.transData)
    for row, span in enumerate(spans):
        left = ms(span.start_time)
        color = "tab:orange" if under_call(span) else "tab:blue"
        ax.barh(row, ms(span.end_time) - left, left=left, height=0.6, color=color)
        label = "  " * depth(span, by_id) + span.name
        ax.text(0.01, row, label, transform=labels, va="center", fontsize=9, family="monospace")
    sent = ms(server.end_time)
    ax.axvline(sent, color="black", linestyle="--", linewidth=1)
    ax.text(sent, len(spans) - 0.4, " response sent", fontsize=9, va="bottom")
    ax.set_yticks([])
    ax.set_ylim(len(spans) - 0.3, -0.7)
    ax.set_xlabel("ms since the trace started")
    ax.set_title(f"one request's trace: {trace_id(server)}", fontsize=10, family="monospace")
    fig.savefig(OUTPUT)


if __name__ == "__main__":
    main()
