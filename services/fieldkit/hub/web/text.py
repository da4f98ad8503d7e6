"""What the hub web app says: one text catalogue, Japanese first, English on request (issue 21).

The mechanism is the kiosk's (``fieldkit.textcatalogue``: a key names a pair of Japanese and
English); the reader's language is ``?lang=en`` or ``?lang=ja``, kept in the session, Japanese
until asked. Every page, flash, error, form label and form error, the login prompt and the
report tables and their exports take their words from here. ``Lazy`` is a phrase named where
no request is running (a form's label, a validator's message) and said when it is shown.
"""

from __future__ import annotations

import re
from typing import Any, cast

from flask import g, has_request_context
from markupsafe import escape

from fieldkit.textcatalogue import Lang, TextCatalogue

TEXT: dict[str, tuple[str, str]] = {
    # ---- every page ------------------------------------------------------------------------
    "brand": ("fieldkit ハブ", "fieldkit hub"),
    "switch_lang": ("English", "日本語"),
    "nav.menu": ("メニュー", "Menu"),
    "nav.dashboard": ("概要", "Dashboard"),
    "nav.reports": ("報告", "Reports"),
    "nav.packets": ("封緘データ", "Sealed packets"),
    "nav.devices": ("端末", "Devices"),
    "nav.municipalities": ("市区町村", "Municipalities"),
    "nav.operators": ("従事者", "Operators"),
    "nav.sites": ("会場・訪問", "Sites and visits"),
    "nav.accounts": ("アカウント", "Accounts"),
    "nav.incidents": ("事故報告", "Incidents"),
    "nav.evidence": ("消去記録", "Erasure evidence"),
    "nav.contract": ("契約・様式", "Contract and forms"),
    "nav.expenses": ("経費", "Expenses"),
    "nav.deletion": ("削除の証明", "Deletion evidence"),
    "nav.audit": ("監査ログ", "Audit log"),
    "nav.password": ("パスワード変更", "Change password"),
    "nav.logout": ("ログアウト", "Log out"),
    "role.admin": ("管理者", "administrator"),
    "role.municipality": ("市区町村", "municipality"),
    "role.auditor": ("監査（閲覧のみ）", "auditor (read-only)"),
    "duty.responsible": ("責任者", "responsible person"),
    "duty.handler": ("従事者", "handler"),
    "kind.welfare": ("福祉施設", "welfare facility"),
    "kind.medical": ("医療機関", "medical institution"),
    "kind.public": ("公共施設", "public facility"),
    "kind.post-office": ("郵便局", "post office"),
    "kind.other": ("その他", "other"),
    "kind.application-support": ("申請サポート", "application support"),
    "kind.card-issuance-support": ("交付支援", "card issuance support"),
    "request.open": ("受付済（未定）", "received, not scheduled"),
    "request.scheduled": ("訪問予定あり", "scheduled"),
    "incident.draft": ("下書き", "draft"),
    "incident.reported": ("報告済", "reported"),
    "weekday.0": ("月", "Mon"),
    "weekday.1": ("火", "Tue"),
    "weekday.2": ("水", "Wed"),
    "weekday.3": ("木", "Thu"),
    "weekday.4": ("金", "Fri"),
    "weekday.5": ("土", "Sat"),
    "weekday.6": ("日", "Sun"),
    "no_data": ("データなし", "No data"),
    "none": ("なし", "None"),
    "actions": ("操作", "Actions"),
    "active": ("有効", "active"),
    "disabled": ("無効", "disabled"),
    "revoked": ("失効", "revoked"),
    "enable": ("有効にする", "Enable"),
    "disable": ("無効にする", "Disable"),
    "add": ("追加", "Add"),
    "save": ("保存", "Save"),
    "record": ("記録", "Record"),
    "generate": ("作成", "Generate"),
    "show": ("表示", "Show"),
    "download": ("取得", "Download"),
    "export": ("出力:", "Export:"),
    "state": ("状態", "State"),
    "date": ("日付", "Date"),
    "time": ("時刻", "Time"),
    "number": ("番号", "No."),
    "device": ("端末", "Device"),
    "municipality": ("市区町村", "Municipality"),
    "municipality.plural": ("市区町村", "Municipalities"),
    "yes": ("はい", "yes"),
    "no": ("いいえ", "no"),
    "checked_yes": ("確認済", "verified"),
    "checked_no": ("未確認", "NOT verified"),
    "count.packets": ("{n}件", "{n} packets"),
    "total": ("合計", "Total"),
    "hours": ("{n}時間", "{n} h"),
    "days": ("{n}日", "{n} days"),
    "unanswered_municipality": ("回答なし", "not answered"),
    "unlisted_municipality": ("表にない市区町村（{code}）", "not in the table ({code})"),
    # ---- errors ------------------------------------------------------------------------------
    "error.back": ("概要に戻る", "Back to the dashboard"),
    "error.400": ("要求を処理できませんでした", "The request could not be handled"),
    "error.400.text": (
        "送信内容に誤りがあります。入力を確かめて、もう一度お試しください。",
        "Something in the request was wrong. Check what you entered and try again.",
    ),
    "error.403": ("この操作はできません", "Not allowed"),
    "error.403.text": (
        "このアカウントでは、このページを見たり、この操作をしたりできません。",
        "This account may not see this page or do this.",
    ),
    "error.404": ("見つかりません", "Not found"),
    "error.404.text": (
        "お探しのページや記録はありません。リンクや番号を確かめてください。",
        "There is no such page or record. Check the link or the number.",
    ),
    "error.405": ("この操作はできません", "Not allowed"),
    "error.405.text": (
        "このページでは、その操作はできません。",
        "That cannot be done on this page.",
    ),
    "error.409": ("登録済みです", "Already there"),
    "error.409.text": ("同じものがすでに登録されています。", "The same thing is recorded already."),
    "error.413": ("データが大きすぎます", "Too large"),
    "error.413.text": (
        "送信されたデータが大きすぎます（領収書は5MBまで、そのほかは1MBまで）。",
        "What was sent is too large (a receipt may be up to 5 MB, anything else 1 MB).",
    ),
    "error.500": ("ハブで問題が起きました", "The hub ran into a problem"),
    "error.500.text": (
        "処理できませんでした。しばらくしてからもう一度お試しください。続くときは管理者に連絡してください。",
        "This could not be done. Try again in a moment; if it goes on, tell the administrator.",
    ),
    "error.csrf": (
        "フォームの有効期限が切れました。ページを読み込み直して、もう一度送信してください。",
        "The form expired. Reload the page and send it again.",
    ),
    "error.bad_date": (
        "日付は YYYY-MM-DD（例 2026-08-03）で指定してください。",
        "Give the date as YYYY-MM-DD (e.g. 2026-08-03).",
    ),
    "error.bad_month": (
        "月は YYYY-MM（例 2026-08）で指定してください。",
        "Give the month as YYYY-MM (e.g. 2026-08).",
    ),
    "error.bad_municipality": (
        "市区町村の指定が正しくありません（6桁のコード）。",
        "The municipality is not valid (a 6-digit code).",
    ),
    "error.bad_device": (
        "端末IDが正しくありません（英小文字・数字・ハイフン）。",
        "The device ID is not valid (a-z, 0-9 and -).",
    ),
    # ---- forms -------------------------------------------------------------------------------
    "form.required": ("入力してください", "required"),
    "form.bad_date": ("日付は YYYY-MM-DD で入力してください", "not a valid date (YYYY-MM-DD)"),
    "form.bad_number": ("数字（整数）で入力してください", "a whole number"),
    "form.too_long": ("{limit}文字以内で入力してください", "at most {limit} characters"),
    "form.too_short": ("{limit}文字以上で入力してください", "at least {limit} characters"),
    "form.choose": ("一覧から選んでください", "choose one from the list"),
    "form.number_range": ("{low}から{high}までの数", "a number from {low} to {high}"),
    "form.expired": (
        "フォームの有効期限切れ、再読み込みしてください",
        "the form expired: reload the page",
    ),
    "form.time": ("時刻は 09:00 のように入力してください", "a time like 09:00"),
    "form.not_same": ("同じではありません", "not the same"),
    "form.file_required": ("ファイルを選んでください", "choose a file"),
    # ---- logins ------------------------------------------------------------------------------
    "login.title": ("ログイン", "Log in"),
    "login.button": ("ログイン", "Log in"),
    "login.username": ("ユーザー名", "Username"),
    "login.password": ("パスワード", "Password"),
    "login.required": (
        "このページを見るには、ログインしてください。",
        "Please log in to see this page.",
    ),
    "login.failed": (
        "ログインできませんでした。入力を確かめるか、しばらくしてからもう一度お試しください。",
        "Login failed: check what you typed, or try again later.",
    ),
    "code.title": ("確認コード", "Second factor"),
    "code.label": ("確認コード（6桁）", "Code (6 digits)"),
    "code.first": (
        "初めてのログインです。認証アプリ（Google Authenticator、Microsoft Authenticator など）で"
        "このQRコードを読み取り、表示された6桁のコードを入力してください。",
        "First login: scan this QR code with an authenticator app, then type the 6-digit code"
        " it shows.",
    ),
    "code.qr_alt": ("認証アプリ用のQRコード", "QR code for the authenticator app"),
    "code.type_key": (
        "読み取れない場合は、この鍵を手で入力してください:",
        "If the app cannot scan it, type this key:",
    ),
    "code.type": (
        "認証アプリに表示された6桁のコードを入力してください。",
        "Type the 6-digit code from your authenticator app.",
    ),
    "code.button": ("確認", "Verify"),
    "password.title": ("パスワード変更", "Change password"),
    "password.current": ("今のパスワード", "Current password"),
    "password.new": ("新しいパスワード", "New password"),
    "password.repeat": ("新しいパスワード（確認）", "New password again"),
    "password.others_end": (
        "ほかのブラウザでのこのアカウントのログインは、すべて終了します。",
        "Every other login of this account ends.",
    ),
    "password.button": ("変更", "Change"),
    "password.changed": ("パスワードを変更しました。", "Password changed."),
    # ---- accounts and audit ------------------------------------------------------------------
    "accounts.title": ("アカウント", "Accounts"),
    "accounts.username": ("ユーザー名", "Username"),
    "accounts.username_rule": (
        "3〜64文字の英数字と . _ - で入力してください",
        "3 to 64 letters, digits, '.', '_' or '-'",
    ),
    "accounts.role": ("役割", "Role"),
    "accounts.municipalities": (
        "市区町村（市区町村の役割のみ、複数選択可）",
        "Municipalities (municipality role only; choose one or more)",
    ),
    "accounts.password": ("パスワード（12文字以上）", "Password (12 characters or more)"),
    "accounts.second_factor": ("確認コード", "Second factor"),
    "accounts.factor_set": ("設定済み", "set up"),
    "accounts.factor_unset": ("未設定", "not set up"),
    "accounts.reset_factor": ("確認コードを再設定", "Reset second factor"),
    "accounts.not_created": ("作成できません: {reason}", "Not created: {reason}"),
    "accounts.needs_municipality": (
        "市区町村の役割には、市区町村を一つ以上選んでください",
        "a municipality account needs at least one municipality",
    ),
    "accounts.exists": ("このユーザー名は使われています", "this username exists already"),
    "accounts.not_changed": ("変更できません。", "Not changed."),
    "accounts.factor_reset": (
        "{username}: 次回のログインで確認コードを設定し直します。",
        "{username} sets up a new second factor at the next login.",
    ),
    "audit.title": ("監査ログ", "Audit log"),
    "audit.chain_ok": (
        "ハッシュチェーン正常: 記録は書き換えられていません。",
        "Hash chain verified: no entry was changed.",
    ),
    "audit.chain_broken": (
        "ハッシュチェーン不一致: {entry}番の記録から後が書き換えられたか、削除されています。",
        "Hash chain BROKEN at entry {entry}: it or an entry after it was changed or deleted.",
    ),
    "audit.actor": ("実行者", "Actor"),
    "audit.action": ("操作", "Action"),
    "audit.target": ("対象", "Target"),
    "audit.detail": ("詳細", "Detail"),
    "action.other": ("その他の操作", "other action"),
    "action.account-create": ("アカウント作成", "account created"),
    "action.account-disable": ("アカウント無効化", "account disabled"),
    "action.account-enable": ("アカウント有効化", "account enabled"),
    "action.contract-update": ("契約内容の保存", "contract saved"),
    "action.device-revoke": ("端末の失効", "device revoked"),
    "action.document-generate": ("書類の作成", "document generated"),
    "action.enrol-code-created": ("登録コードの作成", "enrolment code made"),
    "action.enrol-config-sent": ("端末設定の送付", "device settings sent"),
    "action.enrol-issued": ("端末の登録", "device enrolled"),
    "action.enrol-refused": ("端末登録の拒否", "enrolment refused"),
    "action.expense-create": ("経費の登録", "expense recorded"),
    "action.facility-create": ("施設の追加", "facility added"),
    "action.incident-complete": ("事故報告の完成", "incident report completed"),
    "action.incident-draft": ("事故報告の下書き", "incident draft raised"),
    "action.incident-report": ("事故報告", "incident reported"),
    "action.login": ("ログイン", "login"),
    "action.login-refused": ("ログイン拒否", "login refused"),
    "action.login-throttle-passed": ("ログイン制限中の通過", "passed a login block"),
    "action.login-throttled": ("ログイン制限", "logins throttled"),
    "action.logout": ("ログアウト", "logout"),
    "action.operator-create": ("従事者の登録", "operator registered"),
    "action.operator-disable": ("従事者の無効化", "operator disabled"),
    "action.operator-enable": ("従事者の有効化", "operator enabled"),
    "action.operator-password-reset": ("従事者のパスワード再設定", "operator password reset"),
    "action.packets-download": ("封緘データの取得", "packets downloaded"),
    "action.packets-erase": ("封緘データの消去", "packets erased"),
    "action.paper-destruction": ("紙の廃棄の記録", "paper destruction recorded"),
    "action.password-change": ("パスワード変更", "password changed"),
    "action.sanitization-certificate": ("消去証明書の登録", "sanitization certificate"),
    "action.second-factor-enabled": ("確認コードの設定完了", "second factor set up"),
    "action.second-factor-reset": ("確認コードの再設定", "second factor reset"),
    "action.second-factor-reused": ("確認コードの再使用", "second-factor code reused"),
    "action.second-factor-setup": ("確認コードの設定開始", "second factor being set up"),
    "action.visit-create": ("訪問の登録", "visit recorded"),
    "action.visit-request-create": ("訪問依頼の受付", "visit request recorded"),
    "action.visit-results": ("訪問実績の記録", "visit results recorded"),
    "operators.title": ("従事者名簿", "Handler registry"),
    "operators.id": ("職員ID", "Staff ID"),
    "operators.id_rule": (
        "英小文字・数字・ハイフンで2〜32文字（先頭は英数字）",
        "2 to 32 of a-z, 0-9 and - (starting with a letter or digit)",
    ),
    "operators.name": ("氏名", "Name"),
    "operators.duty": ("役割", "Duty"),
    "operators.initial_password": ("初期パスワード（12文字以上）", "Initial password (12 or more)"),
    "operators.new_password": ("新しいパスワード", "New password"),
    "operators.reset": ("パスワード再設定", "Reset password"),
    "operators.history": ("変更履歴", "History"),
    "operators.not_created": ("登録できません: {reason}", "Not created: {reason}"),
    "operators.exists": ("{operator} は登録済みです。", "{operator} exists already."),
    "operators.one_responsible": (
        "責任者は一人だけです。先に今の責任者を無効にしてください。",
        "There is one responsible person: disable the current one first.",
    ),
    "operators.created": ("{operator} を登録しました。", "{operator} is registered."),
    "operators.password_rule": (
        "パスワードは{n}文字以上にしてください。",
        "The password needs at least {n} characters.",
    ),
    "operators.password_reset": (
        "{operator} のパスワードを変更しました。",
        "{operator}'s password is reset.",
    ),
    "not_saved": ("保存できません: {reason}", "Not saved: {reason}"),
    "not_recorded": ("記録できません: {reason}", "Not recorded: {reason}"),
    "recorded": ("記録しました。", "Recorded."),
    "calendar.title": ("予定表", "Calendar"),
    "calendar.request": ("訪問依頼: {facility}", "Requested: {facility}"),
    "sites.days": ("申請サポート実施日数:", "Application-support days:"),
    "sites.progress": ("進捗", "Progress"),
    "sites.facilities": ("施設", "Facilities"),
    "sites.facility": ("施設", "Facility"),
    "sites.facility_name": ("施設名", "Name"),
    "sites.type": ("種別", "Type"),
    "sites.address": ("所在地", "Address"),
    "sites.requests": ("訪問依頼", "Visit requests"),
    "sites.received": ("受付日", "Received"),
    "sites.wanted": ("希望日", "Wanted date"),
    "sites.expected": ("見込み人数", "Expected people"),
    "sites.visits": ("訪問", "Visits"),
    "sites.kind": ("種別", "Kind"),
    "sites.lead": ("責任者（現場）", "Site lead"),
    "sites.lead_id": ("責任者（現場）の職員ID", "Site lead's staff ID"),
    "sites.staff": ("従事者", "Staff"),
    "sites.staff_ids": ("従事者の職員ID（カンマ区切り）", "Staff IDs, comma-separated"),
    "sites.start": ("開始時刻", "Start"),
    "sites.end": ("終了時刻", "End"),
    "sites.cards": ("交付枚数", "Cards handed over"),
    "sites.log": ("業務日誌", "Work log"),
    "sites.results": ("実績", "Results"),
    "sites.add_facility": ("施設の追加", "Add a facility"),
    "sites.add_request": ("訪問依頼の受付", "Record a visit request"),
    "sites.add_visit": ("訪問の登録", "Record a visit"),
    "sites.two_staff": ("従事者は二人以上必要です", "two or more staff are needed"),
    "sites.unknown_staff": ("名簿にない職員ID: {ids}", "not in the registry: {ids}"),
    "sites.end_after_start": ("終了は開始より後にしてください", "the end must be after the start"),
    "sites.cards_only_issuance": (
        "交付枚数は交付支援の訪問だけに記録します",
        "cards are recorded on card-issuance-support visits only",
    ),
    "visit.title": ("訪問", "Visit"),
    "visit.times": ("時間", "Times"),
    "visit.remarks": ("所見", "Remarks"),
    "visit.remarks_field": ("所見・特記事項（業務日誌に載ります）", "Remarks for the work log"),
    "visit.record_results": ("実績の記録", "Record the results"),
    "not_generated": ("作成できません: {reason}", "Not generated: {reason}"),
    "generated": (
        "{title} 第{version}版を作成しました（SHA-256 {sha256}）。",
        "{title}, version {version}, generated (SHA-256 {sha256}).",
    ),
    "incidents.occurred": ("発生日", "Occurred"),
    "incidents.what": ("何が", "What"),
    "incidents.how_much": ("どれだけ", "How much"),
    "incidents.where": ("どこで", "Where"),
    "incidents.how": ("どのように", "How"),
    "incidents.response": ("対応", "Response"),
    "incidents.what_field": ("何が起きたか", "What happened"),
    "incidents.how_much_field": ("どれだけ（件数・範囲）", "How much (how many, how far)"),
    "incidents.where_field": ("どこで", "Where"),
    "incidents.how_field": ("どのように", "How"),
    "incidents.response_field": ("対応", "Response"),
    "incidents.status": ("状態", "Status"),
    "incidents.reported_at": ("報告日時", "Reported"),
    "incidents.reported_by": ("報告者", "Reported by"),
    "incidents.report_title": ("事故報告 第{number}号", "Incident report No. {number}"),
    "incidents.report_column": ("報告", "Report"),
    "incidents.number": ("第{number}号", "No. {number}"),
    "incidents.complete": ("完成させる", "Complete"),
    "incidents.add": ("事故を報告する", "Report an incident"),
    "incidents.report": ("報告する", "Report"),
    "incidents.draft_title": ("事故報告の下書き 第{number}号", "Incident draft No. {number}"),
    "incidents.draft_note": (
        "端末の警報からハブが作成しました。件数・経緯・対応を記入して報告してください。警報:",
        "Raised by the hub from a device alarm: add how much, how and the response, then"
        " report it. Alarm:",
    ),
    "packets.title": ("封緘データの引き取り", "Sealed packet pick-up"),
    "packets.waiting": ("引き取り待ち", "Waiting"),
    "packets.download": ("まとめてダウンロード", "Download all as one bundle"),
    "packets.record": ("記録ID", "Record"),
    "packets.downloads": ("ダウンロード履歴", "Downloads"),
    "packets.how_to_confirm": (
        "受領確認: 貴団体の端末で次のコマンドを実行し、できた受領証をアップロードしてください"
        "（復号した証明になります）:",
        "To confirm receipt, run this on your own machine and upload the receipt it makes"
        " (it proves the packets were decrypted):",
    ),
    "packets.count": ("件数", "Packets"),
    "packets.receipt": ("受領確認", "Receipt"),
    "packets.receipt_file": ("受領証（receipt.json）", "Receipt (receipt.json)"),
    "packets.confirm": ("受領を確認して消去", "Confirm receipt and erase"),
    "packets.confirmed": ("確認済・消去済", "confirmed, erased"),
    "packets.upload_receipt": (
        "受領証のファイルを選んでください（fieldkit packet receipt で作ったもの）。",
        "Choose the receipt file (the one fieldkit packet receipt made).",
    ),
    "packets.already_confirmed": (
        "この受領はすでに確認済みです。",
        "This receipt was confirmed already.",
    ),
    "packets.unreadable": (
        "受領証を読めません。何も消去していません。",
        "The receipt is unreadable: nothing was erased.",
    ),
    "packets.nothing_erased": (
        "{problem}。何も消去していません。",
        "{problem}: nothing was erased.",
    ),
    "packets.erased": (
        "受領を確認し、{n}件をハブから消去しました。",
        "Receipt confirmed: {n} erased from the hub.",
    ),
    "packets.hash_mismatch": (
        "受領証のSHA-256がダウンロードしたデータと一致しません",
        "The receipt's SHA-256 does not match the bundle",
    ),
    "packets.not_decrypted": (
        "記録 {record} を復号したことが受領証で証明されていません",
        "The receipt does not prove packet {record} was decrypted",
    ),
    "contract.title": ("契約・様式", "Contract and forms"),
    "contract.last_saved": ("最終更新: {who}", "Last saved by {who}"),
    "contract.none_yet": (
        "契約内容が未登録です。様式を作成する前に保存してください。",
        "No contract details yet: save them before generating the forms.",
    ),
    "contract.generate": ("様式の作成", "Generate a form"),
    "contract.generate_form": ("{form}を作成", "Generate {form}"),
    "contract.details": ("契約内容", "Contract details"),
    "contract.work_name": ("業務名", "Name of the work"),
    "contract.client": ("宛先（委託者）例 長野県知事 阿部 守一", "Addressee (the client)"),
    "contract.signed_on": ("契約締結日", "Contract signed"),
    "contract.started_on": ("着手年月日", "Work started"),
    "contract.period_start": ("履行期間（開始）", "Period from"),
    "contract.period_end": ("履行期間（終了）", "Period to"),
    "contract.completed_on": ("完了年月日（様式4）", "Completed (form 4)"),
    "contract.amount": ("契約金額（円）", "Amount (yen)"),
    "contract.amount_range": ("1円から20億円まで", "between 1 and 2,000,000,000 yen"),
    "contract.contractor_address": ("住所", "Contractor's address"),
    "contract.contractor_name": ("商号又は名称", "Contractor's name"),
    "contract.representative": ("代表者氏名", "Representative"),
    "contract.agent_name": ("業務実施代理人 氏名", "Responsible agent"),
    "contract.agent_title": ("業務実施代理人 所属・役職", "Agent's position"),
    "contract.work_summary": ("業務内容（様式4）", "Work done (form 4)"),
    "contract.issued_on": ("書類の日付", "Date on the documents"),
    "contract.end_after_start": (
        "履行期間の終了は開始より後にしてください",
        "the period must end after it starts",
    ),
    "contract.within_period": (
        "{field}: 履行期間内の日付にしてください",
        "{field}: must fall within the period",
    ),
    "contract.signed_before": (
        "契約締結日は履行期間の開始以前にしてください",
        "the contract is signed before the period starts",
    ),
    "contract.saved": ("契約内容を保存しました。", "Contract details saved."),
    "contract.unknown_form": ("様式の種類が不明です。", "Unknown form."),
    "contract.save_first": ("先に契約内容を保存してください。", "Save the contract details first."),
    "documents.title": ("作成した書類", "Generated documents"),
    "documents.note": (
        "様式1〜4と保存した業務日誌。作成したときのままの各版と、そのSHA-256です。",
        "Forms 1 to 4 and kept work logs; each version as generated, with its SHA-256.",
    ),
    "documents.document": ("書類", "Document"),
    "documents.version": ("版", "Version"),
    "documents.generated": ("作成日時", "Generated"),
    "documents.by": ("作成者", "By"),
    "documents.bytes": ("サイズ（バイト）", "Size (bytes)"),
    "expenses.title": ("業務経費支出一覧", "Expenses and receipts"),
    "expenses.advertising": (
        "広告費: {spent}円 / 上限 {cap}円（交付枚数 × 2,000円）",
        "Advertising: {spent} yen / cap {cap} yen (cards handed over × 2,000 yen)",
    ),
    "expenses.over_cap": ("上限超過", "Over the cap"),
    "expenses.receipts_zip": ("領収書（ZIP）", "Receipts (ZIP)"),
    "expenses.record": ("経費の登録", "Record an expense"),
    "expenses.date": ("支出日", "Date"),
    "expenses.category": ("費目", "Category"),
    "expenses.payee": ("支払先", "Paid to"),
    "expenses.what_for": ("内容", "What for"),
    "expenses.amount": ("金額（円）", "Amount (yen)"),
    "expenses.range": ("1円から1億円まで", "1 to 100,000,000 yen"),
    "expenses.receipt": ("領収書", "Receipt"),
    "expenses.receipt_field": (
        "領収書（PDF・JPEG・PNG、5MBまで）",
        "Receipt (PDF, JPEG or PNG, up to 5 MB)",
    ),
    "expenses.attach": ("領収書を添付してください", "attach the receipt"),
    "expenses.empty": ("領収書のファイルが空です", "the receipt file is empty"),
    "expenses.too_large": ("領収書は5MBまでです", "the receipt is larger than 5 MB"),
    "expenses.bad_type": (
        "領収書はPDF・JPEG・PNGのみ受け付けます",
        "the receipt must be a PDF, JPEG or PNG file",
    ),
    "expenses.recorded": (
        "経費 第{number}号を登録しました（領収書 SHA-256 {sha256}）。",
        "Expense No. {number} recorded (receipt SHA-256 {sha256}).",
    ),
    "expense.personnel": ("人件費", "personnel"),
    "expense.manual": ("業務マニュアル等作成費", "manuals"),
    "expense.supplies": ("需用費（消耗品費・印刷製本費）", "supplies, printing"),
    "expense.equipment": ("備品購入費", "equipment"),
    "expense.communication": ("役務費（通信運搬費）", "communication, postage"),
    "expense.rental": ("使用料及び賃借料", "rentals, leases"),
    "expense.subcontract": ("委託費", "subcontracting"),
    "expense.advertising": ("広告費", "advertising"),
    "expense.other": ("その他", "other"),
    "deletion.title": ("個人情報削除の証明", "Deletion evidence"),
    "deletion.key": (
        "証明書は、キットの認証局が文書の署名用に証明したハブの鍵（Ed25519）で署名されます。"
        "写しは認証局の証明書（ca.crt）だけで、次のコマンドで確認できます:",
        "Documents are signed with the hub's key (Ed25519), certified by the kit CA for signing"
        " documents; check a copy with the CA certificate alone:",
    ),
    "deletion.signer": ("署名者:", "Signer:"),
    "deletion.issuer": ("発行者", "certified by"),
    "deletion.valid_until": ("有効期限", "valid until"),
    "deletion.public_key": ("公開鍵:", "Public key:"),
    "deletion.no_signer": (
        "証明書に署名する鍵がまだありません。管理者が `fieldkit pki evidence-signer` を"
        "実行してください。",
        "No certified signing key yet: the admin runs `fieldkit pki evidence-signer`.",
    ),
    "deletion.documents": ("作成した証明書", "Generated documents"),
    "deletion.paper": ("紙の廃棄記録", "Paper destroyed"),
    "deletion.date": ("廃棄日", "Date"),
    "deletion.what": ("書類", "What"),
    "deletion.quantity": ("数量", "How much"),
    "deletion.method": ("方法", "Method"),
    "deletion.staff": ("実施者", "Done by"),
    "deletion.witness": ("立会人", "Witness"),
    "deletion.date_field": ("廃棄日", "Destroyed on"),
    "deletion.what_field": ("廃棄した書類（例 申請控え）", "What was destroyed"),
    "deletion.quantity_field": ("数量（例 120枚）", "How much"),
    "deletion.staff_field": ("実施者（従事者の職員ID）", "Done by (staff ID)"),
    "deletion.from": ("期間（開始）", "From"),
    "deletion.to": ("期間（終了）", "To"),
    "deletion.generate": (
        "期間の証明書を作成（署名付き）",
        "Generate the signed document for a period",
    ),
    "deletion.record_paper": ("紙の廃棄を記録", "Record paper destroyed"),
    "deletion.staff_unknown": (
        "実施者は名簿に登録済みの職員IDで入力してください",
        "the staff member must be in the registry",
    ),
    "deletion.witness_other": (
        "立会人は実施者と別の人にしてください",
        "the witness must be someone else",
    ),
    "deletion.end_after_start": (
        "期間の終了は開始以後にしてください",
        "the period must end on or after its start",
    ),
    "paper.shredder": ("シュレッダー裁断", "shredded"),
    "paper.dissolution": ("溶解処理", "dissolved"),
    "paper.incineration": ("焼却", "incinerated"),
    "paper.return": ("委託者へ返却", "returned to the prefecture"),
    # ---- dashboard and reports ---------------------------------------------------------------
    "dashboard.days_done": ("実施日数", "Days done"),
    "dashboard.waiting": ("引き渡し待ちの封緘データ", "Sealed packets waiting"),
    "dashboard.per_day": ("日別の申請件数（直近31日）", "Applications per day (last 31 days)"),
    "dashboard.by_municipality": (
        "住所地別の申請件数（上位10）",
        "Applications by municipality of residence (top 10)",
    ),
    "chart.applications": ("申請件数（件）", "Applications"),
    "chart.day": ("日付（日）", "Day of the month"),
    "chart.municipality": ("住所地", "Municipality of residence"),
    "chart.point": ("{label}: {value}件", "{label}: {value}"),
    "reports.from": ("開始日", "From"),
    "reports.to": ("終了日", "To"),
    "reports.all_municipalities": ("すべて", "All"),
    "reports.filter": ("絞り込み", "Filter"),
    "reports.keep_pdf": ("PDFを保存（版管理）", "Keep the PDF as a version"),
    "reports.kept_documents": ("保存した書類", "Kept documents"),
    "reports.monthly_hint": ("月次報告は次のアドレスで表示します:", "The monthly report is at:"),
    "reports.worklog_hint": (
        "業務日誌は、会場・訪問の一覧から訪問ごとに開きます:",
        "Each visit's work log opens from the list of visits:",
    ),
    "reports.kept": (
        "{title} 第{version}版を保存しました（SHA-256 {sha256}）。",
        "{title}, version {version}, kept (SHA-256 {sha256}).",
    ),
    "report.place": ("実施場所別件数", "Counts by the place visited"),
    "report.site": ("会場別件数", "Counts by site"),
    "report.municipality": ("住所地市区町村別件数", "Counts by municipality of residence"),
    "report.sex-age": ("性別・年代別申請件数", "Applications by sex and age band"),
    "report.day": ("日別件数", "Counts by day"),
    "report.month": ("月別件数", "Counts by month"),
    "report.cards-place": ("交付枚数（実施場所別）", "Cards handed over by place"),
    "report.cards-municipality": (
        "交付枚数（市区町村別）",
        "Cards handed over by municipality of the place",
    ),
    "report.completion": ("完了報告書（様式4）実績", "Completion report: results"),
    "report.worklog": ("業務日誌 {date}", "Daily work log, {date}"),
    "report.worklog_kept_title": (
        "業務日誌 {date}（訪問 {visit}）",
        "Work log {date} (visit {visit})",
    ),
    "report.monthly": ("月次報告 {month} — 訪問", "Monthly report {month}: visits"),
    "scope.period": ("期間 {start} 〜 {end}", "Period {start} to {end}"),
    "scope.municipalities": ("市区町村 {names}", "Municipalities: {names}"),
    "col.applied": ("申請", "applied"),
    "col.forwarded": ("回付", "forwarded"),
    "col.declined": ("同意なし", "declined"),
    "col.abandoned": ("中断", "abandoned"),
    "col.total": ("合計", "total"),
    "col.site": ("会場", "site"),
    "col.place": ("実施場所", "place"),
    "col.municipality": ("市区町村", "municipality"),
    "col.residence": ("住所地", "municipality of residence"),
    "col.date": ("日付", "date"),
    "col.month": ("月", "month"),
    "col.age_band": ("年代", "age band"),
    "col.item": ("項目", "item"),
    "col.value": ("内容", "value"),
    "col.count": ("件数", "count"),
    "col.mode": ("方式", "mode"),
    "col.visits": ("交付支援回数", "visits"),
    "col.cards": ("交付枚数", "cards"),
    "col.kind": ("種別", "kind"),
    "col.lead": ("責任者", "lead"),
    "col.staff_count": ("人数", "staff"),
    "col.time": ("時刻", "time"),
    "col.level": ("レベル", "level"),
    "col.verified": ("端末の検証", "verified by the device"),
    "col.signed": ("署名", "signed by the enrolled key"),
    "col.status": ("状態", "status"),
    "col.what": ("何が", "what"),
    "col.occurred": ("発生日", "occurred"),
    "col.number": ("番号", "No."),
    "sex.female": ("女性", "female"),
    "sex.male": ("男性", "male"),
    "sex.other": ("その他", "other"),
    "sex.unknown": ("不明", "unknown"),
    "age.unknown": ("不明", "unknown"),
    "age.band": ("{low}〜{high}歳", "{low} to {high}"),
    "age.over": ("{low}歳以上", "{low} and over"),
    "mode.support": ("申請サポート方式", "application support"),
    "mode.reception": ("出張申請受付方式", "municipal reception"),
    "level.session": ("申請ごと", "session"),
    "level.daily": ("日次", "daily"),
    "level.contract-end": ("契約終了", "contract end"),
    "unscheduled": ("予定外（ハブに訪問予定なし）", "unscheduled (no visit on the hub)"),
    "note.by_place": (
        "端末で選んだ訪問（なければ端末と日の予定）で集計",
        "counted by the visit chosen on the tablet (else the tablet's plan for the day)",
    ),
    "worklog.site": ("会場", "site"),
    "worklog.kind": ("種別", "kind"),
    "worklog.lead": ("責任者", "lead"),
    "worklog.staff": ("従事者", "staff present"),
    "worklog.times": ("時間", "times"),
    "worklog.incidents": ("事故等", "incidents"),
    "worklog.incident_reports": ("事故報告", "incident reports"),
    "worklog.cards": ("交付枚数", "cards handed over"),
    "worklog.remarks": ("所見", "remarks"),
    "worklog.sessions_by_outcome": ("件数", "Sessions by outcome"),
    "worklog.device_status": ("端末と消去の状況", "Device and erasure status"),
    "worklog.sessions": ("件数", "sessions"),
    "worklog.erasure_records": ("消去記録", "erasure records"),
    "worklog.signature_checked": ("ハブの署名確認", "signature checked"),
    "worklog.chain": ("記録の連鎖", "record chain"),
    "chain.intact": (
        "連続: {records}件、末尾 {head}",
        "intact: {records} records, head {head}",
    ),
    "chain.broken": ("不連続: {problems}", "BROKEN: {problems}"),
    "monthly.erasure": ("消去", "Erasure"),
    "monthly.device_records": ("端末の消去記録", "device erasure records"),
    "monthly.packets_erased": (
        "受領確認後に消去した封緘データ",
        "sealed packets erased after receipt",
    ),
    "monthly.incidents": ("事故等", "Incidents"),
    "monthly.incidents_note": (
        "端末の警報は下書きとして自動で挙がります",
        "device alarms are raised as drafts",
    ),
    "monthly.no_incidents": ("なし（警報もなし）", "none, and no device alarm"),
    "completion.support_days": ("申請サポート実施日数", "application-support days"),
    "completion.target_days": ("目標日数", "target days"),
    "completion.met": ("達成", "met"),
    "completion.first_day": ("初日", "first day"),
    "completion.last_day": ("最終日", "last day"),
    "completion.sessions": ("申請サポート件数", "sessions"),
    "completion.issuance_days": ("交付支援実施日数", "card-issuance-support days"),
    "completion.cap": ("広告費上限（交付枚数×2,000円）", "advertising cap (cards × 2,000 yen)"),
    "yen": ("{amount}円", "{amount} yen"),
    # ---- devices and municipalities ----------------------------------------------------------
    "devices.note": (
        "端末が送ってくる状態の報告（定義の経過・未送信・版）と、消去記録・受信記録から表示します。"
        "赤い行は、消去の失敗、ウイルスの検出、または24時間以内の警報がある端末です。",
        "From what the tablets report (definitions age, backlog, version) and from their erasure"
        " records and what the hub received. A red row is a device with a failed erasure, a"
        " virus found, or an alarm in the last 24 hours.",
    ),
    "devices.last_contact": ("最終受信", "Last contact"),
    "devices.av_age": ("ウイルス定義の経過", "Antivirus definitions age"),
    "devices.av_findings": ("ウイルス検出", "Antivirus findings"),
    "devices.backlog": ("未送信の記録", "Outbox backlog"),
    "devices.version": ("ソフトウェアの版", "Software version"),
    "devices.last_wipe": ("最後の消去", "Last erasure"),
    "devices.operators": ("職員名簿", "Operator roster"),
    "devices.kernel_audit": ("監査ログ（カーネル）", "Kernel audit trail"),
    "devices.integrity": ("ファイル改ざん検査", "File integrity"),
    "devices.integrity_ok": ("{at} 変更なし", "{at}: no change"),
    "devices.integrity_changed": (
        "{at} 変更あり: 追加 {added}・削除 {removed}・変更 {changed}（{paths}）",
        "{at}: CHANGED: {added} added, {removed} removed, {changed} changed ({paths})",
    ),
    "devices.integrity_error": ("{at} 検査できず（{error}）", "{at}: check failed ({error})"),
    "devices.audit_summary": (
        "{at} までの{window}: {events}件（{keys}）、欠落 {lost}、auditd {daemon}",
        "{window} to {at}: {events} events ({keys}), lost {lost}, auditd {daemon}",
    ),
    "devices.audit_window": ("前回から", "since the last report"),
    "devices.audit_first": ("記録開始から", "since the log began"),
    "devices.audit_running": ("稼働", "running"),
    "devices.audit_stopped": ("停止", "STOPPED"),
    "devices.audit_unlocked": ("（規則が未固定）", " (rules not locked)"),
    "devices.alarms": ("警報（24時間）", "Alarms (24 h)"),
    "devices.revoke": ("失効", "Revoke"),
    "devices.not_reported": ("報告なし", "not reported"),
    "devices.never": ("受信なし", "never"),
    "devices.no_definitions": ("定義なし（未更新）", "no definitions (never updated)"),
    "devices.backlog_value": ("{n}件", "{n} records"),
    "devices.backlog_oldest": ("{n}件（最も古いもの {age}前）", "{n} records (oldest {age} old)"),
    "devices.reported_at": ("（{at} の報告）", "(reported {at})"),
    "devices.backlog_refused": ("、拒否 {n}件", ", {n} refused"),
    "devices.findings": ("{n}件検出", "{n} found"),
    "devices.findings_refused": ("{n}件検出・受付停止中", "{n} found, sessions refused"),
    "devices.wipe_ok": ("{at} {level} 消去を確認", "{at} {level}: erasure verified"),
    "devices.wipe_failed": ("{at} {level} 消去を確認できず", "{at} {level}: erasure NOT verified"),
    "devices.roster_current": ("最新", "current"),
    "devices.roster_behind": ("古い（{at} に適用）", "behind (applied {at})"),
    "devices.roster_missing": ("未受信", "not received"),
    "devices.alarm_count": ("{n}件: {what}（{at}）", "{n}: {what} ({at})"),
    "alarm.session-refused": ("受付を拒否", "session refused"),
    "alarm.wipe-failed": ("消去の失敗", "erasure failed"),
    "devices.enrol_title": ("登録コード", "Enrolment code"),
    "devices.code_for": (
        "{device} の登録コード（1回だけ使えます。{until} まで有効）:",
        "Enrolment code for {device} (works once, until {until} JST):",
    ),
    "devices.code_use": (
        "タブレットの登録画面で、このコードとハブのアドレスを入力します。このコードは二度と表示されません。",
        "Type it with the hub address on the tablet's enrolment screen. It is not shown again.",
    ),
    "devices.own_keys": (
        "端末は自分で鍵を作ります。ハブは秘密鍵を持ちません。失効した端末をもう一度登録するときも、新しいコードを作ります。",
        "The tablet makes its own keys; the hub keeps no private key. A revoked tablet is"
        " enrolled again with a new code.",
    ),
    "devices.create_code": ("コードを作る", "Create code"),
    "devices.device_id": ("端末ID", "Device ID"),
    "devices.site": ("設置場所", "Site"),
    "devices.hours": ("有効時間（時間）", "Valid for (hours)"),
    "devices.bad_enrol": (
        "端末ID（63文字まで）と有効時間（0.1〜720時間）を確かめてください。",
        "Check the device ID (up to 63 characters) and the hours (0.1 to 720).",
    ),
    "devices.no_code": ("コードを作れません: {reason}", "No code made: {reason}"),
    "devices.not_revoked": ("失効できません: {reason}", "Not revoked: {reason}"),
    "devices.revoked": ("{device} を失効しました。", "{device} is revoked."),
    "municipalities.intro": (
        "申請データ（封緘データ）を受け取れるのは、受信鍵（公開鍵）をハブに登録した市区町村だけです。"
        "端末は、その市区町村だけを申請先として示し、そのほかの市区町村は回付先として示します。",
        "Only municipalities whose receiver key (public key) is registered on the hub can"
        " receive application packets. The tablets offer only those for an application, and"
        " the others for forwarding.",
    ),
    "municipalities.receivers": ("申請先にできる市区町村", "Can receive applications"),
    "municipalities.forward_only": ("回付のみの市区町村", "Forwarding only"),
    "municipalities.forward_note": (
        "申請書を回付します（紙の申請書を市区町村へ送ります）。",
        "Their forms are forwarded (the paper form goes to the municipality).",
    ),
    "municipalities.code": ("団体コード", "Code"),
    "municipalities.key": ("受信鍵の指紋", "Receiver key fingerprint"),
    "municipalities.reason": ("理由", "Reason"),
    "municipalities.no_key": (
        "受信鍵が登録されていないため、申請データを受け取れません",
        "no receiver key is registered, so it cannot receive application packets",
    ),
    "municipalities.no_receivers": (
        "受信鍵を登録した市区町村はまだありません",
        "No municipality has registered a receiver key yet",
    ),
    "municipalities.unknown_keys": ("表にない市区町村の受信鍵", "Receiver keys outside the table"),
    "municipalities.unknown_keys_note": (
        "次の団体コードの受信鍵が登録されていますが、この端末群の市区町村表にありません。設定の都道府県を確かめてください。",
        "These codes have receiver keys but are not in the kit's municipality table: check the"
        " configured prefectures.",
    ),
    # ---- evidence ------------------------------------------------------------------------------
    "evidence.heading": ("消去記録", "Erasure evidence"),
    "evidence.title": ("消去記録 {date}{suffix}", "Erasure records, {date}{suffix}"),
    "evidence.problems": (
        "要確認: {n}件（赤い行）。消去記録のない申請、消去を確認できなかった申請、"
        "記録の連鎖の欠けがあります。",
        "{n} to check (red rows): sessions without a passing erasure record, failed erasures"
        " or gaps in a record chain.",
    ),
    "evidence.no_problems": (
        "すべての申請に、消去を確認した記録があります。記録の連鎖に欠けはありません。",
        "Every session has a passing erasure record, and no record chain has a gap.",
    ),
    "evidence.sessions_title": (
        "申請ごとの消去（端末・日ごと）",
        "Erasure of every session, per device and day",
    ),
    "evidence.sessions_note": (
        "端末の操作記録にある申請ごとに、その申請の消去記録を照合します",
        "each session in the device's audit events is matched with its erasure record",
    ),
    "evidence.sessions": ("申請数", "sessions"),
    "evidence.erased": ("消去を確認", "erasure verified"),
    "evidence.failed": ("消去に失敗", "erasure failed"),
    "evidence.missing": ("消去記録なし", "no erasure record"),
    "evidence.chain": ("記録の連鎖", "record chain"),
    "evidence.verdict": ("判定", "verdict"),
    "evidence.verdict_ok": ("問題なし", "all erased"),
    "evidence.verdict_bad": ("要確認", "CHECK"),
    "evidence.session_rows_title": ("要確認の申請", "Sessions to check"),
    "evidence.session": ("申請の番号（sid）", "session (sid)"),
    "evidence.problem": ("問題", "problem"),
    "evidence.problem_missing": ("消去記録が届いていません", "no erasure record has arrived"),
    "evidence.problem_failed": ("消去を確認できませんでした: {why}", "erasure failed: {why}"),
    "evidence.problem_unsigned": (
        "消去記録の署名を確認できません",
        "the erasure record's signature does not verify",
    ),
    "evidence.records_title": ("消去記録", "Erasure records"),
    "evidence.record": ("記録ID", "record"),
    "evidence.chains_title": (
        "記録の連鎖（ハブにあるすべての記録）",
        "Erasure-record chain per device (all records the hub holds)",
    ),
    "evidence.chain_records": ("連鎖の記録数", "records on the chain"),
    "evidence.head": ("末尾", "head"),
    "evidence.intact": ("連続", "intact"),
    "evidence.sanitization_title": (
        "データ消去証明書 {date}{suffix}",
        "Sanitization certificates, {date}{suffix}",
    ),
    "evidence.result": ("結果", "result"),
    "evidence.pass": ("合格", "pass"),
    "evidence.fail": ("不合格", "FAIL"),
    "evidence.closes_chain": ("記録の連鎖を閉じる（現在）", "closes the record chain (now)"),
    "evidence.checked": ("確認内容", "checked"),
    "evidence.uploaded_by": ("登録者", "uploaded by"),
    "evidence.certificate": ("証明書ID", "certificate"),
    "evidence.hub_title": (
        "ハブ上の封緘データ消去（受領確認後）",
        "Sealed packets erased on the hub after receipt",
    ),
    "evidence.confirmed_by": ("受領確認者", "confirmed by"),
    "evidence.device_certificates": ("端末証明書", "Device certificates"),
    "evidence.serial": ("シリアル番号", "serial"),
    "evidence.signing_key": (
        "署名鍵（fieldkit certificate verify --public-key に使う）",
        "signing key (for fieldkit certificate verify --public-key)",
    ),
    "evidence.records_jsonl": (
        "{device} の消去記録（JSON Lines）",
        "erasure records of {device} (JSON lines)",
    ),
    "evidence.certificates_json": ("証明書（登録されたJSON）:", "Certificates as uploaded:"),
    "evidence.add_certificate": ("消去証明書の登録", "Add a sanitization certificate"),
    "evidence.add_certificate_note": (
        "端末の契約終了時の消去で作られたJSONを登録します。ハブは署名と消去記録の連鎖を確認します。作成するコマンド:",
        "The JSON written at contract end; the hub checks its signature and that it closes"
        " the device's erasure-record chain. Made by:",
    ),
    "evidence.certificate_file": ("消去証明書（JSON）", "Sanitization certificate (JSON)"),
    "evidence.not_recorded": ("登録できません: {reason}", "Not recorded: {reason}"),
    "evidence.already": (
        "登録済みです（証明書 {certificate}）",
        "Already recorded: certificate {certificate}",
    ),
    "evidence.recorded": (
        "証明書 {certificate} を登録しました（{verdict}）。",
        "Recorded certificate {certificate} ({verdict}).",
    ),
    "evidence.not_certificate": (
        "データ消去証明書ではありません（{detail}）",
        "not a sanitization certificate ({detail})",
    ),
    "evidence.bad_certificate_id": (
        "証明書IDは16進数32桁です",
        "the certificate ID must be 32 hexadecimal digits",
    ),
    "evidence.not_device": ("端末IDではありません: {device}", "not a device ID: {device}"),
    "evidence.not_enrolled": (
        "端末 {device} はこのハブに登録されていません",
        "device {device} is not enrolled on this hub",
    ),
    "evidence.bad_date": (
        "証明書の日時 {date} を読めません",
        "the certificate's date {date} is not a date and time",
    ),
    "evidence.not_text": ("UTF-8 のテキストではありません", "not UTF-8 text"),
    # ---- incident drafts the hub writes from a device alarm (alarms.py; stored in Japanese,
    # the language of the incident report) ----------------------------------------------------
    "alarm_draft.wipe_failed": (
        "消去失敗: 端末 {device} で、受付の後のデータ消去に失敗しました",
        "Erasure failed: a session wipe failed on {device}",
    ),
    "alarm_draft.unverified": (
        "消去未検証: 端末 {device} の消去記録（{level}）は、消去を確認できなかったと記録しています",
        "Erasure not verified: an erasure record ({level}) from {device} says the wipe was"
        " not verified",
    ),
    "alarm_draft.virus": (
        "ウイルス検出: 端末 {device} のウイルス対策が、感染したファイルを{count}件見つけました",
        "Virus found: the antivirus on {device} found {count} infected file(s)",
    ),
    "alarm_draft.chain": (
        "消去記録の欠落: 端末 {device} の消去記録のつながりが切れています"
        "（問題{n}件。詳細は消去の証跡のページ）",
        "Erasure records missing: the erasure-record chain of {device} is broken"
        " ({n} problem(s); see the erasure evidence page)",
    ),
    "alarm_draft.revoked": (
        "端末の失効: 端末 {device} は失効しました（証明書シリアル {serial}）。"
        "紛失・盗難ではありませんか",
        "Device revoked: {device} was revoked (certificate serial {serial}); was it lost or"
        " stolen?",
    ),
    "alarm_draft.integrity": (
        "ファイル改ざん検査: 端末 {device} のシステムファイルが、イメージ作成時の基準と"
        "異なります（追加 {added}件・削除 {removed}件・変更 {changed}件: {paths}）",
        "File integrity: system files on {device} differ from the image's baseline"
        " ({added} added, {removed} removed, {changed} changed: {paths})",
    ),
    "alarm_draft.integrity_error": (
        "ファイル改ざん検査の失敗: 端末 {device} で検査を実行できませんでした",
        "File integrity check failed: the check could not run on {device}",
    ),
    "alarm_draft.where": ("端末 {device}", "device {device}"),
    # ---- what a device's records say, written in English by the device (a signed erasure
    # record's failures, a chain's problems): said here by their pattern (reason_words) -------
    "reason.no_answer": (
        "{holder}が消去の確認に応答しませんでした",
        "holder {holder} did not answer",
    ),
    "reason.not_forgotten": (
        "{holder}がデータを消せませんでした（{problem}）",
        "holder {holder} could not forget ({problem})",
    ),
    "reason.residue": ("{location}: {status}（{found}件）", "{location}: {status} ({found} found)"),
    "reason.fork": (
        "{n}件の記録が同じ記録 {head} の次だと言っています（分岐）",
        "{n} records claim to follow {head} (a fork)",
    ),
    "reason.loop": (
        "記録 {record} がつながりの前の方へ戻っています（輪）",
        "record {record} leads back into the chain (a loop)",
    ),
    "reason.hash": (
        "記録 {record}: 内容がハッシュと合いません",
        "record {record}: content does not match its hash",
    ),
    "reason.signer": (
        "記録 {record}: 登録された鍵ではない鍵で署名されています",
        "record {record}: signed by another key",
    ),
    "reason.signature": (
        "記録 {record}: 署名を確認できません",
        "record {record}: signature does not verify",
    ),
    "reason.unreached": (
        "{total}件中{missing}件の記録に、最初の記録からたどり着けません"
        "（その前の記録が届いていないか、分岐しています）",
        "{missing} of {total} records are not reached from the first one (a record before"
        " them is missing, or they fork)",
    ),
    # sanitize.chain_problems and evidence.chain_note: a certificate against the chain
    "reason.records": ("消去記録: {problem}", "erasure records: {problem}"),
    "reason.no_chain": (
        "証明書に消去記録のつながりが書かれていません（この仕組みより前に作られた証明書）",
        "the certificate states no erasure-record chain (made before fieldkit did)",
    ),
    "reason.ends_apart": (
        "消去記録は{records}件（最後は {head}）で終わり、"
        "証明書は{claimed}件（最後は {claimed_head}）で終わっています",
        "the erasure records end after {records} at {head}, the certificate after {claimed}"
        " at {claimed_head}",
    ),
    "reason.broken_when_sanitized": (
        "端末は、完全消去のときに自分の消去記録のつながりが切れていたと記録しています",
        "the device found its own chain broken when it was sanitized",
    ),
    "reason.chain_ok": ("{records}件の記録、最後は {head}", "{records} records, ending at {head}"),
    "reason.not_enrolled": (
        "このハブに登録されていない端末です",
        "device not enrolled on this hub",
    ),
    # English: the device's own names, so the English page says what the record says.
    # ---- what an audit entry is about (audit.html: said beside the stored target) ----------
    "target.incident": ("事故報告 第{n}号", "incident report No. {n}"),
    "target.visit": ("訪問 {n}", "visit {n}"),
    "target.pickup": ("受け取り {n}", "pick-up {n}"),
    "target.request": ("訪問依頼 {n}", "visit request {n}"),
    "target.paper": ("紙の廃棄記録 {n}", "paper destruction {n}"),
    "target.facility": ("会場 {n}", "facility {n}"),
    "target.expense": ("経費 {n}", "expense {n}"),
    "holder.capture": ("カメラ", "capture"),
    "holder.printing": ("印刷", "printing"),
    "holder.kiosk": ("受付画面", "kiosk"),
    "holder.card": ("カードリーダー", "card"),
    "holder.sync": ("送信", "sync"),
    "location_status.residue": ("消去の後にデータが残っていました", "residue"),
    "location_status.present": ("消すべきものが残っています", "present"),
    "location_status.not-readable": ("読み取れず確かめられません", "not-readable"),
    "location_status.incomplete": ("確認が途中で終わりました", "incomplete"),
    "location_status.absent": ("ありません", "absent"),
    "location_status.clean": ("問題なし", "clean"),
}

