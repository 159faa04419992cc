"""HTML-to-PDF engines compared for the artifacts connector: quality, speed and what they cost.

    .venv/bin/python -m bench.pdf_engines       # every engine installed, 7 rounds
    .venv/bin/python -m bench.pdf_engines --rounds 3 --out /tmp/pdf-engines   # PNGs too (pdftoppm)

One invoice-like Jinja2 template (``INVOICE``: ``@page`` size, margins and a page-number footer,
a repeated table header, zebra rows, a forced page break, two font families, non-Latin text, an
embedded PNG, and an ``<img>`` pointing at a local counting server) is rendered with 12 lines
(one page) and with 1,400 lines (about 50 pages) by each engine in the same process, rounds
interleaved. Each PDF is read back (pypdf; the text by poppler's pdftotext when installed): the
page size and left margin it got, whether the header row repeats and the page break and footer
happened, the fonts used, the text that came out.
Engines that are not installed are skipped (the proxy depends on WeasyPrint alone; ``INSTALL``
says how to add the others):

- WeasyPrint (``weasyprint``; needs pango, harfbuzz and fontconfig from the system);
- xhtml2pdf (``xhtml2pdf``; pure Python on reportlab);
- PyMuPDF's Story (``pymupdf``; MuPDF's HTML layout, AGPL);
- headless Chromium (the ``chromium`` binary, one process per document, as Playwright would drive
  it; Playwright's own browser download is not a pip install).

"installed" is the size on disk of the engine's distributions and of those they bring that the
proxy's other runtime dependencies do not (``importlib.metadata``); system packages are listed by
name with Debian's ``Installed-Size`` when dpkg knows them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import importlib
import importlib.metadata
import io
import logging
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MM = 72 / 25.4  # PDF points per millimetre

INVOICE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {{ number }}</title>
<style>
  @page { size: letter; margin: 20mm 18mm 22mm 18mm;
          @bottom-center { content: "Page " counter(page) " of " counter(pages); font-size: 8pt; } }
  body { font-family: "DejaVu Sans", sans-serif; font-size: 10pt; color: #222; }
  h1 { font-family: "DejaVu Serif", serif; font-size: 22pt; margin: 0 0 4mm; color: #1d3557; }
  .parties td { vertical-align: top; width: 50%; padding: 0 0 6mm; }
  table.items { width: 100%; border-collapse: collapse; }
  table.items th { background: #1d3557; color: white; text-align: left; padding: 2mm; }
  table.items td { padding: 1.5mm 2mm; border-bottom: 0.3mm solid #ccc; }
  table.items tr:nth-child(even) td { background: #eef2f7; }
  .num { text-align: right; white-space: nowrap; }
  tfoot td { font-weight: bold; border-top: 0.6mm solid #1d3557; }
  tr { page-break-inside: avoid; }
  .terms { page-break-before: always; }
</style></head>
<body>
  <table class="parties"><tr>
    <td><img src="{{ logo }}" width="48" height="48" alt="logo">
        <h1>Invoice {{ number }}</h1>Issued {{ issued }}</td>
    <td>Bill to:<br>{{ customer.name }}<br>{{ customer.city }}<br>
        <img src="{{ tracker }}" width="1" height="1" alt=""></td>
  </tr></table>
  <table class="items">
    <thead><tr><th>#</th><th>Description</th><th class="num">Qty</th><th class="num">Amount</th></tr></thead>
    <tbody>{% for line in lines %}
      <tr><td>{{ loop.index }}</td><td>{{ line.text }}</td><td class="num">{{ line.qty }}</td>
          <td class="num">{{ "%.2f"|format(line.amount) }} €</td></tr>{% endfor %}
    </tbody>
    <tfoot><tr><td colspan="3">Total due</td><td class="num">{{ "%.2f"|format(total) }} €</td></tr></tfoot>
  </table>
  <section class="terms"><h2>Terms and conditions</h2>
    <p>Payable within 30 days. Questions: Zoë Łódź ✓, 東京 office.</p></section>
</body></html>
"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, made without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def invoice_html(lines: int, tracker: str) -> str:
    from jinja2.sandbox import SandboxedEnvironment

    data: dict[str, Any] = {
        "number": "INV-2026-0042",
        "issued": "2026-03-01",
        "customer": {"name": "Agency <Procurement> & Co", "city": "Washington, DC"},
        "logo": "data:image/png;base64," + base64.b64encode(png(48, 48, (29, 53, 87))).decode(),
        "tracker": tracker,
        "lines": [
            {
                "text": f"Service item {n:04d}: consulting hours",
                "qty": n % 7 + 1,
                "amount": 12.5 * (n % 7 + 1),
            }
            for n in range(1, lines + 1)
        ],
    }
    data["total"] = sum(line["amount"] for line in data["lines"])
    environment = SandboxedEnvironment(autoescape=True)
    return environment.from_string(INVOICE).render(data)


# --- the engines ---------------------------------------------------------------------------


def _weasyprint() -> Callable[[str], bytes]:
    import weasyprint  # type: ignore[import-untyped]
    from weasyprint.urls import URLFetcher, URLFetcherResponse  # type: ignore[import-untyped]

    class DataOnly(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> Any:
            if not url.startswith("data:"):
                msg = "not fetched"
                raise ValueError(msg)
            head, _, payload = url[5:].partition(",")
            return URLFetcherResponse(
                url, base64.b64decode(payload), {"Content-Type": head.split(";")[0]}, 200
            )

    def render(html: str) -> bytes:
        pdf: bytes = weasyprint.HTML(string=html, url_fetcher=DataOnly()).write_pdf()
        return pdf

    return render


def _xhtml2pdf() -> Callable[[str], bytes]:
    pisa: Any = importlib.import_module("xhtml2pdf.pisa")

    def only_data(uri: str, rel: str) -> str:
        return uri if uri.startswith("data:") else ""

    def render(html: str) -> bytes:
        out = io.BytesIO()
        pisa.CreatePDF(html, dest=out, link_callback=only_data)
        return out.getvalue()

    return render


def _pymupdf() -> Callable[[str], bytes]:
    pymupdf: Any = importlib.import_module("pymupdf")  # partly typed: used as Any

    def render(html: str) -> bytes:
        # Story lays out `page-break-before: always` by emitting an empty page and the same break
        # again, for ever (MuPDF 1.27): the declaration is left out, so "break" reads NO.
        html = html.replace("page-break-before: always;", "")
        out = io.BytesIO()
        story = pymupdf.Story(html=html)
        writer = pymupdf.DocumentWriter(out)
        page = pymupdf.paper_rect("letter")  # Story ignores @page: the caller lays out pages
        where = pymupdf.Rect(page.x0 + 18 * MM, page.y0 + 20 * MM, page.x1 - 18 * MM, page.y1 - 22 * MM)
        more = True
        while more:
            device = writer.begin_page(page)
            more, _ = story.place(where)
            story.draw(device)
            writer.end_page()
        writer.close()
        return out.getvalue()

    return render


def _chromium() -> Callable[[str], bytes]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        msg = "no chromium binary"
        raise ImportError(msg)

    def render(html: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.html", Path(tmp) / "out.pdf"
            source.write_text(html)
            subprocess.run(
                [
                    binary,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-pdf-header-footer",
                    f"--user-data-dir={tmp}/profile",
                    f"--print-to-pdf={target}",
                    source.as_uri(),
                ],
                capture_output=True,
                check=True,
                timeout=120,
            )
            return target.read_bytes()

    return render


ENGINES: dict[str, tuple[Callable[[], Callable[[str], bytes]], tuple[str, ...], tuple[str, ...]]] = {
    # name: (factory, Python distributions, Debian packages it needs)
    "weasyprint": (
        _weasyprint,
        ("weasyprint",),
        ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz0b", "libfontconfig1", "fonts-dejavu-core"),
    ),
    "xhtml2pdf": (_xhtml2pdf, ("xhtml2pdf",), ()),
    "pymupdf": (_pymupdf, ("pymupdf",), ()),
    "chromium": (_chromium, (), ("chromium",)),
}


# How to install the engines the proxy does not depend on (the versions measured in the README).
INSTALL = {
    "weasyprint": "make the project's venv",
    "xhtml2pdf": ".venv/bin/pip install xhtml2pdf==0.2.28",
    "pymupdf": ".venv/bin/pip install pymupdf==2.0",
    "chromium": "apt-get install chromium",
}


# --- what came out -------------------------------------------------------------------------


@dataclass
class Reading:
    """What pypdf reads back from one PDF."""

    pages: int
    size_mm: tuple[int, int]
    left_margin_mm: float
    header_repeats: str  # pages showing the table header / pages showing items
    break_honoured: bool
    footer: bool
    fonts: list[str]
    text_ok: dict[str, bool] = field(default_factory=dict)
    images: int = 0


def _positions(page: Any) -> list[tuple[float, float]]:
    found: list[tuple[float, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: Any) -> None:
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            found.append((x, y))

    page.extract_text(visitor_text=visit)
    return found


def _fonts_and_images(resources: Any, fonts: set[str], depth: int = 0) -> int:
    images = 0
    if resources is None or depth > 4:
        return 0
    resources = resources.get_object()
    for font in (resources.get("/Font") or {}).values():
        name = str(font.get_object().get("/BaseFont", ""))
        fonts.add(re.sub(r"^/?[A-Z]{6}\+", "", name).lstrip("/"))
    for xobject in (resources.get("/XObject") or {}).values():
        xobject = xobject.get_object()
        if xobject.get("/Subtype") == "/Image":
            images += 1
        else:
            images += _fonts_and_images(xobject.get("/Resources"), fonts, depth + 1)
    return images


def _texts(pdf: bytes) -> list[str]:
    """Each page's text by poppler's pdftotext, when installed: pypdf and pdfminer misread the
    CMap WeasyPrint writes for a font with missing glyphs (here the CJK ones), poppler does not."""
    if shutil.which("pdftotext") is None:
        return []
    result = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True)
    return result.stdout.decode().split("\f")[:-1]


def read(pdf: bytes, lines: int) -> Reading:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    texts = _texts(pdf) or [page.extract_text() or "" for page in reader.pages]
    first = reader.pages[0]
    width, height = float(first.mediabox.width), float(first.mediabox.height)
    xs = [x for page in reader.pages[:2] for x, _ in _positions(page)]
    with_items = [t for t in texts if "Service item" in t]
    with_header = [t for t in with_items if "Description" in t]
    terms_page = next((t for t in texts if "Terms and conditions" in t), "")
    fonts: set[str] = set()
    images = _fonts_and_images(first.get("/Resources"), fonts)
    whole = "\n".join(texts)
    return Reading(
        pages=len(texts),
        size_mm=(round(width / MM), round(height / MM)),
        left_margin_mm=round(min(xs) / MM, 1) if xs else float("nan"),
        header_repeats=f"{len(with_header)}/{len(with_items)}",
        break_honoured=bool(terms_page) and "Service item" not in terms_page,
        footer=f"Page 1 of {len(texts)}" in whole,
        fonts=sorted(fonts),
        text_ok={
            "escaped": "Agency <Procurement> & Co" in whole,
            "last line": f"Service item {lines:04d}" in whole,
            "euro": "€" in whole,
            "Łódź ✓": "Łódź ✓" in whole,
            "東京": "東京" in whole,
        },
        images=images,
    )


# --- a server that counts what reaches it --------------------------------------------------


@contextlib.contextmanager
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """``(url, hits)``: an HTTP server on loopback recording every path asked for."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = png(1, 1, (255, 0, 0))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tracker.png", hits
    finally:
        server.shutdown()
        server.server_close()


