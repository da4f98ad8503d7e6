"""A text catalogue: every phrase an app shows, Japanese first, English on request.

The shape is the kiosk's (``kiosk.text.TEXT``): a key names a phrase, and the phrase is a pair
(Japanese, English). A page asks for a key in the reader's language; a key that is not in the
catalogue raises ``KeyError``, so a page that renders in a test has every phrase it needs.
Placeholders are ``str.format`` fields (``{device}``), filled the same in both languages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")


class TextCatalogue:
    """Phrases by key, each as (Japanese, English); both must be there and not blank."""

    def __init__(self, entries: Mapping[str, tuple[str, str]]) -> None:
        for key, pair in entries.items():
            if len(pair) != 2 or not all(isinstance(p, str) and p.strip() for p in pair):
                raise ValueError(f"text catalogue entry {key!r} needs a Japanese and an English")
        self._entries = dict(entries)

    def say(self, key: str, lang: Lang, /, **values: object) -> str:
        """The phrase in ``lang``, its ``{fields}`` filled from ``values``."""
        ja, en = self._entries[key]
        text = ja if lang == "ja" else en
        return text.format(**values) if values else text

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def chosen_lang(value: object) -> Lang | None:
    """A language named in a request (``?lang=en``), if it is one the catalogues have."""
    return "ja" if value == "ja" else "en" if value == "en" else None
