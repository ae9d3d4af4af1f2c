"""/api/v1/: the clinic API (API keys), its OpenAPI schema and Swagger UI (staff sessions)."""

from django.contrib import admin
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from integrations.api import automation, views
from integrations.api.errors import NotFoundView

app_name = "api"

urlpatterns = [
    path("patients/", views.PatientList.as_view(), name="patient-list"),
    path("patients/<str:uuid>/", views.PatientDetail.as_view(), name="patient-detail"),
    path(
        "patients/<str:uuid>/consents/",
        views.PatientConsents.as_view(),
        name="patient-consents",
    ),
]
for _endpoint in views.RECORD_ENDPOINTS:
    _list, _detail = views.record_views(_endpoint)
    urlpatterns += [
        path(f"{_endpoint.path}/", _list.as_view(), name=f"{_endpoint.noun}-list"),
        path(f"{_endpoint.path}/<str:uuid>/", _detail.as_view(), name=f"{_endpoint.noun}-detail"),
    ]

urlpatterns += [
    path("event-types/", automation.EventTypeList.as_view(), name="event-type-list"),
    path("events/", automation.EventPost.as_view(), name="event-post"),
    path("workflows/", automation.WorkflowList.as_view(), name="workflow-list"),
    path("workflows/<str:uuid>/runs/", automation.WorkflowRuns.as_view(), name="workflow-runs"),
    path("runs/", automation.RunList.as_view(), name="run-list"),
    path("runs/<str:uuid>/", automation.RunDetail.as_view(), name="run-detail"),
    # Staff only (any role): the admin's login, then the schema and its Swagger UI, whose
    # files come from our own static files (drf-spectacular-sidecar), no CDN.
    path(
        "schema/",
        admin.site.admin_view(SpectacularAPIView.as_view()),
        name="schema",
    ),
    path(
        "docs/",
        admin.site.admin_view(SpectacularSwaggerView.as_view(url_name="api:schema")),
        name="docs",
    ),
    re_path(r"^.*$", NotFoundView.as_view()),
]
