from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("", include("demo.urls")),
    path("admin/", admin.site.urls),
    # gunicorn serves no static files; with DEBUG on, Django serves the admin's.
    *staticfiles_urlpatterns(),
]
