"""R11, R30: Debian's Chromium with the managed policy rendered from policies/browser.yaml.

A local form with autocomplete fields and a password field is filled and submitted, the
browser is restarted on the same profile, and the profile's SQLite databases are read:
with the policy there are no rows in the autofill, logins and history tables, and the typed
values are nowhere in the profile except Chromium's session-restore file (which the wipe
service discards with the whole tmpfs profile); without it the same run leaves rows behind.

Chromium reads managed policies only from /etc/chromium/policies/managed. So that the test
never changes the machine's browser setup (other tests and people use it), Chromium runs
in a private mount namespace where a temporary directory is bind-mounted over /etc/chromium.

Two deliberate differences from the production policy, both outside what R11 is about:
DevTools is allowed (Playwright drives the browser through its protocol; the kiosk policy
forbids it), and the test server's port is added to the URL allowlist.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fieldkit.policies import BrowserPolicy, chromium_policy, load_policies
from tests.support.browser import CHROMIUM_BINARY
from tests.support.paths import REPO_POLICIES

pytestmark = pytest.mark.skipif(
    not (CHROMIUM_BINARY.exists() and shutil.which("unshare")) or os.geteuid() != 0,
    reason="needs Debian's chromium, unshare, and root for a mount namespace",
)

# Synthetic values only; distinctive so that a byte search of the profile cannot miss them.
TYPED = {
    "fullname": "Fieldkit Testname Zq",
    "email": "zq-residue@example.org",
    "tel": "0399990001",
    "address": "9-9-9 Residuecho",
    "postal": "9990001",
    "city": "Residuecity",
    "username": "zq-operator",
    "password": "Zq-pass-residue-1",
}

FORM = """<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>申請</title></head>
<body><form action="/submitted" method="post">
<input id="fullname" name="fullname" autocomplete="name">
<input id="email" name="email" type="email" autocomplete="email">
<input id="tel" name="tel" type="tel" autocomplete="tel">
<input id="address" name="address" autocomplete="street-address">
<input id="postal" name="postal" autocomplete="postal-code">
<input id="city" name="city" autocomplete="address-level2">
<input id="username" name="username" autocomplete="username">
<input id="password" name="password" type="password" autocomplete="current-password">
<button id="apply" type="submit">申請</button>
</form></body></html>"""


class FormPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._send(FORM)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send("<!doctype html><html><body><p id='done'>受け付けました</p></body></html>")

    def _send(self, body: str) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def form_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FormPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def chromium_in_own_mount_namespace(tmp: Path, policy: dict[str, object] | None) -> Path:
    """A launcher that shows Chromium ``tmp/etc`` as /etc/chromium, and nothing else changes."""
    etc = tmp / "etc"
    managed = etc / "policies" / "managed"
    managed.mkdir(parents=True)
    if policy is not None:
        (managed / "fieldkit.json").write_text(json.dumps(policy))
    launcher = tmp / "chromium"
    launcher.write_text(
        "#!/bin/sh\n"
        "exec unshare --mount --propagation private sh -c "
        f'\'mount --bind "$0" /etc/chromium && exec {CHROMIUM_BINARY} "$@"\' {etc} "$@"\n'
    )
    launcher.chmod(0o755)
    return launcher


@contextmanager
def started_browser(launcher: Path, profile: Path) -> Iterator[Any]:
    """A Playwright page in headless Chromium (through ``launcher``) on the profile folder."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(launcher),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def fill_submit_restart(launcher: Path, profile: Path, url: str) -> None:
    with started_browser(launcher, profile) as page:
        page.goto(url + "/")
        for field, value in TYPED.items():
            # Typed key by key, as a person would (autofill learns from typed input).
            page.locator(f"#{field}").press_sequentially(value)
        page.locator("#apply").click()
        page.locator("#done").wait_for(timeout=10_000)
        page.goto(url + "/again")
    # The restart: a second browser on the same profile, as the next applicant would get.
    with started_browser(launcher, profile) as page:
        page.goto(url + "/")


def row_counts(profile: Path) -> dict[str, int]:
    """Rows in the tables that would carry one applicant's data to the next."""
    tables = {
        "Web Data": [
            "autofill",
            "autofill_profiles",
            "addresses",
            "local_addresses",
            "credit_cards",
        ],
        "Login Data": ["logins"],
        "History": ["urls", "visits", "keyword_search_terms"],
    }
    counts: dict[str, int] = {}
    for database, names in tables.items():
        path = profile / "Default" / database
        if not path.exists():
            continue
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            for name in names:
                if name in present:
                    (n,) = db.execute(f'SELECT count(*) FROM "{name}"').fetchone()  # noqa: S608
                    counts[f"{database}:{name}"] = n
    return counts


