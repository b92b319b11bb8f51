"""report.html looked at in a real browser: headless Chromium renders the page, and the screenshot shows the
answer where a reader looks first, a FAIL banner in the banner's red across the top of the page."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from test_report import run_with_evidence

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium), "
                                                         "so the report page cannot be looked at")
FAIL_RED = (0xD6, 0x33, 0x2A)  # .st-fail in harness/report/html.py
WIDTH, HEIGHT = 1000, 600


def screenshot(page: Path, out: Path) -> None:
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", f"--screenshot={out}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)


def pixels(png: Path) -> list[list[tuple[int, int, int]]]:
    """RGB rows of an 8-bit RGB or RGBA PNG, the kind Chromium writes (no imaging library needed)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(b"".join(chunks)), width * step, [], bytearray(width * step)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a, b, c = line[i - step] if i >= step else 0, prev[i], prev[i - step] if i >= step else 0
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2,
                    4: min((a, b, c), key=lambda p: (abs(a + b - c - p), (a, b, c).index(p)))}[kind]
            line[i] = (line[i] + pred) & 0xFF
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, step)])
        prev = line
    return rows  # type: ignore[return-value]


def test_a_failed_run_shows_a_red_fail_banner_at_the_top(tmp_path: Path) -> None:
    run_dir = run_with_evidence(tmp_path)
    shot = tmp_path / "report.png"
    screenshot(run_dir / "report.html", shot)
    rows = pixels(shot)
    assert (len(rows), len(rows[0])) == (HEIGHT, WIDTH)
    red_rows = [y for y, row in enumerate(rows) if sum(p == FAIL_RED for p in row) > 0.8 * WIDTH]
    assert red_rows and red_rows[0] < 150, "no banner-wide FAIL red near the top of the page"
    assert 40 <= len(red_rows) <= 120  # a banner, not the page
    lower = rows[red_rows[-1] + 20:]
    assert len({p for row in lower[::10] for p in row[::10]}) > 20, "nothing rendered below the banner"
