from django.apps import AppConfig


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
