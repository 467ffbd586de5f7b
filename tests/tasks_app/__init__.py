"""Tasks for tests/test_tasks.py, and the project its end-to-end tests serve with gunicorn.

The same task code runs on ``after_response.tasks.AfterResponseBackend`` and on django-tasks-db's
``DatabaseBackend``: ``settings.py`` picks the backend from an environment variable, nothing else
changes.
"""
