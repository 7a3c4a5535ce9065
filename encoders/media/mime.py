"""Media types: parsing a mime string, the types each modality takes, and sniffing bytes.

A declared mime type decides how an item is decoded (the container is never guessed from a
declared type); only a missing or generic one ("application/octet-stream") is sniffed from the
first bytes. Aliases map to one canonical type each.
"""

from __future__ import annotations

from encoders.media.errors import unsupported

GENERIC_MIMES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "video/x-matroska": "video/webm",
    "video/quicktime": "video/mp4",
    "video/x-m4v": "video/mp4",
    "video/mpeg2-ts": "video/mp2t",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-m4a": "audio/mp4",
    "audio/x-flac": "audio/flac",
    "audio/opus": "audio/ogg",
}

IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
# image/jpeg as a video is a sequence of JPEG frames (motion JPEG) at `;fps=N`.
VIDEO_MIMES = frozenset({"video/mp4", "video/webm", "video/mp2t", "image/jpeg"})
# The audio decoder also takes the audio track of a video container.
AUDIO_MIMES = frozenset({
    "audio/wav", "audio/pcm", "audio/webm", "audio/ogg", "audio/mpeg", "audio/mp4", "audio/flac",
    "audio/aac", "video/webm", "video/mp4",
})
MIMES = {"image": IMAGE_MIMES, "video": VIDEO_MIMES, "audio": AUDIO_MIMES}


def parse_mime(mime: str | None) -> tuple[str, dict[str, str]]:
    """Splits 'type/subtype; key=value; ...' into the canonical lowercase type and its parameters.

    Parameter names are lowercased, values keep their case and lose surrounding quotes. None parses
    as ("", {}).
    """
    if not mime:
        return "", {}
    head, *params = _split_params(mime)
    base = head.strip().lower()
    parsed: dict[str, str] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if sep:
            parsed[key.strip().lower()] = value.strip().strip('"')
    return _ALIASES.get(base, base), parsed


def resolve_mime(modality: str, mime: str | None, data: bytes, item_id: str | None = None
                 ) -> tuple[str, dict[str, str]]:
    """The canonical type and parameters an item of `modality` is decoded as.

    A generic or missing `mime` is sniffed from `data` (a prefix is enough). Raises MediaError
    (unsupported_media) for a type that `modality` does not take or bytes that sniff as nothing.
    """
    base, params = parse_mime(mime)
    if base in GENERIC_MIMES:
        sniffed = sniff_mime(data)
        if sniffed is None:
            raise unsupported(f"the {modality} has no mime type and its bytes are of no known "
                              "type", item_id)
        base = sniffed
        if modality == "audio" and base == "video/webm":
            base = "audio/webm"
    if base not in MIMES[modality]:
        supported = ", ".join(sorted(MIMES[modality]))
        raise unsupported(f"mime type {base!r} is not supported for {modality} "
                          f"(supported: {supported})", item_id)
    return base, params


def sniff_mime(data: bytes) -> str | None:
    """The media type that the first bytes of `data` announce, or None when they announce none.

    Knows PNG, JPEG, GIF, WebP, WAV, Matroska/WebM (as video/webm), MP4 (audio/mp4 for M4A),
    MPEG-TS, Ogg, FLAC, MP3 and ADTS AAC. Sixteen bytes are enough for all but MPEG-TS, which is
    recognised with certainty from 189 bytes.
    """
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"RIFF", b"RIFX", b"RF64")) and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:12] == b"M4A " else "video/mp4"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"
    if head[:1] == b"\x47" and (len(data) <= 188 or data[188] == 0x47):
        return "video/mp2t"
    return None


def _split_params(mime: str) -> list[str]:
    """Splits on ';' outside double quotes (codecs="vp8, opus" stays whole)."""
    parts, current, quoted = [], [], False
    for char in mime:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
