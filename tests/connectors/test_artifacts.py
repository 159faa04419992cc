"""The artifacts connector through the shim, on both paths: PDFs read back with pypdf, S3 storage on a
moto server, the data URL handed to smtp/SendEmail on a local aiosmtpd server, an asynchronous run
calling back a fake spiff-arena, and a counting HTTP server that no document may reach."""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pypdf
import pytest
import weasyprint  # type: ignore[import-untyped]
from PIL import Image

from connectors.artifacts import _templates
from jobs import CallbackDelivery, EmbeddedJobs
from server import errors
from tests.connectors.aws_moto import REGION, MotoServer, unique
from tests.connectors.commands import Commands
from tests.connectors.smtp_target import SmtpTarget
from tests.jobs.conftest import CALLBACK_KEY, callbacks, running, spiff_body
from tests.jobs.fake_spiff import FakeSpiff

pytestmark = pytest.mark.anyio

COMMANDS = Commands("artifacts")
INVOICE = """<!DOCTYPE html><html><head><style>
  @page { size: A5; margin: 15mm; @bottom-center { content: "Page " counter(page) " of " counter(pages) } }
  td.num { text-align: right }
</style></head><body>
  <h1>Invoice {{ number }}</h1>
  <p>Customer: {{ customer.name }}</p>
  <table>{% for line in lines %}
    <tr><td>{{ line.text }}</td><td class="num">{{ line.amount }}</td></tr>{% endfor %}
  </table>
  <p>Total due: {{ lines | sum(attribute="amount") }}</p>
</body></html>"""
DATA = {
    "number": "INV-0042",
    "customer": {"name": "Ann Lee"},
    "lines": [{"text": "Consulting", "amount": 100}, {"text": "Travel", "amount": 25}],
}
A5_POINTS = (420, 595)  # 148 x 210 mm
_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "CONNECTOR_PROXY_ARTIFACTS_STORAGE",
    "CONNECTOR_PROXY_ARTIFACTS_LINK_EXPIRES_IN",
    "CONNECTOR_PROXY_ARTIFACTS_MAX_INLINE_BYTES",
    "CONNECTOR_PROXY_ARTIFACTS_MAX_HTML_CHARS",
)


