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


def test_training_is_quiet_below_info(restore_verbosity, screen):
    """Below "info", Lightning's and scvi-tools' loggers are raised to WARNING while a model trains (their device
    banners and tips are INFO records); at "info" they are left as the application set them."""
    import lightning.pytorch as pl

    levels = []

    class Record(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            levels.append(logging.getLogger("lightning.pytorch").getEffectiveLevel())

    lightning_logger = logging.getLogger("lightning.pytorch")
    before = lightning_logger.level
    lightning_logger.setLevel(logging.INFO)
    try:
        ht.model.MoMIL.setup_anndata(screen)
        model = ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4)
        ht.settings.verbosity = "warning"
        model.train(max_epochs=1, enable_progress_bar=False, callbacks=[Record()])
        ht.settings.verbosity = "info"
        model.train(max_epochs=1, enable_progress_bar=False, callbacks=[Record()])
        assert levels == [logging.WARNING, logging.INFO]
        assert lightning_logger.level == logging.INFO  # restored after training
    finally:
        lightning_logger.setLevel(before)
    with pytest.raises(TypeError, match="enable_progress_bar"):
        model.train(max_epochs=1, enable_progress_bar="yes")
