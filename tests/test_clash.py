"""django-after-response, another project on the package index, installs a top-level package
named after_response too. Installed for real, in a virtual environment of its own, in both
orders: the import fails with the fix when its __init__.py replaced ours, and the system check
reports it when ours won.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
OTHER = "django-after-response==0.2.2"
CHECK = """
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["after_response"], DATABASES={})
django.setup()
from django.core.checks import run_checks
print(sorted(m.id for m in run_checks() if m.id and m.id.startswith("after_response")))
"""


def run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Elsewhere than the checkout (whose after_response would come first on the path), without
    # this test run's settings.
    environ = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=python.parent,
        env=environ,
    )


def pip(python: Path, *args: str) -> None:
    result = run(python, "-m", "pip", "install", "--quiet", "--no-deps", *args)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_clashing_distribution_is_refused_in_both_install_orders(tmp_path):
    # A copy of the project, so that building it leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "results"),
    )
    environment = tmp_path / "env"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    # Django and asgiref from this environment; both packages named after_response go into the
    # new one's own site-packages, which comes first.
    own_site = run(python, "-c", "import site; print(site.getsitepackages()[0])").stdout.strip()
    (Path(own_site) / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    pip(python, str(source))
    pip(python, OTHER)  # its __init__.py and signals.py overwrite ours
    imported = run(python, "-c", CHECK)  # Django imports after_response.apps
    assert imported.returncode != 0
    assert "the package 'django-after-response' is installed" in imported.stderr, imported.stderr
    assert "pip uninstall django-after-response after_response" in imported.stderr

    pip(python, "--force-reinstall", str(source))  # ours overwrites its files back
    checked = run(python, "-c", CHECK)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stdout.strip() == "['after_response.E009', 'after_response.W001']", (
        checked.stdout
    )
