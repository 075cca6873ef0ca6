"""The volume registry and its layout rules are edited here; inspections, findings and
cross-checks are history, shown read-only. Actions call the same services as the CLI."""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms import ModelForm

from apps.audit.admin import ReadOnlyAdmin
from apps.audit.names import Kind
from apps.audit.operations import request as request_operation
from apps.audit.operations import user_may
from apps.volumes.backends import volume_url_clean
from apps.volumes.models import CrossCheck, Finding, Inspection, LayoutRule, Volume
from apps.volumes.services import layout_preset_import, layout_rule_clean, volume_url_check
from controlpanel.errors import PanelError
from controlpanel.paths import validate_id


class VolumeForm(ModelForm):
    class Meta:
        model = Volume
        fields = ["name", "url", "purpose", "notes", "folder_depth"]

    def clean_name(self):
        try:
            return validate_id(self.cleaned_data["name"], kind="volume name")
        except PanelError as exc:
            raise ValidationError(str(exc)) from None

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            if "url" not in self.changed_data:
                # Saving rules on an unchanged volume must not depend on Modal answering now.
                return volume_url_clean(url)
            return volume_url_check(url=url)
        except PanelError as exc:
            raise ValidationError(str(exc)) from None


class LayoutRuleForm(ModelForm):
    class Meta:
        model = LayoutRule
        fields = ["volume", "kind", "path", "count_mode", "count", "severity", "description", "enabled"]

    def clean(self):
        cleaned = super().clean()
        try:
            layout_rule_clean(LayoutRule(**{k: v for k, v in cleaned.items() if k in self.Meta.fields}))
        except PanelError as exc:
            raise ValidationError(str(exc)) from None
        return cleaned


class LayoutRuleInline(admin.TabularInline):
    model = LayoutRule
    form = LayoutRuleForm
    extra = 0
    fields = ["kind", "path", "count_mode", "count", "severity", "description", "preset", "enabled"]
    readonly_fields = ["preset"]


@admin.register(Volume)
class VolumeAdmin(admin.ModelAdmin):
    form = VolumeForm
    list_display = ["name", "url", "purpose", "folder_depth", "created_at"]
    search_fields = ["name", "url", "purpose"]
    inlines = [LayoutRuleInline]
    actions = ["import_s3_mount_preset", "import_volume_cache_preset", "inspect_now"]

    def has_inspect_permission(self, request):
        return user_may(request.user, Kind.VOLUME_INSPECT)

    # Django's admin shows a message through `capfirst`: each one starts with "Volume", so
    # the volume's name reads as typed (issue #17).
    def _import(self, request, queryset, preset: str):
        for volume in queryset:
            try:
                rules = layout_preset_import(volume=volume, preset=preset, actor=request.user)
            except PanelError as exc:
                self.message_user(request, f"Volume {volume.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Volume {volume.name}: {len(rules)} rules from the {preset} preset")

    @admin.action(description="Import the S3-mount plan's layout rules", permissions=["change"])
    def import_s3_mount_preset(self, request, queryset):
        self._import(request, queryset, "s3-mount")

    @admin.action(description="Import the volume-cache plan's layout rules", permissions=["change"])
    def import_volume_cache_preset(self, request, queryset):
        self._import(request, queryset, "volume-cache")

    @admin.action(description="Inspect selected volumes now", permissions=["inspect"])
    def inspect_now(self, request, queryset):
        for volume in queryset:
            try:
                operation = request_operation(Kind.VOLUME_INSPECT, volume.name, actor=request.user)
            except PanelError as exc:
                self.message_user(request, f"Volume {volume.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Volume {volume.name}: inspection queued as operation #{operation.pk}")


@admin.register(LayoutRule)
class LayoutRuleAdmin(admin.ModelAdmin):
    form = LayoutRuleForm
    list_display = ["volume", "kind", "path", "count_mode", "count", "severity", "preset", "enabled"]
    list_filter = ["volume", "kind", "severity", "preset", "enabled"]


class FindingInline(admin.TabularInline):
    model = Finding
    extra = 0
    fields = ["severity", "message", "bytes", "rule"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Inspection)
class InspectionAdmin(ReadOnlyAdmin):
    list_display = ["volume", "inspected_at", "total_bytes", "total_files", "rules_passed", "rules_checked"]
    list_filter = ["volume"]
    exclude = ["folders", "extensions", "largest", "growth"]
    inlines = [FindingInline]


@admin.register(CrossCheck)
class CrossCheckAdmin(ReadOnlyAdmin):
    list_display = ["volume", "folder", "s3_url", "checked_at", "matched_files", "only_on_volume", "only_on_s3"]
    list_filter = ["volume"]
