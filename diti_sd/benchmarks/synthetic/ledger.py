"""The ledger of sealed reads: every ``diti-sd demo --full`` read of the sealed test streams, on record.

A read is kept in ``docs/reads/`` of a checkout: ``ledger.json`` lists every read (its date, commit, seeds,
base model, method fingerprint, what changed since the last read, the headline figures and the file that
holds its full ``results.json``). ``--full`` refuses a sealed range that the ledger already holds a read of
at the same method fingerprint (recipe, base model, the code of fitting and scoring) unless told why: a test
split read again under an unchanged method is a second look, and the ledger shows it. The code is read without its
comments and docstrings, so mending the words around it is no new method; the demo reads from 2258313 on were
re-keyed to that reading from their own commits by ``eval/rekey_ledger.py``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import subprocess
import time
import tokenize
from pathlib import Path

from ...backbone import BUILTIN_PREFIX, resolve_model_path
from ...errors import ConfigError
from ...files import atomic_write
from .summary import target_status

PACKAGE = Path(__file__).resolve().parents[2]
LEDGER = "docs/reads/ledger.json"
# the code a read's figures depend on: fitting, scoring, the rivals' baselines (the probe is a target's), the
# images and prompts they read, the benchmark itself
CODE = ("backbone.py", "classifier.py", "coarse.py", "coarse_cutoff.py", "swap_choice.py", "metrics.py",
        "preprocessing.py", "prompts.py", "seeding.py", "stats.py", "timesteps.py", "validation.py", "baselines",
        "data/images.py", "data/masks.py", "lora", "scoring", "training", "benchmarks/synthetic")


# the ledger's own bookkeeping: it records reads and makes none of results.json's figures, so mending it is no new
# method
NOT_METHOD = ("benchmarks/synthetic/ledger.py",)


def _characters(line: str, offset: int) -> int:
    """ast's column (UTF-8 bytes) as tokenize's (characters)."""
    return len(line.encode()[:offset].decode())


@functools.lru_cache(maxsize=256)  # a demo fingerprints twice; a file's text costs far more than its bytes' hash
def method_text(source: bytes) -> bytes:
    """A Python file as the method sees it: its comments, docstrings, blank lines and trailing spaces left out, so
    that mending the words around the code is not a new method (and a sealed read after it is refused). The lines
    of a string that spans lines are kept as written: there a blank line or a trailing space is a value."""
    text = source.decode(tokenize.detect_encoding(io.BytesIO(source).readline)[0])
    lines = io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n")).readlines()  # as tokenize splits them
    cuts, strings, opened = [], set(), []
    for tok in tokenize.generate_tokens(iter(lines).__next__):
        if tok.type == tokenize.COMMENT:
            cuts.append((tok.start, tok.end))
        elif tok.type == tokenize.STRING:  # each row it starts on or runs through, but its last
            strings.update(range(tok.start[0], tok.end[0]))
        elif tok.type == getattr(tokenize, "FSTRING_START", None):  # Python 3.12 splits an f-string's tokens
            opened.append(tok.start[0])  # f-strings nest there
        elif tok.type == getattr(tokenize, "FSTRING_END", None):
            strings.update(range(opened.pop(), tok.end[0]))
    for node in ast.walk(ast.parse("".join(lines))):
        documented = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        if documented and ast.get_docstring(node, clean=False) is not None:
            first = node.body[0]
            strings.difference_update(range(first.lineno, first.end_lineno + 1))
            cuts.append(((first.lineno, _characters(lines[first.lineno - 1], first.col_offset)),
                         (first.end_lineno, _characters(lines[first.end_lineno - 1], first.end_col_offset))))
    for (row, col), (end_row, end_col) in sorted(cuts, reverse=True):  # from the end: earlier places stay put
        lines[row - 1] = lines[row - 1][:col] + lines[end_row - 1][end_col:]
        lines[row:end_row] = ["" for _ in range(row, end_row)]  # rows keep their numbers
    kept = [line.rstrip("\n") if row in strings else line.rstrip() for row, line in enumerate(lines, start=1)]
    return "\n".join(line for row, line in enumerate(kept, start=1) if line.strip() or row in strings).encode()


def code_hash(package: Path = PACKAGE, code: tuple[str, ...] = CODE, as_written: bool = False) -> str:
    """The code a read's figures depend on (``code`` under ``package``), as :func:`method_text` reads it;
    ``as_written``: every byte, the ledger included (the fingerprints recorded before 2026-12-07's re-key)."""
    h = hashlib.sha256()
    for entry in code:
        path = package / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            name = file.relative_to(package).as_posix()
            if not as_written and name in NOT_METHOD:
                continue
            h.update(name.encode())
            h.update(file.read_bytes() if as_written else method_text(file.read_bytes()))
    return h.hexdigest()[:12]


def model_hash(model: str, package: Path = PACKAGE) -> str:
    """The base model's weight files (a local folder, or ``builtin:`` under ``package``); its name for anything
    else."""
    name = str(model)
    builtin = name.startswith(BUILTIN_PREFIX) and package != PACKAGE  # another commit's shipped model
    folder = package / "assets" / name[len(BUILTIN_PREFIX):] if builtin else Path(resolve_model_path(model))
    h = hashlib.sha256(name.encode())
    if folder.is_dir():
        for file in sorted(folder.rglob("*.safetensors")):
            h.update(file.read_bytes())
    return h.hexdigest()[:12]


def fingerprint(config: dict, recipe: dict, model: str, package: Path = PACKAGE, code: tuple[str, ...] = CODE,
                as_written: bool = False) -> str:
    """The method a read measures: the demo's settings (not where it ran), the recipe, the base model's weights
    and the code. ``package``, ``code`` and ``as_written`` re-key a read made at another commit
    (``eval/rekey_ledger.py``)."""
    settings = {k: v for k, v in config.items() if k != "device"}
    blob = json.dumps({"config": settings, "recipe": recipe, "model": model_hash(model, package),
                       "code": code_hash(package, code, as_written)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_ledger() -> Path:
    """The checkout's ``docs/reads/ledger.json`` wherever the command runs from (so that a read made from another
    folder is refused as one made from the checkout); for an installed package, the one under the current folder."""
    checkout = PACKAGE.parent
    return checkout / LEDGER if (checkout / ".git").exists() else Path(LEDGER)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(before: dict, after: dict) -> dict:
    a, b = _flat(before), _flat(after)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _code_files_changed(since: str | None, now: str | None, root: Path | None = None) -> list[str] | None:
    """The files of the read's code (:data:`CODE`, and the recipes) that differ between two commits of the
    checkout ``root`` (default: the package's), by git; None where git cannot say (no checkout, no such commit)."""
    root = PACKAGE.parent if root is None else Path(root)
    if not since or not now or since == "unknown":
        return None
    paths = [f"{PACKAGE.name}/{entry}" for entry in CODE] + [f"{PACKAGE.name}/recipes"]
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=30)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return None  # an installed package inside some other repository: its history is not this code's
        done = subprocess.run(["git", "-C", str(root), "diff", "--name-only", since, now, "--", *paths],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted(done.stdout.split()) if done.returncode == 0 else None


def _comparable(entry: dict, report: dict) -> bool:
    """A read of the same seeds, base model and accident strength: the read a new one repeats."""
    config = report["config"]
    return (entry["seeds"] == config["seeds"] and entry["model"] == config.get("model", entry["model"])
            and entry.get("shortcut_rate", 1.0) == config.get("shortcut_rate", 1.0))


def what_changed(ledger: list[dict], folder: Path, report: dict) -> dict | None:
    """What differs between this read and the ledger's last read of the same seeds, base model and accident
    strength: the demo's settings, the recipe's values (None where that read's results file is missing) and the
    code's files (None where git cannot say). None: the first such read."""
    last = next((e for e in reversed(ledger) if _comparable(e, report)), None)
    if last is None:
        return None
    file = folder / last["results"]
    before = json.loads(file.read_text()) if file.is_file() else None
    commit = report.get("code", {}).get("commit")
    return {"since": {"date": last["date"], "commit": last["commit"], "results": last["results"]},
            "settings": None if before is None else _differences(before.get("config", {}), report["config"]),
            "recipe": None if before is None else _differences(before.get("recipe", {}), report.get("recipe", {})),
            "code_files": _code_files_changed(last["commit"], commit),
            "uncommitted_changes": bool(report.get("code", {}).get("dirty"))}


def read_ledger(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def check_unread(path: Path, seeds: list[int], print_: str, reason: str | None) -> None:
    """Refuse, before any work, a second read of ``seeds`` at the same fingerprint without a reason, and a ledger
    path the read could not be recorded at (a folder)."""
    if path.is_dir():
        raise ConfigError(f"the read ledger {path} is a folder; pass its JSON file, e.g. {path / 'ledger.json'}")
    again = [r for r in read_ledger(path) if r["seeds"] == list(seeds) and r["fingerprint"] == print_]
    if again and not reason:
        raise ConfigError(f"the sealed seeds {seeds[0]}-{seeds[-1]} were read at this very method on "
                          f"{again[-1]['date']} (commit {str(again[-1]['commit'])[:7]}, {path}); a second read "
                          "changes nothing but the number of looks: pass --reason saying why")


def _same_read(saved: Path, report: dict) -> bool:
    """``saved`` holds ``report``'s read: the same settings, seeds, code and method (another ledger's read of the day
    beside this one's is kept)."""
    try:
        kept = json.loads(saved.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(kept, dict) and all(kept.get(k) == json.loads(json.dumps(report.get(k)))  # as written
                                          for k in ("config", "code", "fingerprint"))


def record_read(path: Path, report: dict, print_: str, reason: str | None) -> dict:
    """Append the read to the ledger and keep its results beside it."""
    commit = report.get("code", {}).get("commit") or "unknown"
    date = time.strftime("%Y-%m-%d")
    rate = report["config"].get("shortcut_rate", 1.0)
    variant = "" if rate == 1.0 else f"-shortcut-{rate!r}"  # a variant read beside the headline's, never over it
    stem = f"{date}-{commit[:7]}-{Path(str(report['config']['model'])).name.replace('builtin:', '')}{variant}"
    name, n = f"{stem}.json", 2
    listed = {r.get("results") for r in read_ledger(path)}
    # a second read of the day at one commit (with a reason) keeps the first's file; one that no read lists, holding
    # this very read, is what a read killed between its two writes below left
    while name in listed or ((path.parent / name).exists() and not _same_read(path.parent / name, report)):
        name, n = f"{stem}-{n}.json", n + 1
    atomic_write(path.parent / name, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    rec = report["results"][report["recommended"]]["decorrelated"]
    entry = {"date": date, "commit": commit, "dirty": report.get("code", {}).get("dirty"),
             "seeds": report["config"]["seeds"], "model": report["config"]["model"],
             "recipe": report["config"]["recipe"], "fingerprint": print_,
             "why": reason or "the first read of these seeds at this method",
             "changed": what_changed(read_ledger(path), path.parent, report),
             "recommended_decorrelated": round(rec["mean"], 4), "targets": target_status(report),
             "results": name}
    if rate != 1.0:
        entry["shortcut_rate"] = rate
    if report.get("opt_in"):  # the opt-in row read the way the targets are (it has none)
        entry["opt_in"] = {"decorrelated": round(report["results"][report["opt_in"]["row"]]["decorrelated"]["mean"], 4),
                           "read_as_targets": target_status(report, opt_in=True)}
    ledger = read_ledger(path) + [entry]
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(ledger, indent=2)))
    return entry
