"""The README's asset-graph screenshot: headless Chromium driven over the DevTools protocol (the community dialog
is skipped), against `make dev PORT=3999` after `make demo`. Needs `apt-get install chromium`.

    .venv/bin/python docs/screenshot.py
"""

import asyncio, base64, json, subprocess, time, urllib.request
import websockets
URL = "http://127.0.0.1:3999/locations/embeddings_pipeline/asset-groups/embeddings"
proc = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                         "--window-size=1600,1000", "--remote-debugging-port=9333", "--user-data-dir=/tmp/chr-prof", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(50):
    try:
        tabs = json.load(urllib.request.urlopen("http://127.0.0.1:9333/json")); break
    except Exception: time.sleep(0.3)
ws_url = [t for t in tabs if t["type"] == "page"][0]["webSocketDebuggerUrl"]
async def main():
    async with websockets.connect(ws_url, max_size=50_000_000) as ws:
        n = 0
        async def call(method, **params):
            nonlocal n; n += 1; await ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == n: return msg.get("result", {})
        await call("Page.enable")
        await call("Page.navigate", url=URL)
        await asyncio.sleep(12)
        for _ in range(3):
            await call("Runtime.evaluate", expression="[...document.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Skip').forEach(b => b.click())")
            await asyncio.sleep(2)
        await asyncio.sleep(3)
        shot = await call("Page.captureScreenshot", format="png")
        open("/work/main/docs/asset-graph.png", "wb").write(base64.b64decode(shot["data"]))
asyncio.run(main()); proc.terminate()
