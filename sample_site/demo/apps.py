from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"
    verbose_name = "after_response demo"

    def ready(self) -> None:
        from . import status

        status.connect()
