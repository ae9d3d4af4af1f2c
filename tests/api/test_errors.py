"""Bad input gets one JSON error shape and a clear message, never a 500."""

import json

import pytest
from django.test import Client

from patients.models import Patient
from tests.api.conftest import assert_error, post
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/patients/"


def _raw(api: Client, body: bytes | str, content_type: str = "application/json") -> object:
    return api.generic("POST", URL, body, content_type=content_type)


def test_malformed_json(api: Client) -> None:
    error = assert_error(_raw(api, '{"first_name": '), 400, "parse_error")
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"first_name": "A\\u0000nn"}', "control character (U+0000)"),
        ('{"first_name": "\\ud800"}', "U+D800"),
        ('{"first_name": "Ann", "dob": NaN}', "NaN is not a number JSON allows"),
        ('{"first_name": "Ann", "x": 1e999}', "out of range"),
        ("[" * 5000 + "]" * 5000, "nested"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nested more than"),
        ('"just a string"', "must be a JSON object"),
        (b"\xff\xfe{", "not valid JSON"),
        ("   ", "empty"),
    ],
)
def test_what_cannot_be_stored_is_refused(api: Client, body: str | bytes, words: str) -> None:
    error = assert_error(_raw(api, body), 400, "parse_error")
    assert words in error["message"], error
    assert not Patient.objects.exists()


def test_a_huge_body_is_refused_unread(api: Client, settings: object) -> None:
    settings.CAREFLOW_API_MAX_BODY_BYTES = 1000  # type: ignore[attr-defined]
    body = json.dumps({"first_name": "Ann", "source": "x" * 2000})
    assert_error(_raw(api, body), 413, "body_too_large")


def test_unknown_field(api: Client) -> None:
    error = assert_error(
        post(api, URL, {"first_name": "Ann", "nickname": "A"}), 400, "invalid_request"
    )
    assert list(error["fields"]) == ["nickname"]
    assert "first_name" in error["fields"]["nickname"][0]  # says what may be sent


def test_missing_required_field(api: Client) -> None:
    error = assert_error(post(api, URL, {"last_name": "Lee"}), 400, "invalid_request")
    assert error["fields"] == {"first_name": ["This field is required."]}


def test_a_form_body_is_unsupported(api: Client) -> None:
    assert_error(
        _raw(api, "first_name=Ann", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )


@pytest.mark.parametrize("bad", ["not-a-uuid", "1", "0" * 40, "%00"])
def test_a_bad_uuid_is_not_found(api: Client, bad: str) -> None:
    error = assert_error(api.get(f"/api/v1/patients/{bad}/"), 404, "not_found")
    assert "UUID" in error["message"]
    assert_error(api.get(f"/api/v1/orders/{bad}/"), 404, "not_found")


def test_an_unknown_path_is_not_found_in_the_shape(api: Client) -> None:
    assert_error(api.get("/api/v1/nothing-here/"), 404, "not_found")
    assert_error(Client().post("/api/v1/"), 404, "not_found")
    error = assert_error(post(api, "/api/v1/patients", {"first_name": "Ann"}), 404, "not_found")
    assert "/api/v1/patients/" in error["message"]


def test_a_record_of_an_unknown_patient_is_a_field_error(api: Client) -> None:
    error = assert_error(
        post(api, "/api/v1/orders/", {"patient": "not-a-uuid", "number": "1"}),
        400,
        "invalid_request",
    )
    assert "patient" in error["fields"]


def test_a_text_with_a_line_break_in_a_one_line_field(api: Client, clinic: object) -> None:
    error = assert_error(post(api, URL, {"first_name": "Ann\nLee"}), 400, "invalid_request")
    assert "control character" in error["fields"]["first_name"][0]
    PatientFactory(organization=clinic)


@pytest.mark.parametrize("url", ["/api/v1/patients/", "/api/v1/orders/", "/api/v1/carts/"])
@pytest.mark.parametrize("name", ["email", "phone", "status", "patient"])
def test_a_nul_in_a_filter_is_a_clear_400(api: Client, url: str, name: str) -> None:
    response = api.get(url, {name: "a\x00b"})
    if name in ("email", "phone") and url != "/api/v1/patients/":
        assert response.status_code == 200  # not a filter there: ignored
        return
    if name in ("status", "patient") and url == "/api/v1/patients/":
        assert response.status_code == 200
        return
    error = assert_error(response, 400, "invalid_request")
    assert name in error["fields"]


def test_a_bad_page_is_not_found_in_the_shape(api: Client) -> None:
    assert_error(api.get("/api/v1/patients/", {"page": "x"}), 404, "not_found")
    assert api.get("/api/v1/patients/", {"page_size": "x"}).status_code == 200
