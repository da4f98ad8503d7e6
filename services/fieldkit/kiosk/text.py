"""What the kiosk says, Japanese first, English available. Plain words, short sentences."""

from __future__ import annotations

import re
from typing import Literal

from fieldkit.capture.appid import REFUSAL_TEXT
from fieldkit.capture.messages import CheckResult
from fieldkit.sync.messages import FULL_TEXT_EN, FULL_TEXT_JA

Lang = Literal["ja", "en"]

TEXT: dict[str, tuple[str, str]] = {
    "title": ("マイナンバーカード 申請サポート", "My Number Card application support"),
    "switch_lang": ("English", "日本語"),
    "login": ("ログイン", "Log in"),
    "enrol_title": ("端末の登録", "Enrol this tablet"),
    "enrol_intro": (
        "この端末はまだ登録されていません。管理者からもらった登録コードと、ハブのアドレスを入力してください。",
        "This tablet is not enrolled yet. Type the enrolment code from the administrator "
        "and the hub address.",
    ),
    "enrol_hub": ("ハブのアドレス(例 192.168.10.1:8443)", "Hub address (e.g. 192.168.10.1:8443)"),
    "enrol_code": ("登録コード(例 7K3M-Q9TX-…)", "Enrolment code (e.g. 7K3M-Q9TX-…)"),
    "enrol_button": ("登録する", "Enrol"),
    "enrol_done": (
        "登録しました。端末を再起動してください。",
        "The tablet is enrolled. Please restart the tablet.",
    ),
    "enrol_missing": (
        "ハブのアドレスと登録コードを入力してください。",
        "Type the hub address and the enrolment code.",
    ),
    "operator_id": ("職員ID", "Staff ID"),
    "password": ("パスワード", "Password"),
    "login_wrong": ("職員IDかパスワードが違います。", "The staff ID or password is wrong."),
    "login_locked": (
        "失敗が続いたため、この職員IDはしばらく使えません。10分ほど待ってください。",
        "Too many failed attempts. This staff ID is locked for about 10 minutes.",
    ),
    "logged_out_idle": (
        "しばらく操作がなかったため、ログアウトしました。",
        "You were logged out because nothing happened for a while.",
    ),
    "logout": ("ログアウト", "Log out"),
    "visit_title": ("今日の訪問先を選んでください", "Choose where you work today"),
    "visit_intro": (
        "ハブの予定にある、この端末の今日の訪問先です。",
        "These are this tablet's visits on the hub's schedule for today.",
    ),
    "visit_unscheduled": ("予定にない場所で行う", "A place not on the schedule"),
    "visit_choose": ("決める", "Choose"),
    "visit_missing": ("訪問先を一つ選んでください。", "Choose one place."),
    "login_seat_taken": (
        "この端末では、ほかの職員が申請の受付をしています。"
        "その方の受付が終わって、データが消去されるまで、ログインできません。",
        "Another member of staff is serving an applicant on this tablet. You can log in once"
        " that session has ended and its data is erased.",
    ),
    "busy": (
        "この端末では、ほかの職員が申請の受付をしています。",
        "Another member of staff is serving an applicant on this tablet.",
    ),
    "applicant_timed_out": (
        "しばらく操作がなかったため、前の方の申請を中止しました。入力内容と写真は消去しました。",
        "Nothing happened for a while, so the last application was stopped. What was entered"
        " and the photo are erased.",
    ),
    "wipe_failed": (
        "消去を確認できませんでした。次の方の前に管理者に連絡してください。",
        "The erasure could not be confirmed. Call the administrator before the next applicant.",
    ),
    "ready": ("次の方の申請を始めます", "Ready for the next applicant"),
    "choose_mode": ("受付の方法を選んでください", "Choose how this application is handled"),
    "mode_support": (
        "申請サポート(カードの受け取りは市町村の窓口)",
        "Application support (the card is collected at the municipal office)",
    ),
    "mode_municipal": (
        "出張申請受付(市町村の職員がその場で本人確認)",
        "Municipal reception (municipal staff check identity here)",
    ),
    "start": ("始める", "Start"),
    "scan": ("申請書のQRコードをカメラに向けてください", "Hold the form's QR code to the camera"),
    "manual_entry": ("申請書IDを手で入力する(23けた)", "Type the application ID (23 digits)"),
    "next": ("次へ", "Next"),
    "back": ("戻る", "Back"),
    "no_form": (
        "申請書がない・IDが分からない(市町村へ回付)",
        "No form, or the ID is unknown (forward to the municipality)",
    ),
    "forward_where": (
        "お住まいの市町村を選んでください(回付先)",
        "Choose the municipality you live in (the form goes there)",
    ),
    "terms": ("ご利用にあたって", "Before you begin"),
    "agree": ("同意する", "I agree"),
    "decline": ("同意しない", "I do not agree"),
    "photo": ("顔写真を撮ります", "Now we take your photo"),
    "options": ("申請の内容を選んでください", "Choose what you apply for"),
    "e_certificate": ("電子証明書を希望する", "I want the electronic certificates"),
    "braille": ("点字表記を希望する", "I want braille on the card"),
    "yes": ("はい", "Yes"),
    "no": ("いいえ", "No"),
    "statistics": (
        "統計のための質問です(答えなくてもかまいません)",
        "Questions for statistics (you may skip them)",
    ),
    "municipality": ("お住まいの市町村", "Municipality you live in"),
    "sex": ("性別", "Sex"),
    "male": ("男性", "Male"),
    "female": ("女性", "Female"),
    "other": ("その他", "Other"),
    "no-answer": ("答えない", "No answer"),
    "age_band": ("年代", "Age"),
    "review": ("内容の確認", "Check your answers"),
    "submit": ("この内容で申請する", "Apply with these answers"),
    "abandon": ("中止する", "Stop"),
    "abandoned": (
        "申請を中止しました。入力内容は消去します。",
        "Stopped. Your data is being erased.",
    ),
    "declined": (
        "同意いただけなかったため、申請はできません。入力内容は消去します。",
        "Without your agreement we cannot apply. Your data is being erased.",
    ),
    "forwarded": ("市町村へ回付しました。", "The form is forwarded to the municipality."),
    "next_applicant": ("次の方へ", "Next applicant"),
    "error_step": ("その操作は今はできません。", "That cannot be done now."),
    "csrf": (
        "画面の有効期限が切れました。もう一度やり直してください。",
        "This page expired. Please try again.",
    ),
    "camera_preview": ("カメラの映像", "Camera view"),
    "camera_problem": (
        "カメラが使えません。ケーブルを確かめてください。手で入力することもできます。",
        "The camera is not available. Check its cable; you can also type the ID.",
    ),
    "camera_unplugged": (
        "カメラが使えません。カメラのケーブルを確かめてください。つながると、そのまま撮影を続けられます。",
        "The camera is not available. Check the camera's cable; once it is back, the photo"
        " step carries on.",
    ),
    "photo_taken": ("撮影した写真", "The photo taken"),
    "photo_ok": ("写真の条件をすべて満たしています。", "The photo meets every requirement."),
    "photo_not_ok": (
        "条件を満たしていない項目があります。撮り直しをおすすめします。",
        "Some requirements are not met. Taking it again is recommended.",
    ),
    "use_photo": ("この写真を使う", "Use this photo"),
    "retake": ("撮り直す", "Take again"),
    "take_now": ("今すぐ撮影する", "Take the photo now"),
    "print_problem": (
        "印刷を始められませんでした。プリンターを確かめてから、もう一度押してください。",
        "Printing could not start. Check the printer, then press again.",
    ),
    "print_again": ("もう一度印刷する", "Print again"),
    "wipe_unproven": (
        "前の方のデータの消去をまだ確認できていません。確認できるまで、次の方の受付はできません。"
        "端末が自動でやり直しています。1分たっても変わらないときは、管理者に連絡してください。",
        "The erasure of the previous applicant's data is not confirmed yet. No new session can"
        " start until it is. The tablet is retrying by itself. If nothing changes within a"
        " minute, call the administrator.",
    ),
    "wipe_proven": (
        "前の方のデータの消去を確認しました。次の方の受付ができます。",
        "The erasure of the previous applicant's data is confirmed. The next session can start.",
    ),
    "holder_offline": (
        "端末の機能が応答していません({services})。受付を始められません。"
        "1分ほど待っても変わらないときは、端末を再起動してください。",
        "Part of the tablet is not answering ({services}), so no session can start. If this"
        " does not change within a minute, restart the tablet.",
    ),
    "retry_wipe": ("消去をもう一度確認する", "Check the erasure again"),
    "av_unknown": (
        "ウイルス対策の状態を確認できないため、受付を始められません。端末を再起動してください。",
        "The antivirus status cannot be checked, so no session can start. Restart the tablet.",
    ),
    "handoff_intro": (
        "続けてオンライン申請をします。申請書のQRコードの申請ページを開きます。",
        "Now finish the application online: this opens the page the form's QR code points to.",
    ),
    "handoff_open": ("オンライン申請のページを開く", "Open the online application"),
    "handoff_photo": (
        "顔写真のアップロードでは、このファイルを選んでください:",
        "When asked for the face photo, choose this file:",
    ),
    "need_municipality": (
        "申請データを届ける市町村が必要です。「戻る」でお住まいの市町村を選んでください。",
        "The application goes to your municipality: go back and choose where you live.",
    ),
    "printing": ("控えを印刷しています", "Printing your receipts"),
    "done": ("申請が終わりました", "Your application is complete"),
    "login_needed": ("ログインしてください。", "Please log in."),
    # Confirm before applying (issue 21 item 1).
    "application_id": ("申請書ID", "Application ID"),
    "review_compare": (
        "申請書に印刷された申請書IDと、1けたずつ見比べてください。",
        "Compare it with the application ID printed on the form, group by group.",
    ),
    "send_to": ("申請データの送り先", "The application goes to"),
    "no_municipality_yet": (
        "送り先の市町村がまだ選ばれていません。",
        "No municipality is chosen yet.",
    ),
    "photo_for_application": ("申請に使う顔写真", "The photo for the application"),
    "correct_id": ("申請書IDを直す", "Correct the application ID"),
    "correct_id_field": ("正しい申請書ID(23けた)", "The correct application ID (23 digits)"),
    "correct_id_button": ("この番号に直す", "Use this number"),
    "id_corrected": ("申請書IDを直しました。", "The application ID is corrected."),
    "id_not_corrected": (
        "申請書IDは直していません(元の番号のままです)。",
        "The application ID is not changed (it is still the one before).",
    ),
    # Manual entry wins over the camera (issue 21 item 2).
    "qr_offer": (
        "QRコードを読み取りました。こちらを使いますか？",
        "A QR code was read. Use it instead?",
    ),
    "qr_use": ("はい、QRコードの番号を使う", "Yes, use the QR code's number"),
    "qr_ignore": ("いいえ、手で入力を続ける", "No, keep typing"),
    "typed_refused": ("入力した番号は使えません。", "The number typed cannot be used."),
    "dismiss": ("閉じる", "Close"),
    # The receipt and the end of the session (issue 21 items 5 and 6).
    "reception_number": ("受付番号", "Reception number"),
    "receipts_printed": (
        "控えを2枚印刷しました。「本人控え」を申請者にお渡しください。「職員控え」は本日の業務の終わりに提出します。",
        "Two receipts are printed: give the applicant's copy to the applicant; the staff copy"
        " is handed in at the end of the day.",
    ),
    "reception_number_hint": (
        "お問い合わせのときは、この番号をお伝えください。",
        "Give this number when you call about the application.",
    ),
    "finish_session": ("受付を終える(データを消去)", "Finish (erase the data)"),
    "contact_missing": (
        "控えに載せる問い合わせ先(電話番号と受付時間)が設定されていません。管理者に連絡してください。",
        "The contact telephone and hours for the receipt are not set. Call the administrator.",
    ),
    "wipe_running": (
        "前の方のデータを消去しています。しばらくお待ちください。",
        "Erasing the previous applicant's data. Please wait.",
    ),
    "wipe_forgetting": (
        "端末の各機能がデータを消しています({done}/{total}: {names})。",
        "The tablet's parts are erasing the data ({done} of {total}: {names}).",
    ),
    "wipe_scanning": (
        "データが残っていないか、端末の中を確かめています。",
        "Checking the tablet that nothing is left.",
    ),
    "wipe_passed": (
        "前の方のデータを消去し、残っていないことを確かめました。次の方の受付ができます。",
        "The previous applicant's data is erased, and it was checked that nothing is left."
        " The next applicant can start.",
    ),
    "holder:kiosk": ("受付画面", "counter screen"),
    "holder:capture": ("カメラ", "camera"),
    "holder:printing": ("印刷", "printing"),
    "holder:card": ("カードリーダー", "card reader"),
    "holder:other": ("その他の機能", "other part"),
    # sync's own words (sync/messages.py), the same on the ready page's outbox warning.
    "outbox_full": (FULL_TEXT_JA, FULL_TEXT_EN),
    "submit_refused_busy": (
        "申請データを今は保存できません。少し待ってから、もう一度「この内容で申請する」を押してください。"
        "続くときは管理者に連絡してください。",
        "The application cannot be stored now. Wait a moment and press apply again. If it"
        " goes on, call the administrator.",
    ),
    "municipality_no_key": (
        "この市町村へは、この端末からまだ申請データを送れません(受け取りの準備ができていません)。"
        "管理者に連絡してください。",
        "This tablet cannot send applications to this municipality yet (it is not set up to"
        " receive them). Call the administrator.",
    ),
    # The statistics step offers only municipalities the tablet can send to (issue 21 item 4).
    "forward_only_title": (
        "申請データを送れない市町村にお住まいの方",
        "Applicants living where this tablet cannot send applications",
    ),
    "forward_only_reason": (
        "次の市町村は、受け取り用の鍵がこの端末にまだ登録されていないため、申請データを送れません。"
        "お住まいの方の申請書は、市町村へ回付します。",
        "This tablet holds no receiving key for these municipalities yet, so it cannot send"
        " them applications. The form of an applicant living there is forwarded instead.",
    ),
    "forward_only_pick": ("回付する市町村", "Municipality to forward to"),
    "forward_only_button": ("この市町村へ回付する", "Forward to this municipality"),
    "forward_only_missing": ("回付する市町村を選んでください。", "Choose the municipality."),
    "photo_hold": ("そのまま動かないでください。撮影します。", "Hold still, taking the photo."),
}