def files_holding_typed_values(profile: Path) -> list[str]:
    markers = [v.encode() for v in TYPED.values()]
    markers += [v.encode("utf-16-le") for v in TYPED.values()]
    found = []
    for path in profile.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(m in data for m in markers):
                found.append(str(path.relative_to(profile)))
    return sorted(found)


def test_policy_leaves_no_autofill_logins_or_history(tmp_path: Path, form_url: str) -> None:
    """R11: with the generated managed policy, nothing typed survives a browser restart."""
    browser_policy = load_policies(REPO_POLICIES).browser
    under_test = BrowserPolicy.model_validate(
        browser_policy.model_dump()
        | {
            "allowed_urls": [*browser_policy.allowed_urls, form_url],
            "features": browser_policy.features.model_dump() | {"developer_tools": True},
        }
    )
    policy = chromium_policy(under_test)
    # Only the two documented differences from the production rendering.
    production = chromium_policy(browser_policy)
    differing = {k for k in production if production[k] != policy[k]}
    assert differing == {"DeveloperToolsAvailability", "URLAllowlist"}

    profile = tmp_path / "profile"
    fill_submit_restart(chromium_in_own_mount_namespace(tmp_path, policy), profile, form_url)

    counts = row_counts(profile)
    assert counts.get("Web Data:autofill") == 0, counts
    assert counts.get("Login Data:logins") == 0, counts
    assert counts.get("History:urls") == 0, counts
    assert counts.get("History:visits") == 0, counts
    assert sum(counts.values()) == 0, counts
    # No policy stops Chromium's session-restore file from keeping the last page's form
    # state (measured: RestoreOnStartup 1, 4 and 5 all keep it). That is why the kiosk
    # runs on a tmpfs profile that the wipe service discards after every applicant
    # (architecture §6): the residue must be there and nowhere else, so the wipe knows it.
    residue = files_holding_typed_values(profile)
    assert all(path.startswith("Default/Sessions/Session_") for path in residue), residue


def test_without_the_policy_the_same_run_leaves_rows(tmp_path: Path, form_url: str) -> None:
    """R11, the protection off: the check above fails on an unmanaged Chromium.

    Chromium without a policy keeps the form history and the visited URLs. It stores a
    password only after a person accepts its save prompt, which a headless run never
    shows, so ``logins`` stays empty here either way; the policy's
    PasswordManagerEnabled=false is shown by the zero count above and by chrome's own
    policy status in the image check.
    """
    profile = tmp_path / "profile"
    fill_submit_restart(chromium_in_own_mount_namespace(tmp_path, None), profile, form_url)

    counts = row_counts(profile)
    assert counts["Web Data:autofill"] >= len(TYPED) - 1, counts  # every field but the password
    assert counts["History:urls"] > 0, counts
    assert counts["History:visits"] > 0, counts
    assert "Default/Web Data" in files_holding_typed_values(profile)


def test_chromium_accepts_every_rendered_policy(tmp_path: Path) -> None:
    """R30: Debian's Chromium knows and applies every key we render (chrome://policy status).

    An unknown or malformed key would be silently ignored by the browser; this catches it.
    """
    browser_policy = load_policies(REPO_POLICIES).browser
    policy = chromium_policy(browser_policy)
    policy["DeveloperToolsAvailability"] = 1  # Playwright needs DevTools (see module doc)
    policy["URLAllowlist"] = [*policy["URLAllowlist"], "chrome://policy"]
    # A key Chromium does not know: the check below must see it refused.
    launcher = chromium_in_own_mount_namespace(tmp_path, policy | {"FieldkitNoSuchPolicy": True})
    with started_browser(launcher, tmp_path / "p") as page:
        page.goto("chrome://policy")
        # The page draws each policy as a row in shadow DOM: name, value, source, applies
        # to, level, status (Playwright's CSS selectors pierce open shadow roots).
        page.get_by_text("PasswordManagerEnabled", exact=True).first.wait_for(timeout=10_000)
        rows = page.locator("policy-row div.policy.row").evaluate_all(
            """rows => rows.map(row => [
                row.querySelector("#name").textContent.trim(),
                row.querySelector(".messages").textContent.trim(),
            ])"""
        )
    listed: dict[str, str] = {}
    for name, status in rows:
        listed.setdefault(name, status)
    assert listed.get("FieldkitNoSuchPolicy", "OK") not in {"OK", "Deprecated"}, listed
    statuses = {key: listed.get(key, "not listed") for key in policy}
    # "Deprecated" still applies the value (the two boolean autofill keys, kept for older builds).
    assert {k: s for k, s in statuses.items() if s not in {"OK", "Deprecated"}} == {}
    assert statuses["AutofillSettings"] == "OK"
    assert statuses["PasswordManagerEnabled"] == "OK"
