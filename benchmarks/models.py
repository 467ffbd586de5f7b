from __future__ import annotations

from django.db import models


class Row(models.Model):
    """What the small-ORM deferred calls read."""

    name = models.CharField(max_length=50)
