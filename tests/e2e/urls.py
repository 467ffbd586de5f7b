from django.urls import path

from . import views

urlpatterns = [
    path("ready/", views.ready),
    path("slow/<str:name>/", views.slow),
    path("slow-stream/<str:name>/", views.slow_stream),
    path("held-stream/<str:name>/", views.held_stream),
    path("write/<str:name>/", views.write),
    path("on-success/<int:status>/<str:name>/", views.on_success),
    path("async-write/<str:name>/", views.async_write),
]
