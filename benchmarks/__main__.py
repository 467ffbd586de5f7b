"""``python -m benchmarks``: run every benchmark, write ``benchmarks/results/``.

Each benchmark runs in an interpreter of its own; ``--smoke`` runs them with tiny sizes (does
it all work?) and writes to a temporary directory unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report

BENCHMARKS = ("request_path", "idle", "drain", "served", "connections", "memory", "import_rate")
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds, per benchmark


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it all run?")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/")
    parser.add_argument("--no-celery", action="store_true", help="leave the Celery side out")
    args = parser.parse_args()
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="after_response_smoke_")) if args.smoke else None
        out = out or ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    about = report.machine()
    started = time.monotonic()
    results = []
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        json_path = out / f"{name}.json.tmp"
        command = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(json_path)]
        command += ["--smoke"] * args.smoke + ["--no-celery"] * args.no_celery
        finished = subprocess.run(command, cwd=ROOT, timeout=TIMEOUT, check=False)
        if finished.returncode != 0:
            failed.append(name)
            results.append(
                {"name": name, "title": name, "error": f"exit status {finished.returncode}"}
            )
            continue
        result = json.loads(json_path.read_text())
        json_path.unlink()
        print(f"   {result['seconds']} s", flush=True)
        results.append(result)
    seconds = time.monotonic() - started
    about["load average after the run"] = report.loadavg()
    if report.library_version() != about["after_response"]:
        about["after_response"] += f"; CHANGED during the run, to {report.library_version()}"
    command_line = " ".join(["python -m benchmarks", *_without_out(sys.argv[1:])])
    for note in report.write(out, about, results, command_line, seconds):
        print(f"left out: {note}")
    # Without the charts' data (samples over time): the PNGs show them.
    kept = [{k: v for k, v in result.items() if k != "chart"} for result in results]
    (out / "results.json").write_text(
        json.dumps(_rounded({"machine": about, "seconds": seconds, "results": kept}), indent=1)
    )
    print(f"wrote {out / 'RESULTS.md'} ({seconds:.0f} s)")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits, all the way down: the raw data stays readable."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _without_out(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if skip or word.startswith("--out"):
            skip = word == "--out"
            continue
        kept.append(word)
    return kept


if __name__ == "__main__":
    sys.exit(main())
