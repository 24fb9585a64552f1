"""`sphinx serve` through the official `openai` Python client (run by .ci/run, in a venv).

    python native/tests/openai/client_test.py PATH/TO/sphinx

Starts the server on 127.0.0.1 with the default model (SPHINX-Micro) on the CPU, asks a
text chat, an image question with a data URL, a grounding task through the `sphinx`
extension field and a streamed answer, and requires each to equal the CLI's greedy
answer (`sphinx generate --json`); then stops the server with SIGTERM.
"""

import base64
import json
import os
import signal
import subprocess
import sys

from openai import OpenAI

SPHINX = sys.argv[1]
MICRO = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "sphinx-micro")
IMAGE = os.path.join(MICRO, "example.png")


def cli(*args):
    out = subprocess.run([SPHINX, "generate", "--temperature", "0", "--device", "cpu", "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["text"]


def check(ok, what):
    print(("ok - " if ok else "not ok - ") + what, flush=True)
    if not ok:
        raise SystemExit(1)


server = subprocess.Popen([SPHINX, "serve", "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, text=True)
try:
    line = server.stdout.readline()
    base = line.split("http://")[1].split()[0]
    client = OpenAI(base_url=f"http://{base}", api_key="unused")

    want = cli("--prompt", "What shapes are there?", "--max-tokens", "24")
    r = client.chat.completions.create(model="sphinx-micro", temperature=0, max_tokens=24,
                                       messages=[{"role": "user", "content": "What shapes are there?"}])
    check(r.choices[0].message.content == want, f"a text chat equals the CLI: {r.choices[0].message.content!r} vs {want!r}")
    check(r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"usage: {r.usage}")

    url = "data:image/png;base64," + base64.b64encode(open(IMAGE, "rb").read()).decode()
    image_question = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour is the circle?"}]
    want = cli("--image", IMAGE, "--prompt", "What colour is the circle?", "--max-tokens", "24")
    r = client.chat.completions.create(model="sphinx-micro", temperature=0, max_tokens=24, messages=[{"role": "user", "content": image_question}])
    check(r.choices[0].message.content == want, f"an image question (data URL) equals the CLI: {r.choices[0].message.content!r} vs {want!r}")

    want = cli("--image", IMAGE, "--task", "ground", "--query", "the red circle", "--max-tokens", "48")
    r = client.chat.completions.create(
        model="sphinx-micro", temperature=0, max_tokens=48,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "the red circle"}]}],
        extra_body={"sphinx": {"task": "ground"}})
    boxes = (r.model_extra or {}).get("sphinx", {}).get("answer", {}).get("entities", [{}])[0].get("boxes", [])
    check(r.choices[0].message.content == want and len(boxes) == 1 and len(boxes[0]["pixels"]) == 4,
          f"a grounding task through the extension field equals the CLI, with its box in pixels: {r.choices[0].message.content!r} {boxes}")

    want = cli("--prompt", "What shapes are there?", "--max-tokens", "24")
    stream = client.chat.completions.create(model="sphinx-micro", temperature=0, max_tokens=24, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "What shapes are there?"}])
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    check("".join(pieces) == want and usage is not None, f"a streamed answer equals the CLI: {''.join(pieces)!r}, usage {usage}")
finally:
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)
check(code == 0, f"the server stops cleanly on SIGTERM (exit {code})")
