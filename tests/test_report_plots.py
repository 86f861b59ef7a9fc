"""``refimpl report --plots DIR``: the four figures are written as valid, non-trivial PNG files; without
matplotlib the option is a clear usage error before any row runs.  The report's rows are stubbed (the
figures do not depend on them) and the figures' grids shrunk, so this stays a few seconds."""
import sys

import numpy as np
import pytest

from oracles.checks import Row
from oracles.cli import _plots, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def small_grids(monkeypatch):
    monkeypatch.setattr(_plots, "LENGTH_SWEEP", [
        ("attention", "attention.softmax", "refimpl.attention:scaled_dot_product_attention", ("lq", "lk"), (8, 32)),
        ("ssm", "ssm.selective_scan", "refimpl.ssm:selective_scan", ("L",), (8, 32)),
    ])
    monkeypatch.setattr(_plots, "LENGTH_SEEDS", 1)
    monkeypatch.setattr(_plots, "FAVOR_FEATURES", (4, 16, 64))
    monkeypatch.setattr(_plots, "FAVOR_SEEDS", 2)
    monkeypatch.setattr(_plots, "HIPPO_STEPS", 400)


def _one_row(select=None):
    return [Row(op="stub.row", impl="reference/stub", dtype="float64", max_abs_err=0.0, max_rel_err=0.0, bound=1e-16,
                passed=True, time_s=0.0)]


def test_report_plots_writes_every_png(tmp_path, monkeypatch, capsys, small_grids):
    import matplotlib.image

    monkeypatch.setattr("oracles.checks.run_all", _one_row)
    out_dir = tmp_path / "figs"
    assert main(["report", "--plots", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    for name in _plots.PLOTS:
        path = out_dir / f"{name}.png"
        assert f"plot: {path}" in printed
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 20_000, (name, len(data))  # a drawn figure, not an empty canvas
        img = matplotlib.image.imread(str(path))
        h, w = img.shape[:2]
        assert h >= 300 and w >= 500, (name, img.shape)
        rgb = img[..., :3].reshape(-1, 3)
        assert rgb.std() > 0.05, name  # not one flat colour
        assert len(np.unique(np.round(rgb * 255).astype(np.uint8), axis=0)) > 50, name  # lines, text, colours


def test_report_plots_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def must_not_run(select=None):
        raise AssertionError("the rows ran before the missing extra was reported")

    monkeypatch.setattr("oracles.checks.run_all", must_not_run)
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["report", "--plots", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert "--plots: matplotlib is not installed" in err and "pip install 'refimpl[plot]'" in err
    assert not (tmp_path / "figs").exists()


def test_the_length_sweep_conforms_in_both_dtypes(small_grids):
    """The err/bound figure's points are the verify harness's own comparisons: every one below 1."""
    data = _plots.length_sweep()
    assert set(data) == {(op, d) for op in ("attention.softmax", "ssm.selective_scan") for d in ("float64", "float32")}
    for key, pts in data.items():
        assert sorted(pts) == [8, 32], key
        assert all(0.0 <= r < 1.0 for r in pts.values()), (key, pts)


def test_hippo_reconstruction_improves_with_N():
    """The HiPPO figure's claim: LegS with more coefficients reconstructs the test signal's history better."""
    from refimpl.ssm import hippo_projection
    from refimpl.ssm.hippo import reconstruct

    L = 500
    t = np.arange(1, L + 1) / L
    f = _plots.hippo_signal(t)
    x = np.linspace(0.0, 1.0, 201)
    rms = [np.sqrt(np.mean((reconstruct(hippo_projection(f, "legs", N, 1.0 / L)[-1], "legs", x, 1.0)
                            - _plots.hippo_signal(x)) ** 2)) for N in _plots.HIPPO_N]
    assert rms[0] > rms[1] > rms[2], rms


def test_unknown_plot_name():
    with pytest.raises(ValueError, match="plots: expected names from"):
        _plots.write_plots("/nonexistent-never-created", which=["favor"])
