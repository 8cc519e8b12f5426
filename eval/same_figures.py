"""Whether two of the demo's results files hold the same figures: every value but the run's time, memory and code.

    python eval/same_figures.py OLD/results.json NEW/results.json

After a change meant to leave the benchmark's numbers alone (a refactor, a data layer the synthetic benchmark does
not read), the read ledger counts the code as a new method. Run the demo at the last sealed read's commit and at the
new one on the unsealed seeds (`diti-sd demo --out DIR`, seeds 1-3) and compare the two files: the same figures, to
the last digit of each log-likelihood, say that the sealed read still describes the new code, without a second
look at the sealed seeds. Prints each value that differs by its path; exit status 1 when any does.
"""

from __future__ import annotations

import argparse
import json
import sys

# what a run measures about itself rather than about the method
RUN_KEYS = ("seconds", "peak_memory_gib", "code", "fingerprint", "torch_threads")


def differences(old, new, path: str = "") -> list[str]:
    """Each path at which ``old`` and ``new`` hold other values (the run's own keys at the top left out)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if not path and key in RUN_KEYS:
                continue
            if key not in old or key not in new:
                out.append(f"{path}/{key}: only in {'new' if key not in old else 'old'}")
            else:
                out += differences(old[key], new[key], f"{path}/{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {str(old)[:60]} -> {str(new)[:60]}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="a demo's results.json")
    parser.add_argument("new", help="another demo's results.json, on the same seeds")
    args = parser.parse_args(argv)
    old, new = (json.loads(open(path).read()) for path in (args.old, args.new))
    found = differences(old, new)
    for line in found:
        print(line)
    compared = sorted(k for k in set(old) | set(new) if k not in RUN_KEYS)
    print(f"{len(found)} values differ; compared {', '.join(compared)} (left out: {', '.join(RUN_KEYS)})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
