"""``diti-sd demo``: the synthetic fine-grained benchmark on the shipped tiny model, with a report."""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("--out", default="reports/demo", help="report folder (JSON, Markdown, plots)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="fit steps per class (default: the recipe's)")
    parser.add_argument("--model", default="builtin:tiny-base")
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--full", action="store_true",
                        help="the README's run: 5 seeds and 200 test images per split and seed (longer)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from ..demo import DemoConfig, render_markdown, run_demo

    cfg = DemoConfig(model=args.model, recipe=args.recipe, seeds=[int(s) for s in args.seeds.split(",")],
                     shots=args.shots, test_per_class=args.test_per_class, steps=args.steps, device=args.device,
                     full=args.full)
    report = run_demo(cfg, args.out, progress=not args.no_progress)
    print(render_markdown(report).split("![")[0].rstrip())
    print(f"\nreport written to {args.out}/ (README.md, results.json, accuracy_by_band.png, "
          "test_predictions.png, adapter_samples.png)")
    return 0
