"""`s2s export` of speech runs and `s2s transcribe` on the exported directory (s2s.exported
.recognizer, .ctc): the numpy features agree with the torch ones, and the exported model
gives the PyTorch run's transcripts token for token (greedy, beam, joint CTC/attention),
from audio and from Sphinx cepstra, in a process where torch cannot be imported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile
from helpers import run_without_torch, without_torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import AudioConfig
from s2s.data.archive import extract_archive
from s2s.errors import S2SError
from s2s.exported.recognizer import ExportedRecognizer
from s2s.exported.translator import ExportedTranslator
from s2s.tasks.speech.audio import fbank, utterance_features
from s2s.tasks.speech.features import fbank_features, feature_array, read_audio
from s2s.tasks.speech.transcriber import load_speech_run

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
FSDD = RECIPES / "data" / "fsdd"
AN4 = RECIPES / "data" / "an4"
# numpy's and torch's float32 FFTs round differently: on 100 FSDD recordings the log-mel
# energies differed by at most 3.5e-4 and the normalised features by 2.9e-4
FEATURE_TOLERANCE = 1e-3
CRNN = ("model.cell=crnn", "train.max_length=200")
TINY = [
    "model.embed_size=16",
    "model.hidden_size=32",
    "model.encoder_layers=1",
    "train.max_steps=4",
    "train.valid_every=4",
    "train.warmup_steps=2",
    "train.tensorboard=false",
    "train.threads=1",
    "decode.beam_size=2",
]


@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_archive(FSDD / "recordings.tar.xz", tmp_path_factory.mktemp("fsdd"))


def clips(fsdd_root: Path, count: int) -> list[Path]:
    """``count`` recordings spread over digits and speakers."""
    return sorted((fsdd_root / "recordings").glob("*.flac"))[:: 3000 // count][:count]


def train_speech(recipe: str, corpus: Path, folder: Path, *overrides: str) -> Path:
    """A tiny run of ``recipe`` on 12 utterances of each split of ``corpus``."""
    folder.mkdir(parents=True)
    sets = [*TINY, *overrides]
    for split, every in {"train": 60, "valid": 25}.items():
        lines = (corpus / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        path = folder / f"{split}.tsv"
        path.write_text("\n".join([lines[0], *lines[1::every][:12]]) + "\n", encoding="utf-8")
        sets.append(f"data.{split}.path={path}")
    out = folder / "run"
    args = ["train", str(RECIPES / recipe), "--out", str(out), "-q"]
    result = CliRunner().invoke(app, [*args, *(x for o in sets for x in ("--set", o))])
    assert result.exit_code == 0, result.output
    return out


def export(run: Path, out: Path) -> Path:
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def assert_same_transcripts(run: Path, out: Path, files: list[Path], weight: float) -> None:
    """Exported and PyTorch transcripts are equal, greedy and in a beam of 3, with
    decode.ctc_weight = ``weight``; and the model says different things."""
    config, recognizer = load_speech_run(
        run, device="cpu", decode_overrides=[f"decode.ctc_weight={weight}"]
    )
    exported = ExportedRecognizer(out)
    exported.decode.ctc_weight = weight
    torch_features = [utterance_features(path, config.audio) for path in files]
    numpy_features = [exported.features(path) for path in files]
    for beam in (1, 3):
        expected = recognizer.transcribe(torch_features, beam)
        assert len(set(expected)) > 3
        assert exported.transcribe(numpy_features, beam) == expected


@pytest.fixture(scope="module")
def digits(fsdd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny run of recipes/asr-digits.toml (CTC head, joint decoding) and its export."""
    folder = tmp_path_factory.mktemp("digits")
    run = train_speech("asr-digits.toml", FSDD, folder / "data")
    return run, export(run, folder / "digits.onnx")


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_exported_recogniser_transcribes_as_the_run_does(
    digits: tuple[Path, Path], fsdd_root: Path, weight: float
) -> None:
    run, out = digits
    assert_same_transcripts(run, out, clips(fsdd_root, 40), weight)


def test_numpy_features_agree_with_the_torch_features(fsdd_root: Path) -> None:
    audio = AudioConfig(features="fbank", sample_rate=8000, n_mels=64, deltas=2)
    for path in clips(fsdd_root, 100):
        samples = read_audio(path, audio.sample_rate)
        expected = fbank(samples, audio).numpy()
        assert fbank_features(samples, audio).shape == expected.shape
        assert np.abs(fbank_features(samples, audio) - expected).max() < FEATURE_TOLERANCE
        expected = utterance_features(path, audio).numpy()
        assert np.abs(feature_array(path, audio) - expected).max() < FEATURE_TOLERANCE


def test_transcribe_on_an_exported_directory_runs_without_torch(
    digits: tuple[Path, Path], fsdd_root: Path, tmp_path: Path
) -> None:
    run, out = digits
    files = [str(path) for path in clips(fsdd_root, 6)]
    for beam in ("1", "3"):
        result = CliRunner().invoke(app, ["transcribe", str(run), *files, "--beam", beam])
        assert result.exit_code == 0, result.output
        expected = result.output.splitlines()
        assert without_torch("transcribe", str(out), *files, "--beam", beam) == expected
    paths = tmp_path / "paths.txt"  # paths on stdin; a blank line gives an empty line
    paths.write_text(f"{files[0]}\n\n{files[1]}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["transcribe", str(run)], input=paths.read_text())
    assert without_torch("transcribe", str(out), "-q", stdin=paths) == result.output.splitlines()
    missing = tmp_path / "missing.wav"
    done = run_without_torch("transcribe", str(out), files[0], str(missing), files[1])
    assert done.returncode == 1 and len(done.stdout.decode().splitlines()) == 1
    assert done.stderr.decode().strip() == f"s2s: error: {missing}: file not found"
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"not audio")
    done = run_without_torch("transcribe", str(out), str(noise))
    message = done.stderr.decode().strip()
    assert done.returncode == 1 and message.startswith(f"s2s: error: {noise}: cannot read audio")
    assert len(message.splitlines()) == 1


