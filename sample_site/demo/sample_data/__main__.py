"""``python -m demo.sample_data [ROWS]`` (from sample_site/): a generated CSV file on stdout."""

import sys

from . import generated_csv

sys.stdout.write(generated_csv(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
