"""ht.settings.verbosity: scanpy-style levels for our logging, third-party banners and progress bars."""

import logging

import pytest

import hcitools as ht
from hcitools._settings import Verbosity, _ConsoleHandler


@pytest.fixture
def restore_verbosity():
    before = ht.settings.verbosity
    yield
    ht.settings.verbosity = before


def test_levels_and_errors(restore_verbosity):
    logger = logging.getLogger("hcitools")
    for name, level in [
        ("error", logging.ERROR),
        ("warning", logging.WARNING),
        ("info", logging.INFO),
        ("debug", logging.DEBUG),
    ]:
        ht.settings.verbosity = name
        assert ht.settings.verbosity == Verbosity[name] and logger.level == level
    ht.settings.verbosity = 1
    assert ht.settings.verbosity == Verbosity.warning and ht.settings.quiet and ht.settings.progress_bars
    ht.settings.verbosity = "error"
    assert not ht.settings.progress_bars
    for bad in ["loud", 7, -1, 1.5, True]:
        with pytest.raises(ValueError, match="verbosity"):
            ht.settings.verbosity = bad


def test_console_handler_only_when_nothing_else_shows_info(restore_verbosity, monkeypatch):
    logger = logging.getLogger("hcitools")
    root = logging.getLogger()
    ht.settings.verbosity = "info"  # pytest's capture handler on the root shows INFO: nothing added
    assert not any(isinstance(h, _ConsoleHandler) for h in logger.handlers)
    monkeypatch.setattr(root, "handlers", [])  # an application without logging set up
    ht.settings.verbosity = "warning"
    assert not any(isinstance(h, _ConsoleHandler) for h in logger.handlers)
    ht.settings.verbosity = "info"
    ours = [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]
    assert len(ours) == 1
    ht.settings.verbosity = "debug"  # not twice
    assert len([h for h in logger.handlers if isinstance(h, _ConsoleHandler)]) == 1
    ht.settings.verbosity = "warning"
    assert not any(isinstance(h, _ConsoleHandler) for h in logger.handlers)


def test_training_is_quiet_below_info(restore_verbosity, screen, caplog):
    ht.settings.verbosity = "warning"
    ht.model.MoMIL.setup_anndata(screen)
    model = ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4)
    with caplog.at_level(logging.INFO):
        model.train(max_epochs=1, enable_progress_bar=False)
    assert not [r for r in caplog.records if r.name.startswith(("lightning", "scvi"))]
    ht.settings.verbosity = "info"
    with caplog.at_level(logging.INFO):
        model.train(max_epochs=1, enable_progress_bar=False)
    assert any("GPU available" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="enable_progress_bar"):
        model.train(max_epochs=1, enable_progress_bar="yes")
