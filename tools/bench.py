"""The s2s benchmark: training throughput, decoding speed and BLEU, and cell kernels.

    python tools/bench.py --json bench.json                       # all parts, recipes/mt.toml
    python tools/bench.py --only decode --run runs/mt             # decode a trained run
    python tools/bench.py --preset peers --peer-data DIR          # OpenNMT-py / Joey NMT setup
    python tools/bench.py --only train --amp bf16 --set train.max_tokens=2000

Parts (--only train,decode,cells):
  train   target tokens/s in steady state (after --warmup untimed steps, over --steps timed
          steps) and peak memory, through s2s's own Trainer on the recipe's [model] and
          [train] settings and its training data.
  decode  greedy and beam-5 sentences/s and sacreBLEU on the recipe's test split (the
          1 000-sentence Multi30k test_2016_flickr), batched as s2s does by default
          (decode.batch_tokens) and in batches of --decode-batch-sentences sentences (the
          peers' batching). Decodes --run RUN_DIR, or else a model trained here for
          --decode-train-steps steps, so that BLEU means something.
  cells   tools/bench_cells.py: every installed cell next to the raw torch.nn kernels.

Prints a table at the end and writes everything, with the machine and the conditions, as
JSON (--json). Numbers are only comparable when taken on a quiet machine: --wait-quiet S
waits up to S seconds for other processes to calm down before each timed part, and every
part records how much CPU other processes used while it was timed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_cells
import torch
from bench_decode import decode_speed
from bench_machine import OtherLoad, machine_info, wait_quiet
from bench_output import json_path
from bench_train import StepSource, build_trainer, measure_training, train_until

from s2s.config import AMP_CHOICES, DECODE_AMP_CHOICES, Config, parse_override
from s2s.data.corpus import load_parallel
from s2s.errors import S2SError
from s2s.kernels.denormals import denormals_flushed, flush_denormals_in_script
from s2s.kernels.precision import cast_for_decoding, decoding_precision, limit_onednn_cache
from s2s.tasks.loading import load_run
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.translator import Translator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "recipes" / "mt.toml"
PARTS = ("train", "decode", "cells")
PEER_BATCH_SENTENCES = 64

PEER_DATA_HELP = (
    "the word-level de->en Multi30k of the peer benchmark: a folder holding "
    "{train,val,test}.{src,tgt}, lower-cased and split into words and punctuation, as "
    "written by the peer benchmark's prep_data.py (see docs/performance.md)"
)


PEER_MODEL = [
    "tokenizer.model_type=word",
    "tokenizer.joint=false",
    "tokenizer.vocab_size=8000",
    "model.cell=lstm",
    "model.embed_size=256",
    "model.hidden_size=512",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.bidirectional=true",
    "model.attention=general",
    "model.input_feeding=true",
    "model.dropout=0.2",
    "model.tie_embeddings=false",
    "model.attentional_size=512",  # OpenNMT-py's and Joey NMT's attentional vector: 512
    "model.init=uniform",  # OpenNMT-py's param_init 0.1 (model.init_range's default)
    "train.optimizer=adamw",
    "train.weight_decay=0.0",  # AdamW without weight decay is Adam
    "train.betas=[0.9, 0.999]",
    "train.lr=0.001",
    "train.schedule=constant",
    "train.warmup_steps=0",
    "train.clip_norm=5.0",
    "train.label_smoothing=0.0",
    "train.max_length=100",
]
"""The OpenNMT-py / Joey NMT benchmark model and its training, as `--set` overrides (their
configs: 1-layer bidirectional LSTM encoder 256 per direction, 1-layer LSTM decoder 512
with input feeding and Luong general attention, a 512-wide attentional vector, embeddings
256, dropout 0.2, no label smoothing, Adam 1e-3 at a constant rate, clipping at 5, separate
8 000-word vocabularies; every parameter starts uniform in ±0.1, as in OpenNMT-py's)."""


def peer_overrides(data: Path) -> list[str]:
    """`--set` overrides that turn recipes/mt.toml into the peer benchmark model
    (`PEER_MODEL`) on the peers' data; batches of 64 sentences are built by the harness."""
    for split in ("train", "val", "test"):
        for side in ("src", "tgt"):
            if not (data / f"{split}.{side}").is_file():
                raise S2SError(f"--peer-data {data}: {split}.{side} not found; {PEER_DATA_HELP}")
    data = data.resolve()

    def split(name: str, stem: str) -> list[str]:
        return [f'data.{name}.src="{data / stem}.src"', f'data.{name}.tgt="{data / stem}.tgt"']

    return [
        *split("train", "train"),
        *split("valid", "val"),
        *split("test", "test"),
        "task.name=bench-peers",
        "task.src_lang=de",
        "task.tgt_lang=en",
        *PEER_MODEL,
    ]


def benchmark_overrides(args: argparse.Namespace, total_steps: int) -> list[str]:
    """The preset's overrides, then the harness's own, then the user's --set (last wins)."""
    overrides = peer_overrides(args.peer_data) if args.preset == "peers" else []
    overrides += [
        f"train.max_steps={total_steps}",
        "train.valid_every=1000000000",
        "train.tensorboard=false",
        f"train.device={args.device}",
    ]
    if args.amp:
        overrides.append(f"train.amp={args.amp}")
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    return overrides + args.set


def test_split(args: argparse.Namespace, config: Config) -> tuple[list[str], list[str], str]:
    """Source lines, references and a name of the decoding test set."""
    if args.test_src or args.test_ref:
        if not (args.test_src and args.test_ref):
            raise S2SError("--test-src and --test-ref go together")
        from s2s.config import SplitConfig

        split = SplitConfig(src=args.test_src, tgt=args.test_ref)
    elif "test" in config.data:
        split = config.data["test"]
    else:
        raise S2SError(f"{args.recipe}: no [data.test] split; give --test-src and --test-ref")
    text = load_parallel(split, "test")
    count = args.sentences or len(text.src)
    return text.src[:count], text.tgt[:count], str(split.src)


class Harness:
    """Runs the asked-for parts in order and collects their results."""

    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.parts = parse_parts(args.only)
        self.trainer = None
        self.source: StepSource | None = None
        self.results: dict[str, Any] = {}

    def quiet(self) -> dict[str, Any] | None:
        if self.args.wait_quiet <= 0:
            return None
        return wait_quiet(self.args.wait_quiet, self.args.quiet_threshold)

    def _make_trainer(self) -> None:
        args = self.args
        needs_decode_model = "decode" in self.parts and not args.run
        timed = args.warmup + args.steps if "train" in self.parts else 0
        total = max(timed, args.decode_train_steps if needs_decode_model else 0)
        batch_sentences = args.batch_sentences
        if batch_sentences is None:
            batch_sentences = PEER_BATCH_SENTENCES if args.preset == "peers" else 0
        overrides = benchmark_overrides(args, total)
        self.trainer = build_trainer(args.recipe, overrides, self.work_dir, batch_sentences)
        self.source = StepSource(self.trainer)
        self.results["conditions"]["overrides"] = overrides

    def run(self) -> dict[str, Any]:
        args = self.args
        device = torch.device(resolve_device_name(args.device))
        self.results["machine"] = machine_info(device)
        self.results["conditions"] = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": shlex.join(["python", "tools/bench.py", *sys.argv[1:]]),
            "preset": args.preset,
            "recipe": str(args.recipe),
            "parts": list(self.parts),
            "onednn_primitive_cache_capacity": os.environ.get(
                "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "default (1024)"
            ),
            # an allocator preloaded in place of glibc's (tcmalloc trains much faster)
            "ld_preload": os.environ.get("LD_PRELOAD", ""),
            "denormals_flushed": denormals_flushed(),
        }
        if "train" in self.parts or ("decode" in self.parts and not args.run):
            self._make_trainer()
        if "train" in self.parts:
            waited = self.quiet()
            self.results["train"] = measure_training(
                self.trainer, self.source, args.steps, args.warmup, args.window
            )
            self.results["train"]["quiet_wait"] = waited
        if "decode" in self.parts:
            self.results["decode"] = self.decode()
        if "cells" in self.parts:
            self.results["cells"] = self.cells()
        return self.results

    def _translator(self) -> tuple[Translator, Config, str, str]:
        """The translator to time (at --decode-amp's precision), the benchmark's config,
        where the model came from, and the precision's name."""
        args = self.args
        if args.run:
            bench_config = load_config(args.recipe, benchmark_overrides(args, 1))
        else:
            bench_config = self.trainer.config  # built from the same recipe and overrides
        amp = args.decode_amp or bench_config.decode.amp
        device = torch.device(resolve_device_name(args.device))
        precision = decoding_precision(amp, device, "--decode-amp")  # checked first
        if args.run:
            # weights stored in the decoding precision, as s2s translate loads them; the
            # run's [decode] settings, with the decode.* keys of --set, as translate --set
            decode_overrides = [item for item in args.set if parse_override(item)[0][0] == "decode"]
            config, tokenizers, model, device = load_run(
                args.run, device=args.device, amp=amp, decode_overrides=decode_overrides
            )
            origin = f"run {args.run}"
        else:
            trainer = self.trainer
            train_until(trainer, self.source, args.decode_train_steps)
            config = trainer.config
            model, tokenizers, device = trainer.model, trainer.tokenizers, trainer.device
            # training is over: decode as s2s translate would load the saved model
            model = cast_for_decoding(model.eval(), amp, device)
            origin = f"trained here for {trainer.progress.step} steps"
        decode = config.decode.model_copy(update={"amp": amp})
        return Translator(model, tokenizers, decode, device), bench_config, origin, precision

    def decode(self) -> dict[str, Any]:
        args = self.args
        translator, config, origin, precision = self._translator()
        lines, refs, test_name = test_split(args, config)
        tokenize = args.bleu_tokenize or ("none" if args.preset == "peers" else "13a")
        batchings = [0] + ([args.decode_batch_sentences] if args.decode_batch_sentences else [])
        rows = []
        for batch_sentences in batchings:
            for beam in args.beams:
                waited = self.quiet()
                with OtherLoad() as load:
                    row = decode_speed(
                        translator, lines, refs, beam, batch_sentences, args.repeats, tokenize
                    )
                row["precision"] = precision
                row["other_processes_cpu_share"] = load.share
                row["quiet_wait"] = waited
                rows.append(row)
        return {"model": origin, "test": test_name, "sentences": len(lines), "rows": rows}

    def cells(self) -> dict[str, Any]:
        argv = ["--device", self.args.device, *shlex.split(self.args.cell_args)]
        if self.args.cells:
            argv += ["--cells", *self.args.cells]
        if self.args.threads:
            argv += ["--threads", str(self.args.threads)]
        waited = self.quiet()
        with OtherLoad() as load:
            setup, rows = bench_cells.run_cells(bench_cells.parse_args(argv))
        setup["other_processes_cpu_share"] = load.share
        setup["quiet_wait"] = waited
        return {"setup": setup, "rows": rows}


