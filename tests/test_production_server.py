"""The README's production command as written: `collectstatic`, then `gunicorn config.wsgi`
with the production variables set. The admin must come up styled (WhiteNoise serving hashed,
compressed, long-cached files), behind HTTPS only, and `check --deploy` must pass clean."""

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.deployments import ROOT, free_port, fresh_env, http_opener, wait_until_serving


def production_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The variables the README's production settings table asks for."""
    return fresh_env(
        var_dir,
        SECRET_KEY="production-" + Fernet.generate_key().decode(),
        CAREFLOW_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DATABASE_URL=f"sqlite:///{var_dir / 'db.sqlite3'}",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/15",
        ALLOWED_HOSTS="careflow.example.com,127.0.0.1",
        CSRF_TRUSTED_ORIGINS="https://careflow.example.com",
        CAREFLOW_PUBLIC_URL="https://careflow.example.com",
        USE_X_FORWARDED_PROTO="true",
        **extra,
    )


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 — this interpreter and this checkout's manage.py
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_passes_clean_with_the_production_variables(tmp_path: Path) -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "warning"),
    [
        ("SECURE_SSL_REDIRECT", "false", "security.W008"),
        ("SESSION_COOKIE_SECURE", "false", "security.W012"),
        ("CSRF_COOKIE_SECURE", "false", "security.W016"),
        ("SECURE_HSTS_SECONDS", "0", "security.W004"),
        ("DEBUG", "true", "security.W018"),
    ],
)
def test_each_https_setting_comes_from_the_environment(
    tmp_path: Path, variable: str, value: str, warning: str
) -> None:
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=production_env(tmp_path, **{variable: value}),
    )

    assert result.returncode != 0
    assert warning in result.stderr + result.stdout


def test_check_deploy_refuses_the_development_secrets(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["SECRET_KEY"], env["CAREFLOW_ENCRYPTION_KEYS"]

    result = manage("check", "--deploy", env=env)

    assert result.returncode != 0
    assert "careflow.E001" in result.stderr and "careflow.E002" in result.stderr


def test_check_deploy_refuses_a_callback_url_twilio_cannot_reach(tmp_path: Path) -> None:
    """Left at its default (http://127.0.0.1:8000), CAREFLOW_PUBLIC_URL is a status-callback
    URL real Twilio refuses (21609) or can never call."""
    env = production_env(tmp_path)
    del env["CAREFLOW_PUBLIC_URL"]

    result = manage("check", "--deploy", env=env)

    assert result.returncode != 0
    assert "careflow.E005" in result.stderr
    assert "CAREFLOW_PUBLIC_URL 'http://127.0.0.1:8000' is not an https URL" in result.stderr


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    var_dir = tmp_path_factory.mktemp("production")
    env = production_env(var_dir)
    collected = manage("collectstatic", "--noinput", env=env)
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 — the README's command, from this venv
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, timeout=30, alive=lambda: process.poll() is None)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": "careflow.example.com", **headers})  # noqa: S310
    try:
        with http_opener().open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


HTTPS = {"X-Forwarded-Proto": "https"}


def test_plain_http_is_redirected_to_https(gunicorn: str) -> None:
    status, headers, _ = get(f"{gunicorn}/admin/login/")

    assert status == 301
    assert headers["Location"] == "https://careflow.example.com/admin/login/"


def test_the_admin_is_styled_from_hashed_long_cached_compressed_files(gunicorn: str) -> None:
    status, headers, body = get(f"{gunicorn}/admin/login/", **HTTPS)
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    stylesheet = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', body)
    assert stylesheet, "the login page does not link the admin's hashed base.css"

    status, headers, _ = get(
        f"{gunicorn}{stylesheet[1].decode()}", **HTTPS, **{"Accept-Encoding": "br"}
    )

    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert headers["Content-Encoding"] == "br"
    assert "immutable" in headers["Cache-Control"]


def test_the_builder_script_is_served(gunicorn: str) -> None:
    status, _, body = get(f"{gunicorn}/static/careflow/builder.js", **HTTPS)

    assert status == 200
    assert b"careflow" in body.lower()


def test_an_unknown_static_file_is_a_plain_404(gunicorn: str) -> None:
    status, _, _ = get(f"{gunicorn}/static/careflow/missing.js", **HTTPS)

    assert status == 404
