"""``loadgen workload fit --plot``: a PNG of a trace's real vs fitted distributions."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen.cli import main

pytest.importorskip("matplotlib", reason="optional dependency 'matplotlib' absent")


def _trace(tmp_path):
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.gamma(0.7, 1.0, 300))
    i = rng.lognormal(5, 1, 300).astype(int) + 1
    o = rng.lognormal(4, 0.8, 300).astype(int) + 1
    p = tmp_path / "t.csv"
    p.write_text("ts,i,o\n" + "".join(f"{a:.4f},{b},{c}\n" for a, b, c in zip(t, i, o,
                                                                              strict=True)))
    return p


def test_fit_plot_writes_a_four_panel_png(tmp_path, capsys):
    from matplotlib import image

    out = tmp_path / "fit.png"
    rc = main(["workload", "fit", str(_trace(tmp_path)), "--trace-format", "csv",
               "--trace-columns", "time=ts,input=i,output=o", "--plot", str(out)])
    assert rc == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    h, w = image.imread(out).shape[:2]
    assert (w, h) == (990, 720)  # 11 x 8 inches at 90 dpi
    assert f"wrote the real-vs-fitted plot to {out}" in capsys.readouterr().err