def resolve_device_name(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise S2SError("--device cuda: no CUDA device is available (use cpu)")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise S2SError(f"--only {text!r}: pick from {','.join(PARTS)}")
    return parts


# -- the table --------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    """Every number of ``results`` as plain text, ending with the docs/performance.md row."""
    lines = []
    m = results["machine"]
    lines.append(
        f"machine: {m['cpu']} ({m['cores']} cores), torch {m['torch']}, {m['threads']} threads, "
        f"device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else "")
    )
    conditions = results["conditions"]
    lines.append(f"preset: {conditions['preset']}, recipe {conditions['recipe']}")
    train = results.get("train")
    if train:
        lines.append("")
        lines.append(
            f"train: {_num(train['tokens_per_second'])} target tok/s over {train['timed_steps']} "
            f"steps after {train['warmup_steps']} warm-up (windows of {train['window_steps']}: "
            f"median {_num(train['window_median_tokens_per_second'])}, "
            f"{_num(train['window_min_tokens_per_second'])}-"
            f"{_num(train['window_max_tokens_per_second'])}), "
            f"{train['steps_per_second']:.2f} steps/s"
        )
        lines.append(
            f"       {train['mean_sentences_per_batch']} sentences and "
            f"{_num(train['mean_target_tokens_per_step'])} target tokens per step "
            f"({train['train']['batching']}), amp {train['amp']}, "
            f"{_num(train['parameters'])} parameters"
        )
        lines.append(
            f"       peak memory {_num(train['peak_memory_mib'], 1)} MiB "
            f"({train['memory_measure']}); "
            f"other processes used {_share(train['other_processes_cpu_share'])} of the CPU"
        )
    decode = results.get("decode")
    if decode:
        lines.append("")
        lines.append(
            f"decode: model {decode['model']}; {decode['sentences']} sentences of {decode['test']}"
        )
        lines.append(
            f"  {'beam':>4}  {'batching':<32} {'sent/s':>8} {'1st run':>8} {'seconds':>8} "
            f"{'BLEU':>6}  other CPU"
        )
        for row in decode["rows"]:
            lines.append(
                f"  {row['beam']:>4}  {row['batching']:<32} {row['sentences_per_second']:>8.1f} "
                f"{row['first_run_sentences_per_second']:>8.1f} {row['seconds']:>8.2f} "
                f"{row['bleu']:>6.2f}  {_share(row['other_processes_cpu_share'])}"
            )
    lines.append("")
    lines.append(
        "machine | torch | threads | train tok/s | peak mem | greedy sent/s | beam-5 sent/s | BLEU"
    )
    lines.append(summary_row(results))
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def summary_row(results: dict[str, Any]) -> str:
    """One markdown table row for docs/performance.md (decoding at s2s's own batching;
    BLEU of beam 5, else of greedy)."""
    m = results["machine"]
    machine = m.get("gpu") or f"{m['cpu']} ({m['cores']} cores)"
    train = results.get("train") or {}
    rows = (results.get("decode") or {}).get("rows", [])
    own = [r for r in rows if not r["batching"].endswith("sentences")] or rows
    by_beam = {r["beam"]: r for r in own}
    best = by_beam.get(5) or by_beam.get(1) or {}
    memory = train.get("peak_memory_mib")
    cells = [
        machine,
        m["torch"],
        str(m["threads"]),
        _num(train.get("tokens_per_second")),
        "-" if memory is None else f"{memory:,.0f} MiB",
        _num(by_beam.get(1, {}).get("sentences_per_second")),
        _num(by_beam.get(5, {}).get("sentences_per_second")),
        _num(best.get("bleu"), 1),
    ]
    return "| " + " | ".join(cells) + " |"


def print_results(results: dict[str, Any]) -> None:
    print(format_table(results))
    if "cells" in results:
        print()
        bench_cells.print_table(results["cells"]["rows"])


# -- command line -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    add = parser.add_argument
    add("--only", default="train,decode,cells", help="parts to run: train,decode,cells")
    add("--recipe", type=Path, default=DEFAULT_RECIPE, help="translation recipe (recipes/mt.toml)")
    add(
        "--preset",
        choices=("recipe", "peers"),
        default="recipe",
        help="recipe: the recipe as it is; peers: the OpenNMT-py / Joey NMT benchmark model",
    )
    add("--peer-data", type=Path, help=f"--preset peers: {PEER_DATA_HELP}")
    add(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe key, as `s2s train --set` (repeatable)",
    )
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    add("--amp", choices=AMP_CHOICES, help="default: the recipe's train.amp")
    add(
        "--decode-amp",
        choices=DECODE_AMP_CHOICES,
        help="decoding precision (default: the recipe's decode.amp)",
    )
    add("--steps", type=int, default=150, help="timed training steps")
    add("--warmup", type=int, default=20, help="untimed training steps before them")
    add("--window", type=int, default=50, help="steps per timing window")
    add(
        "--batch-sentences",
        type=int,
        help="train on batches of N sentences instead of train.max_tokens (peers: 64)",
    )
    add("--run", type=Path, help="decode this trained run directory")
    add(
        "--decode-train-steps",
        type=int,
        default=600,
        help="without --run: train the benchmark model this many steps, then decode it",
    )
    add("--beams", type=int, nargs="+", default=[1, 5])
    add(
        "--decode-batch-sentences",
        type=int,
        default=PEER_BATCH_SENTENCES,
        help="also decode in batches of N sentences (0: only decode.batch_tokens)",
    )
    add("--repeats", type=int, default=3, help="timed decoding runs (median)")
    add("--sentences", type=int, default=0, help="decode the first N test sentences (0: all)")
    add("--test-src", type=Path, help="decoding test sources (default: the recipe's data.test)")
    add("--test-ref", type=Path, help="decoding test references")
    add("--bleu-tokenize", help="sacreBLEU tokenizer (default 13a; 'none' for --preset peers)")
    add("--cells", nargs="+", help="cells to time (default: every installed cell)")
    add("--cell-args", default="", help="more tools/bench_cells.py options, quoted")
    add(
        "--work-dir",
        type=Path,
        help="scratch run directory, kept to reuse its tokenizer (default: a temporary one)",
    )
    add(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each timed part wait up to this long for other processes to go quiet",
    )
    add(
        "--quiet-threshold",
        type=float,
        default=0.1,
        help="quiet: other processes use less than this share of all cores",
    )
    add("--json", type=json_path, help="write all results here")
    args = parser.parse_args(argv)
    try:
        parse_parts(args.only)
    except S2SError as error:
        parser.error(str(error))
    if args.preset == "peers" and args.peer_data is None:
        parser.error(f"--preset peers needs --peer-data DIR: {PEER_DATA_HELP}")
    for name in ("steps", "window", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the asked-for parts; the scratch run directory is removed unless --work-dir."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="s2s-bench-")))
        return Harness(args, work_dir).run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if "train" in parse_parts(args.only):
            # as `s2s train` does, so memory numbers match real training; a decode part in
            # the same process then decodes under the cap too, slower in bf16 than s2s translate
            limit_onednn_cache()
        results = run_benchmark(args)
    except S2SError as error:
        print(f"bench: {error}", file=sys.stderr)
        return error.exit_code
    print_results(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    flush_denormals_in_script("bench")  # as s2s does, before torch starts its threads
    sys.exit(main())
