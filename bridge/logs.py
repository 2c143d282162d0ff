"""structlog set-up, done once at the entry point: JSON off a terminal, readable on one; secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import structlog

REDACTED = "[redacted]"
HELD_LINES = 10_000  # log writes kept while a progress bar runs; later ones are counted, not kept


class LogStream:
    """Where log lines go: the current stderr, or held back in memory while a progress bar owns the terminal
    (a JSON line written under a live bar would tear it)."""

    def __init__(self) -> None:
        self._held: list[str] | None = None
        self._dropped = 0

    def write(self, text: str) -> int:
        """Write through to stderr, or hold while held."""
        if self._held is None:
            return sys.stderr.write(text)
        if len(self._held) < HELD_LINES:
            self._held.append(text)
        elif text != "\n":
            self._dropped += 1
        return len(text)

    def flush(self) -> None:
        """Flush stderr (nothing to do while held)."""
        if self._held is None:
            sys.stderr.flush()

    def isatty(self) -> bool:
        """Whether stderr is a terminal."""
        return sys.stderr.isatty()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold log lines back for the duration; write them (and how many were dropped) afterwards."""
        if self._held is not None:
            yield
            return
        self._held, self._dropped = [], 0
        try:
            yield
        finally:
            held, dropped, self._held = self._held, self._dropped, None
            sys.stderr.write("".join(held))
            if dropped:
                sys.stderr.write(f"({dropped:,} more log lines were dropped while the progress bar ran)\n")
            sys.stderr.flush()


LOG_STREAM = LogStream()


def logs_held() -> AbstractContextManager[None]:
    """A context in which log lines are held back (see LogStream.held)."""
    return LOG_STREAM.held()


class SecretScrubber:
    """A processor that replaces every configured secret value wherever it appears in an event."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        return value

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Scrub one event dict."""
        if not self._secrets:
            return event
        for key, value in list(event.items()):
            event[key] = self._clean(value)
        return event


def configure_logging(
    level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (), *, cache: bool = True
) -> None:
    """Configure structlog and the stdlib root logger: JSON, or console on a terminal or when asked. `cache`
    off: every module's logger keeps following the configuration (tests run commands in-process)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        SecretScrubber(secrets),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=LOG_STREAM),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=LOG_STREAM, format="%(name)s %(message)s")
