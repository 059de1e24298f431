import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from hcitools.__main__ import main

METHODS = ("MoMIL", "mean-pool MLP", "pooled logistic regression", "bag size")


def test_demo_runs_and_writes(tmp_path, capsys):
    """A reduced demo (small screen, 3 epochs, 200 resamples): every method in the table with its interval and the
    p-value of MoMIL against it, a verdict, and the outputs written."""
    argv = ["demo", "--out", str(tmp_path), "--n-compounds", "120", "--max-epochs", "3", "--n-boot", "200"]
    assert main([*argv, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Compound-level AUROC" in out and "95 % bootstrap interval" in out
    summary = out[out.index("Mean AUROC with 95 %") : out.index("Verdict:")].splitlines()[1:]
    for method in METHODS:
        rows = [line for line in summary if line.startswith(" ") or "assays (" in line]
        rows = [line for line in rows if f" {method} " in f" {line} "]
        assert len(rows) == 2, (method, summary)  # primary assays and all assays
        for row in rows:
            assert re.search(r"\[\d\.\d{3}, \d\.\d{3}\]", row), row  # the interval
            if method != "MoMIL":
                assert re.search(r"[+-]\d\.\d{3}\s+\d\.\d{3}\s*$", row), row  # Δ and p-value
    per_assay = out[: out.index("Mean AUROC with 95 %")]
    for method in METHODS[1:]:
        assert f"p vs {method}" in per_assay
    verdict = out[out.index("Verdict:") :]
    assert "primary assays (6): MoMIL" in verdict and (
        "beats every baseline" in verdict or "NOT" in verdict or "not significantly" in verdict
    )
    adata = ad.read_h5ad(tmp_path / "demo.h5ad")
    results = adata.uns["demo"]["results"]
    assert set(results["method"]) == set(METHODS)
    # like for like: every method scored on the same compounds per assay
    assert results.groupby("assay")[["n_pos", "n_neg"]].nunique().max().max() == 1
    assert (tmp_path / "demo_auroc.png").stat().st_size > 1000


def test_verdict_says_so_when_momil_loses():
    from hcitools._demo import verdict

    summary = pd.DataFrame(
        {
            "assays": ["primary assays (2)"] * 3,
            "method": ["MoMIL", "pooled logistic regression", "bag size"],
            "delta": [0.0, -0.02, 0.1],
            "p_value": [np.nan, 0.8, 0.01],
        }
    )
    text = verdict(summary)
    assert "MoMIL does NOT beat pooled logistic regression (Δ -0.020)" in text
    assert "it beats bag size (Δ +0.100, p = 0.010)" in text
    summary.loc[1, ["delta", "p_value"]] = [0.01, 0.2]
    assert "not significantly" in verdict(summary)
    summary.loc[1, ["delta", "p_value"]] = [0.05, 0.01]
    assert "beats every baseline" in verdict(summary)


def test_bootstrap_mean_auroc_matches_sklearn_without_resampling():
    """The weighted Mann–Whitney AUROC of the bootstrap equals scikit-learn's AUROC on the resampled rows."""
    from sklearn.metrics import roc_auc_score

    from hcitools._demo import _bootstrap_mean_auroc

    rng = np.random.default_rng(0)
    labels = pd.DataFrame(
        {"a": rng.integers(0, 2, 40).astype(float), "b": rng.integers(0, 2, 40).astype(float)}
    )
    labels.iloc[:5, 1] = np.nan
    pred = {"m": pd.DataFrame(rng.random((40, 2)), columns=["a", "b"])}
    mask = labels.notna()
    boot = _bootstrap_mean_auroc(pred, labels, mask, ["a", "b"], n_boot=3, seed=1)["m"]
    counts = np.random.default_rng(1).multinomial(40, np.full(40, 1 / 40), size=3)
    for k in range(3):
        rows = np.repeat(np.arange(40), counts[k])
        aucs = [
            roc_auc_score(
                labels[a].to_numpy()[rows][mask[a].to_numpy()[rows]],
                pred["m"][a].to_numpy()[rows][mask[a].to_numpy()[rows]],
            )
            for a in ("a", "b")
        ]
        assert boot[k] == pytest.approx(np.mean(aucs))


def test_library_logging_is_safe(caplog):
    """The hcitools logger has only a NullHandler and propagates: notes reach the application's handlers."""
    import logging

    import hcitools as ht

    lg = logging.getLogger("hcitools")
    assert lg.propagate and all(isinstance(h, logging.NullHandler) for h in lg.handlers)
    adata = ht.datasets.synthetic_hci(n_compounds=10, n_features=4, seed=0)
    with caplog.at_level(logging.INFO, logger="hcitools"):
        ht.pp.split_compounds(adata, method="random", seed=0)
        ht.pp.normalize_plates(adata)
    assert "obs['fold']" in caplog.text and "uns['normalize_plates']" in caplog.text
    assert lg.propagate and all(isinstance(h, logging.NullHandler) for h in lg.handlers)


def test_no_logging_configuration_in_the_library():
    """Only the command line (__main__.py) configures logging; the library adds no handler and sets no level.

    The exception is ``ht.settings.verbosity`` (_settings.py), the user's own switch: setting it sets our logger's
    level and, at "info" and above, adds a console handler only when the application has none that would show
    the messages (tested in tests/test_settings.py)."""
    from pathlib import Path

    import hcitools

    offenders = []
    for path in Path(hcitools.__file__).parent.rglob("*.py"):
        if path.name in ("__main__.py", "_settings.py"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "basicConfig" in code or ".propagate" in code:
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            if "addHandler(" in code and "addHandler(logging.NullHandler())" not in code:
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            # quiet_loggers (_utils.py) raises third-party levels temporarily and restores them
            if "setLevel(" in code and path.name != "_utils.py":
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert not offenders, offenders