CATALOGUE = TextCatalogue(TEXT)


def lang() -> Lang:
    """The reader's language: the request's, or Japanese outside a request (exports, CLI)."""
    if has_request_context():
        chosen: Lang = g.get("lang", "ja")
        return chosen
    return "ja"


def t(key: str, /, **values: object) -> str:
    """The phrase ``key`` in the reader's language."""
    return CATALOGUE.say(key, lang(), **values)


class Lazy:
    """A phrase named at import (a form label, a validator's message), said when shown."""

    __slots__ = ("key", "values")

    def __init__(self, key: str, /, **values: object) -> None:
        if key not in CATALOGUE:
            raise KeyError(f"no text catalogue entry {key!r}")
        self.key = key
        self.values = values

    def __str__(self) -> str:
        return t(self.key, **self.values)

    def __html__(self) -> str:
        return str(escape(str(self)))

    def __repr__(self) -> str:
        return f"Lazy({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(self.key)

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(str(self))

    def __add__(self, other: Any) -> str:
        return str(self) + str(other)

    def __mod__(self, values: Any) -> str:
        # wtforms fills its own placeholders with %; our phrases have none.
        said: str = str(self) % values
        return said


def lazy(key: str, /, **values: object) -> str:
    """A ``Lazy`` phrase where a ``str`` is expected (wtforms' labels and messages): it is said,
    in the reader's language, whenever it is shown, formatted, joined or compared."""
    return cast(str, Lazy(key, **values))


