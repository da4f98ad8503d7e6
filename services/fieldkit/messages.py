"""Typed bus messages. Every message is JSON with a schema version ``v`` and a ``type``."""

from __future__ import annotations

import json
import time
from typing import Literal, TypeVar

from pydantic import Field, ValidationError

from fieldkit.models import Strict, describe_validation_error, problem_keys

SCHEMA_VERSION: Literal[1] = 1


class MessageError(Exception):
    """A payload could not be read as the expected message; ``reason`` names the problem."""

    def __init__(self, reason: str, fields: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields or []


class Message(Strict):
    """Base of every bus message: versioned, typed, closed to unknown fields."""

    v: Literal[1] = SCHEMA_VERSION
    type: str

    def encode(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


M = TypeVar("M", bound=Message)


def decode(payload: bytes, model: type[M]) -> M:
    """Parse and validate a payload; raise MessageError naming the field, never the value."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError("payload is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise MessageError(f"payload is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise MessageError("payload must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = problem_keys(exc, "(message)")
        reason = describe_validation_error(exc, top="(message)")
        raise MessageError(f"invalid {model.__name__}: {reason}", fields) from None


class Health(Message):
    """Retained liveness of one service at ``health/<service>``."""

    type: Literal["health"] = "health"
    service: str
    state: Literal["online", "offline"]
    pid: int | None = None
    version: str | None = None
    since: float = Field(default_factory=time.time)


class ErrorReply(Message):
    """Why a message was refused: published on ``<service>/error`` and to the requester."""

    type: Literal["error"] = "error"
    service: str
    topic: str
    reason: str
    fields: list[str] = []


class Ping(Message):
    type: Literal["ping"] = "ping"


class Pong(Message):
    type: Literal["pong"] = "pong"
    service: str
    pid: int
