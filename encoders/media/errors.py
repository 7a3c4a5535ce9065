"""The one exception that media decoding raises for anything a client's bytes can cause.

Its codes are the protocol's error codes of the same names, so the gateway sends
`MediaError.to_info()` as the body of an `error` event and the session stays open. Anything else
that decoding raises is a bug.
"""

from __future__ import annotations

from protocol.errors import CORRUPT_MEDIA, MEDIA_TOO_LARGE, UNSUPPORTED_MEDIA, ErrorInfo

MEDIA_ERROR_CODES = frozenset({CORRUPT_MEDIA, UNSUPPORTED_MEDIA, MEDIA_TOO_LARGE})


class MediaError(Exception):
    """Media that cannot or may not be decoded.

    code: CORRUPT_MEDIA (the bytes do not decode: damaged, truncated, not what the mime says),
        UNSUPPORTED_MEDIA (a mime type, container or codec that is not supported) or
        MEDIA_TOO_LARGE (over a MediaLimits limit: bytes, pixels, frames or duration).
    message: says what is wrong, safe to show to the client (no traceback, no file paths).
    item_id: the item, when the caller named it; then str(error) starts with it.
    """

    def __init__(self, code: str, message: str, item_id: str | None = None) -> None:
        if code not in MEDIA_ERROR_CODES:
            raise ValueError(f"unknown media error code {code!r}")
        self.code = code
        self.message = message
        self.item_id = item_id
        super().__init__(f"item {item_id!r}: {message}" if item_id is not None else message)

    def to_info(self) -> ErrorInfo:
        """The body of the protocol's `error` event for this error."""
        return ErrorInfo(self.code, str(self), item_id=self.item_id)

    def __repr__(self) -> str:
        return f"MediaError({self.code!r}, {self.message!r}, item_id={self.item_id!r})"


def corrupt(message: str, item_id: str | None = None) -> MediaError:
    return MediaError(CORRUPT_MEDIA, message, item_id)


def unsupported(message: str, item_id: str | None = None) -> MediaError:
    return MediaError(UNSUPPORTED_MEDIA, message, item_id)


def too_large(message: str, item_id: str | None = None) -> MediaError:
    return MediaError(MEDIA_TOO_LARGE, message, item_id)
