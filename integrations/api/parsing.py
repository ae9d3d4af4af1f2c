"""The API's one parser: JSON that careflow can store, read with a bounded size.

DRF's JSONParser would take a NUL or a lone surrogate in a string (PostgreSQL refuses both:
a 500 at the INSERT), JSON nested deep enough to exhaust the stack, and any size of body.
This one reads at most CAREFLOW_API_MAX_BODY_BYTES and parses with `patients.inputs.json_parse`,
the same rules as the admin's JSON fields and the custom-event webhook.
"""

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from integrations.api.refusals import BodyTooLarge
from patients.inputs import JSONInputError, json_parse


class StorableJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.CAREFLOW_API_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        try:
            if declared and int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            raise ParseError("The Content-Length header is not a number.") from None
        # One byte past the limit, at most: a body longer than declared is not buffered.
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise BodyTooLarge(limit)
        if not body.strip():
            raise ParseError("The body is empty; send a JSON object.")
        try:
            document = json_parse(body)
        except JSONInputError as exc:
            raise ParseError(f"The body {exc}.") from None
        if not isinstance(document, dict):
            raise ParseError("The body must be a JSON object.")
        return document
