from django.contrib import admin

from apps.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = ("id", "account", "model", "name", "status", "stage", "created_at")
    list_filter = ("status", "model")
    search_fields = ("id", "name", "account__username")
    readonly_fields = [field.name for field in Job._meta.fields]
