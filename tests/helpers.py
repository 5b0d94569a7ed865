"""Helpers the tests share: tiny recipes over real Multi30k slices, a tiny model and trainer,
a minimal step-only cell. A plain module (on sys.path through pytest's `pythonpath`), so no
test imports `conftest` or depends on the working directory."""

from __future__ import annotations

import gzip
import http.client
import json
import lzma
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State
from s2s.config import ModelConfig
from s2s.core.cell_registry import cell_factory
from s2s.core.search import max_output_lengths
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer

ROOT = Path(__file__).resolve().parent.parent
MULTI30K = ROOT / "recipes" / "data" / "multi30k"


def search_step_log_probs(model, batch):
    """Log-probs [B, T, V] of search's decode_step fed the batch's targets one step at a
    time, in the caller's grad and autocast mode: what teacher forcing must match."""
    encoded = model.encode(batch.src, batch.src_lengths)
    state = model.initial_state(encoded)
    steps = []
    for t in range(batch.tgt_in.size(1)):
        log_probs, state, _ = model.decode_step(batch.tgt_in[:, t], state, encoded)
        steps.append(log_probs.detach())
    return torch.stack(steps, dim=1)


def multi30k_lines(name: str, count: int) -> list[str]:
    with gzip.open(MULTI30K / name, "rt", encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


TINY_MODEL = """
[tokenizer]
vocab_size = 300

[model]
embed_size = 32
hidden_size = 48
encoder_layers = 1
decoder_layers = 1
dropout = 0.0

[train]
max_tokens = 600
max_steps = {steps}
valid_every = {steps}
warmup_steps = 5
lr = 0.005
threads = 1

[decode]
beam_size = 3
"""


def tiny_recipe(folder: Path, pairs: int = 400, steps: int = 12) -> Path:
    """A recipe over the first ``pairs`` Multi30k training pairs, with a tiny model."""
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / "train.en", multi30k_lines("train.en.gz", pairs))
    write_lines(folder / "train.de", multi30k_lines("train.de.gz", pairs))
    write_lines(folder / "valid.en", multi30k_lines("val.en.gz", 40))
    write_lines(folder / "valid.de", multi30k_lines("val.de.gz", 40))
    recipe = folder / "tiny.toml"
    recipe.write_text(
        '[data.train]\nsrc = "train.en"\ntgt = "train.de"\n'
        '[data.valid]\nsrc = "valid.en"\ntgt = "valid.de"\n'
        '[data.test]\nsrc = "valid.en"\ntgt = "valid.de"\n' + TINY_MODEL.format(steps=steps),
        encoding="utf-8",
    )
    return recipe


VOCAB = 40


def make_model(cell: str = "lstm", **options) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(embed_size=16, hidden_size=24, dropout=0.0, **options)
    return Seq2Seq(config, cell_factory(cell, {}), VOCAB, VOCAB, 0, share_vocab=True).eval()


def sharp_model(seed: int = 0) -> Seq2Seq:
    """A random model with peaked distributions, so float noise cannot reorder candidates;
    another ``seed`` moves every weight, for a second model of the same shape."""
    model = make_model(tie_embeddings=False)
    with torch.no_grad():
        if seed:
            generator = torch.Generator().manual_seed(seed)
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        model.output.weight.mul_(30.0)
    return model


