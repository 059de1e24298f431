import numpy as np
import pandas as pd

import hcitools as ht
from hcitools._validate import validate_hci


def test_jump_target2_instances(data_root):
    adata = ht.datasets.jump_target2(data_root)
    assert adata.n_obs == 89 + 36
    assert adata.obs["well"].value_counts().to_dict() == {"BR00121431_A01": 89, "BR00121431_A02": 36}
    assert set(adata.obs["pert_iname"]) == {"1-octanol", "quinine"}
    assert set(adata.var["compartment"]) == {"Cells", "Cytoplasm", "Nuclei"}
    assert "Cells_AreaShape_Area" in adata.var_names
    validate_hci(adata, labels_key="targets")
    # feature names agree with pycytominer's collated profile of the same plate
    agg = pd.read_csv(data_root / "hci/jump_target2_BR00121431/BR00121431_two_wells_aggregated.csv", nrows=1)
    assert set(adata.var_names) <= set(agg.columns)
    # a joined row carries the right compartments: cell area equals the raw Cells table
    cells = pd.read_csv(data_root / "hci/jump_target2_BR00121431/single_cell/BR00121431-A01-1_Cells.csv.gz")
    np.testing.assert_allclose(
        adata[:89, "Cells_AreaShape_Area"].X.ravel(), cells["AreaShape_Area"], rtol=1e-6
    )
    targets = adata.obsm["targets"]
    octanol = targets.loc[(adata.obs["pert_iname"] == "1-octanol").to_numpy()].iloc[0]
    assert octanol["GJA1"] == 1 and octanol.sum() == 21
