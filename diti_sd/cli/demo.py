"""``diti-sd demo``: the synthetic fine-grained benchmark on the shipped tiny model, with a report."""

from __future__ import annotations

from .common import add_runtime_arguments, int_list, positive_int

EXAMPLE = """example:
  diti-sd demo --out reports/demo            # a few minutes on 2 CPU cores
  diti-sd demo --full --reason "the recipe re-checked on the new base" --out reports/demo-full
      (the sealed read: seeds 501-510 x 50 test images per split, recorded in docs/reads/ledger.json)"""


def add_arguments(parser):
    parser.add_argument("--out", default="reports/demo", help="report folder (JSON, Markdown, plots)")
    parser.add_argument("--seeds", type=int_list, default=[1, 2, 3], help="e.g. 1,2,3")
    parser.add_argument("--shots", type=positive_int, default=8)
    parser.add_argument("--test-per-class", type=positive_int, default=8)
    parser.add_argument("--steps", type=positive_int, default=None, help="fit steps per class (default: the recipe's)")
    parser.add_argument("--model", default="builtin:tiny-base-unseen",
                        help="the benchmark's base (default: the one whose UNet never saw the class textures; "
                             "builtin:tiny-base knows them by name)")
    parser.add_argument("--dataset", default="synthetic", help="the benchmark's recipe (default: synthetic)")
    parser.add_argument("--full", action="store_true",
                        help="the sealed read: sealed seeds 501-510, 50 test images per split and seed (about 25 "
                             "minutes on 2 CPU cores)")
    parser.add_argument("--reason", default=None,
                        help="with --full: what changed since the last read (the ledger keeps it; needed to read "
                             "the sealed seeds again at an unchanged method)")
    parser.add_argument("--ledger", default=None,
                        help="with --full: the ledger of sealed reads (default: the checkout's docs/reads/ledger.json, "
                             "wherever the command runs; for an installed package, docs/reads/ledger.json here)")
    parser.add_argument("--shortcut-rate", type=float, default=1.0,
                        help="a labelled variant: the share of the shots (and of the validation and correlated test "
                             "images drawn as they are) whose background follows the class (default 1, the headline: "
                             "all)")
    parser.add_argument("--swap-masks", action="store_true",
                        help="give the opt-in row's fit the shots' object masks: the coarse swap keeps each object and "
                             "swaps only the rest (fit(masks=...))")
    # the demo's figures are CPU figures: fp32 and the same threads wherever it runs, unless asked
    add_runtime_arguments(parser, precision=False, device="cpu")


def run(args):
    from ..benchmarks.synthetic.demo import DemoConfig, run_demo
    from ..benchmarks.synthetic.report import render_markdown

    cfg = DemoConfig(model=args.model, recipe=args.dataset, seeds=args.seeds, shots=args.shots,
                     test_per_class=args.test_per_class, steps=args.steps, device=args.device, full=args.full,
                     shortcut_rate=args.shortcut_rate, swap_masks=args.swap_masks)
    from ..benchmarks.synthetic.ledger import default_ledger

    ledger = args.ledger or default_ledger()
    report = run_demo(cfg, args.out, progress=not args.no_progress, ledger=ledger, reason=args.reason)
    print(render_markdown(report).split("![")[0].rstrip())
    print(f"\nreport written to {args.out}/ (README.md, results.json, accuracy_by_band.png, "
          "reliability.png, test_predictions.png, coarse_shortcut.png, adapter_samples.png)")
    return 0
