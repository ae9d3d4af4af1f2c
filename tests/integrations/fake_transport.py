"""A provider-neutral stand-in transport (an email-like channel), to test that the messaging
core relies on the Transport protocol alone."""

from collections.abc import Iterator
from datetime import datetime

import pytest

from integrations.messaging import TRANSPORTS, Accepted, Found, Transport, transport_register
from integrations.models import Integration, OutboundMessage
from tests.factories import IntegrationFactory

ADAPTER = "fake-letters"


class FakeTransport(Transport):
    channel = "email"
    status_map = {"accepted": "sent", "delivered": "delivered", "bounced": "undelivered"}
    status_rank = {"": 0, "accepted": 1, "delivered": 2, "bounced": 2}

    def __init__(self) -> None:
        self.sent: list[int] = []
        # What the next send does: an Accepted (the default) or an exception to raise.
        self.outcome: Exception | None = None
        self.found: Found | None = None

    def send(self, message: OutboundMessage) -> Accepted:
        self.sent.append(message.pk)
        if self.outcome is not None:
            raise self.outcome
        return Accepted(provider_id=f"<{message.uuid}@letters.test>", provider_status="accepted")

    def lookup(self, message: OutboundMessage, *, since: datetime) -> Found | None:
        return self.found

    def sender_check(self, message: OutboundMessage) -> tuple[bool, str]:
        return True, message.from_number


@pytest.fixture
def fake_transport() -> Iterator[FakeTransport]:
    transport = FakeTransport()
    transport_register(ADAPTER, transport)
    yield transport
    del TRANSPORTS[ADAPTER]


def fake_integration() -> Integration:
    return IntegrationFactory(adapter=ADAPTER, name="Letters")