@pytest.fixture(autouse=True)
def empty_configuration(monkeypatch, tmp_path):
    """No AWS configuration of the machine's, no artifacts settings: each test sets its own."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def pdf_of(body: dict[str, Any]) -> bytes:
    """The PDF in a result's file_data, after checking the data URL's form."""
    head, _, encoded = body["file_data"].partition(",")
    assert head == f"data:application/pdf;name={urllib.parse.quote(body['file_name'], safe='')};base64"
    pdf = base64.b64decode(encoded, validate=True)
    assert pdf.startswith(b"%PDF-")
    assert (body["size"], body["private_link"], body["presigned_link"]) == (len(pdf), None, None)
    return pdf


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages]


def images_on(page: Any) -> int:
    return sum(1 for _ in page.images)


def png(width: int = 40, height: int = 30, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def data_url(mime: str, content: bytes, name: str = "") -> str:
    named = f";name={name}" if name else ""
    return f"data:{mime}{named};base64,{base64.b64encode(content).decode()}"


def other_pdf(*texts: str) -> bytes:
    """A PDF with one page per text, made independently of the connector."""
    pages = "".join(f'<p style="break-before: page">{t}</p>' for t in texts)
    pdf: bytes = weasyprint.HTML(string=f"<style>@page {{ size: A4 }}</style>{pages}").write_pdf()
    return pdf


async def generate(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = await COMMANDS.ok(client, "GenerateArtifact", **{"id": "doc-1", **params})
    return body


# --- rendering ------------------------------------------------------------------------------


async def test_the_template_is_rendered_with_data_into_a_pdf_data_url(proxy):
    body = await generate(proxy, id="invoices/INV-0042", template=INVOICE, data=DATA)

    assert (body["file_name"], body["pages"], body["expires_at"]) == ("INV-0042.pdf", 1, None)
    pdf = pdf_of(body)
    (text,) = pages_text(pdf)
    for expected in ("Invoice INV-0042", "Customer: Ann Lee", "Consulting", "Travel", "Total due: 125"):
        assert expected in text
    assert "Page 1 of 1" in text  # the @page margin box
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == A5_POINTS


async def test_values_are_escaped_and_data_is_also_one_variable(proxy):
    customer = {"name": "<b>Ann & Co</b>"}
    template = "<p>{{ customer.name }}</p><p>{{ data.customer.name | length }} characters</p>"
    body = await generate(proxy, template=template, data={"customer": customer})

    (text,) = pages_text(pdf_of(body))
    assert "<b>Ann & Co</b>" in text  # shown as text: autoescaped, not markup
    assert "15 characters" in text


async def test_without_data_the_task_data_is_rendered(proxy):
    body = await generate(
        proxy, template="<p>Hello {{ who }}, item {{ item }}</p>", spiff__task_data={"who": "Bea", "item": 7}
    )
    assert "Hello Bea, item 7" in pages_text(pdf_of(body))[0]


async def test_data_that_is_not_an_object_is_the_variable_data(proxy):
    body = await generate(proxy, template="{% for n in data %}[{{ n }}]{% endfor %}", data=[3, 1, 2])
    assert "[3][1][2]" in pages_text(pdf_of(body))[0]


async def test_a_long_document_has_a_page_per_break_and_the_id_keeps_its_pdf_suffix(proxy):
    template = '{% for n in range(30) %}<h2 style="break-before: page">Section {{ n }}</h2>{% endfor %}'
    body = await generate(proxy, id="report.PDF", template=template)

    assert (body["pages"], body["file_name"]) == (30, "report.PDF")
    texts = pages_text(pdf_of(body))
    assert [t.strip() for t in texts] == [f"Section {n}" for n in range(30)]


# --- what a template may not do -------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ data.items.__self__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ self._TemplateReference__context }}",
        "{% set items = [] %}{% for n in range(3) %}{{ items.append(n) }}{% endfor %}",
    ],
)
async def test_attribute_escapes_are_refused_by_the_sandbox(proxy, template):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "ArtifactTemplateError", id="x", template=template, data={}
    )
    assert "refused by the sandbox" in payload["error"]["message"]
    assert "unsafe" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("template", "word"),
    [
        ('{% include "header.html" %}', "include"),
        ('{% extends "base.html" %}', "extends"),
        ('{% import "macros.html" as m %}', "import"),
        ('{% from "macros.html" import title %}', "import"),
        ("<p>ok</p>\n{% include name %}", "include"),
    ],
)
async def test_include_import_and_extends_are_refused(proxy, template, word):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "ArtifactTemplateError", id="x", template=template
    )
    assert f"uses {word}" in payload["error"]["message"]
    assert "self-contained" in payload["error"]["message"]


async def test_a_template_file_name_is_refused_with_a_hint(proxy):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "ArtifactTemplateError", id="x", template="blm-ce.html"
    )
    assert "not the name of a file" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("<p>{% if x %}</p>", "The template does not compile"),
        ("<p>\n\n{{ 1 + }}</p>", "(line 3)"),
        ("{% for %}", "The template does not compile"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ missing.attribute }}", "UndefinedError"),
    ],
)
async def test_templates_that_fail_are_400_with_their_reason(proxy, template, expected):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "ArtifactTemplateError", id="x", template=template
    )
    assert expected in payload["error"]["message"]


@pytest.fixture
def small_limits(monkeypatch):
    """Limits set before the connectors are built (a fixture listed before ``proxy``)."""
    monkeypatch.setenv("CONNECTOR_PROXY_ARTIFACTS_MAX_HTML_CHARS", "1000")
    monkeypatch.setenv("CONNECTOR_PROXY_ARTIFACTS_MAX_INLINE_BYTES", "20000")


async def test_output_beyond_the_html_limit_is_too_large(small_limits, proxy):
    payload = await COMMANDS.fails(
        proxy,
        "GenerateArtifact",
        400,
        "ArtifactTooLarge",
        id="x",
        template="{% for n in range(500) %}{{ n }},{% endfor %}",
    )
    assert "longer than 1000 characters" in payload["error"]["message"]


async def test_a_pdf_beyond_the_inline_limit_is_too_large_unless_stored(small_limits, proxy):
    image = data_url("image/png", png(300, 300, (1, 2, 3)))
    noise = io.BytesIO()
    Image.frombytes("RGB", (100, 100), os.urandom(30000)).save(noise, "PNG")  # incompressible
    big = [data_url("image/png", noise.getvalue())]
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "ArtifactTooLarge", id="x", template="<p>x</p>", attachments=big
    )
    assert "more than is returned as a data URL (20000" in payload["error"]["message"]
    assert (await generate(proxy, template="<p>small</p>", attachments=[image]))["pages"] == 2


@pytest.mark.parametrize(
    ("template", "what"),
    [
        ("{{ 'x' * 3000000 }}", "a repetition"),
        ("{{ [0] * 3000000 }}", "a repetition"),
        ("{{ 10 ** 100000000 }}", "a power"),
        ("{{ 'x'.ljust(10 ** 9) }}", "str.ljust"),
        ("{{ 'x'.center(10 ** 9) }}", "str.center"),
        ("{{ ('\t' * 1000).expandtabs(10000) }}", "str.expandtabs"),
        ("{{ 'ab'.replace('', 'x' * 1000000) }}", "str.replace"),
        ("{{ ('x' * 1000000).join(range(1000)) }}", "str.join"),
        ("{{ '{:>999999999}'.format(1) }}", "str.format"),
        ("{{ 'x'|center(10 ** 9) }}", "the filter center"),
        ("{{ range(100000)|join('x' * 1000000) }}", "the filter join"),
        ("{{ 'a\nb'|indent(10 ** 9) }}", "the filter indent"),
        ("{{ '%0999999999d'|format(1) }}", "the filter format"),
        ("{{ range(3)|batch(10 ** 9, 0)|list }}", "the filter batch"),
        ("{{ ('x' * 1000000) ~ ('x' * 1000000) ~ ('x' * 1000000) }}", "a concatenation"),
        ("{{ ('x' * 1000000) + ('x' * 1000000) + ('x' * 1000000) }}", "a concatenation"),
        (
            "{% macro twice(s, n) %}{% if n %}{{ twice(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
            "{{ twice('x', 64) }}",
            "a concatenation",
        ),
        ("{% set b = 'x' * 1000000 %}{{ [b] * 3 }}", "a repetition"),
        ("{% set b = 'x' * 1000000 %}{{ [b, b, b] }}", "showing a value"),
        ("{% set b = 'x' * 1000000 %}{{ [b, b, b]|tojson }}", "the filter tojson"),
        ("{% set b = 'x' * 1000000 %}{{ '%s%s%s'|format(b, b, b) }}", "the filter format"),
        ("{% set b = 'x' * 1000000 %}{{ range(3)|map('string')|join(b) }}", "the filter join"),
    ],
)
def test_values_beyond_the_limit_are_refused_before_they_exhaust_memory(template, what):
    with pytest.raises(errors.InvalidArgument, match=f"refused by the sandbox: {what} would make a value"):
        _templates.render(template, {}, deadline=time.monotonic() + 10, max_chars=2_000_000)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '%d'|format(123456789) }}", "123456789"),
        ("{{ '{:,}'.format(1234567890) }}", "1,234,567,890"),
        ("{{ 'x' * 3 ~ 'y'.ljust(3, '.') }}", "xxxy.."),
        ("{{ [1, 2]|join(', ') }} {{ 'a-b'.replace('-', '+') }} {{ 2 ** 10 }}", "1, 2 a+b 1024"),
        (
            "{{ range(3)|map('string')|join('-') }} {{ [1, 2]|tojson }} {{ ['a'] }}",
            "0-1-2 [1, 2] [&#39;a&#39;]",
        ),
    ],
)
def test_ordinary_uses_of_the_bounded_operations_render(template, expected):
    assert _templates.render(template, {}, deadline=time.monotonic() + 10, max_chars=2_000_000) == expected


def test_a_runaway_template_stops_at_the_deadline():
    template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        _templates.render(template, {}, deadline=started + 0.3, max_chars=1000)
    assert time.monotonic() - started < 2


# --- no fetching ----------------------------------------------------------------------------


class CountingServer:
    """An HTTP server on loopback that counts the requests it gets (and would serve a PNG)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths, image = self.paths, png()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/css" if self.path.endswith(".css") else "image/png")
                self.end_headers()
                self.wfile.write(b"p { color: red }" if self.path.endswith(".css") else image)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CountingServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    with CountingServer() as server:
        yield server


