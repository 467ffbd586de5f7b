"""Benchmarks of after_response against the alternatives: ``python -m benchmarks``.

One module per benchmark; each runs in its own interpreter (``python -m benchmarks.NAME``),
measures the sides of each comparison interleaved in that one process or run, and returns a
JSON-able result that ``report.py`` turns into ``results/RESULTS.md`` and a PNG chart.
"""
