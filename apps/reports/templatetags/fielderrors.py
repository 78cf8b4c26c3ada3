"""A form field's errors beside it: the messages under the field, and the field marked
invalid and described by them (screen readers read them when the field takes the focus)."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join

register = template.Library()


@register.simple_tag(takes_context=True)
def field_invalid(context, name: str) -> str:
    """The attributes that mark field `name` invalid, if the page has errors for it."""
    if not context.get("field_errors", {}).get(name):
        return ""
    return format_html('aria-invalid="true" aria-describedby="{}-error"', name)


@register.simple_tag(takes_context=True)
def field_error(context, name: str) -> str:
    """The page's errors for field `name`, as a paragraph the field points to."""
    messages = context.get("field_errors", {}).get(name)
    if not messages:
        return ""
    lines = format_html_join(" ", "<span>{}</span>", ((m,) for m in messages))
    return format_html('<p class="field-error" id="{}-error">{}</p>', name, lines)
