"""books.csv: a sample import with good rows and bad ones; and the same as a workbook."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def workbook_bytes(csv_path: Path) -> bytes:
    """The CSV file as an .xlsx workbook. Raises ImportError without openpyxl."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    with csv_path.open(newline="", encoding="utf-8") as file:
        for row in csv.reader(file):
            sheet.append([_typed(cell) for cell in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _typed(cell: str) -> int | float | str:
    """Numbers as numbers, as a spreadsheet holds them."""
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell
