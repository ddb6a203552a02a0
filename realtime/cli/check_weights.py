"""`syncvid check-weights --unet CKPT --config CFG`: key/shape parity of a UNet checkpoint.

Builds the model the config describes on the meta device (no weights allocated, seconds even for
the 1.27 B-parameter stage2 UNet) and compares it with the checkpoint's tensors. Exit 0 when every
key and shape matches, 1 with the lists of missing, unexpected and misshaped keys otherwise.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("check-weights", help="check a UNet checkpoint's keys and shapes against its config")
    p.add_argument("--unet", required=True, metavar="CKPT", help="latentsync_unet.pt or a bare state dict")
    p.add_argument("--config", required=True, metavar="CFG", help="LatentSync UNet YAML (e.g. configs/unet/stage2.yaml)")
    p.add_argument("--all", action="store_true", help="list every differing key (default: first 10 per kind)")
    p.set_defaults(func=run)


def run(args) -> int:
    from realtime.unet_loader import check_unet_checkpoint

    report = check_unet_checkpoint(args.unet, args.config)
    if report.ok:
        print(f"OK: {args.unet} matches {args.config}: {report.num_keys} tensors, "
              f"{report.num_elements:,} elements, every key and shape")
        return 0
    print(f"MISMATCH: {args.unet} does not match {args.config}")
    for line in report.lines(limit=10**9 if args.all else 10):
        print(line)
    return 1
