"""Decoding precision (decode.amp / --amp): bf16 autocast and int8 matmuls on the CPU
decode the same sentences as fp32, and an impossible choice is a one-line error."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import search_step_log_probs

from s2s.core.search import length_penalty
from s2s.cpu import native_bf16 as cpu_has_native_bf16
from s2s.data.batching import collate
from s2s.data.tokenizer import PAD_ID
from s2s.errors import ConfigError, S2SError
from s2s.kernels.packed_linear import int8_supported
from s2s.kernels.precision import _warn_emulated_bf16, decode_autocast, resolve_amp
from s2s.tasks.loading import load_run
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.translator import Translator

SOURCES = [
    "A man is riding a bicycle.",
    "Two dogs play in the snow.",
    "A girl in a red dress is jumping.",
    "People are walking down the street.",
    "A woman is cooking in a kitchen.",
    "The boy throws a ball.",
]


def s2s(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args], input=stdin, capture_output=True, timeout=300
    )


def test_auto_is_fp32_on_cpu_and_fp16_needs_cuda() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(S2SError, match=r"decode\.amp = 'fp16' needs a CUDA device"):
        resolve_amp("fp16", cpu, "decode.amp")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_it_warns_once_that_it_is_emulated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native: bool
) -> None:
    monkeypatch.setattr("s2s.kernels.precision.native_bf16", lambda: native)
    _warn_emulated_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="s2s.kernels.precision"):
        for _ in range(2):
            assert resolve_amp("bf16", torch.device("cpu"), "train.amp") is torch.bfloat16
        assert resolve_amp("off", torch.device("cpu"), "train.amp") is None
    expected = (
        []
        if native
        else [
            "train.amp = 'bf16': this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is "
            "emulated and many times slower than fp32 here; use 'off'"
        ]
    )
    assert [record.getMessage() for record in caplog.records] == expected
    _warn_emulated_bf16.cache_clear()


INT8 = pytest.mark.skipif(not int8_supported(), reason="needs PyTorch's oneDNN int8 kernels")


def test_int8_is_for_decoding_on_the_cpu_only(tmp_path: Path) -> None:
    assert resolve_amp("int8", torch.device("cpu"), "decode.amp") is None  # fp32 around it
    with pytest.raises(S2SError, match=r"^decode\.amp = 'int8' runs on the CPU only"):
        resolve_amp("int8", torch.device("cuda"), "decode.amp")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\namp = "int8"\n')
    with pytest.raises(ConfigError, match=r"train\.amp"):
        load_config(recipe)


@pytest.mark.parametrize("amp", ["bf16", pytest.param("int8", marks=INT8)])
def test_cpu_precisions_find_hypotheses_as_good_as_fp32s(trained_run: Path, amp: str) -> None:
    """A tiny model's beams are near ties, so bf16 or int8 (7-bit inputs on CPUs without
    VNNI) may pick another hypothesis than fp32: the fp32 model must then score it nearly
    as well as its own best, which a search led astray by rounding would not."""
    results, models = {}, {}
    for choice in ("off", amp):
        config, tokenizers, models[choice], device = load_run(trained_run, None, "cpu", choice)
        translator = Translator(models[choice], tokenizers, config.decode, device)
        sources = translator.encode(SOURCES)
        results[choice] = translator.hypotheses(sources, beam_size=3)
    fp32_model, alpha = models["off"], config.decode.length_penalty
    for source, fp32, other in zip(sources, results["off"], results[amp], strict=True):
        best, found = fp32[0], other[0]
        assert found.tokens  # decoded, not an empty fallback
        assert fp32_score(fp32_model, source, best.tokens, alpha) == pytest.approx(best.score)
        if found.tokens == best.tokens:
            # the same tokens, scored in 8 bits of mantissa (bf16) or of integer (int8)
            assert found.score == pytest.approx(best.score, rel=0.05, abs=0.05)
        else:
            rescored = fp32_score(fp32_model, source, found.tokens, alpha)
            assert rescored >= best.score - 0.02 * abs(best.score)


def fp32_score(model: torch.nn.Module, source: list[int], tokens: list[int], alpha: float):
    """The beam search score of ``tokens`` (EOS added) under ``model`` in fp32."""
    batch = collate([0], [source], [tokens])
    log_probs = teacher_forced_log_probs(model, batch, "off")[0]  # [T, V]
    total = log_probs.gather(1, batch.tgt_out[0].unsqueeze(1)).sum()
    return (total / length_penalty(torch.tensor(len(tokens) + 1), alpha)).item()


@INT8
def test_a_run_loaded_to_decode_in_int8_keeps_fp32_weights_and_int8_copies(
    trained_run: Path,
) -> None:
    config, tokenizers, model, device = load_run(trained_run, None, "cpu", "int8")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    translator = Translator(model, tokenizers, config.decode, device)
    translator.hypotheses(translator.encode(SOURCES[:2]), beam_size=2)
    copy = model._packed_output._packed
    assert copy is not None and not isinstance(copy, torch.Tensor)  # int8, not fp32 oneDNN


def test_translate_amp_option(trained_run: Path) -> None:
    stdin = ("\n".join(SOURCES) + "\n").encode()
    for amp in ("bf16", "int8") if int8_supported() else ("bf16",):
        result = s2s("translate", str(trained_run), "--amp", amp, stdin=stdin)
        assert result.returncode == 0, result.stderr.decode()
        assert len(result.stdout.decode().splitlines()) == len(SOURCES)
    for bad, message in (
        ("fp16", "decode.amp = 'fp16' needs a CUDA device (use 'bf16' or 'off' on CPU)"),
        ("fp8", "--amp 'fp8': use one of auto, bf16, fp16, off, int8"),
    ):
        result = s2s("translate", str(trained_run), "--amp", bad, "--device", "cpu", stdin=stdin)
        assert result.returncode != 0
        assert result.stderr.decode().strip().splitlines() == [f"s2s: error: {message}"]


def test_a_run_loaded_to_decode_in_bf16_keeps_bf16_weights(trained_run: Path) -> None:
    """Stored bf16 weights spare autocast a cast per weight per step (and on the CPU run on
    weights packed for oneDNN, s2s.kernels.packed_linear): their next-token log-probs are as close
    to fp32's as autocast's over the fp32 weights are."""
    config, tokenizers, cast, device = load_run(trained_run, None, "cpu", "bf16")
    assert config.decode.amp == "bf16"
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    ids = Translator(cast, tokenizers, config.decode, device).encode(SOURCES)
    _, _, autocast, _ = load_run(trained_run, None, "cpu", "bf16", cast_weights=False)
    assert {p.dtype for p in autocast.parameters()} == {torch.float32}
    _, _, full, _ = load_run(trained_run, None, "cpu", "off")
    targets = [ids[1][:6], ids[0][:4], ids[2][:7]]  # source words are valid target ids
    batch = collate(list(range(3)), ids[:3], targets)
    reference = teacher_forced_log_probs(full, batch, "off")
    cast_error = teacher_forced_log_probs(cast, batch, "bf16") - reference
    autocast_error = teacher_forced_log_probs(autocast, batch, "bf16") - reference
    real = (batch.tgt_out != PAD_ID).unsqueeze(-1).expand_as(reference)
    assert cast_error[real].abs().max() < 0.05
    assert cast_error[real].abs().mean() <= autocast_error[real].abs().mean()


def teacher_forced_log_probs(model: torch.nn.Module, batch, amp: str) -> torch.Tensor:
    """Search steps' log-probs [B, T, V] along the batch's targets, under decode.amp."""
    with torch.no_grad(), decode_autocast(amp, torch.device("cpu"))():
        return search_step_log_probs(model, batch)


def test_only_training_caps_the_onednn_primitive_cache(tmp_path: Path, monkeypatch) -> None:
    """Training caps oneDNN's cache (its bf16 primitives are large); decoding keeps the
    default, since rebuilding its many small primitives slows beam search."""
    from typer.testing import CliRunner

    from s2s.cli import app

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "unset")  # restored afterwards
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    CliRunner().invoke(app, ["translate", str(tmp_path / "no-run")], input="a\n")
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    CliRunner().invoke(app, ["train", str(tmp_path / "no-recipe.toml")])
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"


@INT8
@pytest.mark.parametrize("native_bf16", [True, False])
def test_int8_runs_the_encoder_in_bf16_where_the_cpu_has_it(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    if native_bf16 and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: its encoder runs the LSTM in fp32")
    monkeypatch.setattr("s2s.kernels.precision.packs", lambda dtype: native_bf16)
    _, tokenizers, fp32_model, _ = load_run(trained_run, None, "cpu", "off")
    _, _, model, _ = load_run(trained_run, None, "cpu", "int8")
    batch = collate(list(range(len(SOURCES))), [tokenizers.src.encode(s) for s in SOURCES])
    src, lengths = batch.src, batch.src_lengths
    encoder_dtypes = []
    model.encoder.register_forward_hook(lambda _m, _i, out: encoder_dtypes.append(out[0].dtype))
    with torch.inference_mode():
        encoded, reference = model.encode(src, lengths), fp32_model.encode(src, lengths)
    assert encoder_dtypes == [torch.bfloat16 if native_bf16 else torch.float32]
    assert encoded.memory.dtype == encoded.keys.dtype == torch.float32  # the decoder's int8 steps
    error = (encoded.memory - reference.memory).norm() / reference.memory.norm()
    assert error < 0.02 if native_bf16 else error == 0
