from django.urls import path

from . import fake_service, views

urlpatterns = [
    path("", views.index, name="index"),
    path("favicon.ico", views.favicon, name="favicon"),
    # 1. bulk import
    path("imports/", views.import_new, name="import_new"),
    path("imports/sample.csv", views.sample_csv, name="sample_csv"),
    path("imports/sample.xlsx", views.sample_xlsx, name="sample_xlsx"),
    path("imports/sample-large.csv", views.sample_large_csv, name="sample_large_csv"),
    path("imports/<int:pk>/", views.import_job, name="import_job"),
    path("imports/<int:pk>/status.json", views.import_status, name="import_status"),
    path("imports/<int:pk>/resume/", views.import_resume, name="import_resume"),
    path("api/imports/", views.import_api, name="import_api"),
    # 2. error notification, 3. cached remote data, 4. webhook, 5. published snapshot
    path("books/", views.book_list, name="books"),
    path("books/<int:pk>/", views.book_detail, name="book"),
    path("books/<int:pk>/sell/", views.sell_copy, name="sell"),
    path("catalogue.html", views.published_catalogue, name="published_catalogue"),
    # 6. status
    path("status/", views.status, name="status"),
    # The "other system", played by the demo itself.
    path("fake-remote/offers/<str:isbn>.json", fake_service.offer_view, name="fake_offer"),
    path("fake-remote/webhooks/stock/", fake_service.webhook_view, name="fake_webhook"),
]
