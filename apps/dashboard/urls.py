from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse_lazy

from apps.dashboard import account_views, result_views, stream_views, views

app_name = "dashboard"

auth = [
    path("signup/", views.signup, name="signup"),
    path("verify-email/resend/", views.verify_email_resend, name="verify_email_resend"),
    path("verify-email/<str:token>/", views.verify_email, name="verify_email"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="dashboard/login.html",
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset/",
        auth_views.PasswordResetView.as_view(
            template_name="dashboard/password_reset.html",
            email_template_name="dashboard/password_reset_email.txt",
            subject_template_name="dashboard/password_reset_subject.txt",
            success_url=reverse_lazy("dashboard:password_reset_done"),
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="dashboard/password_reset_done.html"
        ),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="dashboard/password_reset_confirm.html",
            success_url=reverse_lazy("dashboard:password_reset_complete"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="dashboard/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
]

# Under jobs/<job_id>/.
job = [
    path("", views.job_detail, name="job"),
    path("live/", views.job_live, name="job_live"),
    path("events", stream_views.job_events, name="job_events"),
    path("cancel/", views.job_cancel_view, name="job_cancel"),
    path("delete/", views.job_delete_view, name="job_delete"),
    path("confidence.json", result_views.DashboardConfidenceView.as_view(), name="job_confidence"),
    path("structure", result_views.DashboardStructureView.as_view(), name="job_structure"),
    path("archive.zip", result_views.DashboardArchiveView.as_view(), name="job_archive"),
]

jobs = [
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/new/", views.submit, name="submit"),
    path("jobs/<str:job_id>/", include(job)),
]

urlpatterns = [
    path("", views.overview, name="overview"),
    *auth,
    *jobs,
    path("keys/", views.keys, name="keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("webhooks/", views.webhooks, name="webhooks"),
    path("webhooks/<str:webhook_id>/", views.webhook_detail, name="webhook"),
    path("webhooks/<str:webhook_id>/test/", views.webhook_test, name="webhook_test"),
    path("webhooks/<str:webhook_id>/delete/", views.webhook_delete_view, name="webhook_delete"),
    path("usage/", views.usage, name="usage"),
    path("billing/", views.billing, name="billing"),
    path("billing/checkout/", views.billing_checkout, name="billing_checkout"),
    path("account/delete/", account_views.account_delete_view, name="account_delete"),
]
