"""7. The demo's bulk import: rows per second for a 10,000-row CSV file, on SQLite.

The demo's own code and settings (``sample_site.settings``: a SQLite file in WAL mode, DEBUG on,
as ``bash sample_site/run`` serves it), on a new database. Each round stores the generated
sample (``demo.sample_data.generated_csv``: one row in 100 refused, each for its reason) as an
upload, then times ``run_import(job)`` in this thread, as an after_response worker thread runs
it: from reading the file to the last commit. Then the same file again: every good row is
already there, identical, and skipped. The books are deleted between rounds. Publishing the
catalogue, which the import defers once done, is left out: it is not the import.

``python -m benchmarks.import_rate`` prints one line; ``--json PATH`` writes the result for
``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "sample_site"
FULL = {"rounds": 3, "rows": 10_000}
SMOKE = {"rounds": 1, "rows": 500}
TARGET = 1000  # valid rows per second, at least
FIRST, AGAIN = "first import", "the same file again (all skipped)"

Result = dict[str, Any]


def run(smoke: bool = False, celery: bool = True) -> Result:
    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="after_response_import_rate_") as directory:
        _setup_django(Path(directory))
        from demo import importing
        from demo.models import Book, ImportJob
        from demo.sample_data import generated_csv
        from django.core.files.uploadedfile import SimpleUploadedFile

        importing.schedule_publish = lambda: None  # not the import: see the docstring
        content = generated_csv(sizes["rows"]).encode()
        rates: dict[str, list[float]] = {FIRST: [], AGAIN: []}
        counts: dict[str, tuple[int, int, int]] = {}
        for _ in range(sizes["rounds"]):
            Book.objects.all().delete()
            for name in (FIRST, AGAIN):
                upload = SimpleUploadedFile("books.csv", content, content_type="text/csv")
                job = importing.start_import(upload, "csv")
                t0 = time.perf_counter()
                importing.run_import(job.pk)
                seconds = time.perf_counter() - t0
                job.refresh_from_db()
                assert job.status == ImportJob.Status.DONE, job.message
                rates[name].append(sizes["rows"] / seconds)
                counts[name] = (job.imported, job.skipped, job.failed)
    return _result(sizes, rates, counts)


def _setup_django(directory: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "sample_site.settings"
    os.environ["SAMPLE_SITE_DB"] = str(directory / "db.sqlite3")
    os.environ["SAMPLE_SITE_DATA"] = str(directory / "data")
    sys.path.insert(0, str(SITE))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    logging.getLogger("demo").setLevel(logging.WARNING)  # one line per import, on stderr


def _median_spread(values: list[float]) -> tuple[float, str]:
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return median, f"{median:.0f} [{ordered[0]:.0f}-{ordered[-1]:.0f}]"


def _counts(imported: int, skipped: int, refused: int) -> str:
    return f"{imported} imported, {skipped} skipped, {refused} refused"


def _result(sizes: dict[str, int], rates: dict[str, list[float]], counts: Any) -> Result:
    first, first_text = _median_spread(rates[FIRST])
    imported, _, refused = counts[FIRST]
    valid = first * imported / sizes["rows"]
    return {
        "name": "import_rate",
        "title": "7. The demo's bulk import: rows per second",
        "tables": [
            {
                "columns": [
                    f"{sizes['rows']:,}-row CSV file, SQLite",
                    "rows/s, median [min-max]",
                    "rows",
                ],
                "rows": [
                    [name, _median_spread(rates[name])[1], _counts(*counts[name])]
                    for name in (FIRST, AGAIN)
                ],
            }
        ],
        "targets": [
            {
                "claim": "demo import of a 10,000-row CSV file, valid rows",
                "target": f">= {TARGET} rows/s",
                "measured": f"{valid:.0f} rows/s",
                "met": valid >= TARGET,
            }
        ],
        "notes": [
            f"{sizes['rounds']} rounds of {sizes['rows']} rows ({imported} valid, {refused} "
            "refused with a reason each), each on an empty catalogue, then again.",
            "From reading the stored upload to the last commit, in one thread, as a worker "
            "thread of the demo runs it: rows checked outside the transaction, 200 a batch, "
            "one query for the batch's ISBNs, one savepoint per new row.",
        ],
        "chart": rates,
        "summary": (
            f"import_rate: {sizes['rows']} rows at {first_text} rows/s, median [min-max] of "
            f"{sizes['rounds']} (valid rows: {valid:.0f}/s, target >= {TARGET}); "
            f"again, all skipped: {_median_spread(rates[AGAIN])[1]} rows/s"
        ),
    }


def chart(result: Result, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for index, (name, values) in enumerate(result["chart"].items()):
        ax.scatter(values, [index] * len(values), label=name)
    ax.axvline(TARGET, color="C3", linestyle="--", label=f"target {TARGET} rows/s")
    ax.set_yticks(range(len(result["chart"])), list(result["chart"]))
    ax.set_xlabel("rows/s, per round")
    ax.set_xlim(left=0)
    ax.set_ylim(-0.5, len(result["chart"]) - 0.5)
    ax.set_title("The demo's import of a 10,000-row CSV file, SQLite")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_rate", description=__doc__)
    parser.add_argument("--json", help="also write the result here (for python -m benchmarks)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run at all")
    parser.add_argument("--no-celery", action="store_true", help="(no Celery here)")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(smoke=args.smoke)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(result["summary"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
