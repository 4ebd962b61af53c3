"""Long-form projects: sources, segmentation, voice tags, pronunciation, pauses and the store."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from core.errors import InvalidInput
from core.xtts.languages import CHAR_LIMITS
from projects.frontend import (
    DictEntry,
    apply_dictionary,
    merge_dictionaries,
    parse_pause,
    split_pauses,
    spoken_pieces,
)
from projects.script import Chapter, Project, Segment, Settings, Take
from projects.segment import build_project, split_text
from projects.sources import (
    MAX_SCRIPT_CHARS,
    MAX_SOURCE_BYTES,
    Block,
    SourceChapter,
    from_markdown,
    from_srt,
    from_text,
    from_vtt,
    read_source,
)
from projects.store import ProjectStore

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def _chapter_xhtml(title: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
        f"<title>{title}</title><style>p {{ color: red }}</style></head><body><h1>{title}</h1>{body}</body></html>"
    )


def _write_epub(path: Path, *, version: int, extra: dict[str, str] | None = None) -> Path:
    """A two-chapter EPUB whose spine order differs from the manifest order."""
    nav_item = (
        '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        if version == 3
        else '<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>'
    )
    spine_attr = "" if version == 3 else ' toc="ncx"'
    opf = f"""<?xml version="1.0"?>
<package xmlns="http://www.idpf.org/2007/opf" version="{version}.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Book</dc:title></metadata>
  <manifest>
    <item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>
    <item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>
    <item id="cover" href="cover.xhtml" media-type="application/xhtml+xml"/>
    {nav_item}
  </manifest>
  <spine{spine_attr}><itemref idref="cover"/><itemref idref="c1"/><itemref idref="c2"/></spine>
</package>"""
    nav = """<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<body><nav epub:type="landmarks"><ol><li><a href="text/two.xhtml">Wrong</a></li></ol></nav>
<nav epub:type="toc"><ol><li><a href="text/one.xhtml">The Beginning</a></li>
<li><a href="text/two.xhtml#start">The End</a></li></ol></nav></body></html>"""
    ncx = """<?xml version="1.0"?><ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1"><navMap>
