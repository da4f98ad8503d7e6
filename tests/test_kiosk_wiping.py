"""The wipe as staff watch it: which parts of the tablet have erased the session, then the
check that nothing is left; never the last wipe's news on the next one. Issue 21 item 6"""

from __future__ import annotations

from fieldkit.erasure import SessionForgotten
from fieldkit.kiosk.wiping import WipeWatch

SID = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def test_the_words_follow_the_holders_then_the_scan() -> None:
    watch = WipeWatch(["capture", "kiosk", "printing"])
    assert watch.words("ja") == ""  # no wipe yet
    watch.begin(SID)
    assert watch.words("ja") == "前の方のデータを消去しています。しばらくお待ちください。"
    watch.forgotten(SessionForgotten(sid=SID, service="printing"))
    watch.forgotten(SessionForgotten(sid=OTHER, service="capture"))  # another session's
    assert watch.words("ja") == "端末の各機能がデータを消しています(1/3: 印刷)。"
    watch.forgotten(SessionForgotten(sid=SID, service="kiosk"))
    assert (
        watch.words("en")
        == "The tablet's parts are erasing the data (2 of 3: counter screen, printing)."
    )
    watch.forgotten(SessionForgotten(sid=SID, service="capture"))
    assert watch.words("ja") == "データが残っていないか、端末の中を確かめています。"
    watch.finished(SID, True)
    # The verdict is the next page's; a poll after it (or before the next wipe) shows nothing.
    assert watch.words("ja") == ""
    assert watch.current is not None and watch.current.ok is True


def test_an_unknown_holder_is_named_in_general_words() -> None:
    watch = WipeWatch(["kiosk", "scanner"])
    watch.begin(SID)
    watch.forgotten(SessionForgotten(sid=SID, service="scanner"))
    assert "その他の機能" in watch.words("ja")
