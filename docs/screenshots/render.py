"""Re-create the README screenshots: real kiosk pages, photographed by headless Chromium.

Run: .venv/bin/python docs/screenshots/render.py   (needs Debian's chromium)
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import create_app
from fieldkit.kiosk.operators import hash_password
from fieldkit.kiosk.settings import KioskSection, OperatorEntry

HERE = Path(__file__).resolve().parent


def token(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    if match is None:
        raise RuntimeError("no CSRF token on the page")
    return match.group(1)


def main() -> None:
    operator = OperatorEntry(id="op-01", name="窓口 一郎", password_hash=hash_password("demo-pass"))
    config = DeviceConfig(
        device={"id": "demo-tablet", "site": "長野市 ふれあい会館"},
        kiosk=KioskSection(operators=[operator]),
    )
    app = create_app({"FIELDKIT": config})
    css = (resources.files("fieldkit.kiosk") / "static" / "kiosk.css").read_text()
    pages = {}
    with app.test_client() as client:
        html = client.get("/login").get_data(as_text=True)
        client.post(
            "/login",
            data={"operator_id": "op-01", "password": "demo-pass", "csrf_token": token(html)},
        )
        html = client.get("/").get_data(as_text=True)
        client.post("/", data={"mode": "support", "csrf_token": token(html)})
        html = client.get("/scan").get_data(as_text=True)
        client.post("/scan", data={"application_id": "1" * 23, "csrf_token": token(html)})
        pages["kiosk-terms"] = client.get("/terms").get_data(as_text=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, html in pages.items():
            inline = re.sub(r'<link rel="stylesheet"[^>]+>', f"<style>{css}</style>", html)
            page = Path(tmp) / f"{name}.html"
            page.write_text(inline, encoding="utf-8")
            subprocess.run(
                [
                    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--hide-scrollbars", f"--user-data-dir={tmp}/profile",
                    "--window-size=1024,780", f"--screenshot={HERE / (name + '.png')}",
                    page.as_uri(),
                ],
                check=True, capture_output=True,
            )  # fmt: skip
            print(HERE / (name + ".png"))


if __name__ == "__main__":
    main()
