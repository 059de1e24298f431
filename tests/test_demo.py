import anndata as ad

from hcitools.__main__ import main


def test_demo_runs_and_writes(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path),
                "--n-compounds",
                "150",
                "--n-plates",
                "3",
                "--max-epochs",
                "3",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Compound-level AUROC" in out
    assert "mean over primary assays" in out
    adata = ad.read_h5ad(tmp_path / "demo.h5ad")
    results = adata.uns["demo"]["results"]
    assert set(results["method"]) == {
        "MoMIL (gated ABMIL heads)",
        "multi-label MIL",
        "mean-pool MLP",
        "mean-pool logistic regression",
        "bag size (baseline)",
    }
    assert (tmp_path / "demo_auroc.png").stat().st_size > 1000


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
