from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("hello/", views.hello),
    path("defer/<str:side>/<int:count>/", views.defer),
    path("served/none/", views.served_none),
    path("served/deferred/", views.served_deferred),
    path("served/inline/", views.served_inline),
    path("stats/", views.stats),
]
