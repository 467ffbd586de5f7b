from django.apps import AppConfig

import after_response

# django-after-response (another project on the package index) installs a top-level package of
# the same name, whose __init__.py and signals.py overwrite ours (checks.py reports it installed
# even when ours won). Refuse to go on with its files in place of ours.
if not hasattr(after_response, "carry_context"):
    raise ImportError(
        "after_response/__init__.py is not after_response's own: the package "
        "'django-after-response' is installed in the same environment and overwrote it. "
        "Uninstall both (pip uninstall django-after-response after_response), then install "
        "after_response again."
    )


class AfterResponseConfig(AppConfig):
    name = "after_response"
    verbose_name = "After response"

    def ready(self) -> None:
        # Checks, and a warning system checks cannot give: they do not run inside uWSGI
        # workers. The pool itself starts on first use in the serving process, never here (a
        # thread started here would not survive gunicorn --preload's fork).
        from . import checks, lifecycle, middleware  # noqa: F401

        middleware.install_hints()
        lifecycle.warn_if_uwsgi_without_threads()
