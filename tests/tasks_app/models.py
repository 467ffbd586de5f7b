from django.db import models


class Visit(models.Model):
    """Written by ``tasks.record_visit``, wherever it runs."""

    name = models.CharField(max_length=100, unique=True)
    pid = models.IntegerField()
