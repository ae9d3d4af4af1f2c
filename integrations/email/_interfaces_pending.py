"""Stand-ins for the agreed provider-boundary interfaces (issue 15) while they are written on
other branches; the merge deletes this module and points its importers at the real ones:
`integrations.messaging` (Accepted, Refused, Ambiguous, Found, Transport).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from integrations.models import OutboundMessage

__all__ = ["Accepted", "Ambiguous", "Found", "Refused", "Transport"]


@dataclass(frozen=True)
class Accepted:
    provider_id: str
    provider_status: str


class Refused(Exception):
    def __init__(
        self, code: str, message: str, *, retryable: bool = False, opted_out: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.opted_out = opted_out


class Ambiguous(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Found:
    provider_id: str
    provider_status: str
    error_code: str = ""
    error_message: str = ""


class Transport:
    channel: str = ""
    can_lookup: bool = True
    status_map: Mapping[str, str] = {}
    status_rank: Mapping[str, int] = {}

    def send(self, message: "OutboundMessage") -> Accepted:
        raise NotImplementedError

    def lookup(self, message: "OutboundMessage", *, since: datetime) -> Found | None:
        raise NotImplementedError

    def throttle(self, message: "OutboundMessage") -> tuple[str, float] | None:
        return None

    def units(self, message: "OutboundMessage") -> int:
        return 1

    def explain_error(self, code: str) -> str:
        return ""
