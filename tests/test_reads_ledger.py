"""The ledger of sealed reads: what a read records, what it refuses, and what changed since the last one."""

import json
from dataclasses import asdict

import pytest

from diti_sd.benchmarks.synthetic import ledger
from diti_sd.benchmarks.synthetic.demo import SEALED_SEEDS, DemoConfig
from diti_sd.cli import main
from diti_sd.recipes import load_recipe


def test_a_sealed_read_goes_on_record_and_a_second_look_needs_a_reason(tmp_path, capsys, monkeypatch):
    cfg = DemoConfig(full=True)
    recipe = load_recipe(cfg.recipe, {"model": cfg.model})
    method = ledger.fingerprint(asdict(cfg), recipe.to_dict(), cfg.model)
    # the fingerprint is the method: another recipe value, another base, or another line of the code moves it
    assert method != ledger.fingerprint(asdict(cfg), load_recipe(recipe, ["fit.lr=1e-3"]).to_dict(), cfg.model)
    assert method != ledger.fingerprint(asdict(cfg), recipe.to_dict(), "builtin:tiny-base")
    # where it ran is not the method: a read on another device is a second look at the same one
    assert method == ledger.fingerprint({**asdict(cfg), "device": "cuda:1"}, recipe.to_dict(), cfg.model)
    # the checkout's ledger, wherever the command runs from
    assert ledger.default_ledger() == ledger.PACKAGE.parent / "docs" / "reads" / "ledger.json"
    book = tmp_path / "reads" / "ledger.json"
    report = {"config": {**asdict(cfg), "seeds": list(SEALED_SEEDS)}, "code": {"commit": "abc1234def", "dirty": False},
              "recommended": "r", "results": {"r": {"decorrelated": {"mean": 0.7}}}, "targets": {"rival": 0.1},
              "comparisons": {"rival": {"decorrelated": {"mean": 0.12, "low": 0.02, "high": 0.2, "wide_low": -0.01,
                                                         "wide_high": 0.25}}}}
    # the opt-in row, read the way the targets are: it clears or not, it meets nothing
    report["results"]["o"] = {"decorrelated": {"mean": 0.74}}
    report["opt_in"] = {"row": "o", "targets": {"rival": 0.1, "unscored": 0.1},
                        "comparisons": {"rival": {"decorrelated": {"mean": 0.2, "low": 0.1, "high": 0.3}}}}
    entry = ledger.record_read(book, report, method, None)
    assert entry["opt_in"] == {"decorrelated": 0.74, "read_as_targets": {
        "accuracy": {"target": 0.7, "measured": 0.74, "clears": True},
        "rival": {"margin": 0.1, "gain": 0.2, "low": 0.1, "high": 0.3, "clears": True},
        "unscored": {"margin": 0.1, "gain": None, "clears": False}}}
    assert json.loads((book.parent / entry["results"]).read_text()) == report
    # the ledger holds what was measured against each target, on the wider interval
    assert entry["targets"] == {"accuracy": {"target": 0.7, "measured": 0.7, "met": True},
                                "rival": {"margin": 0.1, "gain": 0.12, "low": -0.01, "high": 0.25, "met": False}}
    assert ledger.read_ledger(book)[0]["why"] == "the first read of these seeds at this method"
    assert entry["changed"] is None  # the first read of these seeds
    with pytest.raises(ValueError, match="pass --reason"):
        ledger.check_unread(book, list(SEALED_SEEDS), method, None)
    ledger.check_unread(book, list(SEALED_SEEDS), method, "the figures file was lost")  # said why: allowed
    ledger.check_unread(book, list(SEALED_SEEDS), "another method", None)  # a changed method: a new read
    with pytest.raises(ValueError, match="is a folder; pass its JSON file"):  # the read could not be recorded there
        ledger.check_unread(book.parent, list(SEALED_SEEDS), "another method", None)
    # a second read of the day at the same commit keeps the first's file; a variant's is filed under its rate
    again = ledger.record_read(book, {**report, "recommended_note": 2}, method, "the figures file was lost")
    variant = ledger.record_read(book, {**report, "config": {**report["config"], "shortcut_rate": 0.9}}, "v", None)
    names = [entry["results"], again["results"], variant["results"]]
    # each later read says what differs from the last read of its seeds: settings, recipe values, code files
    assert again["changed"]["since"]["results"] == entry["results"] and again["changed"]["settings"] == {}
    assert variant["changed"] is None  # the first read of that variant: the headline's reads are not its own
    moved = ledger.record_read(book, {**report, "recipe": {"fit": {"lr": 1e-3}}, "code": {"commit": "HEAD"}}, "m",
                               "the learning rate")
    assert moved["changed"]["recipe"] == {"fit.lr": [None, 1e-3]} and moved["changed"]["code_files"] is None
    assert len(set(names)) == 3 and names[1].endswith("-2.json") and names[2].endswith("-shortcut-0.9.json")
    assert json.loads((book.parent / names[0]).read_text()) == report and variant["shortcut_rate"] == 0.9
    # the command refuses before any work, in one line
    assert main(["demo", "--full", "--ledger", str(book), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "pass --reason" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (book.parent / moved["results"]).unlink()  # a read whose results file is lost: its differences are unknown
    after = ledger.record_read(book, report, "n", "checking a lost file")
    assert after["changed"]["since"]["results"] == moved["results"] and after["changed"]["settings"] is None
    # killed between its results file and the ledger: the rerun records the read once, over the file it left
    real = ledger.atomic_write

    def killed_at_the_ledger(target, write):
        if target == book:
            raise KeyboardInterrupt
        return real(target, write)

    monkeypatch.setattr(ledger, "atomic_write", killed_at_the_ledger)
    killed = {**report, "code": {"commit": "fff0000aaa", "dirty": False}}
    with pytest.raises(KeyboardInterrupt):
        ledger.record_read(book, killed, "k", "a new commit")
    monkeypatch.setattr(ledger, "atomic_write", real)
    reads = len(ledger.read_ledger(book))
    kept = ledger.record_read(book, killed, "k", "a new commit")
    assert len(ledger.read_ledger(book)) == reads + 1
    assert [p.name for p in book.parent.glob("*-fff0000-*")] == [kept["results"]] and "-2" not in kept["results"]
    # another ledger's read of the day beside it, at the same commit: filed apart, never over this one's file
    other = ledger.record_read(book.parent / "other.json", {**killed, "config": {**killed["config"], "seeds": [1]}},
                               "o", None)
    assert other["results"] != kept["results"] and json.loads((book.parent / kept["results"]).read_text()) == killed


def test_a_reads_code_changes_come_from_the_checkouts_history(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@t"), git("config", "user.name", "t")
    code = tmp_path / ledger.PACKAGE.name / "scoring"
    code.mkdir(parents=True)
    (code / "engine.py").write_text("a = 1\n")
    (tmp_path / "notes.md").write_text("x\n")
    git("add", "."), git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD").strip()
    (code / "engine.py").write_text("a = 2\n")
    (tmp_path / "notes.md").write_text("y\n")  # not the read's code
    git("commit", "-qam", "two")
    assert ledger._code_files_changed(first, "HEAD", tmp_path) == [f"{ledger.PACKAGE.name}/scoring/engine.py"]
    assert ledger._code_files_changed(first, "HEAD", code) is None  # not the checkout's top: git cannot say
    assert ledger._code_files_changed("0" * 40, "HEAD", tmp_path) is None  # a commit this history lacks

