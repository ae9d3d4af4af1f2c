from django.contrib import admin
from django.urls import include, path

from integrations import home, inbound, link_pages
from patients.login import AdminLoginForm
from workflows import reference

admin.site.site_header = "careflow"
admin.site.site_title = "careflow"
admin.site.index_title = "Patient messaging workflows"
# The one-time code for users with an authenticator (patients.login); throttled by axes.
admin.site.login_form = AdminLoginForm
admin.site.login_template = "admin/careflow/login.html"

urlpatterns = [
    # Extra admin pages, staff only (admin_view), matched before the admin's own catch-all.
    path(
        "admin/careflow/reference/",
        admin.site.admin_view(reference.reference_index),
        name="careflow-reference",
    ),
    path(
        "admin/careflow/reference/<str:name>/",
        admin.site.admin_view(reference.reference_event),
        name="careflow-reference-event",
    ),
    # The admin index with the clinic home on top (integrations.home); the rest of the admin
    # is the admin's own.
    path("admin/", admin.site.admin_view(home.admin_home), name="careflow-home"),
    path("admin/", admin.site.urls),
    path(
        "webhooks/events/<uuid:organization_uuid>/",
        inbound.custom_event,
        name="webhook-custom-event",
    ),
    # Callers often drop the slash; APPEND_SLASH cannot redirect a POST (500 under DEBUG).
    path("webhooks/events/<uuid:organization_uuid>", inbound.custom_event),
    path("webhooks/", include("integrations.urls")),
    # The clinic API (integrations.api): versioned in the path.
    path("api/v1/", include("integrations.api.urls")),
    # Short links in texts (integrations.short_links); the clinic's link domain points here.
    path("l/<path:code>", link_pages.short_link_follow, name="short-link"),
]
