from django.contrib import admin
from django.http import HttpRequest

from .models import (
    BadBookReport,
    Book,
    CallRecord,
    FakeServiceHit,
    ImportJob,
    ImportRowError,
    Note,
    SupplierOffer,
    WebhookDelivery,
)
from .publishing import schedule_publish


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ("recipient", "answered_at", "started_at", "sent_at", "thread", "pid")
    list_filter = ("pid",)
    search_fields = ("recipient",)
    readonly_fields = ("answered_at", "started_at", "sent_at", "thread", "pid")


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ("title", "author", "book_type", "isbn", "year_published", "price", "quantity")
    list_filter = ("book_type",)
    search_fields = ("title", "author", "isbn")

    # Every change republishes the catalogue once the response is sent (once per request).
    def save_model(self, request: HttpRequest, obj: Book, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        obj.reports.all().delete()  # fixed: if it breaks again, the team hears of it again
        schedule_publish()

    def delete_model(self, request: HttpRequest, obj: Book) -> None:
        super().delete_model(request, obj)
        schedule_publish()

    def delete_queryset(self, request: HttpRequest, queryset: object) -> None:
        super().delete_queryset(request, queryset)
        schedule_publish()


@admin.register(BadBookReport)
class BadBookReportAdmin(admin.ModelAdmin):
    list_display = ("book", "sent_at")
    list_select_related = ("book",)


class ImportRowErrorInline(admin.TabularInline):
    model = ImportRowError
    extra = 0
    readonly_fields = ("row_number", "reason")
    can_delete = False


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "original_name",
        "status",
        "total_rows",
        "imported",
        "skipped",
        "failed",
        "created_at",
    )
    list_filter = ("status", "file_format")
    readonly_fields = ("created_at", "started_at", "finished_at", "updated_at")
    inlines = (ImportRowErrorInline,)


@admin.register(ImportRowError)
class ImportRowErrorAdmin(admin.ModelAdmin):
    list_display = ("job", "row_number", "reason")
    list_select_related = ("job",)


@admin.register(SupplierOffer)
class SupplierOfferAdmin(admin.ModelAdmin):
    list_display = ("isbn", "price", "in_stock", "refreshed_at", "refreshing_since", "refreshes")
    search_fields = ("isbn",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("pk", "event", "status", "response_status", "created_at", "finished_at")
    list_filter = ("status", "event")


@admin.register(FakeServiceHit)
class FakeServiceHitAdmin(admin.ModelAdmin):
    list_display = ("kind", "key", "status", "received_at")
    list_filter = ("kind", "status")


@admin.register(CallRecord)
class CallRecordAdmin(admin.ModelAdmin):
    list_display = ("name", "outcome", "duration", "pid", "thread", "finished_at")
    list_filter = ("outcome", "pid", "name")
