"""Open an HTML page in headless Chromium and report what a reader would see: images that load, tables.

Debian's ``chromium`` package (``.ci/run`` installs it). Where it is absent the calling test is skipped
with the reason, unless ``RC_REQUIRE_CHROMIUM=1`` (``.ci/run`` sets it): then that is a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Run once the page has loaded: every <img> with its natural width, every table caption, as JSON in the DOM.
_PROBE = """<script>
window.addEventListener("load", () => {
  const seen = {
    images: [...document.images].map(i => ({alt: i.alt, width: i.complete ? i.naturalWidth : 0})),
    tables: [...document.querySelectorAll("table caption")].map(c => c.textContent),
  };
  const out = document.createElement("pre");
  out.id = "rc-probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The Chromium executable; skips the test (fails it under ``RC_REQUIRE_CHROMIUM=1``) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no chromium on PATH (Debian: apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("RC_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"RC_REQUIRE_CHROMIUM=1 but {reason}")
        pytest.skip(reason)
    return found


def rendered(page: Path) -> dict:
    """Load ``page`` (a copy with a probe script) in headless Chromium with a fresh profile.

    Returns
    -------
    dict
        ``images``: ``[{"alt", "width"}]`` (``width`` is the natural width, 0 for an image that did not
        load); ``tables``: the table captions.
    """
    executable = chromium()
    with tempfile.TemporaryDirectory(prefix="rc-chromium-") as tmp:
        probed = Path(tmp) / page.name
        probed.write_text(page.read_text(encoding="utf-8").replace("</body>", f"{_PROBE}</body>"))
        done = subprocess.run(
            [executable, *FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", "--dump-dom",
             probed.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    found = re.search(r'<pre id="rc-probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found is not None, f"chromium exit {done.returncode}, no probe in its DOM:\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))
