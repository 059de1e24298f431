"""``ht.settings``: package-wide options (scanpy-style verbosity)."""

from __future__ import annotations

import logging
from enum import IntEnum


class Verbosity(IntEnum):
    """Verbosity levels, as in scanpy: ``error`` < ``warning`` < ``info`` < ``hint`` < ``debug``."""

    error = 0
    warning = 1
    info = 2
    hint = 3
    debug = 4


_LOGGING_LEVELS = {
    Verbosity.error: logging.ERROR,
    Verbosity.warning: logging.WARNING,
    Verbosity.info: logging.INFO,
    Verbosity.hint: logging.INFO,
    Verbosity.debug: logging.DEBUG,
}


class _ConsoleHandler(logging.StreamHandler):
    """The console handler ``settings.verbosity`` adds when nothing in the application would show our messages."""


class HcitoolsConfig:
    """Package-wide options of hcitools (``ht.settings``).

    Attributes
    ----------
    verbosity
        ``"error"``, ``"warning"`` (default), ``"info"``, ``"hint"`` or ``"debug"`` (or 0–4), as in scanpy. Sets the
        level of the ``"hcitools"`` logger. At ``"info"`` and above, training shows Lightning's banners and progress
        bars and the tools log what they wrote and where; below, they stay quiet (errors and warnings still show).
        The library installs no logging handler of its own: if the application has none that would show our
        messages when the level is raised to ``"info"`` or above, a plain console handler is added to the
        ``"hcitools"`` logger (and removed again when the verbosity is lowered). Progress bars of long work
        (training, cross-validation) show at every level but ``"error"``.
    """

    def __init__(self) -> None:
        self._verbosity = Verbosity.warning

    @property
    def verbosity(self) -> Verbosity:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str | Verbosity) -> None:
        if isinstance(value, str):
            if value not in Verbosity.__members__:
                raise ValueError(
                    f"`verbosity` must be one of {list(Verbosity.__members__)} or 0–4, got {value!r}."
                )
            level = Verbosity[value]
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= int(value) <= 4:
            level = Verbosity(int(value))
        else:
            raise ValueError(
                f"`verbosity` must be one of {list(Verbosity.__members__)} or 0–4, got {value!r}."
            )
        self._verbosity = level
        logger = logging.getLogger("hcitools")
        logger.setLevel(_LOGGING_LEVELS[level])
        ours = [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]
        if level >= Verbosity.info and not ours and not _shown_elsewhere(logger):
            handler = _ConsoleHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        elif level < Verbosity.info:
            for handler in ours:
                logger.removeHandler(handler)

    @property
    def progress_bars(self) -> bool:
        """Whether long work shows progress bars by default (all levels but ``"error"``)."""
        return self._verbosity >= Verbosity.warning

    @property
    def quiet(self) -> bool:
        """True below ``"info"``: no third-party banners or progress bars."""
        return self._verbosity < Verbosity.info

    def __repr__(self) -> str:
        return f"hcitools settings: verbosity={self._verbosity.name!r}"


def _shown_elsewhere(logger: logging.Logger) -> bool:
    """Whether a handler up the logger hierarchy (the application's) would show INFO records."""
    current = logger.parent
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) and h.level <= logging.INFO for h in current.handlers):
            return True
        if not current.propagate:
            break
        current = current.parent
    return False


settings = HcitoolsConfig()
