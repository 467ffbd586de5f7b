from . import recorder
from .tasks_app.compat import AVAILABLE

if AVAILABLE:
    from .tasks_app.compat import task

    @task
    def remember(name: str) -> None:
        recorder.record(name)
