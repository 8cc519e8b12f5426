"""``diti-sd tiny-model``: write a tiny random-weight SD folder in the diffusers layout."""

from __future__ import annotations

EXAMPLE = """example:
  diti-sd tiny-model --out models/tiny-sd
  diti-sd fit --dataset tiny --model models/tiny-sd --data-root my-images/ --shots 2 --out adapters/tiny"""


def add_arguments(parser):
    from .common import positive_int

    parser.add_argument("--out", required=True, help="folder to write (diffusers layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    parser.add_argument("--resolution", type=positive_int, default=64, help="image side, a multiple of 8")


def run(args):
    from ..backbone import load_backbone
    from ..files import atomic_folder
    from ..testing.tiny import build_tiny_backbone
    from .common import check_model_out

    check_model_out(args.out)
    backbone = build_tiny_backbone(args.seed, args.prediction_type, args.resolution)
    path = atomic_folder(args.out, lambda tmp: backbone.save_pretrained(tmp))  # the old model or the new, whole
    backbone = load_backbone(path, device="cpu")
    print(f"wrote {path} ({backbone.prediction_type}, {backbone.resolution} px, "
          f"latents {tuple(backbone.latent_shape)}, fingerprint {backbone.fingerprint()})")
    return 0
