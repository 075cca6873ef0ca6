from urllib.parse import urlencode

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import reverse

from apps.audit.names import Kind
from apps.audit.operations import user_may
from apps.mixjobs.models import MixJob


@admin.register(MixJob)
class MixJobAdmin(admin.ModelAdmin):
    """The mirror is written by sync and cleanup; the admin reads it and offers the cleanup."""

    list_display = ["job_id", "session_id", "state", "progress", "updated_at", "expires_at", "job_bytes", "problem"]
    list_filter = ["state", ("problem", admin.EmptyFieldListFilter), ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["job_id", "session_id"]
    actions = ["clean_up_expired"]
    readonly_fields = [field.name for field in MixJob._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Clean up expired jobs of the selected sessions (preview first)", permissions=["cleanup"])
    def clean_up_expired(self, request, queryset):
        # One confirmation path: the cleanup page's `confirm_page` previews, the person confirms.
        sessions = sorted(set(queryset.values_list("session_id", flat=True)))
        return redirect(f"{reverse('mixjobs:cleanup')}?{urlencode([('session', s) for s in sessions])}")

    def has_cleanup_permission(self, request):
        return user_may(request.user, Kind.MIXJOBS_CLEANUP_SESSION)