# --- what they cost ------------------------------------------------------------------------


def _requirement_names(dist: str) -> set[str]:
    try:
        requires = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    names = set()
    for requirement in requires:
        if "extra ==" in requirement and "extra == 'woff'" not in requirement:
            continue
        names.add(re.split(r"[\s;\[<>=!~(]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    pending = {r.lower().replace("_", "-") for r in roots}
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(name)
        pending |= _requirement_names(name) - seen
    return seen


def _installed_bytes(names: set[str]) -> int:
    total = 0
    for name in names:
        for file in importlib.metadata.distribution(name).files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total


def python_cost(dists: tuple[str, ...]) -> tuple[int, list[str]]:
    """Bytes installed for ``dists`` beyond the proxy's other runtime dependencies, and their names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # Pillow is listed for the connector's own image checks, but WeasyPrint brings it anyway.
    engines = {d for _, ds, _ in ENGINES.values() for d in ds} | {"pillow"}
    roots = {re.split(r"[\s;\[<>=!~]", r, maxsplit=1)[0].lower() for r in project} - engines
    brought = _closure(set(dists)) - _closure(roots)
    return _installed_bytes(brought), sorted(brought)


def debian_cost(packages: tuple[str, ...]) -> str:
    if not packages:
        return "none"
    if shutil.which("dpkg-query") is None:
        return ", ".join(packages)
    sizes = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Installed-Size}", package], capture_output=True, text=True, check=False
        )
        kib = result.stdout.strip()
        sizes.append(f"{package} ({int(kib) // 1024} MiB)" if kib.isdigit() else package)
    return ", ".join(sizes)


# --- the run -------------------------------------------------------------------------------


def _timed(render: Callable[[str], bytes], html: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    pdf = render(html)
    return (time.perf_counter() - started) * 1000, pdf


def _pngs(pdf: bytes, out: Path, name: str, last: int) -> None:
    if shutil.which("pdftoppm") is None:
        return
    source = out / f"{name}.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", str(last), str(source), str(out / name)], check=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed renders of the 1-page document")
    parser.add_argument("--long-rounds", type=int, default=3, help="timed renders of the ~50-page one")
    parser.add_argument("--long-lines", type=int, default=1400, help="item lines of the long document")
    parser.add_argument("--out", type=Path, help="write each PDF and PNGs of its first pages here")
    args = parser.parse_args(argv)
    for noisy in ("weasyprint", "fontTools", "xhtml2pdf", "reportlab", "svglib", "pypdf"):
        logging.getLogger(noisy).setLevel(
            logging.CRITICAL
        )  # each warns about every missing glyph or odd font

    renders: dict[str, Callable[[str], bytes]] = {}
    for name, (factory, _, _) in ENGINES.items():
        try:
            renders[name] = factory()
        except ImportError as exc:
            print(f"{name}: skipped ({exc}; to include it: {INSTALL[name]})")
    if not renders:
        print("no engine installed")
        return 1
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    short_ms: dict[str, list[float]] = {name: [] for name in renders}
    long_ms: dict[str, list[float]] = {name: [] for name in renders}
    readings: dict[str, tuple[Reading, Reading]] = {}
    fetched: dict[str, int] = {}
    with counting_server() as (tracker, hits):
        short, long = invoice_html(12, tracker), invoice_html(args.long_lines, tracker)
        for name, render in renders.items():  # warm up (imports, font caches), and read what came out
            before = len(hits)
            _, short_pdf = _timed(render, short)
            _, long_pdf = _timed(render, long)
            fetched[name] = len(hits) - before
            readings[name] = (read(short_pdf, 12), read(long_pdf, args.long_lines))
            if args.out:
                _pngs(short_pdf, args.out, f"{name}-1page", 1)
                _pngs(long_pdf, args.out, f"{name}-long", 2)
        for _ in range(args.rounds):
            for name, render in renders.items():
                short_ms[name].append(_timed(render, short)[0])
        for _ in range(args.long_rounds):
            for name, render in renders.items():
                long_ms[name].append(_timed(render, long)[0])

    base = "weasyprint" if "weasyprint" in renders else next(iter(renders))
    short_base = statistics.median(short_ms[base])
    long_base = statistics.median(long_ms[base])
    print(f"\nspeed (median ms; ratio to {base}), {args.rounds} and {args.long_rounds} rounds interleaved")
    for name in renders:
        s, lg = statistics.median(short_ms[name]), statistics.median(long_ms[name])
        pages = readings[name][1].pages
        print(
            f"  {name:11} 1 page {s:8.1f} ms ({s / short_base:5.2f}x)   "
            f"{pages:3d} pages {lg:9.1f} ms ({lg / long_base:5.2f}x, {lg / pages:6.1f} ms/page)"
        )
    asked = "letter 216x279 mm, left margin 18 mm, header on every page, break before terms, footer"
    print(f"\nquality (asked: {asked})")
    for name in renders:
        one, many = readings[name]
        print(
            f"  {name:11} size {many.size_mm[0]}x{many.size_mm[1]} mm, left margin {many.left_margin_mm} mm, "
            f"header on {many.header_repeats} item pages, break {'yes' if many.break_honoured else 'NO'}, "
            f"footer {'yes' if many.footer else 'NO'}, images on page 1: {one.images}, "
            f"remote fetches: {fetched[name]}"
        )
        bad = [k for k, ok in one.text_ok.items() if not ok]
        print(f"  {'':11} fonts {', '.join(one.fonts) or '-'}; text missing: {', '.join(bad) or 'none'}")
    print("\ncost (Python: installed bytes beyond the proxy's other dependencies)")
    for name in renders:
        _, dists, debs = ENGINES[name]
        size, brought = python_cost(dists) if dists else (0, [])
        print(f"  {name:11} Python {size / 2**20:6.1f} MiB ({', '.join(brought) or '-'})")
        print(f"  {'':11} system: {debian_cost(debs)}")
    if args.out:
        print(f"\nPDFs and PNG pages in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
