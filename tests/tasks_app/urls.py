from django.urls import path

from . import views

urlpatterns = [
    path("in-order/", views.in_order),
    path("environment/", views.environment),
    path("atomic/<str:outcome>/", views.in_atomic),
    path("cancel/", views.cancel),
    path("defer-task/<str:outcome>/", views.defer_task),
    path("async/", views.async_view),
    path("ready/", views.ready),
    path("checkout/<str:name>/", views.checkout),
    path("defer-checkout/<str:name>/", views.defer_checkout),
    path("result/<str:result_id>/", views.result),
]
