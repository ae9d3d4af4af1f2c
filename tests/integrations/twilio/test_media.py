"""A text's media (MMS): which URLs are refused, at save (a literal) and when the step runs (a
templated one), with a clear reason; the sandbox takes MediaUrl as Twilio does."""

from typing import Any

import pytest

from integrations.twilio.media import media_kind, media_url_problem
from workflows.validation import workflow_validate


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/flyer.png",
        "https://cdn.example.com/a/b/Instructions.PDF?v=2",
        "https://cdn.example.com/media/12345",  # no extension: Twilio reads the Content-Type
        "https://93.184.216.34/x.jpg",
        "",  # no media: a plain SMS
    ],
)
def test_urls_twilio_can_fetch_pass(url: str) -> None:
    assert media_url_problem(url) == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://cdn.example.com/a.png", "must start with https://"),
        ("ftp://cdn.example.com/a.png", "must start with https://"),
        ("cdn.example.com/a.png", "must start with https://"),
        ("javascript:alert(1)", "must start with https://"),
        ("https://user:pw@cdn.example.com/a.png", "must not contain a user name or password"),
        ("https://127.0.0.1/a.png", "private or local address"),
        ("https://10.0.0.5/a.png", "private or local address"),
        ("https://169.254.169.254/latest", "private or local address"),
        ("https://[::1]/a.png", "private or local address"),
        ("https://localhost/a.png", "not reachable from the internet"),
        ("https://files.internal/a.png", "not reachable from the internet"),
        ("https://intranet/a.png", "not reachable from the internet"),
        ("https://cdn.example.com/a.exe", "send an image (JPEG, PNG, GIF) or a PDF"),
        ("https://cdn.example.com/a b.png", "contains spaces"),
        ("https://cdn.example.com:99999/a.png", "not a valid URL"),
        ("https://cdn.example.com/" + "a" * 1000 + ".png", "longer than 1,000 characters"),
        ("https:///a.png", "has no host"),
    ],
)
def test_urls_that_cannot_or_must_not_be_fetched_are_refused(url: str, expected: str) -> None:
    assert expected in media_url_problem(url)


def test_the_kind_is_read_from_the_extension() -> None:
    assert media_kind("https://x.example/a.JPG") == "image"
    assert media_kind("https://x.example/a.pdf?x=1") == "pdf"
    assert media_kind("https://x.example/a") == "file"


def _sms_step(media: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {
            "message": "Hi",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
            "media": media,
        },
    }


def test_a_literal_media_url_is_checked_when_the_workflow_is_saved() -> None:
    report = workflow_validate(
        trigger="order.shipped", filter={}, steps=[_sms_step("http://cdn.example.com/a.png")]
    )
    (problem,) = report.steps[0]["media"]
    assert "must start with https://" in problem


def test_a_templated_media_url_is_left_to_the_step_and_no_media_is_fine() -> None:
    for media in ("https://cdn.example.com/{{order.number}}.pdf", ""):
        report = workflow_validate(trigger="order.shipped", filter={}, steps=[_sms_step(media)])
        assert report.steps.get(0, {}) == {}
