"""eval/rekey_ledger.py and the fingerprint's reading of the code: words around the code are not the method."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict

import pytest
from helpers import eval_script

from diti_sd.benchmarks.synthetic import ledger
from diti_sd.benchmarks.synthetic.demo import SEALED_SEEDS, DemoConfig
from diti_sd.recipes import load_recipe

CODE = '''"""A module."""

import math  # why


def area(r):
    """The area."""
    return math.pi * r ** 2  # pi r squared
'''


def test_comments_docstrings_and_blank_lines_are_not_the_method_but_code_and_strings_are():
    key = ledger.method_text(CODE.encode())
    assert key == b"import math\ndef area(r):\n    return math.pi * r ** 2"
    reworded = CODE.replace("# why", "# another reason, é").replace('"""The area."""', '"""Its area,\n    in m²."""')
    assert ledger.method_text((reworded + "\n\n").encode()) == key
    assert ledger.method_text(CODE.replace("** 2", "** 3").encode()) != key
    hashed = 'x = "# kept"  # dropped\n'
    assert ledger.method_text(hashed.encode()) == b'x = "# kept"'
    # in a string that spans lines a blank line or a trailing space is a value, not the words around the code
    template = 'P = """a {x}  \n\nb"""  # a comment\n'
    assert ledger.method_text(template.encode()) == b'P = """a {x}  \n\nb"""'
    assert ledger.method_text(template.replace("\n\n", "\n").encode()) != ledger.method_text(template.encode())
    assert ledger.method_text(template.replace("  \n", "\n").encode()) != ledger.method_text(template.encode())
    # another file's encoding and line ends read as the same code
    assert ledger.method_text(b"\xef\xbb\xbf" + CODE.replace("\n", "\r\n").encode()) == key


def _git(root, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # not a hook's repository
    settings = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
                "-c", "core.hooksPath=/dev/null"]
    done = subprocess.run(["git", "-C", str(root), *settings, *args], check=True, capture_output=True, env=env,
                          text=True)
    return done.stdout.strip()


def test_a_read_is_rekeyed_from_its_own_commit_and_a_comment_mended_after_it_is_the_same_method(tmp_path, capsys):
    script = eval_script("rekey_ledger")
    repo = tmp_path / "repo"
    package = repo / "diti_sd"
    shutil.copytree(ledger.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q")
    _git(repo, "add", "diti_sd")
    _git(repo, "commit", "-q", "-m", "read here")
    commit = _git(repo, "rev-parse", "HEAD")
    cfg = DemoConfig(full=True)
    config, recipe = json.loads(json.dumps(asdict(cfg))), load_recipe(cfg.recipe, {"model": cfg.model}).to_dict()
    as_written = ledger.fingerprint(config, recipe, cfg.model, package, as_written=True)
    reads = repo / "docs" / "reads"
    reads.mkdir(parents=True)
    (reads / "read.json").write_text(json.dumps({"config": config, "recipe": recipe, "fingerprint": as_written}))
    (reads / "other.json").write_text(json.dumps({"config": config, "recipe": recipe, "fingerprint": "0" * 16}))
    entry = {"date": "d", "commit": commit, "seeds": list(SEALED_SEEDS), "fingerprint": as_written,
             "results": "read.json"}
    book = reads / "ledger.json"
    book.write_text(json.dumps([entry, {**entry, "fingerprint": "0" * 16, "results": "other.json"}]))
    # a comment and a docstring mended after the read, and the ledger's own code: the same method, refused again
    scorer = package / "scoring" / "__init__.py"
    scorer.write_text("# mended words\n" + scorer.read_text())
    (package / ledger.NOT_METHOD[0]).write_text((package / ledger.NOT_METHOD[0]).read_text() + "\nX = 1\n")
    now = ledger.fingerprint(config, recipe, cfg.model, package)
    assert ledger.fingerprint(config, recipe, cfg.model, package, as_written=True) != as_written
    assert script.main(["--ledger", str(book)]) == 0 and json.loads(book.read_text())[0]["fingerprint"] == as_written
    assert script.main(["--ledger", str(book), "--write"]) == 0
    first, second = json.loads(book.read_text())
    assert first["fingerprint"] == now and first["fingerprint_as_recorded"] == as_written
    assert second["fingerprint"] == "0" * 16 and "fingerprint_as_recorded" not in second  # not reproduced: left
    assert "does not give the fingerprint recorded" in capsys.readouterr().out
    ledger.check_unread(book, list(SEALED_SEEDS), "another method", None)
    with pytest.raises(ValueError, match="pass --reason"):
        ledger.check_unread(book, list(SEALED_SEEDS), now, None)
    # a line of code is a new method
    scorer.write_text(scorer.read_text() + "\nY = 2\n")
    assert ledger.fingerprint(config, recipe, cfg.model, package) != now
