"""The outbound webhook adapter (postJSON) over real HTTP to a loopback receiver, and through
the engine in-process."""

import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.utils import timezone

from common.addresses import address_forbidden
from integrations.webhook import RESPONSE_CHARS, USER_AGENT
from patients.models import Order
from tests.conftest import Answer, WebhookReceiver
from tests.factories import OrderFactory, OrganizationFactory, PatientFactory, WorkflowFactory
from workflows.adapters import Outcome, StepContext, adapter_get
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, Step, StepRun

BODY = '{"order": "1001", "who": "Ann"}'


def _execute(
    url: str, body: str = BODY, *, key: str = "run:1:step:0", attempt: int = 1, **extra: Any
) -> Outcome:
    context = StepContext(
        organization=OrganizationFactory(),
        idempotency_key=key,
        inputs={"url": url, "body": body},
        purpose="transactional",
        attempt=attempt,
        **extra,
    )
    return adapter_get("webhook").execute(function="postJSON", context=context)


# --- one post, and what its answer means ------------------------------------------------------


@pytest.mark.django_db
def test_success_posts_the_body_as_is_and_records_status_and_answer(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.answer(201, "x" * (RESPONSE_CHARS + 500))
    outcome = _execute(f"{webhook_receiver.url}/hooks/careflow?clinic=7", key="run:9:step:2")
    assert outcome.status == "succeeded"
    assert outcome.result == {"status": 201, "body": "x" * RESPONSE_CHARS}
    (request,) = webhook_receiver.requests
    assert request.path == "/hooks/careflow?clinic=7"
    assert request.body == BODY.encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "run:9:step:2"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("careflow/")
    assert request.headers["Host"] == f"127.0.0.1:{webhook_receiver.port}"


@pytest.mark.django_db
def test_a_4xx_answer_fails_with_a_clear_reason_and_is_not_retried(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.answer(404, "no such hook")
    outcome = _execute(webhook_receiver.url)
    assert (outcome.status, outcome.reason) == ("failed", "the webhook answered 404 Not Found")
    assert outcome.result == {"status": 404, "body": "no such hook"}
    assert len(webhook_receiver.requests) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (500, "the webhook answered 500 Internal Server Error"),
        (503, "the webhook answered 503 Service Unavailable"),
        (429, "the webhook answered 429 Too Many Requests"),
        (408, "the webhook answered 408 Request Timeout"),
    ],
)
def test_5xx_429_and_408_are_retried_later_with_backoff(
    webhook_receiver: WebhookReceiver, status: int, reason: str
) -> None:
    webhook_receiver.answer(status, "busy")
    before = timezone.now()
    outcome = _execute(webhook_receiver.url, attempt=3)
    assert (outcome.status, outcome.reason) == ("retry", reason)
    assert outcome.result == {"status": status, "body": "busy"}
    # the third attempt waits 8 s, less up to half of it for jitter
    assert outcome.retry_at is not None
    assert before + dt.timedelta(seconds=4) <= outcome.retry_at
    assert outcome.retry_at <= timezone.now() + dt.timedelta(seconds=8)


