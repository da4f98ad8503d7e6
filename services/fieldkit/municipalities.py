"""Local-government codes (全国地方公共団体コード): six digits, the last a check digit.

The table ships as CSV per prefecture under ``data/municipalities/``; which prefectures a kit
offers is configurable. Codes are verified against their check digit when loaded.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CODE = re.compile(r"^[0-9]{6}$")
WEIGHTS = (6, 5, 4, 3, 2)


class MunicipalityError(ValueError):
    """A code is malformed, fails its check digit, or is not in the table."""


def check_digit(first_five: str) -> int:
    """The 6th digit: 11 minus the weighted sum mod 11, last digit only (10→0, 11→1)."""
    total = sum(int(d) * w for d, w in zip(first_five, WEIGHTS, strict=True))
    return (11 - total % 11) % 10


def validate_code(code: str) -> str:
    if not CODE.match(code):
        raise MunicipalityError("a local-government code is 6 digits")
    if check_digit(code[:5]) != int(code[5]):
        raise MunicipalityError("the check digit of the local-government code does not match")
    return code


@dataclass(frozen=True)
class Municipality:
    code: str
    prefecture: str
    name: str
    kana: str

    @property
    def full_name(self) -> str:
        """As people write it on a letter: 長野県松本市."""
        return f"{self.prefecture}{self.name}"


class MunicipalityTable:
    """The municipalities a kit offers, in code order."""

    def __init__(self, municipalities: list[Municipality]) -> None:
        self._by_code = {m.code: m for m in sorted(municipalities, key=lambda m: m.code)}

    @classmethod
    def load(cls, prefectures: list[str], extra_dir: Path | None = None) -> MunicipalityTable:
        """Load the shipped CSVs named by prefecture code (``"20"``), plus any in ``extra_dir``."""
        found: list[Municipality] = []
        shipped = resources.files("fieldkit") / "data" / "municipalities"
        sources = [f for f in shipped.iterdir() if f.name.endswith(".csv")]
        if extra_dir is not None:
            sources += sorted(extra_dir.glob("*.csv"))
        for source in sources:
            if source.name[:2] not in prefectures:
                continue
            with source.open(encoding="utf-8") as handle:
                for line, row in enumerate(csv.DictReader(handle), start=2):
                    try:
                        code = validate_code(row["code"])
                    except (MunicipalityError, KeyError) as exc:
                        raise MunicipalityError(f"{source.name} line {line}: {exc}") from None
                    found.append(Municipality(code, row["prefecture"], row["name"], row["kana"]))
        if not found:
            raise MunicipalityError(f"no municipality table for prefectures {prefectures}")
        return cls(found)

    def __iter__(self) -> Iterator[Municipality]:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Municipality:
        try:
            return self._by_code[validate_code(code)]
        except KeyError:
            raise MunicipalityError("this code is not in the kit's municipality table") from None


# An applicant who did not name a municipality is counted under this code (the kiosk sends it);
# it fails the check digit, so it can never be a real municipality.
UNANSWERED = "000000"


@dataclass(frozen=True)
class Offer:
    """Which municipalities a kit can send an application to, and which only forward to.

    An application packet is sealed to the municipality's receiver key (its public key, imported
    on the hub and handed to each tablet at enrolment): without one there is nothing to seal to,
    so that municipality is offered for forwarding (回付) only, with the reason."""

    receivers: list[Municipality]
    forward_only: list[Municipality]
    # Receiver keys whose code is not in the table (a prefecture missing from the config).
    unknown_keys: list[str]


# Where an enrolled tablet keeps each municipality's receiver key (its public sealing key, from
# the hub at enrolment): ``<[sync] bundle>/receivers/<code>.pem``. sync seals with the file; the
# kiosk offers a municipality for an application only while the file is there.
RECEIVERS_DIR = "receivers"


def receiver_key_file(bundle: Path, code: str) -> Path:
    return bundle / RECEIVERS_DIR / f"{code}.pem"


def receiver_codes(bundle: Path) -> list[str] | None:
    """The municipalities a tablet holds a receiver key for, or None when its bundle has no
    receivers folder at all (not enrolled: sync cannot send any packet, and there is no rule)."""
    folder = bundle / RECEIVERS_DIR
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.pem") if p.is_file() and CODE.match(p.stem))


def offer(table: MunicipalityTable, with_keys: Iterable[str]) -> Offer:
    """Split the table by whether each municipality has a receiver key (``with_keys``: codes)."""
    keys = set(with_keys)
    return Offer(
        receivers=[m for m in table if m.code in keys],
        forward_only=[m for m in table if m.code not in keys],
        unknown_keys=sorted(code for code in keys if code not in table),
    )
