"""`dsac-ros pretrain-encoder`: train (or resume) the scene-agnostic encoder, then export it.

Runs for a wall-clock budget and can be started again with the same --out to continue; the
exported file records its configuration, steps, hours and the command that made it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from dsac_ros.device import describe_device, resolve_device
from dsac_ros.benchmarks.transfer import evaluate_transfer
from dsac_ros.encoder_file import DEFAULT_ENCODER_PATH
from dsac_ros.pretrain import HELDOUT_SEED_BASE, PretrainConfig, export_encoder, pretrain

ENCODER_DEFAULTS = PretrainConfig().encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt, log.jsonl); resumed if present")
    parser.add_argument("--hours", type=float, default=1.0, help="wall-clock budget of this run (default 1)")
    parser.add_argument("--objective", choices=("regression", "contrastive", "both"), default="regression",
                        help="ACE-style coordinate regression with per-room heads, dense contrastive matching, or both")
    parser.add_argument("--scenes", type=int, default=64, help="procedural training rooms (default 64)")
    parser.add_argument("--views", type=int, default=48, help="rendered views per room (default 48)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: on a shared 2-core CPU more threads spin-wait)")
    parser.add_argument("--exposure-gain", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                        help="random camera exposure gain per training image, before the other jitter "
                             "(default: 1 1, none; the *_sensor scenes' test frames use 0.6 1.4)")
    parser.add_argument("--encoder-channels", type=int, nargs=4, default=None, metavar=("C0", "C1", "C2", "C3"),
                        help="widths of the full-resolution conv and the three stride-2 convs "
                             f"(default: the shipped {ENCODER_DEFAULTS['channels']})")
    parser.add_argument("--encoder-blocks", type=int, default=None, metavar="N",
                        help=f"3x3 residual blocks at stride 8 (default: {ENCODER_DEFAULTS['residual_blocks']})")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="stop at this training step even if --hours is not spent (the shipped encoder: 2165)")
    parser.add_argument("--init-encoder", type=Path,
                        help="continue training this encoder file (e.g. dsac_ros/assets/encoder.pt) in a new run folder")
    parser.add_argument("--export", type=Path, help="write the encoder file here when the run ends")
    parser.add_argument("--evaluate", type=int, default=0, metavar="N",
                        help="afterwards, map N unseen rooms with the exported encoder and with the shipped "
                             "one (rgbd, no end-to-end stage) and compare localisation of nearby test views "
                             "(dsac-ros bench transfer does the same for several encoders and modes)")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}")
    low, high = args.exposure_gain
    if not 0 < low <= high:
        raise SystemExit(f"--exposure-gain needs 0 < LOW <= HIGH, got {low} {high}")
    encoder = dict(ENCODER_DEFAULTS)
    if args.encoder_channels is not None:
        if min(args.encoder_channels) < 1:
            raise SystemExit(f"--encoder-channels needs positive widths, got {args.encoder_channels}")
        encoder["channels"] = [int(c) for c in args.encoder_channels]
    if args.encoder_blocks is not None:
        if args.encoder_blocks < 0:
            raise SystemExit(f"--encoder-blocks needs 0 or more, got {args.encoder_blocks}")
        encoder["residual_blocks"] = int(args.encoder_blocks)
    config = PretrainConfig(encoder=encoder, scenes=args.scenes, views_per_scene=args.views, objective=args.objective,
                            exposure_gain=(float(low), float(high)))
    checkpoint = pretrain(args.out, config, args.hours, device=device, init_encoder=args.init_encoder,
                          max_steps=args.steps)
    if args.export:
        command = "dsac-ros pretrain-encoder " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        meta = export_encoder(checkpoint, args.export, command=command)
        print(f"encoder written to {args.export} ({meta['training']['steps']} steps, {meta['training']['hours']} h)")
    if args.evaluate:
        exported = args.export or args.out / "encoder.pt"
        if not args.export:
            export_encoder(checkpoint, exported)
        seeds = [HELDOUT_SEED_BASE + i for i in range(args.evaluate)]
        for encoder_path in (exported, DEFAULT_ENCODER_PATH):
            if not encoder_path.is_file():
                continue  # a build without the shipped encoder: nothing to compare with
            summary = evaluate_transfer(encoder_path, seeds, device=str(device))
            print({k: v for k, v in summary.items() if k != "rooms"})
    return 0
