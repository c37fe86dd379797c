"""A small headless-Chromium driver over the DevTools protocol's pipe transport (no websocket library).

Chromium started with ``--remote-debugging-pipe`` reads JSON commands from file descriptor 3
and writes replies and events to descriptor 4, each message ended by a NUL byte. This module
opens one page, loads a file, and answers what the report's browser test asks: page overflow,
the results table's fit, console errors, network requests, images, a screenshot, a PDF.

    python tests/cdp.py RUN_DIR/report.html OUT_DIR   # screenshots and the PDF page for docs/report.md
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]

#: JavaScript returning the layout facts the test asserts on
LAYOUT_JS = r"""
(() => {
  const de = document.documentElement;
  const out = {pageWidth: de.scrollWidth, viewport: window.innerWidth, tables: [], images: []};
  for (const w of document.querySelectorAll('div.wrap')) {
    const t = w.querySelector('table');
    out.tables.push({main: !!(t && t.classList.contains('main')), box: w.clientWidth, content: w.scrollWidth,
                     right: Math.round(w.getBoundingClientRect().right),
                     headers: t ? Array.from(t.querySelectorAll('thead th')).map(th => th.innerText) : []});
  }
  for (const img of document.images) {
    out.images.push({alt: img.alt, complete: img.complete, width: img.naturalWidth, shown: img.clientWidth,
                     src: img.src.slice(0, 30)});
  }
  const res = document.getElementById('results');
  const warn = document.getElementById('warnings');
  out.results = res ? {top: res.getBoundingClientRect().top + window.scrollY,
                       bottom: warn ? warn.getBoundingClientRect().top + window.scrollY : de.scrollHeight} : null;
  out.height = de.scrollHeight;
  return out;
})()
"""


def find_chromium() -> Optional[str]:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, binary: Optional[str] = None, timeout: float = 60.0) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("no chromium binary on PATH")
        self.timeout = timeout
        self.events: List[Dict[str, Any]] = []
        self._id = 0
        self._buf = b""
        self.session: Optional[str] = None

    # ---- process and transport ----------------------------------------------------------
    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="sturdynet-chromium-")
        cmd_r, self._cmd_w = os.pipe()   # we write commands, chromium reads fd 3
        self._out_r, out_w = os.pipe()   # chromium writes fd 4, we read

        def child() -> None:  # runs in the child before exec: put the pipe ends at 3 and 4 (inheritable;
            a, b = os.dup(cmd_r), os.dup(out_w)  # os.pipe's own descriptors close on exec)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=child, close_fds=False)  # close_fds would close 3 and 4
        os.close(cmd_r)
        os.close(out_w)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", session=False, wait=False)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> Dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-800:] if self.proc.stderr else ""
                raise RuntimeError(f"chromium closed the DevTools pipe: {err}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: Optional[Dict[str, Any]] = None, session: bool = True,
             wait: bool = True) -> Dict[str, Any]:
        """Send one command (to the page's session unless ``session`` is False) and return its result."""
        self._id += 1
        msg: Dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session is not None:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, method: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        for i, e in enumerate(self.events):
            if e["method"] == method:
                return self.events.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method:
                return m
            if "method" in m:
                self.events.append(m)

    # ---- what the test needs ------------------------------------------------------------
    def open(self, path: Path, width: int = 1280, height: int = 900) -> None:
        """Load a file at a viewport of ``width`` x ``height`` CSS pixels and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.events.clear()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_event("Page.loadEventFired")
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))", await_promise=True)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": await_promise})
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def console_errors(self) -> List[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails", {}).get("text")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(str(p["entry"].get("text")))
        return out

    def requests(self) -> List[str]:
        """URLs the page requested (the page itself and data: URIs included)."""
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, out: Path, clip: Optional[Dict[str, float]] = None) -> None:
        params: Dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", params)["data"]))

    def pdf(self, out: Path) -> None:
        data = self.call("Page.printToPDF", {"preferCSSPageSize": True, "printBackground": True})["data"]
        out.write_bytes(base64.b64decode(data))


def layout_problems(facts: Dict[str, Any]) -> List[str]:
    """Everything wrong with a report's layout facts (from :data:`LAYOUT_JS`): horizontal page
    overflow, a results table wider than its box (clipped, scrolls), a table box past the
    viewport, an image that did not load."""
    out = []
    if facts["pageWidth"] > facts["viewport"]:
        out.append(f"page overflows horizontally: {facts['pageWidth']} px > viewport {facts['viewport']} px")
    for t in facts["tables"]:
        if t["main"] and t["content"] > t["box"]:
            out.append(f"results table clipped: {t['content']} px wide in a {t['box']} px box")
        if t["right"] > facts["viewport"]:
            out.append(f"a table box ends at {t['right']} px, past the viewport")
    for img in facts["images"]:
        if not img["complete"] or img["width"] == 0:
            out.append(f"image not loaded: {img['alt']}")
    if not any(t["main"] for t in facts["tables"]):
        out.append("no results table")
    return out


def main(argv: List[str]) -> int:
    """Screenshots of a report at 1280 px and its results page as PDF and PNG (for docs)."""
    html, out_dir = Path(argv[0]), Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    with Chromium() as c:
        c.open(html, 1280, 900)
        facts = c.evaluate(LAYOUT_JS)
        print("problems:", layout_problems(facts) or "none")
        res = facts["results"]
        c.screenshot(out_dir / "report-1280.png", {"x": 0, "y": max(0, res["top"] - 90), "width": 1280,
                                                   "height": min(1400, res["bottom"] - res["top"] + 90)})
        c.pdf(out_dir / "report.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