<navPoint id="p1" playOrder="1"><navLabel><text>The Beginning</text></navLabel><content src="text/one.xhtml"/></navPoint>
<navPoint id="p2" playOrder="2"><navLabel><text>The End</text></navLabel><content src="text/two.xhtml#start"/></navPoint>
</navMap></ncx>"""
    files = {
        "META-INF/container.xml": CONTAINER,
        "OEBPS/content.opf": opf,
        "OEBPS/cover.xhtml": '<html><body><img src="cover.png"/></body></html>',
        "OEBPS/text/one.xhtml": _chapter_xhtml("Heading One", "<p>First <b>para</b>graph.</p><p>Second&#160;one.</p>"),
        "OEBPS/text/two.xhtml": _chapter_xhtml("Heading Two", "<div>Last words.<br/>Really last.</div>"),
        ("OEBPS/nav.xhtml" if version == 3 else "OEBPS/toc.ncx"): nav if version == 3 else ncx,
        **(extra or {}),
    }
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, content in files.items():
            book.writestr(name, content)
    return path


# ---- sources ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_epub_reads_spine_order_with_toc_titles(tmp_path: Path, version: int) -> None:
    chapters = read_source(_write_epub(tmp_path / f"book{version}.epub", version=version))
    assert [c.title for c in chapters] == ["The Beginning", "The End"]
    assert [b.text for b in chapters[0].blocks] == ["Heading One", "First paragraph.", "Second one."]
    assert [b.text for b in chapters[1].blocks] == ["Heading Two", "Last words.", "Really last."]


def test_epub_without_toc_entry_takes_its_heading(tmp_path: Path) -> None:
    path = _write_epub(tmp_path / "b.epub", version=3)
    with zipfile.ZipFile(path, "a") as book:
        book.writestr("OEBPS/nav.xhtml", '<html><body><nav epub:type="toc"><ol></ol></nav></body></html>')
    chapters = read_source(path)
    assert [c.title for c in chapters] == ["Heading One", "Heading Two"]
    assert chapters[0].blocks[0].text == "First paragraph."


def test_epub_refuses_drm_and_damage(tmp_path: Path) -> None:
    adept = _write_epub(tmp_path / "drm.epub", version=3, extra={"META-INF/rights.xml": "<rights/>"})
    with pytest.raises(InvalidInput, match="DRM"):
        read_source(adept)
    encryption = """<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
      xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
      <enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/></enc:EncryptedData></encryption>"""
    encrypted = _write_epub(tmp_path / "enc.epub", version=2, extra={"META-INF/encryption.xml": encryption})
    with pytest.raises(InvalidInput, match="encrypted"):
        read_source(encrypted)
    fonts_only = encryption.replace("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "http://www.idpf.org/2008/embedding")
    assert read_source(_write_epub(tmp_path / "f.epub", version=2, extra={"META-INF/encryption.xml": fonts_only}))
    (tmp_path / "junk.epub").write_bytes(b"not a zip at all")
    with pytest.raises(InvalidInput, match="not a zip"):
        read_source(tmp_path / "junk.epub")
    broken = _write_epub(tmp_path / "broken.epub", version=3, extra={"OEBPS/content.opf": "<package><manifest>"})
    with pytest.raises(InvalidInput, match="not valid XML"):
        read_source(broken)
    with zipfile.ZipFile(tmp_path / "empty.epub", "w") as book:
        book.writestr("mimetype", "application/epub+zip")
    with pytest.raises(InvalidInput, match="container"):
        read_source(tmp_path / "empty.epub")


def test_markdown_headings_become_chapters(tmp_path: Path) -> None:
    path = tmp_path / "book.md"
    path.write_text(
        "Preface with **bold** and a [link](http://x).\n\n# One\nLine one\nline two.\n\n"
        "### Aside\n\n```\ncode is not read\n```\n## Two ##\n- item\n",
        encoding="utf-8",
    )
    chapters = read_source(path)
    assert [c.title for c in chapters] == [None, "One", "Two"]
    assert chapters[0].blocks[0].text == "Preface with bold and a link."
    assert [b.text for b in chapters[1].blocks] == ["Line one\nline two.", "Aside"]
    assert [b.text for b in chapters[2].blocks] == ["item"]
    assert [c.title for c in from_markdown("# Only\ntext")] == ["Only"]


def test_srt_cues_become_timed_blocks() -> None:
    srt = "1\n00:00:01,000 --> 00:00:02,500\nHello <i>there</i>,\nfriend.\n\n2\n00:00:03,000 --> 00:00:04,000\nBye.\n"
    (chapter,) = from_srt("\ufeff" + srt.replace("\n", "\r\n"))
    assert [(b.text, b.start, b.end) for b in chapter.blocks] == [
        ("Hello there, friend.", 1.0, 2.5),
        ("Bye.", 3.0, 4.0),
    ]
    with pytest.raises(InvalidInput, match="Cue 2: '00:00:0x,000'"):
        from_srt(srt.replace("00:00:03,000", "00:00:0x,000"))
    with pytest.raises(InvalidInput, match="Cue 1: it ends"):
        from_srt(srt.replace("00:00:02,500", "00:00:00,500"))


def test_vtt_skips_header_note_and_style() -> None:
    vtt = (
        "WEBVTT - a title\nKind: captions\n\nSTYLE\n::cue { color: red }\n\nNOTE this is\na comment\n\n"
        "intro\n00:01.000 --> 00:02.000 align:start\n<v Alice>First</v> line\nsecond line\n\n"
        "01:00:00.500 --> 01:00:01.000\nLate &amp; last\n"
    )
    (chapter,) = from_vtt(vtt)
    assert [(b.text, b.start, b.end) for b in chapter.blocks] == [
        ("First line second line", 1.0, 2.0),
        ("Late & last", 3600.5, 3601.0),
    ]
    with pytest.raises(InvalidInput, match="WEBVTT"):
        from_vtt("00:01.000 --> 00:02.000\nno header")
    with pytest.raises(InvalidInput, match="Cue intro"):
        from_vtt(vtt.replace("00:01.000 -->", "00:61.000 -->"))


def test_txt_paragraphs_keep_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffFirst line\r\n  second line \r\n\r\n\r\nNext.\r\n".encode())
    (chapter,) = read_source(path)
    assert (chapter.title, [b.text for b in chapter.blocks]) == (None, ["First line\nsecond line", "Next."])


def test_size_limits_and_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="at most 2,000,000"):
        from_text("a" * (MAX_SCRIPT_CHARS + 1))
    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(MAX_SOURCE_BYTES + 1)
    with pytest.raises(InvalidInput, match="at most 20 MB"):
        read_source(big)
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    with pytest.raises(InvalidInput, match="not a supported source"):
        read_source(tmp_path / "a.pdf")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InvalidInput, match="UTF-8"):
        read_source(tmp_path / "latin.txt")
    with pytest.raises(InvalidInput, match="empty"):
        from_text(" \n\n ")


# ---- segmentation and voice tags ----------------------------------------------------------


def test_segments_stay_within_the_limit_and_never_split_words() -> None:
    words = [f"word{i}" for i in range(400)]
    text = " ".join(words[:150]) + ". Short one. " + ", ".join(words[150:]) + "."
    for language in ("en", "hi"):
        pieces = split_text(text, language)
        assert all(len(piece) <= CHAR_LIMITS[language] for piece in pieces)
        assert " ".join(pieces).replace(",", "").replace(".", "").split() == [
            w for w in text.replace(",", "").replace(".", "").split()
        ]
    packed = split_text("One. Two. Three.", "en")
    assert packed == ["One. Two. Three."]


def test_long_sentence_cut_at_last_comma_before_limit() -> None:
    first = "a" * 10 + " " + "b " * 110
    sentence = f"{first.strip()}, then the rest of it goes on and on."
    pieces = split_text(sentence, "en")
    assert pieces[0].endswith(",") and len(pieces[0]) <= CHAR_LIMITS["en"]
    assert pieces[1] == "then the rest of it goes on and on."


def test_pause_tags_survive_splitting() -> None:
    text = "Wait for it [pause 1.5s] now. " * 30
    pieces = split_text(text, "en")
    assert all(piece.count("[pause 1.5s]") == piece.count("[pause") for piece in pieces)
    assert sum(piece.count("[pause 1.5s]") for piece in pieces) == 30


def test_voice_tags_unknown_tag_warns_and_narrator_reads() -> None:
    sources = from_text("[alice] Hi. I am Alice.\n[NARR] Said she.\n\nStill narrator.\n\n[Bob] Hello!\n\n[Zed] Who?")
    project = build_project("Play", sources, narrator="Narrator", voice_tags={"Narr": "Narrator"}, voices=["Alice"])
    rows = [(s.voice, s.text, s.paragraph_end) for s in project.segments()]
    assert rows == [
        ("Alice", "Hi. I am Alice.", False),
        ("Narrator", "Said she.", True),
        (None, "Still narrator.", True),
        (None, "Hello!", True),
        (None, "Who?", True),
    ]
    assert project.warnings == [
        "Unknown voice tag [Bob]: the narrator reads that text.",
        "Unknown voice tag [Zed]: the narrator reads that text.",
    ]
    assert [project.voice_of(s) for s in project.segments()][2:] == ["Narrator"] * 3
    assert project.chapters[0].title == "Chapter 1"


def test_subtitle_cues_stay_one_segment_each() -> None:
    project = build_project(
        "Subs", from_srt("1\n00:00:01,000 --> 00:00:02,000\n[Alice] Hi.\n"), narrator="N", voices=["alice"]
    )
    (segment,) = project.segments()
    assert (segment.text, segment.voice, segment.start, segment.end) == ("Hi.", "alice", 1.0, 2.0)


def test_bad_pause_refused_at_import() -> None:
    with pytest.raises(InvalidInput, match=r"\[pause 11s\]"):
        build_project("P", from_text("Hello [pause 11s] there."), narrator="N")


# ---- pronunciation and pauses -------------------------------------------------------------


def test_dictionary_whole_word_case_regex_and_language() -> None:
    entries = [
        DictEntry("SQL", "sequel", case_sensitive=True),
        DictEntry("gif", "jif"),
        DictEntry(r"Dr\.", "Doctor", regex=True, whole_word=False),
        DictEntry(r"(\d+)km", r"\1 kilometres", regex=True),
        DictEntry("Chat", "Tschatt", language="de"),
    ]
    spoken, applied = apply_dictionary("SQL sql GIF gifted Dr. Who ran 5km. Chat", entries, "en")
    assert spoken == "sequel sql jif gifted Doctor Who ran 5 kilometres. Chat"
    assert [e.pattern for e in applied] == ["SQL", "gif", r"Dr\.", r"(\d+)km"]
    assert apply_dictionary("Chat", entries, "de") == ("Tschatt", [entries[4]])
    with pytest.raises(InvalidInput, match="not a valid regular expression"):
        DictEntry("(", "x", regex=True)
    with pytest.raises(InvalidInput, match="empty"):
        DictEntry(" ", "x")


def test_merge_project_entries_win() -> None:
    global_entries = [DictEntry("Tom", "Tomm"), DictEntry("nginx", "engine x")]
    project_entries = [DictEntry("tom", "Thom")]
    merged = merge_dictionaries(global_entries, project_entries)
    assert merged == [DictEntry("nginx", "engine x"), DictEntry("tom", "Thom")]
    assert apply_dictionary("Tom runs nginx", merged, "en")[0] == "Thom runs engine x"
    assert DictEntry.from_dict(merged[1].to_dict()) == merged[1]


def test_a_footnote_mark_is_text_not_a_voice_tag() -> None:
    project = build_project("Notes", from_text("[1] See the appendix.\n\n[12] And the index."), narrator="Narrator")
    assert [(s.voice, s.text) for s in project.segments()] == [
        (None, "[1] See the appendix."),
        (None, "[12] And the index."),
    ]
    assert project.warnings == []


def test_pause_tags() -> None:
    assert split_pauses("One. [pause 1.5s] Two. [PAUSE 500ms][pause 0s]") == [
        ("text", "One."),
        ("pause", 1.5),
        ("text", "Two."),
        ("pause", 0.5),
        ("pause", 0.0),
    ]
    assert parse_pause("10s") == 10.0
    for bad in ("11s", "10001ms", "fast", "-1s", "1.5"):
        with pytest.raises(InvalidInput, match="pause"):
            parse_pause(bad)
    pieces, used = spoken_pieces(
        "Dr. X [pause 1s] Dr. Y", [DictEntry(r"Dr\.", "Doctor", regex=True, whole_word=False)], "en"
    )
    assert pieces == [("text", "Doctor X"), ("pause", 1.0), ("text", "Doctor Y")]
    assert len(used) == 1


# ---- model and store ----------------------------------------------------------------------


def _sample_project() -> Project:
    return Project(
        name="Book",
        narrator="Narrator",
        language="en",
        profile="warm",
        voice_tags={"A": "Alice"},
        settings=Settings(paragraph_gap_s=0.8, chapter_gap_s=3.0),
        chapters=[
            Chapter(
                "One",
                [
                    Segment("Hi.", voice="Alice", seed=7, state="rendered", takes=[Take("takes/a.wav", 7, True)]),
                    Segment("Cue.", start=1.0, end=2.5, state="flagged", paragraph_end=True),
                ],
            )
        ],
        dictionary=[DictEntry("Hi", "High")],
        warnings=["w"],
    )


def test_json_round_trip_and_schema() -> None:
    project = _sample_project()
    payload = json.loads(json.dumps(project.to_dict()))
    assert payload["schema"] == 1
    assert Project.from_dict(payload) == project
    with pytest.raises(InvalidInput, match="schema version 2"):
        Project.from_dict({**payload, "schema": 2})
    with pytest.raises(InvalidInput, match="damaged"):
        Project.from_dict({"schema": 1, "name": "x"})
    bad = json.loads(json.dumps(payload))
    bad["chapters"][0]["segments"][0]["state"] = "done"
    with pytest.raises(InvalidInput, match="state 'done'"):
        Project.from_dict(bad)


def _store_with_book(tmp_path: Path) -> tuple[ProjectStore, Project]:
    store = ProjectStore(tmp_path / "projects")
    text = "Hello world. The cat sat.\n\n[Alice] Cats are nice.\n\nGoodbye, world."
    project = store.create("My Book", from_text(text), narrator="Narrator", voices=["Alice"])
    for segment in project.segments():
        segment.state = "rendered"
        segment.takes = [Take(f"takes/{segment.id}.wav", 1, True)]
    store.save(project)
    return store, project


def test_store_round_trip_list_delete(tmp_path: Path) -> None:
    store, project = _store_with_book(tmp_path)
    assert (tmp_path / "projects" / "my-book" / "project.json").is_file()
    assert store.get("My Book") == project
    assert store.list() == ["My Book"]
    with pytest.raises(InvalidInput, match="exists already"):
        store.create("my book", from_text("x"), narrator="N")
    store.delete("My Book")
    assert store.list() == []
    with pytest.raises(InvalidInput, match="no project"):
        store.get("My Book")
    assert [p.name for p in (tmp_path / "projects").iterdir()] == []


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "\x00x", "a\\b"])
def test_hostile_names_refused(tmp_path: Path, name: str) -> None:
    store = ProjectStore(tmp_path / "projects")
    with pytest.raises(InvalidInput):
        store.create(name, from_text("Hello."), narrator="N")
    with pytest.raises(InvalidInput):
        store.get(name)
    assert list((tmp_path / "projects").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".projects.lock", "projects"]  # the store's lock, beside it


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store, project = _store_with_book(tmp_path)
    for i in range(3):
        store.update_segment("My Book", project.segments()[0].id, text=f"Hello {i}.")
    folder = tmp_path / "projects" / "my-book"
    assert [p.name for p in folder.iterdir()] == ["project.json"]
    assert [p.name for p in (tmp_path / "projects").iterdir()] == ["my-book"]


def test_editing_one_segment_invalidates_only_it(tmp_path: Path) -> None:
    store, project = _store_with_book(tmp_path)
    first, second, *_ = project.segments()
    store.update_segment("My Book", first.id, text="  Hello world. The cat sat.  ")
    assert {s.state for s in store.get("My Book").segments()} == {"rendered"}
    store.update_segment("My Book", first.id, state="locked")
    with pytest.raises(InvalidInput, match="locked"):
        store.update_segment("My Book", first.id, text="Changed.")
    changed = store.update_segment("My Book", second.id, seed=5)
    assert changed.state == "pending" and changed.chosen_take is None and changed.takes
    after = store.get("My Book")
    assert [s.state for s in after.segments()] == ["locked", "pending", "rendered"]
    assert after.segment(second.id).id == second.id
    with pytest.raises(InvalidInput, match="no editable field"):
        store.update_segment("My Book", first.id, takes=[])
    with pytest.raises(InvalidInput, match="seed"):
        store.update_segment("My Book", second.id, seed="x")
    with pytest.raises(InvalidInput, match="no segment"):
        store.update_segment("My Book", "nope", seed=1)


def test_dictionary_change_invalidates_exactly_affected_segments(tmp_path: Path) -> None:
    store, project = _store_with_book(tmp_path)
    hello, cats, bye = project.segments()
    assert store.set_dictionary("My Book", [DictEntry("world", "wurld"), DictEntry("unused", "x")]) == [
        hello.id,
        bye.id,
    ]
    store.update_segment("My Book", hello.id, state="rendered")
    store.update_segment("My Book", bye.id, state="locked")
    changed = store.set_dictionary("My Book", [DictEntry("world", "wurld"), DictEntry("cats", "katz")])
    assert changed == [cats.id]
    changed = store.set_dictionary("My Book", [DictEntry("world", "whirled"), DictEntry("cats", "katz")])
    assert changed == [hello.id, bye.id]
    states = {s.id: s.state for s in store.get("My Book").segments()}
    assert states == {hello.id: "pending", cats.id: "pending", bye.id: "flagged"}
    store.update_segment("My Book", hello.id, state="rendered")
    assert store.set_global_dictionary([DictEntry("World", "Earth"), DictEntry("goodbye", "bye")]) == {
        "My Book": [bye.id]
    }
    assert json.loads((tmp_path / "projects" / "dictionary.json").read_text())[1]["pattern"] == "goodbye"
    assert store.get("My Book").segment(hello.id).state == "rendered"


def test_build_project_from_blocks_keeps_chapter_titles() -> None:
    sources = [SourceChapter("Intro", [Block("A.")]), SourceChapter(None, [Block("B.")])]
    project = build_project("B", sources, narrator="N", language="de")
    assert [c.title for c in project.chapters] == ["Intro", "Chapter 2"]
    assert project.language_of(project.segments()[0]) == "de"


def test_the_segments_table_shows_the_text_as_it_is_spoken() -> None:
    from projects.frontend import spoken_text
    from tabs.project_forms import SEGMENT_HEADERS, segment_rows

    entries = [DictEntry("Nguyen", "Win")]
    assert spoken_text("Nguyen waits. [pause 500ms] Then Nguyen goes.", entries, "en") == (
        "Win waits. [pause 0.5s] Then Win goes."
    )
    project = build_project("Names", from_text("Nguyen waits."), narrator="Narrator")
    rows, ids = segment_rows(project, entries)
    row = dict(zip(SEGMENT_HEADERS, rows[0], strict=True))
    assert (row["text"], row["spoken as"], ids) == ("Nguyen waits.", "Win waits.", [project.segments()[0].id])


def test_an_edited_text_with_a_voice_tag_or_a_bad_pause_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    store, project = _store_with_book(tmp_path)
    first = project.segments()[0]
    with pytest.raises(InvalidInput, match=r"voice tag \[Bob\]; choose the segment's voice"):
        store.update_segment("My Book", first.id, text="[Bob] Hello.")
    with pytest.raises(InvalidInput, match="needs a length"):
        store.update_segment("My Book", first.id, text="Hello [pause soon] there.")
    assert store.get("My Book").segments()[0].text == first.text
    assert store.update_segment("My Book", first.id, text="[1] A footnote. [pause 1s] Then more.").state == "pending"
