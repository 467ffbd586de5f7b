"""The Tasks framework: ``django.tasks`` on Django >= 6.0, the django-tasks backport before."""

from __future__ import annotations

from importlib.util import find_spec

AVAILABLE = bool(find_spec("django.tasks") or find_spec("django_tasks"))

if find_spec("django.tasks"):
    from django.tasks import TaskResultStatus, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    FRAMEWORK = "django.tasks"
    TASKS_LOGGER = "django.tasks"
elif AVAILABLE:
    from django_tasks import TaskResultStatus, task, task_backends
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started

    FRAMEWORK = "django_tasks"
    TASKS_LOGGER = "django_tasks"

__all__ = [
    "AVAILABLE",
    "FRAMEWORK",
    "TASKS_LOGGER",
    "InvalidTask",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
