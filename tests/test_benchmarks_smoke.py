"""Smoke run of the benchmarks in benchmarks/: does each one still run, end to end?

Not a measurement, and no figure is checked: ``python -m benchmarks --smoke`` runs every
benchmark once with tiny sizes, in subprocesses (the benchmarks configure Django their own way,
and the served-latency one starts gunicorn on 127.0.0.1), and writes its report to a temporary
directory. The tests then read what each benchmark produced. The Celery side needs Redis and
Celery, so it has a test of its own that skips, saying why, where they are missing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import BENCHMARKS
from benchmarks.request_path import CELERY, celery_unavailable

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 80  # seconds; the smoke runs take about 15


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Two runs at once, to keep this quick: the served-latency benchmark spends most of its
    # time waiting for wrk, the others on the CPU.
    groups = [["served"], [name for name in BENCHMARKS if name != "served"]]
    outs = [tmp_path_factory.mktemp("benchmarks") for _ in groups]
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--no-celery"]
    processes = [
        subprocess.Popen(
            [*command, "--out", str(out), "--only", *group],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for group, out in zip(groups, outs, strict=True)
    ]
    try:
        logs = [process.communicate(timeout=RUN_TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log
    results: dict[str, Any] = {}
    markdown = ""
    for out in outs:
        report = json.loads((out / "results.json").read_text())
        results |= {result["name"]: result for result in report["results"]}
        markdown += (out / "RESULTS.md").read_text()
    return {"outs": outs, "markdown": markdown, "results": results, "machine": report["machine"]}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs(smoke_run: dict[str, Any], name: str) -> None:
    result = smoke_run["results"][name]
    assert "error" not in result
    assert result["tables"] or result["skipped"]  # skipped: PostgreSQL unreachable
    for table in result["tables"]:
        assert table["rows"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    assert result["title"] in smoke_run["markdown"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert any((out / f"{name}.png").exists() for out in smoke_run["outs"])


def test_report_describes_the_machine(smoke_run: dict[str, Any]) -> None:
    for key in ("date", "CPU", "Python", "Django"):
        assert smoke_run["machine"][key]
    assert "## Targets" in smoke_run["markdown"]


def test_celery_side(tmp_path: Path) -> None:
    reason = celery_unavailable()
    if reason:
        pytest.skip(f"Celery side of benchmarks/request_path.py not smoke-tested: {reason}")
    out = tmp_path / "request_path.json"
    finished = _run(["-m", "benchmarks.request_path", "--smoke", "--json", str(out)])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    rows = json.loads(out.read_text())["tables"][0]["rows"]
    assert any(row[0] == CELERY for row in rows)
