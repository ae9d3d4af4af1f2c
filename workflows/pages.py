"""Extra pages of a workflow that other apps provide (the messaging app's analytics), as a
seam: the workflow admin mounts each at /admin/workflows/workflow/<id>/<slug>/, scopes the
workflow to the user's clinic and checks the view permission before calling it, and links it
from the workflow's page and list. The engine does not import the apps that register them."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

from workflows.models import Workflow

# (request, the workflow, the admin's context for a page of it) -> the page
PageView = Callable[[HttpRequest, Workflow, dict[str, Any]], HttpResponse]


@dataclass(frozen=True, slots=True)
class WorkflowPage:
    slug: str
    label: str
    view: PageView


WORKFLOW_PAGES: dict[str, WorkflowPage] = {}


def workflow_page_register(page: WorkflowPage) -> WorkflowPage:
    WORKFLOW_PAGES[page.slug] = page
    return page
