"""``diti-sd eval``: DiTi-SD against what a user would use instead, on the same splits: frozen-encoder
rivals (zero-shot, Tip-Adapter(-F), a linear probe) on any OpenCLIP or DINOv2 encoder, Stable Diffusion
zero-shot, and DiTi-SD on top of a strong encoder (a prefilter or an ensemble)."""

from __future__ import annotations

EXAMPLE = """examples:
  diti-sd eval --dataset fgvc-aircraft --data-root ~/data --shots 1,2,4,8,16 --seeds 1,2,3 \\
      --adapters-dir adapters/ --out reports/fgvc
  diti-sd eval --dataset fgvc-aircraft --data-root ~/data --shots 16 --methods probe,diti,diti+probe \\
      --clip-model ViT-SO400M-14-SigLIP-384 --clip-pretrained webli --encoder dinov2:facebook/dinov2-giant \\
      --prefilter probe --set score.prefilter_k=10 --out reports/fgvc-probe"""


def add_arguments(parser):
    from ..evaluation.methods import METHODS, PREFILTERS, VAL_PROTOCOLS
    from .common import add_runtime_arguments, choice_list, int_list, positive_int, positive_int_list

    parser.add_argument("--dataset", required=True, help="a registered recipe or a recipe YAML path")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--shots", type=positive_int_list, default=[1, 2, 4, 8, 16], help="e.g. 1,2,4,8,16")
    parser.add_argument("--seeds", type=int_list, default=[1, 2, 3], help="e.g. 1,2,3")
    parser.add_argument("--methods", type=choice_list(METHODS),
                        default="diti,openclip-zeroshot,tip-adapter,tip-adapter-f",
                        help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--adapters-dir", default=None,
                        help="reuse (or write) DiTi-SD adapter sets here, one folder per split and fit settings")
    parser.add_argument("--out", required=True, help="report folder; reruns skip finished runs")
    parser.add_argument("--model", default=None, help="Stable Diffusion base model for DiTi-SD")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--clip-model", default="ViT-H-14",
                        help="the first frozen encoder (TiF's rows, the prefilter, the ensembles): an OpenCLIP model "
                             "name or model-config JSON")
    parser.add_argument("--clip-pretrained", default="laion2b_s32b_b79k",
                        help="its weights tag or checkpoint file; 'none' for random weights")
    parser.add_argument("--encoder", dest="encoders", action="append", default=[], metavar="SPEC",
                        help="a further frozen encoder every frozen-encoder method also runs on: "
                             "openclip:MODEL[:TAG] (e.g. openclip:ViT-SO400M-14-SigLIP-384:webli) or dinov2:ID "
                             "(e.g. dinov2:facebook/dinov2-giant); repeatable")
    parser.add_argument("--aug-passes", type=positive_int, default=None,
                        help="augmented passes for Tip-Adapter's cache (default: the recipe's, 10)")
    parser.add_argument("--val-protocol", default=None, choices=VAL_PROTOCOLS,
                        help="validation for every choice: coop = min(k, 4) per class; full = the whole official "
                             "validation split (Tip-Adapter's protocol, the published numbers); default: the "
                             "recipe's baselines.val_protocol (full for fgvc-aircraft and isic2019)")
    parser.add_argument("--split-dir", default=None,
                        help="TiF's k-shot split files (train_<k>_<seed>.data, its lora/splits/<data set>/): every "
                             "method trains on exactly those images instead of a CoOp draw")
    parser.add_argument("--prefilter", default=None, choices=PREFILTERS,
                        help="DiTi-SD scores only this method's top score.prefilter_k classes per image (on the "
                             "first encoder); the report gives its top-k recall")
    parser.add_argument("--speed", default=None,
                        help="eval/bench_speed.py --json output for this GPU: the cost table adds GPU-seconds")
    parser.add_argument("--compile", action="store_true", help="score DiTi-SD with a torch.compile'd UNet")
    add_runtime_arguments(parser)


def resume_hint(args) -> str:
    return (f"rerun the same command: the finished runs in {args.out}/runs/ and the images already scored in "
            f"{args.out}/scores/ are kept")


def run(args):
    from ..evaluation.config import EvalConfig
    from .common import check_out_folder

    check_out_folder(args.out)  # the report folder, made once the data is read
    if args.adapters_dir:  # where the fits' adapter sets are kept and found again
        check_out_folder(args.adapters_dir, "--adapters-dir")
    cfg = EvalConfig(
        dataset=args.dataset, data_root=args.data_root, report=args.out, shots=args.shots, seeds=args.seeds,
        methods=args.methods, adapters_dir=args.adapters_dir,
        model=args.model, overrides=args.overrides, clip_model=args.clip_model,
        clip_pretrained=None if args.clip_pretrained.lower() == "none" else args.clip_pretrained,
        encoders=args.encoders, aug_passes=args.aug_passes, val_protocol=args.val_protocol, split_dir=args.split_dir,
        prefilter=args.prefilter, speed=args.speed, device=args.device, compile=args.compile,
        progress=not args.no_progress,
    )
    if args.speed:  # read before any work: the cost table would read it after every run
        from ..evaluation.cost import read_speed

        read_speed(args.speed)
    from ..distributed import is_main
    from ..evaluation.harness import Evaluation

    evaluation = Evaluation(cfg)
    evaluation.run()
    if not is_main():
        return 0
    print((evaluation.report / "README.md").read_text().split("![")[0].rstrip())
    print(f"\nreport written to {evaluation.report}/")
    return 0
