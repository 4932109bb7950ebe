"""The console's actions on messages, in a real headless Chromium (playwright-core) against
`wasp dev` (real master, two simulator workers): A2 writes to A1; the agent on A1 replies
quoting it, reacts 👍, takes it back, reacts ❤️, edits the reply, deletes a wrong message
for everyone; A2 types and A1 sees "typing…". A1's page shows each, A2's page (open on
the chat) follows live, and the script waits for A2's store to show each. Afterwards the
stores of both slots are read here, through the master's API, for the end state.

And the console's calls derive from the route table: it names each operation as the table
does (its operationId in the master's generated OpenAPI document), and writes no API path.
Screenshots land in test-artifacts/console-actions/."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from wasp_master.app import API, all_routes
from wasp_master.config import MasterConfig

from tests.e2e.test_console import JS, TIMEOUT_S, chromium
from tests.support.cluster import ROOT
from tests.support.dev import start_dev
from wasp.openapi import openapi

APP_JS = ROOT / "master" / "wasp_master" / "console" / "app.js"
ARTIFACTS = ROOT / "test-artifacts" / "console-actions"
A1 = "555101000000001@s.whatsapp.net"
A2 = "555101000000002@s.whatsapp.net"


def console_operations() -> tuple[list[str], dict[str, tuple[str, str]], str]:
    """app.js's OPERATIONS (names), its UNNAMED (name -> method, path) and the script
    without the UNNAMED table."""
    source = APP_JS.read_text()
    names = re.search(r"^const OPERATIONS = \[\n(.*?)^\];\n", source, re.M | re.S)
    assert names is not None, "app.js has no OPERATIONS list"
    operations = re.findall(r'^  "(\w+)",$', names.group(1), re.M)
    assert len(operations) == len(names.group(1).strip().splitlines()), "an entry not parsed"
    block = re.search(r"^const UNNAMED = \{\n(.*?)^\};\n", source, re.M | re.S)
    assert block is not None, "app.js has no UNNAMED table"
    entries = re.findall(r'^  (\w+): \["([A-Z]+)", "([^"]+)"\],$', block.group(1), re.M)
    assert len(entries) == len(block.group(1).strip().splitlines()), "an entry not parsed"
    rest = source[: block.start()] + source[block.end() :]
    return operations, {name: (method, path) for name, method, path in entries}, rest


def test_the_console_calls_operations_by_their_names_in_the_route_table() -> None:
    operations, unnamed, rest = console_operations()
    document = openapi(all_routes(MasterConfig()), API)
    named = {
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
        if "operationId" in operation
    }
    for name in operations:
        assert name in named, f"the console calls {name}, which the master does not declare"
    for name in ("react", "editMessage", "deleteMessage", "setPresence", "send", "media"):
        assert name in operations
    # Found by method and path only while the table has no name for it: once it has one,
    # the console must use it.
    for name, (method, path) in unnamed.items():
        operation = document["paths"][path][method.lower()]
        assert "operationId" not in operation, f"{name} is {operation['operationId']} now"
    # Every name the script calls is listed (the page refuses others); actions by variable
    # (`call(action, ...)`) are the slot buttons' data-action names.
    called = set(re.findall(r"\b(?:call|offered|fill)\(\"(\w+)\"", rest))
    assert called <= {*operations, *unnamed}, called - {*operations, *unnamed}
    index = (APP_JS.parent / "index.html").read_text()
    assert set(re.findall(r'data-action="(\w+)"', index)) <= set(operations)
    # No path of the API written in code anywhere else (comments may name them).
    literals = re.findall(r"[\"'`]/api/[^\"'`]*", rest)
    assert not literals, f"app.js names API paths: {literals}"


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return json.load(answer)


def messages(base: str, slot: str, chat: str) -> dict[str, dict[str, Any]]:
    chat_path = urllib.parse.quote(chat)
    page = get(base, f"/api/accounts/{slot}/conversations/{chat_path}/messages?limit=50")
    return {item["wa_message_id"]: item for item in page["items"]}


def test_an_agent_replies_reacts_edits_deletes_and_sees_typing(tmp_path: Path) -> None:
    browser = chromium()
    run = start_dev(tmp_path)
    try:
        done = subprocess.run(
            ["node", str(JS / "console_actions.mjs"), f"{run.url}/", str(ARTIFACTS)],
            cwd=JS,
            env={**os.environ, "CHROMIUM": browser},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{run.process.output()[-3000:]}"
        steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert steps[-1]["step"] == "done"
        ids, texts = steps[-2]["ids"], steps[-2]["texts"]
        # The end state, read from each slot's store (not from the page).
        at_a2 = messages(run.url, "A2", A1)
        at_a1 = messages(run.url, "A1", A2)
    finally:
        os.kill(run.process.pid, signal.SIGTERM)
        assert run.process.process is not None
        run.process.process.wait(30)
    names = [step["step"] for step in steps]
    for wanted in (
        "A1 replies quoting A2's message",
        "A2 sees the reply's quote; clicking it shows the quoted message",
        "clicking the own reaction again removes it, here and at A2",
        "A1 edits its reply",
        "A1 deletes a wrong message for everyone",
        "A2 types: A1 sees typing…, then not once A2 leaves the field",
        "A2 sends a location, a contact card, a poll, a voice note, a sticker; A1 sees each",
        "past WhatsApp's 15 minutes a sent message offers no Edit, still Delete",
    ):
        assert wanted in names
    question, reply, wrong = at_a2[ids["question"]], at_a2[ids["reply"]], at_a2[ids["wrong"]]
    assert question["direction"] == "out"
    assert question["body"] == texts["QUESTION"]
    assert [(r["emoji"], r["from_me"]) for r in question["reactions"]] == [("❤️", False)]
    assert question["reactions"][0]["reactor"].split("@")[0] == A1.split("@")[0]
    assert at_a1[ids["question"]]["reactions"] == [
        {**at_a1[ids["question"]]["reactions"][0], "emoji": "❤️", "from_me": True}
    ]
    assert reply["quoted_id"] == ids["question"]
    assert reply["direction"] == "in"
    assert reply["body"] == texts["EDITED"]
    assert reply["edited_at"] is not None
    assert at_a1[ids["reply"]]["body"] == texts["EDITED"]
    assert wrong["deleted_at"] is not None
    assert wrong["body"] == ""
    assert at_a1[ids["wrong"]]["deleted_at"] is not None
    for shot in ("21-a1-replied", "22-a1-reacted", "22-a2-sees-reaction", "23-a1-edited"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 10_000, shot
    for shot in ("24-a1-deleted", "25-a1-sees-typing", "26-a1-kinds"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 10_000, shot
