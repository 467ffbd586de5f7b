from django.urls import path

from . import views

urlpatterns = [
    path("defer-two/", views.defer_two, name="defer-two"),
    path("async/", views.defer_async),
    path("streaming/", views.streaming),
    path("file/", views.file),
    path("cacheable/", views.cacheable),
    path("template/", views.template),
    path("environment/", views.environment),
    path("write/<str:name>/", views.write),
    path("atomic/<str:outcome>/", views.in_atomic),
    path("failing/", views.failing),
    path("cancel/", views.cancel_one),
    path("slow/", views.slow_sync),
]

urlpatterns += [
    path("atomic-request/<str:outcome>/", views.atomic_request_view),
    path("nested/", views.nested),
    path("two-databases/<str:outcome>/", views.two_databases),
]
urlpatterns += [path("count/", views.count_records)]
urlpatterns += [path("defer-an-upload/<str:how>/", views.defer_an_upload)]