async def test_nothing_is_fetched_but_data_urls(proxy, counting, tmp_path):
    secret = tmp_path / "secret.css"
    secret.write_text("p { color: red }")
    template = f"""<html><head>
      <link rel="stylesheet" href="{counting.url}/style.css">
      <link rel="stylesheet" href="{secret.as_uri()}">
      <style>@import url("{counting.url}/imported.css");
             @font-face {{ font-family: Remote; src: url("{counting.url}/font.woff") }}
             body {{ background: url("{counting.url}/background.png") }}</style></head>
      <body><p>Logo follows</p>
        <img src="{counting.url}/logo.png"><img src="{Path("/etc/hostname").as_uri()}">
        <img src="{data_url("image/png", png())}">
      </body></html>"""
    status, payload = await COMMANDS.call(proxy, "GenerateArtifact", id="x", template=template)

    assert (status, payload["error"]) == (200, None), payload
    assert counting.paths == []
    pdf = pdf_of(payload["command_response"]["body"])
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    assert images_on(page) == 1  # the data: URL's image, and only it
    logs = "\n".join(payload["spiff__logs"])
    for refused in ("style.css", "logo.png", "background.png", "hostname", "secret.css"):
        assert refused in logs
    assert "not fetched" in logs


async def test_weasyprint_warnings_go_to_spiff_logs_not_the_proxy_log(proxy, caplog):
    rules = "".join(f"unknown-{n}: 1;" for n in range(30))
    with caplog.at_level(logging.INFO):
        status, payload = await COMMANDS.call(
            proxy, "GenerateArtifact", id="x", template=f"<style>p {{ {rules} }}</style><p>styled</p>"
        )
    assert (status, payload["error"]) == (200, None), payload
    lines = [line for line in payload["spiff__logs"] if line.startswith("WeasyPrint: ")]
    assert len(lines) == 21
    assert "unknown-0" in lines[0]
    assert lines[-1] == "WeasyPrint: 10 more warnings."
    assert not [r for r in caplog.records if r.name.startswith("weasyprint")]


