import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, hcitools as ht; "
        "heavy = [m for m in ('torch', 'scvi', 'pertpy', 'lightning', 'jax', 'ot', 'scanpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import hcitools pulled in heavy modules: {out}"


def test_public_namespaces():
    import hcitools as ht

    for name in ("pp", "tl", "pl", "model", "datasets"):
        assert hasattr(ht, name)
    assert ht.__version__
    assert callable(ht.pp.normalize_plates)
    assert callable(ht.datasets.synthetic_hci)


def test_unknown_attribute():
    import pytest

    import hcitools as ht

    with pytest.raises(AttributeError, match="no attribute"):
        ht.does_not_exist  # noqa: B018
