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
