"""The machine, and RESULTS.md and the charts from the benchmarks' results."""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from . import common


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return "not installed"


def _command_output(command: list[str]) -> str:
    if not shutil.which(command[0]):
        return "not installed"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return (finished.stdout or finished.stderr).strip().splitlines()[0]


def _redis_version() -> str:
    try:
        with socket.create_connection((common.REDIS_HOST, common.REDIS_PORT), timeout=1) as conn:
            conn.sendall(b"INFO server\r\n")
            reply = conn.recv(65536).decode(errors="replace")
    except OSError:
        return "unreachable"
    for line in reply.splitlines():
        if line.startswith("redis_version:"):
            return line.partition(":")[2]
    return "unknown"


def _postgres_version() -> str:
    if not common.postgres_reachable():
        return "unreachable"
    return str(common.pg_admin("SHOW server_version")[0][0])


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as loadavg:
            return " ".join(loadavg.read().split()[:3])
    except OSError:
        return "unknown"


def library_version() -> str:
    """The last commit that changed after_response/, and whether its files differ from it."""
    root = Path(__file__).resolve().parent.parent
    if not shutil.which("git"):
        return "unknown (no git)"
    log = ["log", "-1", "--format=%h (%cd)", "--date=format:%Y-%m-%d %H:%M", "--", "after_response"]
    head = subprocess.run(
        ["git", "-C", str(root), *log],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "after_response"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{head or 'unknown'}" + (", with uncommitted changes" if changed else "")


def machine() -> dict[str, str]:
    import django

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores",
        "memory": f"{memory:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "after_response": library_version(),
        "gunicorn": _version("gunicorn"),
        "load generator": _command_output(["wrk", "-v"]).split(" [")[0],
        "PostgreSQL": _postgres_version(),
        "Redis": _redis_version(),
        "Celery": _version("celery"),
        "load average before the run": loadavg(),
    }


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def markdown(
    about: dict[str, str],
    results: list[dict[str, Any]],
    command: str,
    seconds: float,
    charts: dict[str, str],
) -> str:
    lines = [
        "# after_response benchmarks",
        "",
        f"`{command}`, {about['date']}, {seconds:.0f} s. Ratios are the claims, not absolute "
        "times: the machine is shared and noisy, so every comparison runs its sides interleaved "
        "in one process or run, over several rounds, and reports the median and spread "
        "(quartiles). Sources and method: the docstring of each module in `benchmarks/`.",
        "",
        *_table(["machine", ""], [[k, v] for k, v in about.items() if k != "date"]),
        "",
        "## Targets",
        "",
    ]
    targets = [
        [t["claim"], t["target"], t["measured"], "met" if t["met"] else "**MISSED**"]
        for result in results
        for t in result.get("targets", [])
    ]
    lines += _table(["claim", "target", "measured (median)", ""], targets)
    for result in results:
        lines += ["", f"## {result['title']}", ""]
        if result.get("error"):
            lines += [f"**Failed:** `{result['error']}`"]
            continue
        for table in result["tables"]:
            lines += [*_table(table["columns"], table["rows"]), ""]
        lines += [f"- {note}" for note in result["notes"]]
        if result["name"] in charts:
            lines += ["", f"![{result['title']}]({charts[result['name']]})"]
    return "\n".join(lines) + "\n"


# Instruction counts (benchmarks/idle_instructions.py, call_instructions.py): not part of
# `python -m benchmarks` (they need valgrind and minutes), kept in this file and appended.
INSTRUCTIONS = "instructions.md"


def write(
    out: Path,
    about: dict[str, str],
    results: list[dict[str, Any]],
    command: str,
    seconds: float,
) -> list[str]:
    """RESULTS.md and one PNG per benchmark (if matplotlib is there); returns what was left out."""
    left_out = []
    charts: dict[str, str] = {}
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        left_out.append("charts: matplotlib is not installed")
    else:
        for result in results:
            if result.get("error") or result.get("skipped_all"):
                continue
            module = importlib.import_module(f"benchmarks.{result['name']}")
            name = f"{result['name']}.png"
            module.chart(result, str(out / name))
            charts[result["name"]] = name
    text = markdown(about, results, command, seconds, charts)
    counted = Path(__file__).resolve().parent / "results" / INSTRUCTIONS
    if counted.exists():  # written by hand from the callgrind runs, which take minutes
        text += "\n" + counted.read_text()
    (out / "RESULTS.md").write_text(text)
    return left_out
