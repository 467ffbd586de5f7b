"""gunicorn settings of the demo: ``gunicorn -c gunicorn.conf.py`` (``PORT`` overrides 8000)."""

import os
from pathlib import Path

chdir = str(Path(__file__).resolve().parent)
wsgi_app = "sample_site.wsgi"
bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = 2
worker_class = "gthread"
threads = 4
accesslog = "-"
# gunicorn >= 25.1 opens a control socket at one path per user, which a second instance (the
# demo's test while the demo runs) would take over. Older versions ignore this name.
control_socket_disable = True
