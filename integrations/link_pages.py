"""The short links' page: GET /l/<code> sends the patient on to the original link and records
the click (integrations.short_links). Served by careflow on whatever domain points at it; the
clinic's link domain is only how the link is written.

A wrong or unknown code gets a plain "not found" page, an expired link a "link expired" page:
a patient who taps an old text should understand what happened, and nothing here says which
clinic or patient a code belongs to. A HEAD request or a link-preview fetcher is sent on
without a click being recorded: neither is the patient opening the link.
"""

from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from integrations.short_links import is_preview_agent, link_click_record, short_link_find

NOT_FOUND = (
    "Link not found",
    "This link does not exist. Check that it was copied in full, or contact the clinic that "
    "sent it.",
)
EXPIRED = (
    "This link has expired",
    "Links in our texts work for a limited time. Contact the clinic that sent it for a new one.",
)


def _page(request: HttpRequest, words: tuple[str, str], status: HTTPStatus) -> HttpResponse:
    title, text = words
    response = render(request, "links/page.html", {"title": title, "text": text}, status=status)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def short_link_follow(request: HttpRequest, code: str) -> HttpResponse:
    link = short_link_find(code)
    if link is None:
        return _page(request, NOT_FOUND, HTTPStatus.NOT_FOUND)
    now = timezone.now()
    if link.expires_at <= now:
        return _page(request, EXPIRED, HTTPStatus.GONE)
    agent = request.META.get("HTTP_USER_AGENT", "")[:500]
    if request.method == "GET" and not is_preview_agent(agent):
        link_click_record(link=link, user_agent=agent, now=now)
    response = HttpResponseRedirect(link.url)
    # Every click must reach us to be counted: no cache may answer for us.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
