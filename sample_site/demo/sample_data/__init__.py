"""Sample imports: books.csv, with good rows and bad ones; the same as a workbook; and a file of
any size, made up, to see the progress of a large import.

``python -m demo.sample_data 10000 > books-10000.csv`` (from sample_site/) writes one.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

HEADER = (
    "title",
    "author",
    "book_type",
    "isbn",
    "year_published",
    "price",
    "no_of_pages",
    "quantity",
    "description",
)
BAD_EVERY = 100  # rows: one row in this many is refused, each for a reason of its own
WORDS = (
    *("Silent", "Winter", "Garden", "River", "Glass", "Clockwork", "Ember", "Harbour"),
    *("Lantern", "Orchard", "Iron", "Paper", "Salt", "Shadow", "Thunder", "Velvet"),
    *("Willow", "Atlas", "Cinder", "Meridian", "Quarry", "Tide", "Ivory", "Falcon"),
)
NAMES = ("Ada", "Grace", "Alan", "Mary", "Emily", "Jules", "Bram", "Edith", "Italo", "Ursula")
TYPES = ("Sci-tech", "Magazine", "Comic", "Classic", "Horror")


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


def isbn13(first_twelve: str) -> str:
    """An ISBN-13 from its first twelve digits (demo.models.isbn13, without Django)."""
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(first_twelve))
    return first_twelve + str((10 - total % 10) % 10)


def generated_csv(rows: int, seed: int = 0) -> str:
    """A CSV file of ``rows`` made-up books, the same for the same arguments.

    Row ``n`` (row 1 is the header) has the ISBN 9798 followed by n, so files of different
    sizes agree on the rows they share. Every BAD_EVERY-th row is refused, for one of five
    reasons in turn: see ``bad_rows``.
    """
    pick = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for n in range(2, rows + 2):
        title = " ".join(pick.sample(WORDS, 3))
        row = [
            f"The {title}",
            f"{pick.choice(NAMES)} {pick.choice(WORDS)}son",
            pick.choice(TYPES),
            isbn13(f"9798{n:08d}"),
            str(pick.randint(1800, 2020)),
            f"{pick.randint(1, 60)}.{pick.randint(0, 99):02d}",
            str(pick.randint(24, 900)),
            str(pick.randint(0, 40)),
            f"Number {n - 1} of the generated sample.",
        ]
        writer.writerow(_spoiled(row, n) if n % BAD_EVERY == 0 else row)
    return out.getvalue()


def bad_rows(rows: int) -> dict[int, str]:
    """The refused rows of ``generated_csv(rows)``: row number -> the start of the reason."""
    return {
        n: REASONS[(n // BAD_EVERY) % len(REASONS)] for n in range(BAD_EVERY, rows + 2, BAD_EVERY)
    }


REASONS = (
    "isbn: ",  # a wrong check digit
    "price: Ensure this value is greater than or equal to 0.",
    "book_type: 'Poetry' is not one of",
    "year_published: 2999 is in the future.",
    "3 of 9 columns",
)


def _kind(n: int) -> int:
    return (n // BAD_EVERY) % len(REASONS)


def _spoiled(row: list[str], n: int) -> list[str]:
    kind = _kind(n)
    if kind == 0:
        row[3] = row[3][:-1] + str((int(row[3][-1]) + 1) % 10)
    elif kind == 1:
        row[5] = "-" + row[5]
    elif kind == 2:
        row[2] = "Poetry"
    elif kind == 3:
        row[4] = "2999"
    else:
        row = row[:3]
    return row