def source_batch(count: int, seed: int):
    """``count`` random sources of 1-14 tokens, their batch and output length limits."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 15, (count,), generator=generator).tolist()
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    batch = collate(list(range(count)), sentences)
    return sentences, batch, max_output_lengths(batch.src_lengths, 1.5, 3)


def make_trainer(folder: Path, *overrides: str) -> TranslationTrainer:
    config = load_config(tiny_recipe(folder, pairs=150, steps=4), list(overrides))
    return TranslationTrainer(config, RunDir(folder / "run"), quiet=True)


class Elman(RecurrentCell):
    """A correct cell that implements only `step`."""

    options: ClassVar[dict[str, Any]] = {"scale": 1.0}

    def __init__(self, input_size: int, hidden_size: int, scale: float = 1.0) -> None:
        super().__init__(input_size, hidden_size)
        self.input = nn.Linear(input_size, hidden_size)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)
        self.scale = scale

    def candidate(self, x_t: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.input(x_t) + self.scale * self.recurrent(h))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.candidate(x_t, state[0])
        return h, (h,)


def add_distribution(folder: Path, name: str, cells: dict[str, str], modules: dict[str, str]):
    """An installed distribution in ``folder`` (put it on sys.path) registering ``cells``
    in the s2s.cells group, with the ``modules`` they live in."""
    dist_info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{cell} = {target}\n" for cell, target in cells.items())
    (dist_info / "entry_points.txt").write_text(f"[s2s.cells]\n{lines}")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)


WIKITEXT = ROOT / "recipes" / "data" / "wikitext-2"


def wikitext_slice(folder: Path, name: str, lines: int) -> Path:
    """The first ``lines`` lines of a shipped WikiText-2 file, as a small .xz file."""
    with lzma.open(WIKITEXT / f"{name}.txt.xz", "rt", encoding="utf-8") as handle:
        text = "".join(next(handle) for _ in range(lines))
    path = folder / f"{name}.txt.xz"
    with lzma.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def tiny_overrides(folder: Path, steps: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    data = [
        f'data.{name}.text="{wikitext_slice(folder, name, lines)}"'
        for name, lines in (("train", 400), ("valid", 60), ("test", 60))
    ]
    return [
        *data,
        "tokenizer.vocab_size=400",
        "model.embed_size=24",
        "model.hidden_size=24",
        "train.bptt=8",
        "train.streams=4",
        f"train.max_steps={steps}",
        f"train.valid_every={steps}",
        "train.warmup_steps=0",
        "train.threads=1",
        "train.tensorboard=false",
    ]


# -- a real `s2s serve` on a free loopback port (tests/test_serve.py, tests/test_speech.py) --
class Server:
    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process, self.port = process, port

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        kind = response.getheader("Content-Type", "")
        parsed = json.loads(payload) if kind.startswith("application/json") else payload.decode()
        return response.status, response.headers, parsed

    def translate(self, inputs: list[str], **options: Any) -> tuple[int, Any, Any]:
        return self.request("POST", "/v1/translate", {"inputs": inputs, **options})

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one metric family, by sample name and labels."""
        from prometheus_client.parser import text_string_to_metric_families

        _, _, text = self.request("GET", "/metrics")
        return {
            sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == name
            for sample in family.samples
        }

    def queued(self) -> float:
        return next(iter(self.metric("s2s_queue_depth").values()))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(run: Path, *options: str) -> Iterator[Server]:
    """``s2s serve run`` in a subprocess, once /ready answers; stopped (if still up) after."""
    port = free_port()
    command = [sys.executable, "-m", "s2s", "serve", str(run), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--device", "cpu", "--threads", "1", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = Server(process, port)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                if server.request("GET", "/ready")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


# `s2s` in a process where importing torch raises, as on a machine without it.
WITHOUT_TORCH = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"torch is blocked here ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
from s2s.cli import common, main

common.OWN_PROCESS = True  # as the s2s script: denormal flushing is tried too
sys.argv = ["s2s", *sys.argv[1:]]
try:
    main()
finally:
    assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
"""


def run_without_torch(*args: str, stdin: Path | None = None) -> subprocess.CompletedProcess:
    """`s2s ARGS` in a subprocess where importing torch raises (stdout, stderr as bytes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args],
        stdin=stdin.open("rb") if stdin else subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=120,
    )


def without_torch(*args: str, stdin: Path | None = None) -> list[str]:
    """`s2s ARGS` in a subprocess where importing torch raises; its output lines."""
    done = run_without_torch(*args, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()