TARGET = re.compile(r"(?P<kind>[a-z]+) (?P<n>\d+)")


def target_label(target: str) -> str:
    """What an audit entry is about, in words ('' when its target is an id or a name, which
    is shown as stored)."""
    found = TARGET.fullmatch(target or "")
    if found is None or f"target.{found['kind']}" not in CATALOGUE:
        return ""
    return t(f"target.{found['kind']}", n=found["n"])


def action_label(action: str) -> str:
    """An audit action as the reader reads it (the code is shown beside it)."""
    key = f"action.{action.split(':')[0]}"
    return t(key) if key in CATALOGUE else t("action.other")


# The English a device writes into its records (wipe/record.py: ``failures_of``,
# ``follow_chain``, ``record_problems``; and chains.py), by pattern: the signed record keeps its
# words, the page says them in the reader's language. A reason no pattern knows is shown as is.
REASONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), key)
    for p, key in (
        (r"holder (?P<holder>\S+) did not answer", "reason.no_answer"),
        (r"holder (?P<holder>\S+) could not forget \((?P<problem>.*)\)", "reason.not_forgotten"),
        (r"(?P<location>[^:]+): (?P<status>\S+) \((?P<found>\d+) found\)", "reason.residue"),
        (r"(?P<n>\d+) records claim to follow (?P<head>[0-9a-f]+) \(a fork\)", "reason.fork"),
        (r"record (?P<record>\S+) leads back into the chain \(a loop\)", "reason.loop"),
        (r"record (?P<record>\S+): content does not match its hash", "reason.hash"),
        (r"record (?P<record>\S+): signed by another key", "reason.signer"),
        (r"record (?P<record>\S+): signature does not verify", "reason.signature"),
        (
            r"(?P<missing>\d+) of (?P<total>\d+) records are not reached from the first one"
            r" \(a record before them is missing, or they fork\)",
            "reason.unreached",
        ),
        (r"device not enrolled on this hub", "reason.not_enrolled"),
        (r"erasure records: (?P<problem>.+)", "reason.records"),
        (
            r"the certificate states no erasure-record chain \(made before fieldkit did\)",
            "reason.no_chain",
        ),
        (
            r"the erasure records end after (?P<records>\d+) at (?P<head>[0-9a-f]+),"
            r" the certificate after (?P<claimed>\d+) at (?P<claimed_head>[0-9a-f]+)",
            "reason.ends_apart",
        ),
        (
            r"the device found its own chain broken when it was sanitized",
            "reason.broken_when_sanitized",
        ),
        (r"(?P<records>\d+) records, ending at (?P<head>[0-9a-f]+)", "reason.chain_ok"),
    )
]


def reason_words(reason: str) -> str:
    """One reason a device's record gives, in the reader's language."""
    for pattern, key in REASONS:
        found = pattern.fullmatch(reason.strip())
        if found:
            values = found.groupdict()
            if "problem" in values and key == "reason.records":
                values["problem"] = reason_words(values["problem"])  # a chain's own problem
            for name, prefix in (("holder", "holder."), ("status", "location_status.")):
                if name in values and f"{prefix}{values[name]}" in CATALOGUE:
                    values[name] = t(f"{prefix}{values[name]}")
            return t(key, **values)
    return reason


def reasons_words(reasons: list[str] | tuple[str, ...], limit: int = 300) -> str:
    """A record's reasons, each in the reader's language, joined (at most ``limit`` chars)."""
    return "; ".join(reason_words(str(r)) for r in reasons)[:limit]