# --- attachments ----------------------------------------------------------------------------


async def test_pdf_and_image_attachments_follow_the_rendered_pages(proxy):
    attachments = [
        data_url("application/pdf", other_pdf("Appendix A first page", "Appendix A second page"), "a.pdf"),
        data_url("image/png", png(400, 300)),
        data_url("image/jpeg", _jpeg()),
        data_url("application/pdf", other_pdf("Appendix B")),
    ]
    body = await generate(proxy, template=INVOICE, data=DATA, attachments=attachments)

    pdf = pdf_of(body)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert body["pages"] == len(reader.pages) == 1 + 2 + 1 + 1 + 1
    texts = [page.extract_text() for page in reader.pages]
    assert "Invoice INV-0042" in texts[0]
    assert "Appendix A first page" in texts[1]
    assert "Appendix A second page" in texts[2]
    # The two image pages share one resource dictionary (one layout): both images, one per page.
    shown = {image.image.size for i in (3, 4) for image in reader.pages[i].images if image.image}
    assert shown == {(400, 300), (50, 80)}
    assert texts[3].strip() == texts[4].strip() == ""
    assert "Appendix B" in texts[5]
    # Image pages take the document's page size (A5); attached PDFs keep theirs (A4).
    sizes = [(round(float(p.mediabox.width)), round(float(p.mediabox.height))) for p in reader.pages]
    assert sizes == [A5_POINTS, (595, 842), (595, 842), A5_POINTS, A5_POINTS, (595, 842)]


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (50, 80), (10, 120, 10)).save(out, "JPEG")
    return out.getvalue()


async def test_one_attachment_may_be_a_single_string(proxy):
    body = await generate(proxy, template="<p>Cover</p>", attachments=data_url("image/png", png()))
    assert body["pages"] == 2


