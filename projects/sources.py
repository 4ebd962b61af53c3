"""Read a project's text from pasted text, .txt, .md, .epub, .srt or .vtt.

Every reader returns :class:`SourceChapter` items: a title (``None`` when the source has
none) and blocks. A block of prose is one paragraph, its lines kept so that a voice tag at
the start of a line can be found; a subtitle cue is one block with its start and end.
"""

from __future__ import annotations

import html
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from core.errors import InvalidInput

MAX_SOURCE_BYTES = 20 * 1024 * 1024
MAX_SCRIPT_CHARS = 2_000_000
MAX_EPUB_UNPACKED = 200 * 1024 * 1024
SUFFIXES = (".txt", ".md", ".markdown", ".epub", ".srt", ".vtt")

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_TIMING = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)(?:\s.*)?$")
_TIMESTAMP = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")
_CUE_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}
_BLOCK_TAGS = {
    "p", "div", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "section", "article",
    "tr", "dt", "dd", "pre", "hr", "figcaption", "aside", "header", "footer",
}  # fmt: skip
_SKIP_TAGS = {"head", "script", "style", "title", "svg", "math"}


@dataclass
class Block:
    text: str
    start: float | None = None
    end: float | None = None


@dataclass
class SourceChapter:
    title: str | None
    blocks: list[Block] = field(default_factory=list)


def check_script_size(text: str) -> str:
    if len(text) > MAX_SCRIPT_CHARS:
        raise InvalidInput(
            f"The script is {len(text):,} characters; a project can hold at most {MAX_SCRIPT_CHARS:,}. "
            "Split the book into several projects."
        )
    return text


def paragraphs(text: str) -> list[str]:
    """Paragraphs of ``text`` (separated by blank lines), each with its lines stripped and kept."""
    out = []
    for chunk in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.strip() for line in chunk.split("\n") if line.strip()]
        if lines:
            out.append("\n".join(lines))
    return out


def from_text(text: str) -> list[SourceChapter]:
    """Pasted or .txt text: one untitled chapter of paragraphs."""
    check_script_size(text)
    blocks = [Block(p) for p in paragraphs(text)]
    if not blocks:
        raise InvalidInput("The text is empty; there is nothing to read.")
    return [SourceChapter(None, blocks)]


def _markdown_inline(line: str) -> str:
    line = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", line)
    line = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", line)
    line = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", line)
    line = re.sub(r"^\s*>\s?", "", line)
    line = re.sub(r"(\*\*|__|`)", "", line)
    return re.sub(r"(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)", "", line)


