"""`python -m clients URL --prompt TEXT [--image F] [--video F] [--audio F] [--json-schema F] ...`

Uploads the files (in chunks), sends one response.create and prints its text as it arrives; usage
goes to stderr. Exit status: 0 completed or incomplete, 1 failed or refused, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from clients.client import DEFAULT_CHUNK_SIZE, connect
from clients.response import ConnectionClosed, ServerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__.split("\n\n")[1])
    parser.add_argument("url", help="ws://HOST:PORT/v1/stream")
    parser.add_argument("--prompt", required=True, help="the user message")
    parser.add_argument("--system", help="system instructions")
    parser.add_argument("--image", action="append", default=[], metavar="F", help="an image file (repeatable)")
    parser.add_argument("--video", action="append", default=[], metavar="F", help="a video file (repeatable)")
    parser.add_argument("--audio", action="append", default=[], metavar="F", help="an audio file (repeatable)")
    parser.add_argument("--json-schema", metavar="F", help="constrain the output to the JSON schema in F")
    parser.add_argument("--regex", help="constrain the output to this pattern")
    parser.add_argument("--priority", type=int, help="lower is served first")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="upload chunk bytes")
    parser.add_argument("--api-key", default=os.environ.get("TRIBUTARY_API_KEY"),
                        help="API key (default: $TRIBUTARY_API_KEY)")
    parser.add_argument("--json", action="store_true", help="send JSON text frames instead of msgpack")
    return parser


async def run(args: argparse.Namespace) -> int:
    response_format = None
    if args.json_schema:
        schema = json.loads(Path(args.json_schema).read_text())
        response_format = {"type": "json_schema", "json_schema": {"schema": schema}}
    elif args.regex:
        response_format = {"type": "regex", "pattern": args.regex}
    async with connect(args.url, api_key=args.api_key, binary=not args.json) as conn:
        parts = []
        for modality in ("image", "video", "audio"):
            for i, path in enumerate(getattr(args, modality)):
                item_id = f"{modality}-{i}"
                mime = _guess_mime(path, modality)
                committed = await conn.upload(item_id, path, modality, mime, chunk_size=args.chunk_size)
                print(f"[{item_id}: {committed.num_tokens} tokens{' (cached)' if committed.cached else ''}]",
                      file=sys.stderr)
                parts.append({"type": "item", "item_id": item_id})
        parts.append({"type": "text", "text": args.prompt})
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": parts}]
        response = await conn.create_response(
            messages, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            seed=args.seed, priority=args.priority, response_format=response_format)
        async for text in response:
            sys.stdout.write(text)
            sys.stdout.flush()
        print()
        usage = response.usage
        print(f"[{response.status}, {response.finish_reason}; {usage.input_tokens} prompt tokens "
              f"({usage.cached_tokens} cached), {usage.output_tokens} generated]", file=sys.stderr)
        return 0 if response.status in ("completed", "incomplete") else 1


def _guess_mime(path: str, modality: str) -> str:
    import mimetypes

    mime = mimetypes.guess_type(path)[0]
    if mime is None or not mime.startswith(("image/", "video/", "audio/")):
        return {"image": "image/png", "video": "video/webm", "audio": "audio/wav"}[modality]
    if modality == "audio" and mime == "audio/x-wav":
        return "audio/wav"
    return mime


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (ServerError, ConnectionClosed, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