# The card check (issue 22, docs/card.md): for staff, outside an application.
CARD_TEXT: dict[str, tuple[str, str]] = {
    "card_check": ("マイナンバーカードの確認", "Check a My Number Card"),
    "card_place": ("カードを置いてください", "Place the card on the reader"),
    "card_place_hint": (
        "カードをカードリーダーに置いて「読み取る」を押してください。暗証番号は使いません。",
        "Place the card on the card reader and press Read. No PIN is used.",
    ),
    "card_read": ("読み取る", "Read"),
    "card_again": ("もう一度読み取る", "Read again"),
    "card_back": ("受付の画面に戻る", "Back to the start"),
    "card_back_session": ("申請に戻る", "Back to the application"),
    "card_ok": ("このカードは読み取れました", "This card can be read"),
    "card_expired": (
        "電子証明書の有効期限が切れています",
        "The electronic certificate has expired",
    ),
    "card_not_yet_valid": (
        "電子証明書の有効期間がまだ始まっていません",
        "The electronic certificate is not valid yet",
    ),
    "card_ok_next": ("このカードはそのまま使えます。", "The card can be used as it is."),
    "card_soon_next": (
        "有効期限が近づいています。市区町村の窓口での更新手続きをご案内してください。",
        "The certificate expires soon. Guide the holder to renew it at the municipal office.",
    ),
    "card_expired_next": (
        "市区町村の窓口で電子証明書の更新手続きをご案内してください。",
        "Guide the holder to renew the certificate at the municipal office.",
    ),
    "card_unreadable": ("このカードは読み取れません", "This card cannot be read"),
    "card_unreadable_next": (
        "カードの向きと汚れを確かめて、もう一度置いてください。それでも読めない場合は、"
        "市区町村の窓口での確認をご案内してください。",
        "Check the card's side and that it is clean, then place it again. If it still cannot "
        "be read, guide the holder to the municipal office.",
    ),
    "card_not_jpki": (
        "このカードはマイナンバーカードではありません",
        "This is not a My Number Card",
    ),
    "card_not_jpki_next": ("マイナンバーカードを置いてください。", "Place a My Number Card."),
    "card_no_card": ("カードが置かれていません", "There is no card on the reader"),
    "card_no_card_next": (
        "カードをカードリーダーに置いてから「読み取る」を押してください。",
        "Place the card on the reader, then press Read.",
    ),
    "card_removed": (
        "読み取りの途中でカードが離れました",
        "The card was moved away while it was read",
    ),
    "card_removed_next": (
        "カードを置いたまま動かさずに、もう一度読み取ってください。",
        "Leave the card on the reader without moving it and read again.",
    ),
    "card_no_reader": ("カードリーダーがつながっていません", "No card reader is connected"),
    "card_no_reader_next": (
        "カードリーダーのUSBケーブルを差し直してから、もう一度読み取ってください。",
        "Plug the card reader's USB cable in again, then read again.",
    ),
    "card_several_readers": (
        "カードリーダーが2台以上つながっています",
        "More than one card reader is connected",
    ),
    "card_several_readers_next": (
        "使わないカードリーダーを外してから、もう一度読み取ってください。",
        "Unplug the reader you do not use, then read again.",
    ),
    "card_no_service": (
        "カードリーダーの仕組みが動いていません",
        "The card reader system is not running",
    ),
    "card_no_service_next": (
        "端末を再起動してください。直らない場合は管理者に連絡してください。",
        "Restart the tablet. If that does not help, call the administrator.",
    ),
    "card_silent": ("カードの確認機能が応答しません", "The card check does not answer"),
    "card_silent_next": (
        "少し待ってから、もう一度読み取ってください。続く場合は管理者に連絡してください。",
        "Wait a moment and read again. If it goes on, call the administrator.",
    ),
}
TEXT.update(CARD_TEXT)
# Why an application ID (read or typed) is refused: the same words as the rule that refuses it.
TEXT.update({f"id_refused:{code}": words for code, words in REFUSAL_TEXT.items()})
MONTHS_EN = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


