"""The staleness gate: may a session start on this device? (R10)

Refused when the definitions are missing, older than the policy allows (age from the databases'
own build time), or when the last scan found something. The words are for the staff member at
the counter and the applicant beside them: Japanese first, plain, and they say what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

from fieldkit.antivirus.database import DatabaseInfo, newest
from fieldkit.antivirus.messages import GateReason, GateReply, ScanReport
from fieldkit.antivirus.settings import AntivirusSection

_TO_HUB_JA = "端末をハブにつないで更新してから、もう一度お試しください。"
_TO_HUB_EN = "Connect the tablet to the hub so it can update, then try again."


def expected_databases(policy: AntivirusSection) -> list[str]:
    """Database names (file stems) that must be present: official ones, then the kit's own."""
    custom = [name.rsplit(".", 1)[0] for name in policy.custom_databases]
    return [*policy.official_databases, *custom]


def currency_database(
    policy: AntivirusSection, databases: Sequence[DatabaseInfo]
) -> DatabaseInfo | None:
    """The database whose build time says how current the definitions are.

    ClamAV rebuilds ``daily`` several times a day, ``main`` and ``bytecode`` only now and then,
    and the kit's own database whenever the kit publishes one. So with the official databases in
    the policy, daily's age counts (a fresh kit database must not hide a stale daily); without
    them, the newest of the kit's own.
    """
    if "daily" in policy.official_databases:
        return next((d for d in databases if d.name == "daily" and d.built_at is not None), None)
    return newest(databases)


def age_words(hours: float) -> tuple[str, str]:
    """An age in words an elderly applicant reads at a glance: whole days, else whole hours."""
    if hours >= 48:
        days = int(hours // 24)
        return f"{days}日", f"{days} days"
    whole = max(1, int(hours))
    return f"{whole}時間", f"{whole} hour{'s' if whole != 1 else ''}"


def assess(
    policy: AntivirusSection,
    databases: Sequence[DatabaseInfo],
    last_scan: ScanReport | None,
    now: float,
    *,
    last_update_ok: bool | None = None,
) -> GateReply:
    """The gate's answer for these databases and this scan history at time ``now``."""
    present = {d.name for d in databases}
    missing = [name for name in expected_databases(policy) if name not in present]
    latest = currency_database(policy, databases)
    built_at = latest.built_at if latest else None
    age_hours = None if built_at is None else max(0.0, now - built_at) / 3600.0

    def answer(allowed: bool, reason: GateReason, ja: str, en: str) -> GateReply:
        return GateReply(
            allowed=allowed,
            reason=reason,
            message_ja=ja,
            message_en=en,
            definitions_built_at=built_at,
            definitions_age_hours=age_hours,
            max_age_hours=policy.max_definitions_age_hours,
            missing=missing,
            last_update_ok=last_update_ok,
            checked_at=now,
        )

    if policy.block_on_findings and last_scan is not None and last_scan.findings:
        return answer(
            False,
            "threat-found",
            (
                "この端末でウイルスが見つかったため、受付を始められません。"
                "端末の使用をやめて、責任者に連絡してください。"
            ),
            (
                "A virus was found on this tablet, so a session cannot start. "
                "Stop using the tablet and contact your supervisor."
            ),
        )
    if latest is None or age_hours is None or missing:
        return answer(
            False,
            "no-definitions" if not databases else "definitions-missing",
            f"ウイルス対策のデータがないため、受付を始められません。{_TO_HUB_JA}",
            (f"The virus protection data is missing, so a session cannot start. {_TO_HUB_EN}"),
        )
    if age_hours > policy.max_definitions_age_hours:
        ja, en = age_words(age_hours)
        return answer(
            False,
            "definitions-stale",
            (f"ウイルス対策のデータが{ja}前のもので古いため、受付を始められません。{_TO_HUB_JA}"),
            (
                f"The virus protection data is too old ({en} old), so a session cannot start. "
                f"{_TO_HUB_EN}"
            ),
        )
    return answer(True, "ok", "ウイルス対策は最新です。", "Virus protection is up to date.")