def test_a_recogniser_from_sphinx_cepstra_exports(tmp_path: Path) -> None:
    # recipes/asr.toml reads .mfc files: the exported model reads them too
    run = train_speech("asr.toml", AN4, tmp_path / "data")
    out = export(run, tmp_path / "an4.onnx")
    files = sorted((run / "cache").rglob("*.mfc"))[:30]
    config, recognizer = load_speech_run(run, device="cpu")
    for path in files[:5]:
        expected = utterance_features(path, config.audio).numpy()
        assert np.abs(feature_array(path, config.audio) - expected).max() < 1e-5
    assert_same_transcripts(run, out, files, 0.0)
    # Joint decoding, greedy. (AN4's utterances give 100+ encoder frames, so CTC prefix
    # scores are sums of magnitude 100 and more, where float32 rounds at 1e-5, and numpy and
    # PyTorch round differently; a 4-step model's nearly flat CTC posteriors tie candidates
    # to that precision, so its beams part on a few utterances: docs/export.md.)
    features = [utterance_features(path, config.audio) for path in files]
    exported = ExportedRecognizer(out)
    assert exported.decode.ctc_weight == config.decode.ctc_weight > 0
    expected = recognizer.transcribe(features, 1)
    assert exported.transcribe([exported.features(path) for path in files], 1) == expected


NO_CTC = ("model.init=uniform", "train.ctc_weight=0", "decode.ctc_weight=0")


@pytest.mark.parametrize(
    ("cell", "overrides"), [("gru", NO_CTC), ("rnn", ("decode.ctc_weight=0.5",))]
)
def test_gru_and_rnn_recognisers_export_with_and_without_a_ctc_head(
    cell: str, overrides: tuple[str, ...], fsdd_root: Path, tmp_path: Path
) -> None:
    run = train_speech("asr-digits.toml", FSDD, tmp_path / "data", f"model.cell={cell}", *overrides)
    out = export(run, tmp_path / "speech.onnx")
    ctc = overrides != NO_CTC
    outputs = {o.name for o in onnx.load(out / "encoder.onnx").graph.output}
    assert "memory" in outputs and ("ctc_log_probs" in outputs) == ctc
    assert json.loads((out / "s2s-export.json").read_text())["ctc"] is ctc
    assert_same_transcripts(run, out, clips(fsdd_root, 40), 0.5 if ctc else 0.0)


def test_speech_export_errors_are_one_line(digits: tuple[Path, Path], tmp_path: Path) -> None:
    run, out = digits
    with pytest.raises(S2SError, match=r"an exported speech model; use s2s transcribe with it"):
        ExportedTranslator(out)
    result = CliRunner().invoke(app, ["transcribe", str(out), "--ensemble", str(run), "a.wav"])
    assert result.exit_code == 1
    assert result.output.strip() == f"s2s: error: {out}: an exported model does not take --ensemble"
    text = shutil.copytree(out, tmp_path / "text")
    config = json.loads((text / "s2s-export.json").read_text())
    config |= {"task": "translation", "audio": None}
    (text / "s2s-export.json").write_text(json.dumps(config))
    with pytest.raises(S2SError, match=r"an exported translation model, not a speech model"):
        ExportedRecognizer(text)


def test_a_speech_encoder_that_loops_in_python_exports_per_length(
    fsdd_root: Path, tmp_path: Path
) -> None:
    # crnn's whole-sequence pass loops over time in Python, so a trace fixes the frame
    # count: one encoder graph per bucket of frames (128, then train.max_length = 200)
    run = train_speech("asr-digits.toml", FSDD, tmp_path / "data", *CRNN)
    out = export(run, tmp_path / "crnn.onnx")
    assert json.loads((out / "s2s-export.json").read_text())["encoder_buckets"] == [128, 200]
    assert {"encoder.128.onnx", "encoder.200.onnx"} <= {p.name for p in out.iterdir()}
    config, _ = load_speech_run(run, device="cpu")
    files = [p for p in clips(fsdd_root, 60) if utterance_features(p, config.audio).size(0) <= 200]
    assert len(files) > 30
    assert_same_transcripts(run, out, files, 0.5)
    longer = tmp_path / "eight.wav"  # eight recordings in a row: over 200 frames
    samples = np.concatenate([read_audio(path, 8000) for path in files[:8]])
    soundfile.write(longer, samples, 8000)
    with pytest.raises(S2SError, match=r"eight.wav: \d+ frames, more than the 200 that this"):
        ExportedRecognizer(out).features(longer)


def test_a_forecasting_run_is_refused_in_one_line(tmp_path: Path) -> None:
    # the task is read from the run's config before anything is loaded
    run = tmp_path / "series"
    run.mkdir()
    shutil.copy(RECIPES / "forecast-sine.toml", run / "config.toml")
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"s2s: error: {run}: a forecasting run; s2s export writes translation, "
        "summarisation, language-model and speech runs so far"
    )