def card_date(iso: str, lang: Lang) -> str:
    """A date as staff read it: 2029年3月31日, or 31 March 2029."""
    year, month, day = (int(part) for part in iso.split("-"))
    return f"{year}年{month}月{day}日" if lang == "ja" else f"{day} {MONTHS_EN[month - 1]} {year}"


def card_expiry(valid_to: str, days_left: int, lang: Lang) -> str:
    """電子証明書の有効期限: 2029年3月31日（あと1,214日）, or its English."""
    date = card_date(valid_to, lang)
    if lang == "ja":
        left = f"（あと{days_left:,}日）" if days_left >= 0 else f"（{-days_left:,}日前に期限切れ）"
        return f"電子証明書の有効期限: {date}{left}"
    left = f"{days_left:,} days left" if days_left >= 0 else f"expired {-days_left:,} days ago"
    return f"Electronic certificate valid until {date} ({left})"


def say(key: str, lang: Lang) -> str:
    ja, en = TEXT[key]
    return ja if lang == "ja" else en


AGE_BAND_LABELS: dict[str, tuple[str, str]] = {
    "0-9": ("10歳未満", "under 10"),
    "90+": ("90歳以上", "90 and over"),
    "no-answer": ("答えない", "No answer"),
}


# The photo checks (fieldkit.capture.photo.CheckName) in plain words, each as (words when it
# holds, {capture's advice: words when it does not}); ``{value}`` is the measured value, shown
# only in mm, degrees or people. No limits or formulas: what is wrong and what to do.
CheckWords = tuple[tuple[str, str], dict[str, tuple[str, str]]]
CHECK_WORDS: dict[str, CheckWords] = {
    "one-face": (
        ("写っているのは1人だけです", "Only one person is in view"),
        {
            "no-face": (
                "顔が写っていません。カメラの方を向いて、枠の中に顔を入れてください",
                "No face is in view. Look at the camera, face inside the frame",
            ),
            "one-person": (
                "{value}人写っています。おひとりだけ写るようにしてください",
                "{value} people are in view. Only one person, please",
            ),
        },
    ),
    "frontal": (
        ("顔は正面を向いています(ずれ{value}度)", "The face looks at the camera ({value}° off)"),
        {
            "face-camera": (
                "顔が正面から{value}度それています。顔をまっすぐカメラに向けてください",
                "The face is turned {value}° away. Please face the camera directly",
            )
        },
    ),
    "eyes-open": (
        ("目が開いています", "The eyes are open"),
        {
            "open-eyes": (
                "目が閉じているか、細くなっています。目をしっかり開けてください",
                "The eyes are closed or half closed. Please open your eyes",
            )
        },
    ),
    "mouth-closed": (
        ("口が閉じています", "The mouth is closed"),
        {
            "close-mouth": (
                "口が開いています。口を閉じてください",
                "The mouth is open. Please close it",
            )
        },
    ),
    "head-covering": (
        ("帽子などはかぶっていません", "No hat or other head covering"),
        {
            "remove-hat": (
                "頭に帽子などがかぶさっているようです。帽子などをとってください"
                "(宗教上・医療上の理由でとれない場合は、顔の輪郭が見えていれば職員が撮影できます)",
                "Something seems to cover the head. Please take off your hat"
                " (a covering worn for religious or medical reasons may stay if the face's"
                " outline shows: the staff can take the photo)",
            )
        },
    ),
    "head-height": (
        (
            "頭の大きさ(頭のてっぺんからあごまで)は{value} mmで、ちょうどよい大きさです",
            "The head (crown to chin) is {value} mm: the right size",
        ),
        {
            "closer": (
                "頭が小さく写っています({value} mm)。もう少しカメラに近づいてください",
                "The head is small ({value} mm). Please come a little closer",
            ),
            "back": (
                "頭が大きく写っています({value} mm)。少し後ろに下がってください",
                "The head is large ({value} mm). Please move back a little",
            ),
        },
    ),
    "crown-margin": (
        (
            "頭の上の余白は{value} mmで、ちょうどよい広さです",
            "The space above the head is {value} mm: right",
        ),
        {
            "lower": (
                "頭の上の余白が狭すぎます({value} mm)。顔の位置を少し下げてください",
                "Too little space above the head ({value} mm). Please move a little lower",
            ),
            "higher": (
                "頭の上の余白が広すぎます({value} mm)。顔の位置を少し上げてください",
                "Too much space above the head ({value} mm). Please move a little higher",
            ),
        },
    ),
    "centred": (
        ("顔は真ん中にあります(ずれ{value} mm)", "The face is in the centre ({value} mm off)"),
        {
            "move-left": (
                "顔が真ん中から{value} mmずれています。少し左へ動いてください",
                "The face is {value} mm off the centre. Please move a little to your left",
            ),
            "move-right": (
                "顔が真ん中から{value} mmずれています。少し右へ動いてください",
                "The face is {value} mm off the centre. Please move a little to your right",
            ),
        },
    ),
    "head-level": (
        ("頭はまっすぐです(傾き{value}度)", "The head is level ({value}° tilt)"),
        {
            "level": (
                "頭が{value}度傾いています。頭を傾けず、まっすぐにしてください",
                "The head is tilted {value}°. Please keep your head level",
            )
        },
    ),
    "exposure": (
        ("顔の明るさはちょうどよいです", "The face is lit just right"),
        {
            "brighter": (
                "顔が暗すぎます。明るくしてください",
                "The face is too dark: more light, please",
            ),
            "darker": (
                "顔が明るすぎます。光を弱めてください",
                "The face is too bright: less light, please",
            ),
        },
    ),
    "light-balance": (
        ("顔の左右の明るさがそろっています", "The face is evenly lit"),
        {
            "even-light": (
                "顔の片側が暗くなっています。正面から光が当たるようにしてください",
                "One side of the face is dark: light it evenly from the front",
            )
        },
    ),
    "clipping": (
        ("顔に白くとんだ所はありません", "No part of the face is blown out white"),
        {
            "glare": (
                "顔に白くとんだ所があります。照明を確かめてください",
                "Part of the face is blown out white: check the light",
            )
        },
    ),
    "glare": (
        ("メガネなどの反射はありません", "No glare on glasses"),
        {
            "glare": (
                "目のまわりに光が反射しています。照明やメガネの反射を確かめてください",
                "Light reflects around the eyes: check the light and the glasses",
            )
        },
    ),
    "background": (
        ("背景は無地です", "The background is plain"),
        {
            "background": (
                "背景に模様やむらがあります。後ろを無地の壁にしてください",
                "The background is not plain: a plain wall is needed behind you",
            )
        },
    ),
    "background-shadow": (
        ("背景に影はありません", "No shadow on the wall"),
        {
            "shadow": (
                "後ろの壁に影が出ています。壁から少し離れてください",
                "A shadow is on the wall: please move a little away from the wall",
            )
        },
    ),
    "sharpness": (
        ("写真はくっきりしています", "The photo is sharp"),
        {
            "hold-still": (
                "写真がぼやけています。そのまま動かないでください",
                "The photo is blurred. Please hold still",
            )
        },
    ),
    "still": (
        ("動いていません", "Holding still"),
        {
            "hold-still": (
                "撮影中に{value} mm動きました。そのまま動かないでください",
                "Moved {value} mm while the photo was taken. Please hold still",
            )
        },
    ),
}
# The units whose measured value is shown: mm and degrees (their sign is in the words), people.
SHOWN_UNITS = {"mm": "{:.1f}", "deg": "{:.1f}", "faces": "{:.0f}"}
# A margin can be below zero (the crown is cut off): its sign is the news, so it stays.
SIGNED_CHECKS = {"crown-margin"}


