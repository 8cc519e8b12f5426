"""Re-key the read ledger's fingerprints to the current scheme, each from its own commit's files.

    python eval/rekey_ledger.py            # what would change
    python eval/rekey_ledger.py --write    # write docs/reads/ledger.json

A read's fingerprint names the method it measured: the demo's settings, the recipe, the base model's weights and the
code of fitting and scoring. Until 2026-12-07 the code was hashed byte for byte, so mending a comment made a new
method and a second read of the sealed seeds after it was not refused; the fingerprint now hashes the code without
its comments and docstrings (``ledger.method_text``). For every read with a recorded fingerprint this takes its
commit's package out of git, checks that the old scheme on it, with the settings and recipe the read's results file
holds, gives the fingerprint recorded (so the inputs are the read's own), and only then records the new one, keeping
the recorded one as ``fingerprint_as_recorded`` (a later run re-keys from it, so a change of the reading is carried to
the ledger by running this again). A read it cannot reproduce is named and left as it is: the demo reads before
2026-12-05's 2258313 hashed the device too, and their methods are gone from the code; two reads of
``eval/auto_window.py`` carry a label, not a fingerprint.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from diti_sd.benchmarks.synthetic.ledger import LEDGER, default_ledger, fingerprint, read_ledger
from diti_sd.files import atomic_write

LEDGER_MODULE = "benchmarks/synthetic/ledger.py"


def code_list(package: Path) -> tuple[str, ...] | None:
    """The ``CODE`` a commit's ledger hashed, read from its source (nothing of it is imported)."""
    source = package / LEDGER_MODULE
    if not source.is_file():
        return None
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CODE" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return None


def rekey(entry: dict, root: Path, reads: Path) -> tuple[str | None, str]:
    """The read's fingerprint under the current scheme (None where it cannot be reproduced) and why."""
    recorded = entry.get("fingerprint_as_recorded", entry["fingerprint"])  # a second run re-keys from the record
    results = reads / entry.get("results", "")
    if not results.is_file():
        return None, f"no results file {results.name}"
    report = json.loads(results.read_text())
    if report.get("fingerprint") != recorded:
        return None, "not a demo read (its fingerprint is not its results file's)"
    archive = subprocess.run(["git", "-C", str(root), "archive", entry["commit"], "diti_sd"], capture_output=True)
    if archive.returncode != 0:
        return None, f"commit {entry['commit'][:7]} is not in this checkout"
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        package = Path(tmp) / "diti_sd"
        code = code_list(package)
        if code is None:
            return None, "its commit has no ledger module"
        config, recipe, model = report["config"], report["recipe"], report["config"]["model"]
        if fingerprint(config, recipe, model, package, code, as_written=True) != recorded:
            return None, ("the byte-for-byte scheme on its commit does not give the fingerprint recorded (an older "
                          "fingerprint function, or a read from a changed tree)")
        return fingerprint(config, recipe, model, package, code), "re-keyed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", type=Path, default=None, help=f"default: the checkout's {LEDGER}")
    parser.add_argument("--write", action="store_true", help="write the re-keyed ledger (default: only show it)")
    args = parser.parse_args(argv)
    path = args.ledger or default_ledger()
    root = Path(subprocess.run(["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"], capture_output=True,
                               text=True).stdout.strip() or ".")
    ledger = read_ledger(path)
    changed = 0
    for entry in ledger:
        new, why = rekey(entry, root, path.parent)
        recorded = entry.get("fingerprint_as_recorded", entry["fingerprint"])
        print(f"{entry['date']} {entry['commit'][:7]} {recorded[:16]:16} -> {new or '-':16} {why}")
        if new is not None and new != entry["fingerprint"]:
            entry["fingerprint_as_recorded"], entry["fingerprint"] = recorded, new
            changed += 1
    if args.write and changed:
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(ledger, indent=2)))
    print(f"{changed} of {len(ledger)} reads given a new key" + ("" if args.write else " (not written: --write)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
