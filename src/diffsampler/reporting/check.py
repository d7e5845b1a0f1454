"""Checks that a report page is self-contained: every image an embedded PNG, no script, no
stylesheet link, no address outside the file in src/href/url()."""
from __future__ import annotations

import base64
import binascii
import re
import struct
from html.parser import HTMLParser

from .rundata import PNG_SIGNATURE

DATA_PNG = "data:image/png;base64,"
URL_ATTRS = {"src", "href", "srcset", "poster", "data", "action", "formaction", "background", "xlink:href"}
FORBIDDEN_TAGS = {"script", "link", "iframe", "object", "embed", "base", "meta-refresh"}
CSS_URL = re.compile(r"url\(\s*['\"]?\s*(?!data:)([^'\")\s]*)", re.I)
EXTERNAL = re.compile(r"^\s*(https?:|ftp:|wss?:|//|file:)", re.I)


def png_size(b64: str) -> tuple[int, int] | None:
    """(width, height) of a base64 PNG, or None when it does not decode to a PNG."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:8] != PNG_SIGNATURE or raw[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", raw[16:24])


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.images = 0
        self.in_style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"<{tag}> element ({a.get('src') or a.get('href') or ''})")
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.problems.append("<meta http-equiv=refresh>")
        if tag == "style":
            self.in_style = True
        for k, v in attrs:
            if k in URL_ATTRS and v and EXTERNAL.match(v):
                self.problems.append(f"<{tag} {k}={v[:80]!r}> points outside the file")
            if k == "style" and v:
                self._css(v, f"<{tag} style>")
        if tag == "img":
            self._img(a.get("src") or "")

    def handle_endtag(self, tag):
        if tag == "style":
            self.in_style = False

    def handle_data(self, data):
        if self.in_style:
            self._css(data, "<style>")

    def _css(self, css: str, where: str) -> None:
        for m in CSS_URL.finditer(css):
            self.problems.append(f"{where}: url({m.group(1)[:80]}) is not a data: URI")
        if "@import" in css:
            self.problems.append(f"{where}: @import")

    def _img(self, src: str) -> None:
        self.images += 1
        if not src.startswith(DATA_PNG):
            self.problems.append(f"<img src={src[:60]!r}> is not an embedded PNG")
            return
        size = png_size(src[len(DATA_PNG):])
        if not size or min(size) <= 0:
            self.problems.append(f"image {self.images} does not decode to a PNG with a positive size")


def self_containment_problems(html: str) -> tuple[int, list[str]]:
    """(number of <img>, problems found): an empty list means the page loads nothing from outside
    and every image is an embedded PNG that decodes."""
    s = _Scanner()
    s.feed(html)
    s.close()
    return s.images, s.problems