@pytest.mark.django_db
def test_retry_after_is_honoured_when_later_than_the_backoff(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.answer(429, "slow down", headers={"Retry-After": "120"})
    before = timezone.now()
    outcome = _execute(webhook_receiver.url)
    assert outcome.status == "retry" and outcome.retry_at is not None
    assert before + dt.timedelta(seconds=119) <= outcome.retry_at
    assert outcome.retry_at <= timezone.now() + dt.timedelta(seconds=120)


@pytest.mark.django_db
def test_a_slow_answer_times_out_and_is_retried(
    webhook_receiver: WebhookReceiver, settings: Any
) -> None:
    settings.CAREFLOW_WEBHOOK_TIMEOUT = 0.3
    webhook_receiver.answer(200, delay=1.5)
    outcome = _execute(webhook_receiver.url)
    assert outcome.status == "retry"
    assert outcome.reason == "no answer from 127.0.0.1 (ReadTimeoutError)"
    assert outcome.retry_at is not None and outcome.retry_at > timezone.now()
    assert len(webhook_receiver.requests) == 1


@pytest.mark.django_db
def test_a_refused_connection_is_retried(webhook_receiver: WebhookReceiver) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: the connection is refused
        outcome = _execute(f"http://127.0.0.1:{port}/hook")
    assert outcome.status == "retry"
    assert outcome.reason == "no answer from 127.0.0.1 (NewConnectionError)"


@pytest.mark.django_db
def test_retries_stop_after_the_configured_attempts(
    webhook_receiver: WebhookReceiver, settings: Any
) -> None:
    settings.CAREFLOW_SEND_MAX_RETRIES = 3
    webhook_receiver.answer(502, "bad gateway")
    assert _execute(webhook_receiver.url, attempt=2).status == "retry"
    outcome = _execute(webhook_receiver.url, attempt=3)
    assert outcome.status == "failed"
    assert outcome.reason == "gave up after 3 attempts: the webhook answered 502 Bad Gateway"
    assert outcome.result == {"status": 502, "body": "bad gateway"}


@pytest.mark.django_db
def test_redirects_are_not_followed(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.answer(302, "", headers={"Location": "http://169.254.169.254/latest"})
    outcome = _execute(webhook_receiver.url)
    assert outcome.status == "failed"
    assert outcome.reason == (
        "the webhook answered 302 Found to http://169.254.169.254/latest; redirects are not "
        "followed: use the final URL"
    )
    assert len(webhook_receiver.requests) == 1


@pytest.mark.django_db
def test_a_test_run_does_not_post(webhook_receiver: WebhookReceiver) -> None:
    outcome = _execute(f" {webhook_receiver.url}/hook ", is_test=True)
    assert (outcome.status, outcome.reason) == ("skipped", "test run: webhook not called")
    assert outcome.result == {
        "would_post": {"url": f"{webhook_receiver.url}/hook", "body": json.loads(BODY)}
    }
    assert webhook_receiver.requests == []


# --- where a webhook may go -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://{host}/hook", "the URL must start with https://"),
        ("ftp://{host}/hook", "the URL must start with https://"),
        ("https://{host}/hook", "127.0.0.1 is not a public address"),
        ("https://localhost:{port}/hook", "localhost ("),
        ("https://[::ffff:127.0.0.1]:{port}/hook", "::ffff:127.0.0.1 is not a public address"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address"),
        ("https://user:pw@{host}/hook", "put no user name or password in the URL"),
    ],
)
def test_plain_http_and_private_addresses_are_refused_at_send_time(
    webhook_receiver: WebhookReceiver, settings: Any, url: str, reason: str
) -> None:
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = False
    host = f"127.0.0.1:{webhook_receiver.port}"
    outcome = _execute(url.format(host=host, port=webhook_receiver.port))
    assert outcome.status == "failed"
    assert outcome.reason.startswith(f"webhook URL refused: {reason}")
    assert webhook_receiver.requests == []


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("10.0.0.8", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),  # carrier-grade NAT
        ("169.254.169.254", True),  # cloud metadata
        ("224.0.0.251", True),  # multicast: is_global alone says "global"
        ("0.0.0.0", True),  # noqa: S104 — an address under test, not a bind
        ("240.0.0.1", True),  # reserved
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_only_public_unicast_addresses_are_allowed(address: str, forbidden: bool) -> None:
    assert address_forbidden(address) is forbidden


# --- HTTPS: connect to the checked address, verify the certificate for the name ----------------


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[int, Path, list[dict[str, Any]]]]:
    """An HTTPS server for "localhost" with a self-signed certificate; yields its port, the
    certificate (to trust it) and what it received (the TLS server name and the request)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    received: list[dict[str, Any]] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda sock, server_name, _: received.append({"sni": server_name})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"host": self.headers["Host"], "body": body})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class TLSServer(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> Any:
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True), address

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the handshake a client refused (the untrusted-certificate test)

    server = TLSServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1]), cert_path, received
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_https_goes_to_the_checked_address_with_the_name_for_sni_and_certificate(
    tls_receiver: tuple[int, Path, list[dict[str, Any]]],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, cert_path, received = tls_receiver
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = True  # localhost is loopback
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # trust the test certificate
    # "localhost" may resolve to ::1 first, where nothing listens: the next address is tried
    outcome = _execute(f"https://localhost:{port}/hook")
    assert outcome.status == "succeeded", outcome.reason
    assert outcome.result == {"status": 200, "body": "ok"}
    assert {"sni": "localhost"} in received
    assert {"host": f"localhost:{port}", "body": BODY.encode()} in received


@pytest.mark.django_db
def test_an_untrusted_certificate_fails_the_step(
    tls_receiver: tuple[int, Path, list[dict[str, Any]]], settings: Any
) -> None:
    port, _, received = tls_receiver
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = True
    outcome = _execute(f"https://localhost:{port}/hook")
    assert outcome.status == "failed"
    assert outcome.reason == ("the TLS connection to localhost failed (is its certificate valid?)")
    assert not [entry for entry in received if "body" in entry]


# --- through the engine ------------------------------------------------------------------


def _webhook_workflow(receiver: WebhookReceiver, body: str) -> Any:
    workflow = WorkflowFactory(trigger="order.shipped")
    Step.objects.create(
        workflow=workflow,
        position=1,
        type=Step.Type.ADAPTER,
        adapter="webhook",
        function="postJSON",
        parameters={"url": f"{receiver.url}/orders", "body": body},
    )
    return workflow


def _ship(patient: Any) -> Event:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT, number="7001")
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.get(type="order.shipped", subject_id=str(order.pk))


@pytest.mark.django_db
def test_a_workflow_step_posts_valid_json_whatever_the_patient_data(
    webhook_receiver: WebhookReceiver,
) -> None:
    # given a patient whose first name tries to end its JSON string and add a field
    name = 'Ann", "admin": true, "x": {"y": "}'
    workflow = _webhook_workflow(
        webhook_receiver,
        '{\n  "order": "{{order.number}}",\n  "firstName": "{{customer.firstName}}",\n'
        '  "paid": true\n}',
    )
    patient = PatientFactory(organization=workflow.organization, first_name=name)
    # when the order ships and the run advances
    (run_id,) = event_dispatch(event_id=_ship(patient).pk)
    run = run_advance(run_id=run_id)
    # then one valid JSON document was posted, holding the name exactly
    assert run is not None and run.status == Run.Status.SUCCEEDED
    (request,) = webhook_receiver.requests
    assert json.loads(request.body) == {"order": "7001", "firstName": name, "paid": True}
    assert request.path == "/orders"
    assert request.headers["Idempotency-Key"] == f"run:{run_id}:step:0"
    step_run = StepRun.objects.get(run_id=run_id)
    assert step_run.inputs["body"].encode() == request.body  # what was posted is on record
    assert step_run.result == {"status": 200, "body": '{"ok": true}'}


@pytest.mark.django_db
def test_a_failing_receiver_is_retried_by_the_engine_with_the_same_key(
    webhook_receiver: WebhookReceiver,
) -> None:
    workflow = _webhook_workflow(webhook_receiver, '{"order": "{{order.number}}"}')
    patient = PatientFactory(organization=workflow.organization)
    webhook_receiver.queued = [Answer(503, "down for maintenance")]
    (run_id,) = event_dispatch(event_id=_ship(patient).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.WAITING and run.due_at is not None
    step_run = StepRun.objects.get(run_id=run_id)
    assert (step_run.status, step_run.error) == (
        StepRun.Status.WAITING,
        "the webhook answered 503 Service Unavailable",
    )
    assert step_run.result == {"status": 503, "body": "down for maintenance"}
    # when the retry is due
    Run.objects.filter(pk=run_id).update(due_at=timezone.now())
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    step_run.refresh_from_db()
    assert (step_run.status, step_run.attempts) == (StepRun.Status.SUCCEEDED, 2)
    keys = [request.headers["Idempotency-Key"] for request in webhook_receiver.requests]
    assert keys == [f"run:{run_id}:step:0"] * 2


@pytest.mark.django_db
def test_a_404_fails_the_run_with_the_reason(webhook_receiver: WebhookReceiver) -> None:
    workflow = _webhook_workflow(webhook_receiver, '{"order": "{{order.number}}"}')
    webhook_receiver.answer(404, "not found")
    (run_id,) = event_dispatch(
        event_id=_ship(PatientFactory(organization=workflow.organization)).pk
    )
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.FAILED
    assert run.error == "step 1: the webhook answered 404 Not Found"


@pytest.mark.django_db
def test_a_test_patients_run_skips_the_post(webhook_receiver: WebhookReceiver) -> None:
    workflow = _webhook_workflow(webhook_receiver, '{"order": "{{order.number}}"}')
    patient = PatientFactory(organization=workflow.organization, is_test=True)
    (run_id,) = event_dispatch(event_id=_ship(patient).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SKIPPED
    step_run = StepRun.objects.get(run_id=run_id)
    assert (step_run.status, step_run.skip_reason) == (
        StepRun.Status.SKIPPED,
        "test run: webhook not called",
    )
    assert step_run.result["would_post"]["body"] == {"order": "7001"}
    assert webhook_receiver.requests == []
