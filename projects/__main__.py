"""Headless long-form work: ``python -m projects {list,create,render,status,export} ...``.

Runs the studio's own services in this process (the same data folders and model as the web
UI; studio options such as ``--outputs-dir`` or ``--model-dir`` go after the command's own).
Do not render the same project from here and from a running studio at once: each process
refuses only its own second render. Ctrl-C stops a render after the segment in progress;
what was rendered is kept and the next ``render`` resumes.

Examples::

    python -m projects create "My Book" --source book.epub --narrator "Claribel Dervla"
    python -m projects render "My Book" --chapters 1-2
    python -m projects export "My Book" --formats m4b,srt --loudness acx
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import StudioError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m projects", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the projects, one name a line")
    create = commands.add_parser("create", help="a new project from a .txt, .md, .epub, .srt or .vtt file")
    create.add_argument("name")
    create.add_argument("--source", type=Path, required=True)
    create.add_argument("--narrator", required=True, help="the voice untagged text is read with")
    create.add_argument("--language", default="en")
    create.add_argument("--profile")
    create.add_argument("--tag", action="append", default=[], metavar="TAG=VOICE", help="a voice tag, e.g. Alice=Daisy")
    render = commands.add_parser("render", help="render what needs rendering (resumes)")
    render.add_argument("name")
    render.add_argument("--chapters", help='chapter numbers from 1, such as "1, 3-4" (default: all)')
    status = commands.add_parser("status", help="counts per state and the flagged segments, as JSON")
    status.add_argument("name")
    export = commands.add_parser("export", help="audio, subtitles and JSON of the rendered project, and a zip")
    export.add_argument("name")
    export.add_argument("--formats", default="wav,mp3,m4b,srt,vtt,json")
    export.add_argument("--chapters", help='chapter numbers from 1, such as "1, 3-4" (default: all)')
    export.add_argument("--loudness", default="podcast", choices=("none", "podcast", "acx"))
    return parser


def _tags(raw: list[str]) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in raw]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise SystemExit("--tag takes TAG=VOICE, e.g. --tag Alice='Daisy Studious'")
    return {tag.strip(): voice.strip() for tag, voice in pairs}


def _print(payload: Any) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False))


def _progress(fraction: float, message: str) -> None:
    print(f"[{fraction:6.1%}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, studio_args: Sequence[str]) -> int:
    from core.logs import configure_logging
    from core.scratch import confine_scratch
    from core.settings import parse_settings
    from projects.export import ExportRequest, export_project
    from projects.sources import read_source
    from webui import create_studio

    settings = parse_settings(list(studio_args))
    configure_logging(settings.log_format)
    confine_scratch(settings, keep_existing=True)
    studio = create_studio(settings)
    store, renderer = studio.projects, studio.renderer

    if args.command == "list":
        print("\n".join(store.list()))
    elif args.command == "create":
        project = store.create(
            args.name, read_source(args.source), narrator=args.narrator, language=args.language,
            profile=args.profile, voice_tags=_tags(args.tag), voices=studio.tts.voices(),
        )  # fmt: skip
        _print({"project": project.name, "chapters": len(project.chapters), "segments": len(project.segments()),
                "warnings": project.warnings})  # fmt: skip
    elif args.command == "render":
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        chapters = store.get(args.name).chapters_numbered(args.chapters)
        report = renderer.render(args.name, chapters=chapters, progress=_progress, should_stop=stop.is_set)
        _print(report.to_dict())
        return 130 if report.cancelled else 0
    elif args.command == "status":
        _print(renderer.status(args.name))
    elif args.command == "export":
        formats = tuple(part.strip() for part in args.formats.split(",") if part.strip())
        chapters = store.get(args.name).chapters_numbered(args.chapters)
        request = ExportRequest(formats=formats, chapters=tuple(chapters) if chapters else None, loudness=args.loudness)
        _print(export_project(store, args.name, request, progress=_progress).to_dict())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, studio_args = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, studio_args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