def check_words(check: CheckResult, lang: Lang) -> str:
    """One photo check's result in plain words, with the value in mm or degrees if it has one."""
    held, failed = CHECK_WORDS[check.name]
    if check.passed:
        ja, en = held
    else:
        ja, en = failed.get(check.advice or "", next(iter(failed.values())))
    words = ja if lang == "ja" else en
    shape = SHOWN_UNITS.get(check.unit)
    value = check.measured
    if shape is None or value is None:
        # Nothing to show: the words stand without the value's brackets.
        return re.sub(r"\s*\([^()]*\{value\}[^()]*\)", "", words).replace("{value}", "—")
    shown = value if check.name in SIGNED_CHECKS else abs(value)
    return words.format(value=shape.format(shown))


def photo_guidance(checks: list[CheckResult], lang: Lang) -> str:
    """What to say while the camera looks: the first check that fails, or hold still."""
    for check in checks:
        if not check.passed:
            return check_words(check, lang)
    return say("photo_hold", lang)


def age_band_label(band: str, lang: Lang) -> str:
    if band in AGE_BAND_LABELS:
        ja, en = AGE_BAND_LABELS[band]
        return ja if lang == "ja" else en
    low = band.split("-")[0]
    return f"{low}代" if lang == "ja" else f"{low}s"