@pytest.mark.parametrize(
    ("attachment", "problem"),
    [
        ("https://example.com/report.pdf", "attachments[1] must be a data URL"),
        ("data:application/pdf;base64,%%%", "attachments[1] must be a data URL"),
        ("data:text/plain;base64,aGVsbG8=", "attachments[1] must be a PDF (application/pdf) or a PNG"),
        (42, "attachments[1] must be a data URL"),
    ],
)
async def test_malformed_attachments_are_invalid_parameters(proxy, attachment, problem):
    good = data_url("image/png", png())
    payload = await COMMANDS.fails(
        proxy,
        "GenerateArtifact",
        400,
        "InvalidParameters",
        id="x",
        template="x",
        attachments=[good, attachment],
    )
    assert problem in payload["error"]["message"]


@pytest.mark.parametrize(
    ("attachment", "problem"),
    [
        (
            data_url("application/pdf", b"not a pdf at all", "broken.pdf"),
            "attachments[0] (broken.pdf) is not a readable PDF",
        ),
        (data_url("image/png", b"\x89PNG\r\n\x1a\n truncated"), "is not a readable image"),
    ],
)
async def test_unreadable_attachments_are_invalid_attachment(proxy, attachment, problem):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "InvalidAttachment", id="x", template="x", attachments=[attachment]
    )
    assert problem in payload["error"]["message"]


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"id": "../etc/passwd"}, "id"),
        ({"id": "a//b"}, "id"),
        ({"id": ""}, "id"),
        ({"storage": "s3://Bad_Bucket/x"}, "storage must name an S3 bucket"),
        ({"storage": "https://bucket.example.com/"}, "storage must be a bucket name"),
        ({"link_expires_in": 604801}, "link_expires_in"),
    ],
)
async def test_bad_parameters_are_invalid_parameters(proxy, params, problem):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 400, "InvalidParameters", **{"id": "x", "template": "x", **params}
    )
    assert problem in payload["error"]["message"]


def test_settings_out_of_range_stop_start_up(monkeypatch):
    from connectors.artifacts import ArtifactsService

    monkeypatch.setenv("CONNECTOR_PROXY_ARTIFACTS_STORAGE", "not a bucket!")
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_ARTIFACTS_STORAGE"):
        ArtifactsService()
    monkeypatch.setenv("CONNECTOR_PROXY_ARTIFACTS_STORAGE", "s3://fine-bucket/prefix")
    monkeypatch.setenv("CONNECTOR_PROXY_ARTIFACTS_LINK_EXPIRES_IN", "0")
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_ARTIFACTS_LINK_EXPIRES_IN"):
        ArtifactsService()


# --- into smtp/SendEmail --------------------------------------------------------------------


async def test_the_data_url_is_an_attachment_smtp_sends_as_is(proxy):
    body = await generate(proxy, id="letters/welcome", template=INVOICE, data=DATA)
    pdf = pdf_of(body)
    subject = f"Artifact {uuid.uuid4().hex}"
    with SmtpTarget() as target:
        await Commands("smtp").ok(
            proxy,
            "SendEmail",
            smtp_host="127.0.0.1",
            smtp_port=target.port,
            email_from="workflow@example.com",
            email_to="ann@example.com",
            email_subject=subject,
            email_body="Your invoice is attached.",
            attachments=[body["file_data"]],
        )
        (delivery,) = target.find(subject)
    (part,) = list(delivery.message.iter_attachments())
    assert (part.get_content_type(), part.get_filename()) == ("application/pdf", "welcome.pdf")
    assert part.get_content() == pdf


# --- S3 storage -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


