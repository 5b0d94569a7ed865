"""Load test of `s2s serve` against `s2s translate` on the same sentences, in one sitting.

    python tools/bench_serve.py runs/mt                      # 1000 test_2016 sentences
    python tools/bench_serve.py runs/mt --clients 1 8 64 --threads 2 --max-seconds 120

First `s2s translate` decodes the sentences from a file (its start-up, measured on an
empty input, is subtracted: the table compares decoding, not process start). Then one
`s2s serve` process starts on a free loopback port, and for each client count N, N client
threads send one sentence per request over keep-alive connections until every sentence is
sent or --max-seconds pass. Reports sentences/s, latency percentiles (p50/p95/p99) and how
many outputs equal translate's. Only 127.0.0.1 is ever contacted; every level is bounded
in requests (the sentences) and in time.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_machine import cpu_model

from s2s.config import DECODE_AMP_CHOICES

ROOT = Path(__file__).resolve().parent.parent
TEST_SET = ROOT / "recipes" / "data" / "multi30k" / "test_2016_flickr.en.gz"


def read_sentences(count: int) -> list[str]:
    with gzip.open(TEST_SET, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for _, line in zip(range(count), handle, strict=False)]


def s2s_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "s2s", *args]


def translated(command: list[str], source: Path) -> subprocess.CompletedProcess:
    """`s2s translate` on ``source``; its one-line error ends the benchmark if it fails."""
    done = subprocess.run([*command, "--input", str(source)], capture_output=True)
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise SystemExit(f"bench_serve: s2s translate failed: {lines[-1] if lines else '?'}")
    return done


def time_translate(run: Path, sentences: list[str], options: list[str]) -> dict[str, Any]:
    """`s2s translate` on the sentences: outputs, wall time, and start-up time."""
    with tempfile.TemporaryDirectory() as folder:
        empty, source = Path(folder) / "empty.txt", Path(folder) / "test.en"
        empty.write_text("")
        source.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        command = s2s_command("translate", str(run), "-q", *options)
        started = time.perf_counter()
        translated(command, empty)
        startup = time.perf_counter() - started
        started = time.perf_counter()
        done = translated(command, source)
        wall = time.perf_counter() - started
    decoding = max(wall - startup, 1e-9)
    outputs = done.stdout.decode("utf-8").split("\n")[: len(sentences)]
    return {"outputs": outputs, "wall_s": wall, "startup_s": startup, "decode_s": decoding}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Client:
    """One keep-alive connection to the server on loopback."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        self.connection.request("POST", path, data, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())

    def get(self, path: str) -> int:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        response.read()
        return response.status


def start_server(run: Path, port: int, options: list[str]) -> subprocess.Popen:
    command = s2s_command("serve", str(run), "--host", "127.0.0.1", "--port", str(port))
    server = subprocess.Popen([*command, *options], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"s2s serve exited with {server.returncode}")
        try:
            if Client(port).get("/ready") == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("s2s serve did not become ready")


def batch_counts(port: int) -> tuple[float, float]:
    """The server's requests decoded and model calls so far (its /metrics)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    return float(values["s2s_batch_requests_sum"]), float(values["s2s_batch_requests_count"])


def load_level(port: int, sentences: list[str], clients: int, max_seconds: float) -> dict:
    """``clients`` threads send one sentence each per request, until all are sent or time
    is up; returns throughput, latency percentiles and the outputs by sentence number."""
    next_index, lock = iter(range(len(sentences))), threading.Lock()
    latencies: list[float] = []
    outputs: dict[int, str] = {}
    took_ms: dict[int, float] = {}  # by sentence: latency against output length
    errors = [0]
    deadline = time.monotonic() + max_seconds

    def client_loop() -> None:
        client = Client(port)
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            started = time.perf_counter()
            status, body = client.post("/v1/translate", {"inputs": [sentences[index]]})
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                took_ms[index] = took * 1000
                if status == 200:
                    outputs[index] = body["outputs"][0]
                else:
                    errors[0] += 1

    before = batch_counts(port)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    after = batch_counts(port)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors[0],
        "sentences_per_s": len(outputs) / wall,
        "p50_ms": cuts[49] * 1000,
        "p95_ms": cuts[94] * 1000,
        "p99_ms": cuts[98] * 1000,
        "requests_per_batch": (after[0] - before[0]) / max(after[1] - before[1], 1),
        "outputs": outputs,
        "latency_ms": took_ms,
    }


def same_outputs(translate: dict[str, Any], level: dict[str, Any]) -> int:
    """How many of the level's outputs equal `s2s translate`'s for the same sentence."""
    return sum(translate["outputs"][i] == text for i, text in level["outputs"].items())


def table(translate: dict[str, Any], levels: list[dict[str, Any]]) -> str:
    rate = len(translate["outputs"]) / translate["decode_s"]
    rows = [
        "| | clients | sentences/s | vs translate | p50 ms | p95 ms | p99 ms | requests per batch "
        "| same output |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| s2s translate (file) | - | {rate:.1f} | 100 % | | | | | |",
    ]
    for level in levels:
        same = same_outputs(translate, level)
        rows.append(
            f"| s2s serve | {level['clients']} | {level['sentences_per_s']:.1f} | "
            f"{100 * level['sentences_per_s'] / rate:.0f} % | {level['p50_ms']:.0f} | "
            f"{level['p95_ms']:.0f} | {level['p99_ms']:.0f} | {level['requests_per_batch']:.1f} | "
            f"{same}/{len(level['outputs'])} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a translation run directory")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--max-seconds", type=float, default=180.0, help="per client level")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--amp",
        default="off",
        choices=DECODE_AMP_CHOICES,
        help="decoding precision of both: off (fp32), bf16 or int8",
    )
    parser.add_argument("--max-batch-tokens", type=int, default=4000)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="serve with continuous batching (translate requests join the running search)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    sentences = read_sentences(args.sentences)
    common = ["--device", "cpu", "--threads", str(args.threads), "--amp", args.amp]
    load_before = os.getloadavg()
    translate = time_translate(args.run, sentences, common)
    port = free_port()
    batching = ["--max-batch-tokens", str(args.max_batch_tokens)]
    batching += ["--max-wait-ms", str(args.max_wait_ms), "--max-queue", "1024"]
    batching += ["--continuous"] if args.continuous else []
    server = start_server(args.run, port, [*common, *batching])
    try:
        Client(port).post("/v1/translate", {"inputs": sentences[:8]})  # warm up
        levels = [load_level(port, sentences, n, args.max_seconds) for n in args.clients]
    finally:
        server.terminate()
        server.wait(timeout=120)
    conditions = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "amp": args.amp,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "sentences": len(sentences),
        "server": batching,
        "translate_startup_s": round(translate["startup_s"], 2),
    }
    print(json.dumps(conditions))
    print(table(translate, levels))
    results = [{k: v for k, v in lv.items() if k != "outputs"} for lv in levels]
    for result, level in zip(results, levels, strict=True):
        result["same_output"] = same_outputs(translate, level)
    summary = {"conditions": conditions, "levels": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
