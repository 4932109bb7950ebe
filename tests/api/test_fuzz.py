"""Both HTTP APIs fuzzed by schemathesis, against real processes: a simulator worker
and a local-mode master in front of it, with an API key, a master token and the
worker's token set (the worker is fuzzed with the master's credential: its 401s
are `test_trust`'s).

Every schemathesis check is on: no 5xx, only documented status codes, schema-valid
requests accepted, schema-invalid ones refused, 405 with Allow for methods a path
does not take, credentials enforced where declared. The run is derandomized and
bounded (EXAMPLES per operation, about half a minute), and writes no example
database. `WASP_FUZZ_EXAMPLES=400` makes a longer run with a random seed.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis

from tests.support.master import start_master
from tests.support.processes import free_port
from tests.support.worker import CREDENTIAL, start_worker
from wasp.contract import WORKER_TOKEN_HEADER
from wasp.openapi import openapi

KEY = "fuzz-key-3c9d"
TOKEN = "fuzz-token-71ae"
CREDENTIALS = {
    "worker": CREDENTIAL,  # the master's token, as the master sends it
    "master": {"x-api-key": KEY, "x-master-token": TOKEN},
}
EXAMPLES = 50  # per operation and phase; the coverage phase adds its own edge cases
SEEN: Counter[tuple[str, str, int]] = Counter()  # (api, operation, status): what was exercised


@dataclass(frozen=True)
class Stack:
    worker: str
    master: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "config"
    config.mkdir()
    env = {"PATH": os.environ["PATH"]}
    worker_port, master_port = free_port(), free_port()
    # Every `A<n>` slot is this worker's, so generated slots reach the handlers, not only
    # 409; one session fits (A1, connected below), so connecting runs into the limit (429).
    worker = start_worker(
        root / "worker.log",
        worker_port,
        root / "w1",
        config,
        base_env=env,
        SLOT_TO="A999999999",
        MAX_ACTIVE="1",
    )
    shards = json.dumps([{"id": "w1", "port": worker_port, "from": "A1", "to": "A999999999"}])
    master = start_master(
        root / "master.log",
        master_port,
        config,
        base_env=env,
        SHARDS_JSON=shards,
        API_KEYS=KEY,
        MASTER_TOKEN=TOKEN,
    )
    try:
        # Some events exist, so a long poll of /events answers at once instead of waiting.
        post = urllib.request.Request(
            f"http://127.0.0.1:{worker_port}/api/accounts/A1/connect",
            method="POST",
            headers=CREDENTIAL,
        )
        urllib.request.urlopen(post, timeout=10).close()
        yield Stack(f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{master_port}")
    finally:
        master.stop()
        worker.stop()
        print("\nfuzzed (api, operation, status): count")
        for (api, operation, code), count in sorted(SEEN.items()):
            print(f"  {api} {operation} {code}: {count}")


def documents() -> dict[str, dict[str, Any]]:
    """The documents the live processes serve, built in-process: the schemas must exist
    when pytest collects (one test per operation), before any process runs."""
    from wasp_master.app import API as MASTER_API
    from wasp_master.app import all_routes
    from wasp_master.config import MasterConfig

    from wasp import worker_api

    keyed = MasterConfig(api_keys=(KEY,), master_token=TOKEN)
    return {
        "worker": openapi(worker_api.ENDPOINTS, worker_api.API),
        "master": openapi(all_routes(keyed), MASTER_API),
    }


DOCUMENTS = documents()
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",  # schema-valid and schema-invalid requests
            "max-examples": int(os.environ.get("WASP_FUZZ_EXAMPLES", EXAMPLES)),
            "deterministic": "WASP_FUZZ_EXAMPLES" not in os.environ,
            "database": "none",  # nothing written into the repository
        },
        "checks": {
            "enabled": True,  # every check schemathesis has
            # A schema-valid request is never a 400; it may still be refused for what no
            # document can say: a file over its kind's limit (413) or of a type the kind
            # does not take (415), values that do not fit together (422).
            "positive_data_acceptance": {
                "expected-statuses": [
                    *("2xx", "3xx", "401", "403", "404", "409", "429", "5xx"),
                    *("413", "415", "422"),
                ]
            },
        },
        "cache": {"enabled": False},
        "phases": {"stateful": {"enabled": False}},
        "request-timeout": 15,
    }
)
worker_schema = schemathesis.openapi.from_dict(DOCUMENTS["worker"], config=CONFIG)
master_schema = schemathesis.openapi.from_dict(DOCUMENTS["master"], config=CONFIG)


def call(api: str, base_url: str, case: schemathesis.Case[Any]) -> None:
    headers = CREDENTIALS[api]
    if api == "worker" and not any(k.lower() == WORKER_TOKEN_HEADER for k in case.headers or {}):
        # A case generated without the token (a negative one) is sent without it: else
        # the real token would make a request schemathesis expects refused valid again.
        headers = {}
    response = case.call_and_validate(base_url=base_url, headers=headers)
    SEEN[(api, f"{case.method} {case.operation.path}", response.status_code)] += 1


def test_the_live_processes_serve_the_fuzzed_documents(stack: Stack) -> None:
    for api, url in (("worker", stack.worker), ("master", stack.master)):
        request = urllib.request.Request(f"{url}/openapi.json", headers=CREDENTIALS[api])
        with urllib.request.urlopen(request, timeout=10) as response:
            served = json.loads(response.read())
        assert served == json.loads(json.dumps(DOCUMENTS[api])), api


@worker_schema.parametrize()
def test_worker_api(case: schemathesis.Case[Any], stack: Stack) -> None:
    call("worker", stack.worker, case)


@master_schema.parametrize()
def test_master_api(case: schemathesis.Case[Any], stack: Stack) -> None:
    call("master", stack.master, case)


def test_fuzzing_reached_the_handlers() -> None:
    """Not only refusals: schema-valid requests got through to every kind of answer."""
    assert SEEN, "run it with this module's fuzz tests (pytest tests/api/test_fuzz.py)"
    codes = {code for (_, _, code) in SEEN}
    assert {200, 202, 400, 404, 405, 409, 429} <= codes, SEEN
