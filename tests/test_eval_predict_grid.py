"""eval/predict_grid.py: the demo's window pairs against predict's stages, and accuracy per single t."""

from __future__ import annotations

import pytest
from helpers import eval_script as _script


def test_predict_grid_pairs_the_two_readings_per_seed_and_draws_the_single_t_curve(tmp_path, monkeypatch):
    script = _script("predict_grid")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501"])
    assert script.single_t_grid((0, 200), 50).tolist() == [0, 50, 100, 150]
    calls = []

    def one_seed(seed, per_class, overrides, step, demo_row="window", demo_window=None):
        calls.append((seed, per_class, overrides, step) + ((demo_row, demo_window) if demo_row != "window" else ()))
        per_t = [0.9, 0.5, 0.4, 0.3]
        return {s: {"predict": 0.5 + seed / 100, "demo pairs": 0.6, "per t": per_t} for s in script.STREAMS}

    monkeypatch.setattr(script, "one_seed", one_seed)
    args = ["--seeds", "11,13", "--t-step", "50", "--cache", str(tmp_path), "--plot", str(tmp_path / "grid.png")]
    out = script.main(args)
    assert calls == [(11, 10, [], 50), (13, 10, [], 50)]
    gap = out["summary"]["oracle val"]["predict minus demo pairs"]
    assert gap["mean"] == pytest.approx(0.02) and gap["se"] == pytest.approx(0.01)
    assert out["t"] == [0, 50, 100, 150] and out["summary"]["val"]["per t"] == [0.9, 0.5, 0.4, 0.3]
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert script.main(args)["summary"] == out["summary"] and len(calls) == 2  # read back from the cache
    script.main([*args, "--set", "score.unet_scale=1.0"])
    assert len(calls) == 4 and calls[-1][2] == ["score.unet_scale=1.0"]  # another recipe is fitted apart
    script.main([*args, "--demo-row", "all t", "--demo-window", "0", "200"])  # the rival's row, kept apart
    assert len(calls) == 6 and calls[-1][4:] == ("all t", (0, 200))
