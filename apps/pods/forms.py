"""The provision form: one rule for pod ids, checked here before anything is queued and
the same in the browser (`POD_ID_PATTERN` is the input's `pattern`)."""

import re

from django import forms

from apps.pods.models import DockerHost, Pod, Snapshot
from apps.pods.services import RESERVED_POD_IDS, pod_id_check
from controlpanel.errors import InvalidInput

POD_ID_MAX = 64
# Chromium compiles `pattern` with the `v` flag: inside a class `-` must be escaped, and
# nothing else here is special. The lookahead refuses the names the pages use themselves.
POD_ID_PATTERN = "(?!(?:" + "|".join(sorted(RESERVED_POD_IDS)) + r")$)[A-Za-z0-9_\-]{1," + f"{POD_ID_MAX}}}"
POD_ID_RULE = f"1–{POD_ID_MAX} letters, digits, '-' or '_'; not {', '.join(sorted(RESERVED_POD_IDS))}"
FRESH, FROM_SNAPSHOT = "fresh", "latest"


class ProvisionForm(forms.Form):
    pod_id = forms.CharField(
        label="Pod id",
        strip=True,
        # No maxlength: the browser would cut a long id silently; the pattern says why instead.
        widget=forms.TextInput(attrs={"pattern": POD_ID_PATTERN, "title": POD_ID_RULE, "autocomplete": "off"}),
    )
    image = forms.CharField(
        label="Image", required=False, widget=forms.TextInput(attrs={"placeholder": "default image"})
    )
    # The refusal does not repeat what was typed: a hostile value stays out of the page's text.
    host = forms.ChoiceField(
        label="Host",
        required=False,
        error_messages={"invalid_choice": "Choose one of the panel's Docker hosts (add a new one in the admin)."},
    )
    # Asked only when the id already has snapshots (see `clean`).
    start = forms.ChoiceField(
        required=False,
        widget=forms.RadioSelect,
        choices=[
            (FROM_SNAPSHOT, "start from its latest snapshot"),
            (FRESH, "make a new empty pod (the old snapshots stay listed apart)"),
        ],
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].choices = [("", "local")] + [
            (name, name) for name in DockerHost.objects.exclude(name="local").values_list("name", flat=True)
        ]
        self.existing: Pod | None = None
        self.latest: Snapshot | None = None

    def clean_pod_id(self) -> str:
        pod_id = self.cleaned_data["pod_id"]
        if not re.fullmatch(POD_ID_PATTERN, pod_id):
            raise forms.ValidationError(f"Use {POD_ID_RULE} ({len(pod_id)} characters given).")
        try:
            pod_id_check(pod_id)
        except InvalidInput as exc:  # the service's rule is the same; kept as the last word
            raise forms.ValidationError(str(exc)) from None
        return pod_id

    def clean(self):
        cleaned = super().clean()
        pod_id = cleaned.get("pod_id")
        if not pod_id:
            return cleaned
        self.existing = Pod.objects.filter(pod_id=pod_id).first()
        if self.existing is None:
            return cleaned
        self.latest = (
            self.existing.snapshots.filter(status=Snapshot.Status.COMPLETE).order_by("-created_at", "-id").first()
        )
        if self.latest is not None and not cleaned.get("start"):
            self.add_error(
                "start",
                f"Pod {pod_id} has {self.existing.snapshots.count()} snapshot(s), the latest #{self.latest.pk} "
                f"from {self.latest.created_at:%Y-%m-%d %H:%M} UTC: choose how to begin.",
            )
        return cleaned
