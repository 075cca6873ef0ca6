"""`{% load holds %}{% hold_control "separation-session" session.session_id %}`: the one hold
control (apps/dashboard/holds.py), on any page that shows something a hold can keep."""

from django import template

from apps.dashboard.holds import TEMPLATE, hold_control_context

register = template.Library()


@register.inclusion_tag(TEMPLATE, takes_context=True)
def hold_control(context, target_type: str, target_id: str, compact: bool = False, holds: dict | None = None):
    """`compact`: one table row's control; `holds`: the rows' holds, read once (`holds_by_id`)."""
    found = hold_control_context(
        context["request"], target_type=target_type, target_id=target_id, compact=compact, holds=holds
    )
    return {**found, "csrf_token": context.get("csrf_token")}
