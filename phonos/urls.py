from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularSwaggerView

from apps.accounts.apis import AccountApi
from apps.billing.apis import StripeWebhookApi
from apps.common.apis import HealthApi
from apps.common.openapi import CachedOpenApiView
from apps.jobs.apis import (
    BatchApi,
    CacheCheckApi,
    JobCancelApi,
    JobDownloadApi,
    ModelsApi,
    PipelineApi,
    ValidateApi,
    job_detail_view,
    job_list_view,
    predict_view,
)
from apps.jobs.result_apis import (
    JobArchiveApi,
    JobConfidenceApi,
    JobEventsApi,
    JobResultsApi,
    JobStructureApi,
)
from apps.jobs.stream_apis import stream_view
from apps.jobs.structure_apis import StructureFetchApi, StructureParseApi
from apps.jobs.system_apis import SystemStatusApi, system_status_page
from apps.ops.views import health_live, health_ready, metrics
from apps.usage.apis import UsageApi

handler404 = "apps.common.exception_handler.json_not_found"
handler500 = "apps.common.exception_handler.json_server_error"

v1: list[URLPattern | URLResolver] = [
    # First, as Django tries the patterns in order and each miss costs: the GETs clients poll,
    # and the submission, answered without DRF's dispatch (apps.common.apis.lean_view).
    path("jobs/<str:job_id>", job_detail_view, name="job-detail"),
    path("jobs", job_list_view, name="job-list"),
    path("predict", predict_view, name="predict"),
    path("health", HealthApi.as_view(), name="health"),
    path("health/live", health_live, name="health-live"),
    path("health/ready", health_ready, name="health-ready"),
    path("models", ModelsApi.as_view(), name="models"),
    path("validate", ValidateApi.as_view(), name="validate"),
    path("cache/check", CacheCheckApi.as_view(), name="cache-check"),
    path("batch", BatchApi.as_view(), name="batch"),
    path("pipelines", PipelineApi.as_view(), name="pipelines"),
    path("structure/parse", StructureParseApi.as_view(), name="structure-parse"),
    path("structure/fetch/<str:pdb_id>", StructureFetchApi.as_view(), name="structure-fetch"),
    path("account", AccountApi.as_view(), name="account"),
    path("usage", UsageApi.as_view(), name="usage"),
    path("jobs/<str:job_id>/cancel", JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<str:job_id>/download", JobDownloadApi.as_view(), name="job-download"),
    # An async view: under ASGI an open stream holds no thread (see apps/jobs/streams.py).
    path("jobs/<str:job_id>/events", stream_view(JobEventsApi.as_view()), name="job-events"),
    path("jobs/<str:job_id>/results", JobResultsApi.as_view(), name="job-results"),
    path(
        "jobs/<str:job_id>/results/confidence",
        JobConfidenceApi.as_view(),
        name="job-results-confidence",
    ),
    path("jobs/<str:job_id>/results/archive", JobArchiveApi.as_view(), name="job-results-archive"),
    path(
        "jobs/<str:job_id>/results/structure",
        JobStructureApi.as_view(),
        name="job-results-structure",
    ),
    path("system/status", SystemStatusApi.as_view(), name="system-status"),
    path("", include("apps.webhooks.urls")),
    path("", include("apps.billing.urls")),
    path("openapi.json", CachedOpenApiView.as_view(), name="openapi"),
    path(
        "docs",
        SpectacularSwaggerView.as_view(
            url_name="openapi", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
]

urlpatterns = [
    path("v1/", include(v1)),
    path("admin/system-status/", system_status_page, name="admin-system-status"),
    path("admin/", admin.site.urls),
    path("metrics", metrics, name="metrics"),
    path("stripe/webhook", StripeWebhookApi.as_view(), name="stripe-webhook"),
    path("dashboard/", include("apps.dashboard.urls")),
    path("", RedirectView.as_view(pattern_name="dashboard:overview"), name="home"),
]
