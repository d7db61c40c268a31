"""Transcribes audio files with an exported model: `python transcribe.py --model <file> AUDIO...`.

Prints `<path>\\t<text>` per file, in the order given. Any sample rate soundfile reads is
resampled to 16 kHz. Needs only the model file written by export.py (not the training run or
its corpus). The hypotheses equal decode.py's for the same weights and decoder.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from recipes.data.audio import BadAudioError  # noqa: E402
from recipes.inference import ExportedModel, ModelFileError  # noqa: E402

DECODING_CONFIGS = Path(__file__).resolve().parent / "conf" / "decoding"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_decoder(kind: str, beam_size: int | None = None, max_symbols_per_frame: int | None = None):
    """The decoder of conf/decoding/<kind>.yaml, with the given settings."""
    if kind not in ("greedy", "beam"):
        raise ValueError(f"--decoding must be greedy or beam, got {kind!r}")
    cfg = OmegaConf.load(DECODING_CONFIGS / f"{kind}.yaml")
    if beam_size is not None:
        if kind != "beam":
            raise ValueError("--beam-size applies to --decoding beam only")
        cfg.beam_size = beam_size
    if max_symbols_per_frame is not None:
        cfg.max_symbols_per_frame = max_symbols_per_frame
    return hydra.utils.instantiate(cfg)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model file written by export.py")
    parser.add_argument("audio", nargs="+", help="audio files (any format and rate soundfile reads)")
    parser.add_argument("--decoding", default="greedy", choices=("greedy", "beam"))
    parser.add_argument("--beam-size", type=int, default=None, help="beam width (default: conf/decoding/beam.yaml)")
    parser.add_argument("--max-symbols-per-frame", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU when present)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = args.device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"transcribe.py: --device {device}, but no CUDA device is available", file=sys.stderr)
        return 2
    missing = [path for path in args.audio if not Path(path).is_file()]
    if missing:
        print(f"transcribe.py: no such audio file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        model = ExportedModel.load(args.model, device)
    except ModelFileError as error:
        print(f"transcribe.py: {error}", file=sys.stderr)
        return 2
    decoder = build_decoder(args.decoding, args.beam_size, args.max_symbols_per_frame)
    try:
        texts = model.transcribe(args.audio, decoder, args.batch_size)
    except BadAudioError as error:
        print(f"transcribe.py: {error}", file=sys.stderr)
        return 2
    for path, text in zip(args.audio, texts, strict=True):
        print(f"{path}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
