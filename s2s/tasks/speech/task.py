"""Speech recognition: log-mel features to text, with an optional CTC head; validated and
evaluated by WER and CER; decoded by `s2s transcribe`."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from s2s.errors import ConfigError, S2SError
from s2s.tasks.task import EvaluationRequest, Task

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from s2s.config import Config
    from s2s.core.cell_registry import SideCells
    from s2s.data.tokenizer import TokenizerPair
    from s2s.run.directory import RunDir
    from s2s.scores import Score
    from s2s.train.trainer import Trainer


class SpeechTask(Task):
    """An attention encoder-decoder from audio features to the one (target) vocabulary."""

    name: ClassVar[str] = "speech"
    metrics: ClassVar[tuple[str, ...]] = ("wer", "cer", "loss")
    uses_ctc: ClassVar[bool] = True
    transcribes: ClassVar[bool] = True
    serves: ClassVar[tuple[str, ...]] = ("transcribe",)
    refusal: ClassVar[str] = "a speech recogniser; use s2s transcribe or s2s evaluate with it"

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        if not config.tokenizer.joint:
            raise ConfigError(
                "a speech run has one vocabulary (its targets): tokenizer.joint = true"
            )

    def joint_vocabulary(self, config: Config) -> bool:
        return True  # one vocabulary: its targets'

    def check_extras(self, config: Config) -> None:
        from s2s.tasks.speech.audio import check_speech_extra

        check_speech_extra()

    def build_model(self, config: Config, tokenizers: TokenizerPair) -> torch.nn.Module:
        from s2s.tasks.speech.model import build_speech_model

        return build_speech_model(config, tokenizers.tgt.vocab_size)

    def build_meta_model(self, config: Config, cells: SideCells, vocab: int) -> torch.nn.Module:
        from s2s.core.seq2seq import Seq2Seq
        from s2s.data.tokenizer import PAD_ID

        return Seq2Seq(config.model, cells, vocab, vocab, PAD_ID, share_vocab=True)

    def trainer_class(self) -> type[Trainer]:
        from s2s.tasks.speech.trainer import SpeechTrainer

        return SpeechTrainer

    def evaluate(self, run_dir: Path, request: EvaluationRequest) -> list[Score]:
        from s2s.tasks.speech.transcriber import evaluate_speech_run

        if request.src is not None or request.ref is not None:
            raise S2SError("a speech run is evaluated on a manifest split (--split), not --src")
        return evaluate_speech_run(run_dir, request)

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        from s2s.tasks.speech.transcriber import score_speech_checkpoint

        return score_speech_checkpoint(run, checkpoint, device)
