"""Server-rendered dashboard pages. Views only translate between HTTP and the services and
selectors of each domain; every query is scoped to the signed-in user's account."""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.accounts.models import Account, User
from apps.accounts.services import api_key_create, api_key_revoke
from apps.billing.selectors import credit_pack_list, ledger_entry_list
from apps.billing.services import account_email_verify_and_credit, checkout_session_create
from apps.billing.stripe_client import stripe_payments_enabled
from apps.common.client_ip import client_ip
from apps.common.exceptions import ApplicationError, NotFound
from apps.dashboard.forms import ApiKeyForm, SignupForm, SubmitForm, WebhookForm
from apps.dashboard.selectors import api_key_list, fold_jobs_for_docking
from apps.dashboard.services import email_verification_send, signup_throttle_hit, user_signup
from apps.jobs.catalog import submission_clean
from apps.jobs.models import Job
from apps.jobs.registry import MODELS
from apps.jobs.selectors import job_counts, job_get, job_list
from apps.jobs.services import job_cancel, job_delete, job_submit
from apps.usage.services import usage_report
from apps.webhooks.selectors import webhook_delivery_list, webhook_get, webhook_list
from apps.webhooks.services import webhook_create, webhook_delete, webhook_test_send

JOBS_PER_PAGE = 20
USAGE_DAYS = 30
RESEND_INTERVAL_SECONDS = 60

_Response = TypeVar("_Response", bound=HttpResponseBase)
_Found = TypeVar("_Found")


class SignedInRequest(HttpRequest):
    """For annotations only: a request that `login_required` let through."""

    user: User


def account_required(view: Callable[..., _Response]) -> Callable[..., _Response]:
    """Signed in, and a member of an account (an operator's bare admin user is not)."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: SignedInRequest, *args: Any, **kwargs: Any) -> _Response:
        if request.user.account_id is None:
            raise Http404("This user belongs to no account")
        return view(request, request.user.account, *args, **kwargs)

    return wrapper


def _found(lookup: Callable[[], _Found]) -> _Found:
    """A service's NotFound (another tenant's object too) as the dashboard's 404."""
    try:
        return lookup()
    except NotFound as error:
        raise Http404(error.message) from None


