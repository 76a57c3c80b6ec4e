"""Deleting one's own account from the dashboard: a confirmation page, then a POST that asks for
the password again (a session left open on a shared computer must not be enough)."""

from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.accounts.models import Account
from apps.dashboard.views import account_required
from apps.ops.account_deletion import account_delete


@account_required
def account_delete_view(request: HttpRequest, account: Account) -> HttpResponse:
    error = ""
    if request.method == "POST":
        if request.user.check_password(request.POST.get("password", "")):
            account_delete(account=account)
            logout(request)
            messages.success(request, "Your account and its data were deleted.")
            return redirect("dashboard:login")
        error = "The password is not correct."
    return render(
        request, "dashboard/account_delete.html", {"error": error}, status=400 if error else 200
    )
