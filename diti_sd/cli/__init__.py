"""The ``diti-sd`` command: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import DitiError, DitiWarning
from ..progress import quiet_libraries
from .common import CLIError, Parser  # noqa: F401  (CLIError: the commands import it from here)

SUBCOMMANDS = {
    "fit": "fit class adapters on a few-shot data set",
    "predict": "classify images with a fitted adapter set",
    "sample": "generate images from class adapters",
    "eval": "compare DiTi-SD with OpenCLIP and Stable Diffusion zero-shot, Tip-Adapter(-F) on k-shot splits",
    "demo": "the synthetic fine-grained benchmark on the shipped tiny model (CPU, minutes)",
    "train-base": "train a tiny base model of the synthetic domain (as the two shipped ones were)",
    "encoder": "the unconditional DiTi encoder for faces: fit, probe attributes, edit counterfactuals",
    "tiny-model": "build a tiny random-weight Stable Diffusion folder (offline tests and smoke runs)",
}


def _no_resume(args) -> str:
    return "this command keeps nothing of an interrupted run: rerun it to start again"


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = Parser(
        prog="diti-sd",
        description="Few-shot fine-grained classification with Stable Diffusion class adapters scored at small t.",
    )
    parser.add_argument("--version", action="version", version=f"diti-sd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error, not one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f".{name.replace('-', '_')}", __name__)
        sp = sub.add_parser(name, help=help_text, description=help_text, epilog=getattr(module, "EXAMPLE", None),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run, _resume=getattr(module, "resume_hint", _no_resume))
    return parser


def one_line_warnings(shown):
    """A ``warnings.showwarning`` that prints the package's own warnings (``DitiWarning``) as one line each,
    as its errors are, and passes every other to ``shown``."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DitiWarning):
            print(f"diti-sd: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)
    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries(getattr(args, "no_progress", False)), warnings.catch_warnings():
            warnings.showwarning = one_line_warnings(warnings.showwarning)
            code = int(args._run(args) or 0)
        if "torch" in sys.modules:  # a bad command line fails before torch is imported; keep it so
            from ..distributed import finish

            finish()
        return code
    except KeyboardInterrupt:
        print(f"interrupted; {args._resume(args)}", file=sys.stderr)
        return 130
    except DitiError as err:  # a problem the user can fix: one line; anything else is a bug, with its traceback
        if args.debug:
            raise
        print(f"diti-sd: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