def from_markdown(text: str) -> list[SourceChapter]:
    """Markdown: ``#`` and ``##`` headings start chapters; deeper headings are read as paragraphs."""
    check_script_size(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    in_fence = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = _HEADING.match(line)
        if heading and len(heading[1]) <= 2:
            sections.append((_markdown_inline(heading[2]).strip(), []))
        elif heading:
            sections[-1][1].extend(["", _markdown_inline(heading[2]), ""])
        elif re.fullmatch(r"\s*([-*_])(\s*\1){2,}\s*", line):
            sections[-1][1].append("")
        else:
            sections[-1][1].append(_markdown_inline(line))
    chapters = []
    for title, lines in sections:
        blocks = [Block(p) for p in paragraphs("\n".join(lines))]
        if blocks:
            chapters.append(SourceChapter(title, blocks))
    if not chapters:
        raise InvalidInput("The Markdown file has no text to read.")
    return chapters


# ---- subtitles ----------------------------------------------------------------------------


def _seconds(value: str, cue: str) -> float:
    match = _TIMESTAMP.fullmatch(value)
    if not match:
        raise InvalidInput(f"Cue {cue}: '{value}' is not a timestamp like 00:01:02,500.")
    hours, minutes, seconds, millis = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise InvalidInput(f"Cue {cue}: '{value}' has minutes or seconds over 59.")
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def _cues(chunks: list[list[str]], kind: str) -> list[SourceChapter]:
    blocks = []
    for number, lines in enumerate(chunks, start=1):
        timing_at = next((i for i, line in enumerate(lines) if "-->" in line), None)
        cue = lines[0] if timing_at == 1 else str(number)
        if timing_at is None or timing_at > 1:
            raise InvalidInput(f"Cue {cue}: no 'start --> end' timing line where one was expected.")
        timing = _TIMING.match(lines[timing_at])
        if not timing:
            raise InvalidInput(f"Cue {cue}: the timing line '{lines[timing_at]}' is not 'start --> end'.")
        start, end = _seconds(timing[1], cue), _seconds(timing[2], cue)
        if end < start:
            raise InvalidInput(f"Cue {cue}: it ends ({timing[2]}) before it starts ({timing[1]}).")
        text = " ".join(html.unescape(_CUE_MARKUP.sub("", line)).strip() for line in lines[timing_at + 1 :])
        text = re.sub(r"\s+", " ", text).strip()
        if text:
            blocks.append(Block(text, start, end))
    if not blocks:
        raise InvalidInput(f"The {kind} file has no cues with text.")
    return [SourceChapter(None, blocks)]


def _chunks(text: str) -> list[list[str]]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff").split("\n")
    chunks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            chunks[-1].append(line.strip())
        elif chunks[-1]:
            chunks.append([])
    return [chunk for chunk in chunks if chunk]


def from_srt(text: str) -> list[SourceChapter]:
    """SubRip: each cue becomes one timed block; a cue's lines are joined with spaces."""
    check_script_size(text)
    return _cues(_chunks(text), "SRT")


def from_vtt(text: str) -> list[SourceChapter]:
    """WebVTT: the header, NOTE, STYLE and REGION blocks are skipped; each cue becomes one timed block."""
    check_script_size(text)
    chunks = _chunks(text)
    if not chunks or not re.match(r"WEBVTT(?:\s|$)", chunks[0][0]):
        raise InvalidInput("The VTT file does not start with 'WEBVTT'.")
    cues = [chunk for chunk in chunks[1:] if not re.match(r"(NOTE|STYLE|REGION)(?:\s|$)", chunk[0])]
    return _cues(cues, "VTT")


# ---- EPUB ---------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    """The readable text of an XHTML document, with block elements as paragraph breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.heading: str | None = None
        self._in_heading = False
        self._heading_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        if tag in ("h1", "h2", "h3") and self.heading is None:
            self._in_heading = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        if tag in ("h1", "h2", "h3") and self._in_heading:
            self._in_heading = False
            self.heading = " ".join("".join(self._heading_parts).split()) or None

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        self.parts.append(re.sub(r"\s+", " ", data))
        if self._in_heading:
            self._heading_parts.append(data)

    def text(self) -> str:
        return "".join(self.parts)


class _NavLinks(HTMLParser):
    """The links of an EPUB3 navigation document's ``toc`` nav, as (href, label)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._nav_depth = 0
        self._in_toc = False
        self._href: str | None = None
        self._label: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "nav":
            self._nav_depth += 1
            if self._nav_depth == 1:
                self._in_toc = "toc" in (values.get("epub:type") or "").split()
        elif tag == "a" and self._in_toc and values.get("href"):
            self._href, self._label = values["href"], []

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self._nav_depth -= 1
            if self._nav_depth == 0:
                self._in_toc = False
        elif tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._label).split())))
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._label.append(data)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(book: zipfile.ZipFile, name: str, what: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(book.read(name))
    except KeyError as exc:
        raise InvalidInput(f"The EPUB has no {what} ({name}); the file is damaged or not an EPUB.") from exc
    except ElementTree.ParseError as exc:
        raise InvalidInput(f"The EPUB's {what} ({name}) is not valid XML: {exc}.") from exc


def _refuse_drm(book: zipfile.ZipFile) -> None:
    names = set(book.namelist())
    if "META-INF/rights.xml" in names:
        raise InvalidInput("This EPUB is protected by DRM (it has META-INF/rights.xml); the studio cannot read it.")
    if "META-INF/encryption.xml" in names:
        root = _xml(book, "META-INF/encryption.xml", "encryption list")
        methods = {el.get("Algorithm") for el in root.iter() if _local(el.tag) == "EncryptionMethod"}
        if methods - _FONT_OBFUSCATION:
            raise InvalidInput("This EPUB is encrypted (DRM); the studio cannot read it. Use a DRM-free copy.")


def _href_target(base: str, href: str) -> str:
    """The archive name ``href`` (relative to the file ``base``) points at, without its fragment."""
    path = unquote(href.split("#", 1)[0])
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), path)) if path else ""


def _toc_titles(book: zipfile.ZipFile, opf_name: str, opf: ElementTree.Element, manifest: dict) -> dict[str, str]:
    """Chapter titles by archive name: from the EPUB3 nav document, else from the EPUB2 toc.ncx."""
    titles: dict[str, str] = {}
    nav = next((item for item in manifest.values() if "nav" in (item.get("properties") or "").split()), None)
    if nav is not None:
        nav_name = _href_target(opf_name, nav.get("href", ""))
        parser = _NavLinks()
        try:
            parser.feed(book.read(nav_name).decode("utf-8", errors="replace"))
        except KeyError as exc:
            raise InvalidInput(f"The EPUB's navigation document ({nav_name}) is missing.") from exc
        for href, label in parser.links:
            titles.setdefault(_href_target(nav_name, href), label)
        return titles
    spine = next((el for el in opf if _local(el.tag) == "spine"), None)
    ncx = manifest.get(spine.get("toc")) if spine is not None else None
    if ncx is None:
        ncx = next((item for item in manifest.values() if item.get("media-type") == "application/x-dtbncx+xml"), None)
    if ncx is None:
        return titles
    ncx_name = _href_target(opf_name, ncx.get("href", ""))
    for point in _xml(book, ncx_name, "table of contents").iter():
        if _local(point.tag) != "navPoint":
            continue
        label = next((el.text for el in point.iter() if _local(el.tag) == "text" and el.text), None)
        content = next((el for el in point if _local(el.tag) == "content"), None)
        if label and content is not None and content.get("src"):
            titles.setdefault(_href_target(ncx_name, content.get("src", "")), " ".join(label.split()))
    return titles


def from_epub(path: Path) -> list[SourceChapter]:
    """An EPUB 2 or 3: the spine's documents in order, titled from the table of contents."""
    try:
        book = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"'{path.name}' is not a readable EPUB (not a zip archive).") from exc
    with book:
        if sum(info.file_size for info in book.infolist()) > MAX_EPUB_UNPACKED:
            raise InvalidInput(f"'{path.name}' unpacks to more than {MAX_EPUB_UNPACKED // 2**20} MB; it was refused.")
        _refuse_drm(book)
        container = _xml(book, "META-INF/container.xml", "container file")
        rootfile = next((el for el in container.iter() if _local(el.tag) == "rootfile"), None)
        if rootfile is None or not rootfile.get("full-path"):
            raise InvalidInput("The EPUB's container file names no package document.")
        opf_name = rootfile.get("full-path", "")
        opf = _xml(book, opf_name, "package document")
        manifest = {item.get("id"): item for item in opf.iter() if _local(item.tag) == "item"}
        spine = [el.get("idref") for el in opf.iter() if _local(el.tag) == "itemref"]
        if not spine:
            raise InvalidInput("The EPUB's package document has an empty spine; there is nothing to read.")
        titles = _toc_titles(book, opf_name, opf, manifest)
        chapters = []
        total = 0
        for idref in spine:
            item = manifest.get(idref)
            if item is None:
                raise InvalidInput(f"The EPUB's spine names '{idref}', which its manifest does not list.")
            name = _href_target(opf_name, item.get("href", ""))
            try:
                document = book.read(name).decode("utf-8", errors="replace")
            except KeyError as exc:
                raise InvalidInput(f"The EPUB lists {name} but does not contain it.") from exc
            extractor = _TextExtractor()
            extractor.feed(document)
            blocks = [Block(p) for p in paragraphs(extractor.text())]
            total += sum(len(b.text) for b in blocks)
            if total > MAX_SCRIPT_CHARS:
                raise InvalidInput(
                    f"'{path.name}' holds more than {MAX_SCRIPT_CHARS:,} characters of text; "
                    "split the book into several projects."
                )
            if blocks:
                title = titles.get(name) or extractor.heading
                if title and blocks[0].text == title:
                    blocks = blocks[1:]
                if blocks:
                    chapters.append(SourceChapter(title, blocks))
    if not chapters:
        raise InvalidInput(f"'{path.name}' contains no readable text.")
    return chapters


def read_source(path: Path) -> list[SourceChapter]:
    """The chapters of the file at ``path``, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInput(f"'{path.name}' is not a supported source; use one of {', '.join(SUFFIXES)}.")
    size = path.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise InvalidInput(
            f"'{path.name}' is {size / 2**20:.1f} MB; a source can be at most {MAX_SOURCE_BYTES // 2**20} MB."
        )
    if suffix == ".epub":
        return from_epub(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"'{path.name}' is not UTF-8 text; save it as UTF-8 and try again.") from exc
    if suffix == ".srt":
        return from_srt(text)
    if suffix == ".vtt":
        return from_vtt(text)
    if suffix in (".md", ".markdown"):
        return from_markdown(text)
    return from_text(text)
