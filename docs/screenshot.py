"""The README's asset-graph screenshot: headless Chromium driven over the DevTools protocol (the community dialog
is skipped), against `make dev PORT=3999` after `make demo`. Needs `apt-get install chromium`.

    .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import websockets

URL = "http://127.0.0.1:3999/locations/embeddings_pipeline/asset-groups/embeddings"
OUT = Path(__file__).with_name("asset-graph.png")
DEVTOOLS = "http://127.0.0.1:9333/json"
SKIP_DIALOG = (
    "[...document.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Skip').forEach(b => b.click())"
)


def page_socket() -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(DEVTOOLS) as answer:  # noqa: S310 (a local DevTools endpoint)
                tabs = json.load(answer)
            return next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
        except (OSError, StopIteration):
            time.sleep(0.3)
    raise RuntimeError("Chromium's DevTools endpoint did not answer")


async def capture(socket: str) -> bytes:
    async with websockets.connect(socket, max_size=50_000_000) as ws:
        ids = iter(range(1, 1_000_000))

        async def call(method: str, **params: object) -> dict:
            call_id = next(ids)
            await ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == call_id:
                    return message.get("result", {})

        await call("Page.enable")
        await call("Page.navigate", url=URL)
        await asyncio.sleep(12)  # the UI loads the graph and its partitions
        for _ in range(3):
            await call("Runtime.evaluate", expression=SKIP_DIALOG)
            await asyncio.sleep(2)
        shot = await call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


def main() -> None:
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
         "--remote-debugging-port=9333", "--user-data-dir=/tmp/chromium-screenshot", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        OUT.write_bytes(asyncio.run(capture(page_socket())))
    finally:
        browser.terminate()


if __name__ == "__main__":
    main()
