"""`s2s serve`: a real server on a free loopback port, spoken to over HTTP (http.client):
concurrent requests get their own outputs in order and are merged into shared batches,
bad requests get 4xx JSON errors and leave the server up, a full queue answers 503 with
Retry-After, and SIGTERM finishes the queued requests before the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import Server, multi30k_lines, serving

import s2s

LINES = multi30k_lines("val.en.gz", 40)
SEARCH = {"beam": 2, "nbest": 2}  # its n-best outputs grow with the input: order shows


@pytest.fixture(scope="module")
def server(trained_run: Path) -> Iterator[Server]:
    with serving(trained_run, "--max-wait-ms", "300", "--max-inputs", "8") as running:
        yield running


@pytest.fixture(scope="module")
def model(trained_run: Path) -> s2s.Model:
    return s2s.load(trained_run, device="cpu")


def test_concurrent_requests_get_their_own_outputs_in_order(
    server: Server, model: s2s.Model
) -> None:
    requests = [LINES[i : i + 3] for i in range(0, 36, 3)]
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda lines: server.translate(lines, **SEARCH), requests))
    assert [status for status, _, _ in answers] == [200] * len(requests)
    outputs = [body["outputs"] for _, _, body in answers]
    assert outputs == [model.translate(lines, **SEARCH) for lines in requests]
    assert len({json.dumps(output) for output in outputs}) > 1  # the test can tell them apart


def test_concurrent_requests_share_batches(server: Server) -> None:
    before = server.metric("s2s_batch_requests")
    barrier = threading.Barrier(8)

    def send(line: str) -> int:
        barrier.wait()
        return server.translate([line], beam=1)[0]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(send, LINES[:8])) == [200] * 8
    after = server.metric("s2s_batch_requests")
    batches = after["s2s_batch_requests_count{}"] - before.get("s2s_batch_requests_count{}", 0)
    requests = after["s2s_batch_requests_sum{}"] - before.get("s2s_batch_requests_sum{}", 0)
    assert requests == 8
    assert batches < 8  # some requests were decoded together


def test_with_continuous_batching_concurrent_requests_share_the_search_and_get_translates_outputs(
    trained_run: Path, model: s2s.Model
) -> None:
    requests = [LINES[i : i + 2] for i in range(0, 24, 2)]
    barrier = threading.Barrier(len(requests))

    def send(lines: list[str]) -> tuple[int, Any, Any]:
        barrier.wait()
        return server.translate(lines, **SEARCH)

    with serving(trained_run, "--continuous") as server:
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, requests))
        shared = server.metric("s2s_batch_requests")
    assert [status for status, _, _ in answers] == [200] * len(requests)
    assert [body["outputs"] for _, _, body in answers] == [
        model.translate(lines, **SEARCH) for lines in requests
    ]
    assert shared["s2s_batch_requests_count{}"] == len(requests)  # one per joined request
    assert shared["s2s_batch_requests_sum{}"] > len(requests)  # some were searched together


def test_empty_and_invalid_utf8_inputs_are_handled_as_translate_handles_them(
    server: Server, model: s2s.Model
) -> None:
    status, _, body = server.translate(["", "   ", LINES[0]], **SEARCH)
    assert status == 200 and body["outputs"][:2] == [[""], [""]]
    assert server.translate([])[2] == {"outputs": []}
    raw = b'{"inputs": ["A man \xff\xfe rides.", "A man \\udcff rides."], "beam": 2}'
    status, _, body = server.request("POST", "/v1/translate", raw=raw)
    assert status == 200
    assert body["outputs"] == model.translate([b"A man \xff\xfe rides."] * 2, beam=2)


BAD_REQUESTS = [
    (b'{"inputs": ["a"', 400, "not JSON"),
    (b'{"inputs": "a"}', 422, "inputs"),
    (b'{"inputs": ["a"], "beam": 0}', 422, "beam"),
    (b'{"inputs": ["a"], "beam": 2, "nbest": 3}', 422, "needs a beam of at least 3"),
    (b'{"inputs": ["a"], "colour": "red"}', 422, "colour"),
    (json.dumps({"inputs": ["a"] * 9}).encode(), 422, "9 inputs, more than 8"),
    (json.dumps({"inputs": ["a" * 2001]}).encode(), 422, "2001 characters, more than 2000"),
    (json.dumps({"inputs": ["a" * (1 << 20)]}).encode(), 413, "request body over"),
]


@pytest.mark.parametrize(("raw", "status", "message"), BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_json_error_and_the_server_stays_up(
    server: Server, raw: bytes, status: int, message: str
) -> None:
    got, _, body = server.request("POST", "/v1/translate", raw=raw)
    assert got == status and message in body["error"]
    assert server.translate([LINES[1]])[0] == 200


def test_only_the_tasks_methods_are_routes_and_documented(server: Server) -> None:
    status, _, body = server.request("POST", "/v1/generate", {"inputs": ["a"]})
    assert status == 404 and "a translation run offers translate, not generate" in body["error"]
    _, _, schema = server.request("GET", "/openapi.json")
    assert "/v1/translate" in schema["paths"] and "/v1/generate" not in schema["paths"]
    assert server.request("GET", "/docs")[0] == 200
    assert server.request("GET", "/health")[2] == {"status": "ok"}
    errors = server.metric("s2s_errors")
    assert any('"status": "422"' in key for key in errors)


def test_a_full_queue_answers_503_with_retry_after(trained_run: Path) -> None:
    options = ("--max-queue", "1", "--max-wait-ms", "3000")
    # greedy requests are always batched, so the first waits its 3 s in the queue (with
    # --continuous a beam-search one would join the search at once; the queue bound for
    # those is tested in tests/test_serve_batching.py)
    with serving(trained_run, *options) as server, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(server.translate, [LINES[0]], beam=1)
        while server.queued() < 1:
            time.sleep(0.05)
        status, headers, body = server.translate([LINES[1]], beam=1)
        assert status == 503 and headers["Retry-After"] == "1"
        assert "busy" in body["error"]
        assert waiting.result()[0] == 200


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def test_a_decoder_process_that_dies_is_replaced(trained_run: Path, model: s2s.Model) -> None:
    """Batches are decoded in a child process (away from the HTTP side's GIL); killing it
    (as the out-of-memory killer would) costs no later request its answer."""
    with serving(trained_run) as server:
        first = server.request("GET", "/ready")[2]["decoder_pid"]
        assert first != server.process.pid and not process_ended(first)
        expected = model.translate(LINES[:2], **SEARCH)
        assert server.translate(LINES[:2], **SEARCH)[2]["outputs"] == expected
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while (second := server.request("GET", "/ready")[2]["decoder_pid"]) in (first, None):
            assert time.monotonic() < deadline, "the decoder process was not replaced"
            time.sleep(0.1)  # replaced without waiting for a request
        assert not process_ended(second)
        status, _, body = server.translate(LINES[:2], **SEARCH)
        assert (status, body.get("outputs")) == (200, expected), body


def test_sigterm_finishes_the_queued_requests_and_exits_0(trained_run: Path) -> None:
    with serving(trained_run, "--max-wait-ms", "2000") as server:
        decoder = server.request("GET", "/ready")[2]["decoder_pid"]
        with ThreadPoolExecutor(3) as pool:  # greedy, so they wait in the queue (see above)
            pending = [pool.submit(server.translate, [line], beam=1) for line in LINES[:3]]
            while server.queued() < 3:
                time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in pending]
        assert [status for status, _, _ in answers] == [200] * 3
        assert server.process.wait(timeout=60) == 0
        assert not Path(f"/proc/{decoder}").exists()  # the decoder process ended with it
        log = [
            json.loads(line)
            for line in server.process.stderr.read().decode().splitlines()
            if line.startswith("{")
        ]
        posted = [entry for entry in log if entry["path"] == "/v1/translate"]
        assert [entry["status"] for entry in posted] == [200] * 3
        assert all(entry["inputs"] == 1 and entry["ms"] > 0 for entry in posted)


def test_without_the_serve_extra_the_command_says_what_to_install(trained_run: Path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.argv = ['s2s', 'serve', sys.argv[1]];"
        "from s2s.cli import main; main()"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, str(trained_run)], capture_output=True, text=True
    )
    assert found.returncode != 0
    assert found.stderr == "s2s: error: s2s serve needs the serve extra: pip install 's2s[serve]'\n"


def test_a_request_not_decoded_in_time_gets_504(trained_run: Path) -> None:
    options = ("--max-wait-ms", "5000", "--request-timeout", "0.5")
    with serving(trained_run, *options) as server:  # greedy: held in the queue 5 s
        status, _, body = server.translate([LINES[0]], beam=1)
        assert status == 504 and body["error"] == "not decoded in 0.5 s"
        assert server.request("GET", "/health")[0] == 200


def test_more_than_one_worker_is_refused_in_one_line(trained_run: Path) -> None:
    from typer.testing import CliRunner

    from s2s.cli import app

    result = CliRunner().invoke(app, ["serve", str(trained_run), "--workers", "2"])
    assert result.exit_code == 1
    assert result.output == "s2s: error: --workers: only 1 is supported (docs/serving.md)\n"


def test_an_app_without_a_decoder_process_decodes_in_its_batcher_thread(
    model: s2s.Model,
) -> None:
    """`create_app(model)`, as a Python program may embed it, decodes on its own model."""
    from fastapi.testclient import TestClient

    from s2s.serve.app import create_app

    with TestClient(create_app(model)) as client:
        assert client.get("/ready").json()["decoder_pid"] is None
        answer = client.post("/v1/translate", json={"inputs": LINES[:3], **SEARCH})
    assert answer.status_code == 200
    assert answer.json()["outputs"] == model.translate(LINES[:3], **SEARCH)