def _verify_url(request: HttpRequest) -> str:
    placeholder = "TOKEN"
    url = request.build_absolute_uri(reverse("dashboard:verify_email", args=[placeholder]))
    return url.replace(placeholder, "{token}")


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                signup_throttle_hit(client_ip=client_ip(request))
                user = user_signup(
                    username=form.cleaned_data["username"],
                    email=form.cleaned_data["email"],
                    password=form.cleaned_data["password1"],
                    verify_url=_verify_url(request),
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
                status = error.status_code
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                messages.success(
                    request,
                    f"Welcome to Phonos. We sent a link to {user.email}: follow it to verify your "
                    f"address and receive {settings.PHONOS_SIGNUP_CREDITS} free credits.",
                )
                return redirect("dashboard:overview")
    return render(request, "dashboard/signup.html", {"form": form}, status=status)


def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the verification mail; it needs no session (it may open in another browser)."""
    try:
        _, credits_granted = account_email_verify_and_credit(token=token)
    except ApplicationError as error:
        return render(
            request,
            "dashboard/verify_email_failed.html",
            {"message": error.message},
            status=error.status_code,
        )
    if credits_granted:
        messages.success(
            request, f"Email verified: {credits_granted} free credits added to your account."
        )
    else:
        messages.info(request, "Your email address is verified.")
    return redirect("dashboard:overview")


@require_POST
@account_required
def verify_email_resend(request: HttpRequest, account: Account) -> HttpResponse:
    if account.email_verified:
        messages.info(request, "Your email address is already verified.")
    elif not cache.add(f"phonos:verify-resend:{account.id}", 1, timeout=RESEND_INTERVAL_SECONDS):
        messages.error(request, "A link was sent a moment ago; check your mail, or wait a minute.")
    else:
        email_verification_send(account=account, verify_url=_verify_url(request))
        messages.success(request, f"We sent a new link to {account.email}.")
    return redirect("dashboard:overview")


@account_required
def overview(request: HttpRequest, account: Account) -> HttpResponse:
    account.refresh_from_db(fields=["credit_balance", "email_verified_at"])
    return render(
        request,
        "dashboard/overview.html",
        {
            "account": account,
            "counts": job_counts(account=account),
            "recent_jobs": job_list(account=account)[:5],
        },
    )


@account_required
def jobs(request: HttpRequest, account: Account) -> HttpResponse:
    status = request.GET.get("status") or None
    model = request.GET.get("model") or None
    search = (request.GET.get("q") or "").strip() or None
    page = Paginator(
        job_list(account=account, status=status, model=model, search=search), JOBS_PER_PAGE
    ).get_page(request.GET.get("page"))
    filters = request.GET.copy()
    filters.pop("page", None)
    return render(
        request,
        "dashboard/jobs.html",
        {
            "page": page,
            "statuses": Job.Status.values,
            "models": MODELS.values(),
            "status": status or "",
            "model": model or "",
            "q": search or "",
            "filter_query": filters.urlencode(),
        },
    )


def _job_context(job: Job) -> dict[str, Any]:
    params = {name: value for name, value in job.params.items() if name != "protein_pdb"}
    return {
        "job": job,
        "params": params,
        "has_receptor": "protein_pdb" in job.params,
        # Folds end in a PDB that Mol* shows; docking poses (SDF) are offered as downloads.
        "has_structure": job.status == Job.Status.COMPLETED and job.output_file.endswith(".pdb"),
    }


@account_required
def job_detail(request: HttpRequest, account: Account, job_id: str) -> HttpResponse:
    job = _found(lambda: job_get(account=account, job_id=job_id))
    return render(request, "dashboard/job_detail.html", _job_context(job))


@account_required
def job_live(request: HttpRequest, account: Account, job_id: str) -> HttpResponse:
    """The status fragment, fetched on each event of the job's stream (job_live.js); once
    the job ends the page reloads to show results."""
    job = _found(lambda: job_get(account=account, job_id=job_id))
    response = render(request, "dashboard/_job_status.html", _job_context(job))
    if job.is_terminal:
        response["HX-Refresh"] = "true"
    return response


def _job_action(request: HttpRequest, action: Callable[[], object], done: str) -> bool:
    """Run a job action, saying how it went: `done` on success, the refusal's message (a job
    that has ended cannot be cancelled) otherwise. Another tenant's job is a 404."""
    try:
        _found(action)
    except ApplicationError as error:
        messages.error(request, error.message)
        return False
    messages.success(request, done)
    return True


@require_POST
@account_required
def job_cancel_view(request: HttpRequest, account: Account, job_id: str) -> HttpResponse:
    done = "Job cancelled; its credits were refunded."
    _job_action(request, lambda: job_cancel(account=account, job_id=job_id), done)
    return redirect("dashboard:job", job_id=job_id)


@require_POST
@account_required
def job_delete_view(request: HttpRequest, account: Account, job_id: str) -> HttpResponse:
    if _job_action(request, lambda: job_delete(account=account, job_id=job_id), "Job deleted."):
        return redirect("dashboard:jobs")
    return redirect("dashboard:job", job_id=job_id)


def _submission_data(account: Account, form: SubmitForm) -> dict[str, Any]:
    spec = MODELS[form.cleaned_data["model"]]
    data: dict[str, Any] = {"model": spec.id, "name": form.cleaned_data["name"]}
    params = form.params()
    if spec.type == "docking":
        # As the API does: a fold is named by its id; the worker reads its structure.
        receptor = form.uploaded_pdb()
        if receptor is not None:
            params["protein_pdb"] = receptor
        elif form.cleaned_data["protein_job"]:
            params["protein_job_id"] = form.cleaned_data["protein_job"]
        smiles = form.cleaned_data["ligand_smiles"].strip()
        if smiles:
            params["ligand_smiles"] = smiles
    else:
        data["sequence"] = form.sequence_text()
    data["params"] = params
    return data


