"""Discovery imports every connector at start-up: none may import its heavy SDK before a call needs it
(``connectors._lazy``), or every proxy pays for every connector in memory and start-up time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY: tuple[str, ...] = ("boto3", "botocore", "psycopg", "psycopg_pool", "aiomysql", "pymysql", "aiosmtplib")
HEAVY += ("jinja2", "weasyprint", "pypdf", "PIL")  # the artifacts connector's: about 45 MiB and 0.5 s


def test_discovery_imports_no_connector_sdk():
    code = (
        "from server._registry import discover; discover(['connectors']); import sys; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    # A fresh interpreter: this one has imported the SDKs for other tests.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", f"imported by discovery: {result.stdout.strip()}"


BROKER = ("taskiq", "taskiq_aio_pika", "aio_pika", "redis", "pydantic")


def test_the_embedded_proxy_imports_no_broker_library():
    """The scale-out mode's libraries load only when CONNECTOR_PROXY_JOBS_BROKER_URL is set."""
    code = (
        "from server._registry import discover; from connector_proxy._processes import build_proxy_app; "
        "from server.settings import Settings; "
        "build_proxy_app(Settings.from_env({}), discover(['connectors'])); import sys; "
        f"print(sorted(m for m in {BROKER!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", f"imported by the embedded proxy: {result.stdout.strip()}"
