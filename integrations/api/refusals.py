"""The API's own refusals, beside DRF's (kept apart from `errors`, which imports DRF's views:
the parser raises these, and DRF's settings import the parser while its views load)."""

from http import HTTPStatus

from rest_framework import exceptions


class ApiError(exceptions.APIException):
    """An API refusal with its own type: `raise ApiError(409, "conflict", "…")`."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(detail=message, code=type)
        self.status_code = status
        self.type = type


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "body_too_large",
            f"The request body is larger than {limit:,} bytes.",
        )
