"""What the kiosk says, Japanese first, English available. Plain words, short sentences."""

from __future__ import annotations

from typing import Literal

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
    "finished": ("ありがとうございました。", "Thank you."),
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
    "submit_refused": (
        "申請データを保存できませんでした。係員に知らせてください。",
        "The application could not be stored. Please tell the staff.",
    ),
    "printing": ("控えを印刷しています", "Printing your receipts"),
    "done": ("申請が終わりました", "Your application is complete"),
}


def say(key: str, lang: Lang) -> str:
    ja, en = TEXT[key]
    return ja if lang == "ja" else en


AGE_BAND_LABELS: dict[str, tuple[str, str]] = {
    "0-9": ("10歳未満", "under 10"),
    "90+": ("90歳以上", "90 and over"),
    "no-answer": ("答えない", "No answer"),
}


# The photo checks (fieldkit.capture.photo.CheckName) as the operator reads them.
CHECK_LABELS: dict[str, tuple[str, str]] = {
    "one-face": ("写っているのは本人ひとりだけ", "Only the applicant in view"),
    "frontal": ("顔が正面を向いている", "Facing the camera"),
    "eyes-open": ("目が開いている", "Eyes open"),
    "mouth-closed": ("口が閉じている", "Mouth closed"),
    "head-height": ("頭の大きさ(頭頂からあごまで)", "Head size (crown to chin)"),
    "crown-margin": ("頭の上の余白", "Space above the head"),
    "centred": ("顔が中央にある", "Face in the centre"),
    "head-level": ("顔がまっすぐ", "Head level"),
    "exposure": ("明るさ", "Brightness"),
    "light-balance": ("顔の左右の明るさが同じ", "Face evenly lit"),
    "clipping": ("白とびがない", "No blown-out areas"),
    "glare": ("メガネなどの反射がない", "No glare on glasses"),
    "background": ("背景が無地", "Plain background"),
    "background-shadow": ("背景に影がない", "No shadow on the wall"),
    "sharpness": ("ぼやけていない", "Sharp, not blurred"),
    "still": ("動いていない", "Holding still"),
}
UNIT_LABELS: dict[str, tuple[str, str]] = {
    "faces": ("人", "faces"),
    "deg": ("度", "degrees"),
    "mm": ("mm", "mm"),
    "fraction": ("(白くとんだ部分の割合)", "share blown out white"),
    "lid gap / eye width": ("(目の開き)", "eye opening"),
    "lip gap / mouth width": ("(口の開き)", "mouth opening"),
    "left/right difference": ("(左右の明るさの差)", "left/right brightness difference"),
    "grey level": ("(明るさ 0〜255)", "grey level (0-255)"),
    "grey levels": ("(背景のむら・影)", "grey levels of variation"),
    "Laplacian variance": ("(鮮明さ)", "sharpness (Laplacian variance)"),
}


def check_label(name: str, lang: Lang) -> str:
    ja, en = CHECK_LABELS.get(name, (name, name))
    return ja if lang == "ja" else en


def unit_label(unit: str, lang: Lang) -> str:
    ja, en = UNIT_LABELS.get(unit, (unit, unit))
    return ja if lang == "ja" else en


def age_band_label(band: str, lang: Lang) -> str:
    if band in AGE_BAND_LABELS:
        ja, en = AGE_BAND_LABELS[band]
        return ja if lang == "ja" else en
    low = band.split("-")[0]
    return f"{low}代" if lang == "ja" else f"{low}s"
