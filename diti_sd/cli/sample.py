"""``diti-sd sample``: images generated under class adapters, as a grid (a row per class)."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = """example:
  diti-sd sample --adapters adapters/fgvc-16shot --classes 707-320 A380 --n 4 --out samples.png"""


def add_arguments(parser):
    from .common import add_runtime_arguments, finite_float, positive_int

    parser.add_argument("--adapters", required=True, help="adapter set folder written by `diti-sd fit`")
    parser.add_argument("--classes", nargs="*", default=None, help="class names (default: the first 8)")
    parser.add_argument("--n", type=positive_int, default=4, help="images per class")
    parser.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    parser.add_argument("--guidance", type=finite_float, default=7.5, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="where the base model is now, if it moved")
    parser.add_argument("--out", required=True, help="PNG file for the grid")
    add_runtime_arguments(parser)


def check_classes(folder, asked: list[str] | None) -> None:
    """One line, before the base model loads, where ``--classes`` names a class the set's manifest does not hold
    (nothing said where the manifest cannot be read: loading the set says what is wrong with it)."""
    from . import CLIError
    from .common import saved_manifest

    manifest = saved_manifest(folder)
    try:
        names = [str(c["name"]) for c in manifest["classes"]]
        integer = manifest.get("label_type") == "int"
    except (KeyError, TypeError):
        return
    def known(name: str) -> bool:
        if not integer:
            return name in names
        try:
            return str(int(name)) in names  # as sampling reads it: "03" is class 3
        except ValueError:
            return False

    unknown = [c for c in asked or [] if not known(c)]
    if unknown:
        raise CLIError(f"unknown classes {unknown[:5]}; the set's classes{' (integer labels)' if integer else ''}: "
                       f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")


def run(args):
    from torchvision.utils import make_grid, save_image

    from ..classifier import DiTiFewShotClassifier
    from ..constraints import T_STEPS
    from ..files import atomic_write
    from ..hub import resolve_adapter_set
    from . import CLIError
    from .common import check_out_file

    check_out_file(args.out, example="samples.png")
    if args.classes == []:
        raise CLIError("--classes names no class; pass class names, or leave --classes out for the first 8")
    if args.steps > T_STEPS:
        raise CLIError(f"--steps {args.steps}: DDIM takes at most the {T_STEPS} time-steps the base was trained "
                       "on; pass fewer (50 is usual)")
    folder = resolve_adapter_set(args.adapters)  # a Hub id downloads the set alone, not the base model
    check_classes(folder, args.classes)
    clf = DiTiFewShotClassifier.from_pretrained(folder, model=args.model, device=args.device, dtype=args.dtype,
                                                attention=args.attention, progress=not args.no_progress)
    classes = args.classes
    if classes is None:
        classes = clf.classes_.tolist()[:8]
    elif clf.classes_.dtype.kind in "iu":
        classes = [int(c) for c in classes]
    images, labels = clf.sample(classes, n_per_class=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed)
    out = Path(args.out)
    grid = make_grid(images, nrow=args.n, padding=2, pad_value=1.0)
    atomic_write(out, lambda tmp: save_image(grid, tmp, format="png"))  # a killed run leaves no half picture
    print(f"wrote {out}: rows = {', '.join(str(c) for c in classes)}")
    return 0
