"""Speech-to-text: the feature pipeline, the CTC + attention loss, SpecAugment, safe archive
extraction, and a smoke run of each speech recipe on a slice of its real data followed by
`s2s transcribe` and `s2s evaluate`."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch
from helpers import serving, tiny_overrides
from typer.testing import CliRunner

import s2s
from s2s.cli import app
from s2s.config import AudioConfig, ModelConfig
from s2s.data.archive import extract_archive
from s2s.data.batching import Batch
from s2s.errors import S2SError
from s2s.kernels.packed_linear import int8_supported
from s2s.tasks.speech.audio import fbank, mel_centers, read_mfc, utterance_features
from s2s.tasks.speech.data import speech_collate
from s2s.tasks.speech.model import SpeechSeq2Seq, subsampled_lengths
from s2s.tasks.speech.specaugment import spec_augment
from s2s.tasks.speech.trainer import joint_loss
from s2s.train.trainer import label_smoothed_loss

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
AN4 = RECIPES / "data" / "an4"
FSDD = RECIPES / "data" / "fsdd"


@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_archive(FSDD / "recordings.tar.xz", tmp_path_factory.mktemp("fsdd"))


@pytest.fixture(scope="module")
def an4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_archive(AN4 / "an4_cep.tar.xz", tmp_path_factory.mktemp("an4"))


def manifest_rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def write_slice(source: Path, target: Path, every: int, count: int) -> Path:
    lines = source.read_text(encoding="utf-8").splitlines()
    target.write_text("\n".join([lines[0], *lines[1::every][:count]]) + "\n", encoding="utf-8")
    return target


def write_slices(corpus: Path, folder: Path, every: dict[str, int], count: int) -> dict[str, Path]:
    """The manifests ``corpus/<split>.tsv`` cut to ``count`` rows each (every N-th), in
    ``folder``, by split name."""
    return {
        name: write_slice(corpus / f"{name}.tsv", folder / f"{name}.tsv", step, count)
        for name, step in every.items()
    }


# -- features -------------------------------------------------------------------------------
@pytest.mark.parametrize("where", [20, 10.3, 31.8])
def test_a_sine_wave_peaks_in_the_mel_filter_nearest_its_frequency(where: float) -> None:
    audio = AudioConfig(sample_rate=16000, n_mels=40)
    centres = mel_centers(16000, 40)
    low = int(where)
    frequency = centres[low] + (where - low) * (centres[low + 1] - centres[low])
    expected = int(np.argmin(np.abs(centres - frequency)))
    t = np.arange(8000) / 16000
    features = fbank((0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), audio)
    assert features.shape == (8000 // 160 + 1, 40)
    assert int(features[5:-5].mean(0).argmax()) == expected


def test_features_of_a_wav_equal_those_of_the_same_wav_at_another_rate(
    fsdd_root: Path, tmp_path: Path
) -> None:
    original = fsdd_root / "recordings" / "3_theo_12.flac"
    samples, rate = soundfile.read(original, dtype="float32")
    assert rate == 8000
    upsampled = tmp_path / "16k.wav"
    soundfile.write(upsampled, soxr.resample(samples, 8000, 16000), 16000, subtype="PCM_16")
    audio = AudioConfig(sample_rate=8000, n_mels=40, normalize=False)
    direct = utterance_features(original, audio)
    resampled = utterance_features(upsampled, audio)
    assert direct.shape == resampled.shape
    loud = direct > direct.max() - 8  # log energies within 8 nats of the peak
    assert (direct - resampled).abs()[loud].mean() < 0.05
    assert (direct - resampled).abs()[loud].quantile(0.99) < 0.5


def test_mfc_reader_reads_a_real_an4_file(an4_root: Path) -> None:
    row = manifest_rows(AN4 / "test.tsv")[0]
    cepstra = read_mfc(an4_root / row["feat_path"])
    assert cepstra.shape == (int(row["n_frames"]), 13)
    assert np.isfinite(cepstra).all() and cepstra[:, 0].std() > 0
    audio = AudioConfig(features="precomputed", deltas=2)
    features = utterance_features(an4_root / row["feat_path"], audio)
    assert features.shape == (int(row["n_frames"]), 39)
    assert features.mean(0).abs().max() < 1e-4  # per-utterance mean normalisation


def test_a_damaged_mfc_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mfc"
    bad.write_bytes(np.array([26], dtype=">i4").tobytes() + np.zeros(13, dtype=">f4").tobytes())
    with pytest.raises(S2SError, match=r"bad\.mfc: not a Sphinx \.mfc file"):
        read_mfc(bad)


# -- model and loss ----------------------------------------------------------------------------
def tiny_model(ctc: bool = True) -> SpeechSeq2Seq:
    from s2s.core.cell_registry import cell_factory

    torch.manual_seed(0)
    config = ModelConfig(embed_size=16, hidden_size=24, encoder_layers=1, decoder_layers=1)
    config.dropout = 0.0
    audio = AudioConfig(features="precomputed", feature_dim=13)
    return SpeechSeq2Seq(config, audio, cell_factory("lstm", {}), 12, ctc=ctc)


def tiny_batch() -> Batch:
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(n, 13, generator=generator) for n in (40, 29)]
    return speech_collate([0, 1], features, [[5, 6, 7], [8, 4]])


def test_ctc_weight_zero_is_the_attention_loss_and_w_mixes_the_two() -> None:
    model, batch = tiny_model(), tiny_batch()
    attention = label_smoothed_loss(
        model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out, 0.1
    )
    assert torch.allclose(joint_loss(model, batch, 0.0, 0.1), attention)
    ctc_only = (joint_loss(model, batch, 0.5, 0.1) - 0.5 * attention) / 0.5
    assert ctc_only > 0
    for weight in (0.2, 0.7):
        expected = (1 - weight) * attention + weight * ctc_only
        assert torch.allclose(joint_loss(model, batch, weight, 0.1), expected, atol=1e-4)


def test_ctc_gradients_reach_the_encoder_through_the_ctc_head() -> None:
    from s2s.data.tokenizer import EOS_ID
    from s2s.tasks.speech.model import ctc_loss_sum

    model, batch = tiny_model(), tiny_batch()
    _, log_probs, lengths = model.forward_with_ctc(batch.src, batch.src_lengths, batch.tgt_in)
    assert log_probs.shape == (10, 2, 12)  # 40 frames -> 20 -> 10
    assert lengths.tolist() == subsampled_lengths(batch.src_lengths, 2).tolist() == [10, 8]
    ctc_loss_sum(log_probs, lengths, batch.tgt_out, EOS_ID).backward()
    for module in (model.ctc_head, model.encoder, model.frontend):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert model.decoder.layers[0][0].parameters().__next__().grad is None


def test_padding_does_not_change_an_utterance_encoding() -> None:
    model, batch = tiny_model().eval(), tiny_batch()
    together = model.encode(batch.src, batch.src_lengths).memory[1, :8]
    alone = model.encode(batch.src[1:, :29], batch.src_lengths[1:]).memory[0]
    assert torch.allclose(together, alone, atol=1e-5)


# -- SpecAugment --------------------------------------------------------------------------------
def test_spec_augment_masks_stay_within_their_bounds() -> None:
    audio = AudioConfig(freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=40)
    generator = torch.Generator().manual_seed(3)
    for frames in (7, 100, 400):
        ones = torch.ones(frames, 39)
        for _ in range(20):
            masked = spec_augment(ones, audio, generator)
            zero_columns = int((masked == 0).all(0).sum())
            zero_rows = int((masked == 0).all(1).sum())
            assert zero_columns <= 2 * 5
            assert zero_rows <= 2 * min(40, int(frames * 0.2))
            assert set(masked.unique().tolist()) <= {0.0, 1.0}
    off = AudioConfig(freq_masks=0, time_masks=0)
    assert torch.equal(spec_augment(torch.ones(50, 13), off), torch.ones(50, 13))


# -- archives -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "ok/../../evil.txt"])
def test_archive_extraction_refuses_path_traversal(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member in ("fine.txt", name):
            info = tarfile.TarInfo(member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"data"))
    cache = tmp_path / "cache"
    with pytest.raises(S2SError, match="refusing member"):
        extract_archive(archive, cache)
    assert not (tmp_path / "evil.txt").exists()
    assert not list((cache / "archives").glob("bad.tar.gz-*/fine.txt"))  # nothing half-done


def test_archive_extraction_refuses_links(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(S2SError, match="only files and folders"):
        extract_archive(archive, tmp_path / "cache")


# -- recipes end to end -----------------------------------------------------------------------
TINY = [
    "model.embed_size=16",
    "model.hidden_size=32",
    "model.encoder_layers=1",
    "train.max_steps=4",
    "train.valid_every=2",
    "train.warmup_steps=2",
    "train.tensorboard=false",
    "train.threads=1",
    "decode.beam_size=2",
]


def smoke_train(recipe: str, tmp_path: Path, slices: dict[str, Path]) -> Path:
    out = tmp_path / "run"
    overrides = [*TINY, *(f"data.{name}.path={path}" for name, path in slices.items())]
    args = ["train", str(RECIPES / recipe), "--out", str(out), "-q"]
    result = CliRunner().invoke(app, [*args, *(x for o in overrides for x in ("--set", o))])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"valid_wer", "valid_cer"} <= set(records[-1])
    return out


def check_evaluate(run: Path, count: int) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "test", "-q"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[::2]] == [
        "WER",
        "CER",
        "accuracy",
    ]
    assert f"of {count} transcripts" in result.output
    record = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert set(record["scores"]) == {"WER", "CER", "accuracy"} and record["split"] == "test"
    # --amp reaches the recogniser: bf16 (and int8) decode, fp16 is refused on a CPU
    for amp in ("bf16", "int8") if int8_supported() else ("bf16",):
        result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "test", "--amp", amp])
        assert result.exit_code == 0 and f"of {count} transcripts" in result.output, result.output
    fp16 = CliRunner().invoke(app, ["evaluate", str(run), "--device", "cpu", "--amp", "fp16"])
    assert fp16.exit_code != 0 and "decode.amp = 'fp16' needs a CUDA device" in fp16.output
    # --set decode.key=value reaches the recogniser, and the record says what was set
    early = ["evaluate", str(run), "--split", "test", "--set", "decode.stopping=early"]
    result = CliRunner().invoke(app, early)
    assert result.exit_code == 0 and f"of {count} transcripts" in result.output, result.output
    record = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert record["set"] == ["decode.stopping=early"]
    refused = CliRunner().invoke(app, ["transcribe", str(run), "--set", "audio.sample_rate=1"])
    assert refused.exit_code != 0 and "only decode.* keys" in refused.output


def test_digits_recipe_trains_transcribes_flac_and_wav_files_and_evaluates(
    fsdd_root: Path, tmp_path: Path
) -> None:
    slices = write_slices(FSDD, tmp_path, {"train": 60, "valid": 25, "test": 25}, 12)
    run = smoke_train("asr-digits.toml", tmp_path, slices)
    clips = [fsdd_root / "recordings" / f"{d}_jackson_0.flac" for d in (7, 2, 9)]
    wav = tmp_path / "two.wav"  # a wav at 16 kHz: read and resampled to the recipe's 8 kHz
    samples, _ = soundfile.read(clips[1], dtype="float32")
    soundfile.write(wav, soxr.resample(samples, 8000, 16000), 16000, subtype="PCM_16")
    result = CliRunner().invoke(app, ["transcribe", str(run), *map(str, [*clips, wav])])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 4
    stdin = f"{clips[0]}\n\n{clips[2]}\n"  # paths on stdin; a blank line gives an empty line
    result = CliRunner().invoke(app, ["transcribe", str(run)], input=stdin)
    assert result.exit_code == 0 and len(result.output.split("\n")) == 4
    assert result.output.split("\n")[1] == ""
    check_evaluate(run, 12)


def test_transcribe_names_a_missing_file_after_printing_earlier_transcripts(
    fsdd_root: Path, tmp_path: Path
) -> None:
    slices = write_slices(FSDD, tmp_path, {"train": 100, "valid": 100}, 6)
    run = smoke_train("asr-digits.toml", tmp_path, slices)
    clip = fsdd_root / "recordings" / "4_lucas_1.flac"
    missing = tmp_path / "missing.wav"
    result = CliRunner().invoke(app, ["transcribe", str(run), str(clip), str(missing), str(clip)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 2 and f"{missing}: file not found" in lines[1]


def test_the_python_api_and_s2s_serve_transcribe_as_the_command_does(
    fsdd_root: Path, tmp_path: Path
) -> None:
    slices = write_slices(FSDD, tmp_path, {"train": 100, "valid": 100}, 6)
    run = smoke_train("asr-digits.toml", tmp_path, slices)
    clips = [fsdd_root / "recordings" / f"{d}_jackson_0.flac" for d in (7, 2)]
    result = CliRunner().invoke(app, ["transcribe", str(run), str(clips[0]), str(clips[1])])
    assert result.exit_code == 0, result.output
    model = s2s.load(run, device="cpu")
    assert model.methods == ("transcribe",)
    assert model.transcribe([clips[0], "", clips[1]]) == [
        *result.output.splitlines()[:1],
        "",
        result.output.splitlines()[1],
    ]
    uploads = [base64.b64encode(clip.read_bytes()).decode() for clip in clips]
    with serving(run) as server:
        body = {"inputs": [uploads[0], "", uploads[1]], "format": "flac"}
        status, _, answer = server.request("POST", "/v1/transcribe", body)
        assert status == 200 and answer["outputs"] == model.transcribe([clips[0], "", clips[1]])
        status, _, answer = server.request("POST", "/v1/transcribe", {"inputs": ["%%%"]})
        assert status == 422 and "base64" in answer["error"]
        status, _, answer = server.request("POST", "/v1/translate", {"inputs": ["a"]})
        assert status == 404 and "offers transcribe, not translate" in answer["error"]


def test_an4_recipe_trains_on_cepstra_from_its_archive_and_evaluates(
    an4_root: Path, tmp_path: Path
) -> None:
    slices = write_slices(AN4, tmp_path, {"train": 80, "valid": 10, "test": 13}, 10)
    run = smoke_train("asr.toml", tmp_path, slices)
    rows = manifest_rows(slices["test"])[:3]
    files = [str(an4_root / row["feat_path"]) for row in rows]
    result = CliRunner().invoke(app, ["transcribe", str(run), *files])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 3
    check_evaluate(run, 10)
    card = CliRunner().invoke(app, ["info", str(run)])
    assert card.exit_code == 0 and "10 utterances" in card.output
    # both validated checkpoints are kept (keep_best = 2); averaging validates speech runs too
    averaged = CliRunner().invoke(app, ["average", str(run), "--last", "2"])
    assert averaged.exit_code == 0, averaged.output
    lines = averaged.output.splitlines()
    assert lines[1].startswith("validation before (step-4.pt): wer ") and ", cer " in lines[1]
    assert lines[2].startswith("validation after (averaged-last-2.pt): wer ")
    assert lines[3].startswith(f"use it with: s2s evaluate {run} --checkpoint ")


def test_spec_augment_masks_training_batches_only(tmp_path: Path) -> None:
    from s2s.run.directory import RunDir
    from s2s.tasks.recipe import load_config
    from s2s.tasks.registry import make_trainer

    slices = write_slices(AN4, tmp_path, {"train": 30, "valid": 30}, 20)
    overrides = [
        "train.max_tokens=1500",
        "train.max_length=1500",
        "audio.tempo_perturbation=0",
        *TINY,
        *(f"data.{name}.path={path}" for name, path in slices.items()),
    ]
    config = load_config(RECIPES / "asr.toml", overrides)
    trainer = make_trainer(config, RunDir(tmp_path / "run"), quiet=True)
    indices = [0, 1, 2]
    plain_src = trainer.train_data.src
    plain = speech_collate(indices, plain_src).src
    masked = trainer._collate(indices).src
    assert masked.shape == plain.shape and not torch.equal(masked, plain)
    assert torch.equal(masked[masked != plain], torch.zeros_like(masked[masked != plain]))
    assert trainer.validation_loss() == trainer.validation_loss()  # no random masking
    trainer.config.audio.tempo_perturbation = 0.1  # as in the recipe: lengths change too
    stretched = trainer._collate(indices)
    assert not torch.equal(stretched.src_lengths, speech_collate(indices, plain_src).src_lengths)
    longest = [max(trainer.train_data.src[i].size(0) for i in b) for b in trainer._epoch_batches(0)]
    assert longest == sorted(longest)  # SortaGrad: the first epoch goes short to long


def test_tempo_perturbation_resamples_frames_within_its_rate_range() -> None:
    from s2s.tasks.speech.specaugment import tempo_perturb

    ramp = torch.linspace(0, 1, 100).unsqueeze(1).repeat(1, 3)  # 100 frames, 3 features
    generator = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(50):
        out = tempo_perturb(ramp, 0.2, generator)
        lengths.add(out.size(0))
        assert 100 / 1.2 - 1 <= out.size(0) <= 100 / 0.8 + 1 and out.size(1) == 3
        assert torch.allclose(out[[0, -1]], ramp[[0, -1]])  # same start and end
        assert bool((out[1:, 0] >= out[:-1, 0]).all())  # still the same ramp, resampled
    assert min(lengths) < 95 and max(lengths) > 105
    assert tempo_perturb(ramp, 0.0, generator) is ramp


def test_speech_runs_decode_as_an_ensemble_and_with_a_language_model(
    fsdd_root: Path, tmp_path: Path
) -> None:
    slices = write_slices(FSDD, tmp_path, {"train": 100, "valid": 100, "test": 100}, 6)
    run = smoke_train("asr-digits.toml", tmp_path, slices)
    transcripts = [row["transcript"] for row in manifest_rows(FSDD / "train.tsv")]
    text = tmp_path / "transcripts.txt"
    text.write_text("\n".join(transcripts[:300]) + "\n", encoding="utf-8")
    lm_sets = [*tiny_overrides(tmp_path / "lm-data", steps=6), f"tokenizer.model={run}/spm.model"]
    lm_sets += [f'data.train.text="{text}"', f'data.valid.text="{text}"']
    lm = tmp_path / "lm"
    args = ["train", str(RECIPES / "lm.toml"), "--out", str(lm), "-q"]
    trained = CliRunner().invoke(app, [*args, *(x for o in lm_sets for x in ("--set", o))])
    assert trained.exit_code == 0, trained.output
    clips = [str(fsdd_root / "recordings" / f"{d}_jackson_0.flac") for d in (7, 2, 9)]
    alone = CliRunner().invoke(app, ["transcribe", str(run), *clips])
    assert alone.exit_code == 0, alone.output
    for extra in (["--ensemble", str(run)], ["--lm", str(lm), "--lm-weight", "0"]):
        combined = CliRunner().invoke(app, ["transcribe", str(run), *extra, *clips])
        assert combined.exit_code == 0 and combined.output == alone.output, combined.output
    before = (run / "evaluations.jsonl").read_text() if (run / "evaluations.jsonl").exists() else ""
    fused = CliRunner().invoke(app, ["evaluate", str(run), "--lm", str(lm), "--lm-weight", "0.5"])
    assert fused.exit_code == 0 and "\nWER = " in fused.output, fused.output
    after = (run / "evaluations.jsonl").read_text() if (run / "evaluations.jsonl").exists() else ""
    assert after == before  # a fused score is not the run's own: not recorded
