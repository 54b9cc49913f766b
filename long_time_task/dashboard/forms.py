"""Forms of the dashboard: the task list's filters, and a submit form generated from a type's ``param_schema``.

The generated fields carry the schema's constraints as HTML attributes (``required``, ``min``, ``max``,
``minlength``, ``maxlength``, ``pattern``), so the browser checks them first; the form and then the service
(JSON Schema and the type's own validator) check them again on the server.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any, cast

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..models import TaskState
from ..registry import TaskConfig

UNSET = ""  # the empty choice of an optional enum


def _label(name: str, schema: Mapping[str, Any]) -> str:
    return str(schema.get("title") or name.replace("_", " ").capitalize())


class UnparsedJSON(str):
    """Text given back to a form as it was typed, because it is not JSON we can parse."""

    __slots__ = ()


class JSONTextField(forms.JSONField):
    """Django's JSONField, but text it cannot parse is a form error, never a crash: JSON nested deeper than
    Python's recursion limit, or an integer longer than ``sys.get_int_max_str_digits()`` (Django catches only
    ``JSONDecodeError``, when parsing and when giving the text back to the form)."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except (ValueError, RecursionError):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid", params={"value": "…"}) from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except (ValueError, RecursionError):
            return UnparsedJSON(data)

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, UnparsedJSON) else super().prepare_value(value)


def schema_field(name: str, schema: Mapping[str, Any], *, required: bool) -> forms.Field:
    """A form field for one property of a JSON Schema object."""
    kind = schema.get("type")
    if isinstance(kind, list):  # ["integer", "null"] and the like: the first non-null type
        kind = next((k for k in kind if k != "null"), None)
    common: dict[str, Any] = {"label": _label(name, schema), "required": required}
    if schema.get("description"):
        common["help_text"] = str(schema["description"])
    default = schema.get("default")
    field: forms.Field
    if "enum" in schema:
        choices: list[tuple[str, Any]] = [(json.dumps(value), str(value)) for value in schema["enum"]]
        if not required:
            choices.insert(0, (UNSET, _("(default)") if default is None else _("(default: %s)") % default))
        field = forms.TypedChoiceField(choices=choices, coerce=json.loads, empty_value=None, **common)
        if default is not None:
            field.initial = json.dumps(default)
        return field
    if kind == "integer":
        field = forms.IntegerField(min_value=schema.get("minimum"), max_value=schema.get("maximum"), **common)
    elif kind == "number":
        field = forms.FloatField(min_value=schema.get("minimum"), max_value=schema.get("maximum"), **common)
        field.widget.attrs["step"] = "any"
    elif kind == "boolean":
        # An unticked box is "false": a required boolean is always given, so it is never required here.
        field = forms.BooleanField(**{**common, "required": False})
    elif kind == "string":
        field = forms.CharField(
            min_length=schema.get("minLength"), max_length=schema.get("maxLength"), strip=False, **common
        )
        if isinstance(schema.get("pattern"), str):
            field.widget.attrs["pattern"] = schema["pattern"]
        if schema.get("format") == "date-time":
            field.widget.input_type = "datetime-local"
    else:  # objects, arrays, anything else: JSON text
        field = JSONTextField(widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}), **common)
        if not common.get("help_text"):
            field.help_text = _("JSON")
    if default is not None:
        field.initial = default
    return field


class ParamsForm(forms.Form):
    """The params of one task type. ``params()`` gives the JSON object to submit (empty optionals left out)."""

    def __init__(self, config: TaskConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = config
        schema = dict(config.param_schema or {})
        self.free_form = schema.get("type") != "object" or "properties" not in schema
        if self.free_form:
            self.fields["params"] = JSONTextField(
                label=_("Parameters (JSON)"),
                required=False,
                initial=dict,
                widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
                help_text=_("A JSON object."),
            )
            return
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            if isinstance(prop, Mapping):
                self.fields[name] = schema_field(name, prop, required=name in required)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.free_form and cleaned.get("params") is not None and not isinstance(cleaned["params"], dict):
            self.add_error("params", _("Enter a JSON object."))
        return cleaned

    def params(self) -> dict[str, Any]:
        if self.free_form:
            value = self.cleaned_data.get("params")
            return value if isinstance(value, dict) else {}
        out: dict[str, Any] = {}
        for name, field in self.fields.items():
            value = self.cleaned_data.get(name)
            if isinstance(field, forms.BooleanField):
                if value or name in self.data:
                    out[name] = bool(value)
                elif field.initial is not None:
                    out[name] = False
                continue
            if value is None or value == "":
                continue
            out[name] = value
        return out

    def add_service_error(self, field_path: str, message: str) -> None:
        """An InvalidParams from the server's validation, on the field it names (``params.<name>...``)."""
        parts = field_path.split(".")
        name = parts[1] if len(parts) > 1 and parts[0] == "params" else None
        self.add_error(name if name in self.fields else None, message)


class FilterForm(forms.Form):
    """The task list's filters, from the query string."""

    q = forms.CharField(label=_("Task id"), required=False, max_length=100)
    state = forms.ChoiceField(label=_("State"), required=False)
    task_type = forms.ChoiceField(label=_("Type"), required=False)
    created_from = forms.DateField(label=_("Created from"), required=False, widget=forms.DateInput({"type": "date"}))
    created_to = forms.DateField(label=_("Created until"), required=False, widget=forms.DateInput({"type": "date"}))

    def __init__(self, *args: Any, task_types: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["state"]).choices = [("", _("All states")), *TaskState.choices]
        cast(forms.ChoiceField, self.fields["task_type"]).choices = [
            ("", _("All types")),
            *[(name, name) for name in task_types],
        ]
        self.fields["q"].widget.attrs.update({"inputmode": "search", "placeholder": _("e.g. 42")})

    def clean_q(self) -> int | uuid.UUID | None:
        raw = str(self.cleaned_data.get("q") or "").strip().lstrip("#")
        if not raw:
            return None
        if re.fullmatch(r"\d{1,18}", raw):
            return int(raw)
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise forms.ValidationError(_("Enter a task id (a number) or a Celery task id.")) from None

    def clean_created_from(self) -> datetime | None:
        return self._day_bound(self.cleaned_data.get("created_from"), time.min)

    def clean_created_to(self) -> datetime | None:
        return self._day_bound(self.cleaned_data.get("created_to"), time.max)

    @staticmethod
    def _day_bound(day: date | None, at: time) -> datetime | None:
        """The start or end of ``day`` in the current time zone, in UTC. The first day of year 1 east of UTC
        and the last of year 9999 west of it do not exist in UTC: a form error, where SQLite raised
        OverflowError (a 500) when it converted the bound."""
        if day is None:
            return None
        try:
            return datetime.combine(day, at, timezone.get_current_timezone()).astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError(_("Enter a date from 0001-01-02 to 9999-12-30.")) from None

    def filter(self, tasks: Any) -> Any:
        data = self.cleaned_data
        q = data.get("q")
        if isinstance(q, int):
            tasks = tasks.filter(id=q)
        elif isinstance(q, uuid.UUID):
            tasks = tasks.filter(celery_task_id=str(q))
        if data.get("state"):
            tasks = tasks.filter(state=data["state"])
        if data.get("task_type"):
            tasks = tasks.filter(task_type=data["task_type"])
        if data.get("created_from"):
            tasks = tasks.filter(create_at__gte=data["created_from"])
        if data.get("created_to"):
            tasks = tasks.filter(create_at__lte=data["created_to"])
        return tasks
