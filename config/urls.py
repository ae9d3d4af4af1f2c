from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "careflow"
admin.site.site_title = "careflow"
admin.site.index_title = "Patient messaging workflows"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("integrations.urls")),
]