@account_required
def submit(request: HttpRequest, account: Account) -> HttpResponse:
    fold_jobs = fold_jobs_for_docking(account=account)
    form = SubmitForm(request.POST or None, request.FILES or None, fold_jobs=fold_jobs)
    preview = None
    if request.method == "POST" and form.is_valid():
        try:
            # The checks of POST /v1/validate; the cost is shown before anything is charged.
            submission = submission_clean(_submission_data(account, form))
            if request.POST.get("action") == "submit":
                job = job_submit(account=account, api_key=None, submission=submission)
                messages.success(request, f"Job submitted: {submission.cost} credits reserved.")
                return redirect("dashboard:job", job_id=job.id)
            account.refresh_from_db(fields=["credit_balance"])
            preview = {
                "cost": submission.cost,
                "length": len(submission.sequence),
                "balance": account.credit_balance,
                "sufficient": account.credit_balance >= submission.cost,
            }
        except ApplicationError as error:
            form.add_error(None, error.message)
    return render(
        request,
        "dashboard/submit.html",
        {
            "form": form,
            "models": MODELS.values(),
            "preview": preview,
            "balance": account.credit_balance,
        },
    )


@account_required
def keys(request: HttpRequest, account: Account) -> HttpResponse:
    form = ApiKeyForm(request.POST or None, request=request, account=account)
    created = None
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                created = api_key_create(
                    account=account,
                    name=form.cleaned_data["name"],
                    rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
                status = error.status_code
            else:
                status = 201
                form = ApiKeyForm(request=request, account=account)
    return render(
        request,
        "dashboard/keys.html",
        {
            "form": form,
            "created": created,
            "api_keys": api_key_list(account=account),
            "default_rate_limit": min(
                settings.PHONOS_DEFAULT_RATE_LIMIT, account.key_rate_limit_max
            ),
            "max_rate_limit": account.key_rate_limit_max,
        },
        status=status,
    )


@require_POST
@account_required
def key_revoke(request: HttpRequest, account: Account, key_id: int) -> HttpResponse:
    api_key = _found(lambda: api_key_revoke(account=account, key_id=key_id))
    messages.success(request, f"Key {api_key.masked} revoked.")
    return redirect("dashboard:keys")


@account_required
def webhooks(request: HttpRequest, account: Account) -> HttpResponse:
    form = WebhookForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            created = webhook_create(
                account=account, url=form.cleaned_data["url"], events=form.cleaned_data["events"]
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            form = WebhookForm()
    return render(
        request,
        "dashboard/webhooks.html",
        {"form": form, "created": created, "webhooks": webhook_list(account=account)},
    )


@account_required
def webhook_detail(request: HttpRequest, account: Account, webhook_id: str) -> HttpResponse:
    webhook = _found(lambda: webhook_get(account=account, webhook_id=webhook_id))
    return render(
        request,
        "dashboard/webhook_detail.html",
        {"webhook": webhook, "deliveries": webhook_delivery_list(webhook=webhook)[:50]},
    )


@require_POST
@account_required
def webhook_test(request: HttpRequest, account: Account, webhook_id: str) -> HttpResponse:
    _found(lambda: webhook_test_send(account=account, webhook_id=webhook_id))
    messages.success(request, "Test event queued; its delivery appears below.")
    return redirect("dashboard:webhook", webhook_id=webhook_id)


@require_POST
@account_required
def webhook_delete_view(request: HttpRequest, account: Account, webhook_id: str) -> HttpResponse:
    _found(lambda: webhook_delete(account=account, webhook_id=webhook_id))
    messages.success(request, "Webhook deleted.")
    return redirect("dashboard:webhooks")


@account_required
def usage(request: HttpRequest, account: Account) -> HttpResponse:
    return render(
        request,
        "dashboard/usage.html",
        {"summary": usage_report(account=account, days=USAGE_DAYS)},
    )


@account_required
def billing(request: HttpRequest, account: Account) -> HttpResponse:
    account.refresh_from_db(fields=["credit_balance"])
    return render(
        request,
        "dashboard/billing.html",
        {
            "account": account,
            "entries": ledger_entry_list(account=account, limit=100),
            "packs": credit_pack_list(),
            "currency": settings.PHONOS_CURRENCY.upper(),
            "checkout_available": stripe_payments_enabled(),
        },
    )


@require_POST
@account_required
def billing_checkout(request: HttpRequest, account: Account) -> HttpResponse:
    if not stripe_payments_enabled():
        messages.error(request, "Buying credits is not available on this deployment yet.")
        return redirect("dashboard:billing")
    back = request.build_absolute_uri(reverse("dashboard:billing"))
    try:
        _session_id, url = checkout_session_create(
            account=account, pack_id=request.POST.get("pack", ""), success_url=back, cancel_url=back
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("dashboard:billing")
    return redirect(url)