@pytest.fixture
def s3_env(monkeypatch, moto):
    """The aws connector's standard configuration, pointing at moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDARTIFACTS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "artifacts-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return moto


async def test_stored_in_s3_with_a_private_and_a_presigned_link(s3_env, proxy):
    bucket = s3_env.create_bucket(unique("artifacts"))
    started = time.time()
    status, payload = await COMMANDS.call(
        proxy,
        "GenerateArtifact",
        id="invoices/INV-0042",
        template=INVOICE,
        data=DATA,
        storage=f"s3://{bucket}/tenant-7",
        generate_links=True,
        link_expires_in=900,
    )
    assert (status, payload["error"]) == (200, None), payload
    body = payload["command_response"]["body"]

    key = "tenant-7/invoices/INV-0042.pdf"
    assert body["private_link"] == f"s3://{bucket}/{key}"
    assert body["file_data"] is None
    assert (body["file_name"], body["pages"]) == ("INV-0042.pdf", 1)
    stored, content_type = s3_env.get_object(bucket, key)
    assert content_type == "application/pdf"
    assert len(stored) == body["size"]
    assert "Invoice INV-0042" in pages_text(stored)[0]

    link = body["presigned_link"]
    assert link.startswith(f"{s3_env.endpoint}/{bucket}/{key}?")
    assert "X-Amz-Expires=900" in link
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S+00:00")) - time.timezone
    assert started + 899 <= expires <= time.time() + 901
    async with httpx.AsyncClient(trust_env=False) as client:
        downloaded = await client.get(link)
    assert downloaded.status_code == 200
    assert downloaded.content == stored
    assert any(line.startswith(f"PutObject s3://{bucket}/{key}") for line in payload["spiff__logs"])


async def test_a_bucket_alone_and_no_presigned_link_unless_asked(s3_env, proxy):
    bucket = s3_env.create_bucket(unique("artifacts"))
    body = await COMMANDS.ok(proxy, "GenerateArtifact", id="plain", template="<p>Plain</p>", storage=bucket)
    assert body["private_link"] == f"s3://{bucket}/plain.pdf"
    assert (body["presigned_link"], body["expires_at"], body["file_data"]) == (None, None, None)
    assert "Plain" in pages_text(s3_env.get_object(bucket, "plain.pdf")[0])[0]


@pytest.fixture
def default_bucket(s3_env, monkeypatch):
    bucket = s3_env.create_bucket(unique("default"))
    monkeypatch.setenv("CONNECTOR_PROXY_ARTIFACTS_STORAGE", f"s3://{bucket}/by-default/")
    return bucket


async def test_the_default_storage_setting_and_inline_per_call(default_bucket, s3_env, proxy):
    body = await COMMANDS.ok(proxy, "GenerateArtifact", id="d", template="<p>Default</p>")
    assert body["private_link"] == f"s3://{default_bucket}/by-default/d.pdf"
    assert s3_env.get_object(default_bucket, "by-default/d.pdf")[0].startswith(b"%PDF-")

    inline = await COMMANDS.ok(proxy, "GenerateArtifact", id="d", template="<p>Inline</p>", storage="inline")
    assert "Inline" in pages_text(pdf_of(inline))[0]


async def test_a_missing_bucket_is_no_such_bucket(s3_env, proxy):
    payload = await COMMANDS.fails(
        proxy, "GenerateArtifact", 404, "NoSuchBucket", id="x", template="x", storage=unique("missing")
    )
    assert "PutObject" in payload["error"]["message"]


async def test_an_unreachable_s3_is_endpoint_connection_error(monkeypatch, closed_port, proxy):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDARTIFACTS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "artifacts-secret")
    await COMMANDS.fails(
        proxy, "GenerateArtifact", 503, "EndpointConnectionError", id="x", template="x", storage="some-bucket"
    )


# --- as a long-running command --------------------------------------------------------------


async def test_a_document_made_as_a_job_is_called_back(make_app, tmp_path):
    with FakeSpiff() as spiff:
        delivery = CallbackDelivery(base_url=spiff.url, api_key=CALLBACK_KEY, attempts=2, timeout=5.0)
        jobs = EmbeddedJobs(tmp_path / "jobs.sqlite3", delivery, workers=1, shutdown_grace=0.0)
        async with running(make_app(jobs=jobs)) as client:
            template = '{% for n in range(60) %}<h2 style="break-before: page">Part {{ n }}</h2>{% endfor %}'
            body = spiff_body(id="long", template=template, proxy__async=True)
            response = await client.post("/v1/do/artifacts/GenerateArtifact", json=body)
            assert response.status_code == 202, response.text
            (call,) = await callbacks(spiff, 1, timeout=60)
    payload = call.json()
    assert payload["error"] is None
    result = payload["command_response"]["body"]
    assert result["pages"] == 60
    assert pages_text(pdf_of(result))[59].strip() == "Part 59"
