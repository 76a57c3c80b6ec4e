"""Forms turn what the browser posts into the arguments the services take; rules stay there."""

from typing import Any

from django import forms
from django.contrib.auth import authenticate
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest

from apps.accounts.models import Account, User
from apps.jobs.registry import MODELS, Param
from apps.webhooks.models import Webhook

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


class SignupForm(UserCreationForm):
    email = forms.EmailField()

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class ApiKeyForm(forms.Form):
    """A new key: any rate up to the account's maximum, and the password asked for again, so a
    session left open (or stolen) is not enough to mint a long-lived credential."""

    name = forms.CharField(max_length=100, required=False)
    rate_limit_per_minute = forms.IntegerField(min_value=1, required=False)
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        label="Your password",
        strip=False,
    )

    def __init__(self, *args: Any, request: HttpRequest, account: Account, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.fields["rate_limit_per_minute"] = forms.IntegerField(
            min_value=1, max_value=account.key_rate_limit_max, required=False
        )

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        user = self.request.user
        # Through authenticate(), so a wrong password counts towards the login lockout (axes).
        if authenticate(self.request, username=user.get_username(), password=password) != user:
            raise forms.ValidationError("That is not your password", code="password_incorrect")
        return password


class WebhookForm(forms.Form):
    url = forms.URLField(max_length=2048, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=Webhook.Event.choices,
        initial=list(Webhook.DEFAULT_EVENTS),
        widget=forms.CheckboxSelectMultiple,
    )


def fasta_to_sequence(text: str) -> str:
    """A pasted or uploaded sequence: FASTA header and comment lines dropped, lines joined."""
    lines = [line.strip() for line in text.splitlines()]
    return "".join(line for line in lines if line and not line.startswith((">", ";")))


def _read_upload(upload, *, label: str) -> str:
    if upload.size > MAX_UPLOAD_BYTES:
        raise forms.ValidationError(f"{label} is larger than {MAX_UPLOAD_BYTES // 1024} KiB")
    try:
        return upload.read().decode()
    except UnicodeDecodeError:
        raise forms.ValidationError(f"{label} is not a text file") from None


def param_field_name(model_id: str, param: Param) -> str:
    return f"{model_id}__{param.name}"


class SubmitForm(forms.Form):
    """One form for every model; the catalog's `submission_clean` does the real checking."""

    model = forms.ChoiceField(choices=[(spec.id, spec.name) for spec in MODELS.values()])
    name = forms.CharField(max_length=200, required=False)
    sequence = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), required=False)
    sequence_file = forms.FileField(required=False)
    protein_pdb_file = forms.FileField(required=False)
    protein_job = forms.ChoiceField(required=False)
    ligand_smiles = forms.CharField(max_length=1000, required=False)

    def __init__(self, *args: Any, fold_jobs: list | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["protein_job"].choices = [("", "—")] + [
            (str(job.id), f"{job.name or 'unnamed'} · {job.model} · {str(job.id)[:8]}")
            for job in fold_jobs or []
        ]
        for spec in MODELS.values():
            for param in spec.params:
                if param.name in {"protein_pdb", "protein_job_id", "ligand_smiles"}:
                    continue  # asked for by the docking fields above
                self.fields[param_field_name(spec.id, param)] = _param_field(param)

    def param_groups(self) -> list[tuple[str, list]]:
        return [
            (
                spec.id,
                [
                    self[param_field_name(spec.id, param)]
                    for param in spec.params
                    if param_field_name(spec.id, param) in self.fields
                ],
            )
            for spec in MODELS.values()
        ]

    def sequence_text(self) -> str:
        upload = self.cleaned_data.get("sequence_file")
        raw = _read_upload(upload, label="The sequence file") if upload else ""
        return fasta_to_sequence(raw or self.cleaned_data.get("sequence") or "")

    def uploaded_pdb(self) -> str | None:
        upload = self.cleaned_data.get("protein_pdb_file")
        return _read_upload(upload, label="The PDB file") if upload else None

    def params(self) -> dict[str, Any]:
        spec = MODELS[self.cleaned_data["model"]]
        params: dict[str, Any] = {}
        for param in spec.params:
            name = param_field_name(spec.id, param)
            if name not in self.fields:
                continue
            value = self.cleaned_data.get(name)
            if value in (None, "") and param.kind is not bool:
                continue
            params[param.name] = value
        return params


def _param_field(param: Param) -> forms.Field:
    help_text = param.description
    label = param.name.replace("_", " ").capitalize()
    if param.kind is bool:
        return forms.BooleanField(
            required=False, initial=param.default, label=label, help_text=help_text
        )
    if param.kind is int:
        range_text = f"{param.minimum}–{param.maximum}, default {param.default}"
        return forms.IntegerField(
            required=False,
            initial=param.default,
            label=label,
            min_value=param.minimum,
            max_value=param.maximum,
            help_text=f"{help_text} ({range_text})" if help_text else range_text,
        )
    if param.kind is float:
        bounds = [
            f"{name} {value}"
            for name, value in (("min", param.minimum), ("max", param.maximum))
            if value is not None
        ]
        detail = ", ".join(
            bounds + ([f"default {param.default}"] if param.default is not None else [])
        )
        return forms.FloatField(
            required=False,
            initial=param.default,
            label=label,
            min_value=param.minimum,
            max_value=param.maximum,
            help_text=f"{help_text} ({detail})" if help_text and detail else help_text or detail,
        )
    if param.choices:
        return forms.ChoiceField(
            required=False,
            choices=[(choice, choice) for choice in param.choices],
            initial=param.default,
            label=label,
            help_text=help_text,
        )
    return forms.CharField(
        required=False, label=label, widget=forms.Textarea(attrs={"rows": 3}), help_text=help_text
    )
