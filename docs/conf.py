"""Sphinx configuration of the hcitools documentation.

Build with ``make docs`` (``sphinx -W --keep-going``: every warning fails the build). The tutorials under
``tutorials/`` are committed with their outputs. Here (``make docs``, and so CI) the build executes them again,
against the real data in ``$HCITOOLS_DATA``, and fails on any error; on Read the Docs (``$READTHEDOCS`` set), which
has neither the data nor the time, their stored outputs are rendered as they are, and only the plot gallery (no
data, seconds) is executed. ``make tutorials`` refreshes the
stored outputs. ``HCITOOLS_NB_EXECUTION`` (``off`` / ``cache`` / ``force``) overrides the choice.
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Read the Docs sets READTHEDOCS=True in its build environment.
ON_RTD = os.environ.get("READTHEDOCS", "").lower() in ("1", "true", "yes")

# The tutorials read the real data through $HCITOOLS_DATA. The Makefile exports it; when Sphinx is run by
# hand, default to the shared data folder beside the repository (<repo>/../shared/data). The notebook kernels
# inherit this environment.
os.environ.setdefault("HCITOOLS_DATA", str((HERE.parent.parent / "shared" / "data").resolve()))
# Plots in executed notebooks: Jupyter's inline backend, so that figures land in the pages (the Makefile's
# MPLBACKEND=Agg, meant for tests, would drop them).
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

# -- Project information -----------------------------------------------------------------------------------

info = metadata("hcitools")
project = info["Name"]
author = info.get("Author") or "hcitools developers"
copyright = f"{datetime.now():%Y}, {author}"
version = info["Version"]
release = version

# -- General configuration ---------------------------------------------------------------------------------

extensions = [
    "myst_nb",  # MyST markdown and notebooks (do not add myst_parser as well)
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx.ext.mathjax",
]
# No intersphinx: the docs must build offline, and an unreachable inventory is a warning (= an error with -W).

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
# myst_nb registers .md (MyST markdown) and .ipynb itself.
master_doc = "index"
default_role = "literal"
pygments_style = "default"

# -- Autodoc, autosummary, napoleon, type hints --------------------------------------------------------------

autosummary_generate = True  # stubs go to docs/generated (git-ignored), from the :toctree: of api.md
autosummary_imported_members = False
autodoc_member_order = "groupwise"
autodoc_default_options = {"show-inheritance": False}
autoclass_content = "class"

_API_MODULES = ("pp", "tl", "pl", "model", "datasets")


def _hcitools_members() -> dict[str, dict[str, list[str]]]:
    """Public methods and attributes of every exported class, as defined by hcitools classes in its MRO.

    The class template (``_templates/autosummary/class.rst``) documents these: what a model inherits from
    hcitools' own base classes (``setup_anndata``, ``train``, ``predict``, …) is listed, what it inherits from
    scvi-tools, ``tuple`` or ``object`` is not.
    """
    import importlib
    import inspect

    out = {}
    for sub in _API_MODULES:
        module = importlib.import_module(f"hcitools.{sub}")
        for name in getattr(module, "__all__", []):
            cls = getattr(module, name)
            if not inspect.isclass(cls):
                continue
            methods, attributes = [], []
            for base in cls.__mro__:
                if not base.__module__.startswith("hcitools"):
                    continue
                for member, value in vars(base).items():
                    if member.startswith("_") or member in methods or member in attributes:
                        continue
                    is_method = inspect.isfunction(value) or isinstance(value, classmethod | staticmethod)
                    (methods if is_method else attributes).append(member)
            out[f"hcitools.{sub}.{name}"] = {"methods": sorted(methods), "attributes": sorted(attributes)}
    return out


autosummary_context = {"hcitools_members": _hcitools_members()}

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True

typehints_defaults = "braces"
always_use_bars_union = True

# -- MyST and notebooks --------------------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_url_schemes = ("http", "https", "mailto")

# Notebooks are committed with their outputs (`make tutorials` refreshes them; tests/test_tutorials.py checks that
# every code cell carries its output). On Read the Docs the tutorials are rendered as stored (excluded from
# execution): it has no data and no time to train. Here the build executes them and fails on any error. "cache" keeps executed notebooks in
# docs/_build/.jupyter_cache, keyed on the code cells: a notebook is re-executed when its code changes or after
# `rm -rf docs/_build` (`make clean`; a CI clone always starts empty), not when only src/ changed. Unlike "auto",
# "cache" also prints the failing cell's traceback before it stops the build.
# The plot gallery (gallery.md) needs no data and runs in well under a minute: it is executed on Read the Docs too
# (every other page rendered as stored), so its figures are there.
nb_execution_mode = os.environ.get("HCITOOLS_NB_EXECUTION") or "cache"
if ON_RTD and not os.environ.get("HCITOOLS_NB_EXECUTION"):
    nb_execution_excludepatterns = ["tutorials/*"]
if nb_execution_mode not in ("off", "cache", "force", "auto", "inline"):
    raise ValueError(
        f"HCITOOLS_NB_EXECUTION must be one of off / cache / force / auto / inline, got {nb_execution_mode!r}."
    )
# Per cell, in seconds: a tutorial runs in ≤ 2 minutes in all; one cell stuck this long is a failure.
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# -- HTML output ---------------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "hcitools"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}

# -- Checks --------------------------------------------------------------------------------------------------

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 9 deprecates; the Python warning is noise in the log
# (it is not a Sphinx warning and does not fail the build).
warnings.filterwarnings(
    "ignore", message=r".*_RstSnippetParser\.set_application", category=DeprecationWarning
)
warnings.filterwarnings(
    "ignore", message=r".*_RstSnippetParser\.set_application", category=PendingDeprecationWarning
)


def _check_api_page(app) -> None:
    """Warn (an error under -W) when a name in a subpackage's ``__all__`` is missing from api.md."""
    import importlib

    from sphinx.util import logging as sphinx_logging

    logger = sphinx_logging.getLogger(__name__)
    text = (HERE / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+~?([A-Za-z_][\w.]*)\s*$", text, flags=re.MULTILINE))
    for sub in _API_MODULES:
        module = importlib.import_module(f"hcitools.{sub}")
        for name in getattr(module, "__all__", []):
            if f"{sub}.{name}" not in listed:
                logger.warning(
                    f"hcitools.{sub}.{name} is in hcitools.{sub}.__all__ but not on the API page; "
                    "add it to an autosummary table in docs/api.md",
                    location="api",
                )


_SECTION_UNDERLINE = re.compile(r"^\s*[=\-`:'\"~^_*+#<>]{2,}\s*$")


def _prose_returns_as_one_field(app, what, name, obj, options, lines: list[str]) -> None:
    """Hand napoleon a "Returns" section written as prose as one description, so its lists survive.

    hcitools docstrings describe what a function returns and writes in prose with bullet lists (the scanpy
    convention: "``None``, or a copy when ``copy=True``. Writes: - ``obs[key_added]``: …"). Napoleon reads
    every unindented line of a numpy Returns section as a new ``type`` entry and garbles such text (a one-line
    sentence becomes the return *type*). So, unless the section is in the numpy form (a type line followed by
    an indented description), its body is indented under an empty ``:`` entry (the marker that
    sphinx-autodoc-typehints itself inserts): napoleon emits it as one ``:returns:`` field, and the return type
    comes from the annotation.
    """
    for i in range(len(lines) - 1):
        if lines[i].strip().lower() == "returns" and _SECTION_UNDERLINE.match(lines[i + 1]):
            break
    else:
        return
    start = i + 2
    end = start
    while end < len(lines) and not (
        lines[end].strip() and end + 1 < len(lines) and _SECTION_UNDERLINE.match(lines[end + 1])
    ):
        end += 1
    body = lines[start:end]
    if body and body[0].strip() == ":":  # already marked by sphinx-autodoc-typehints
        body = body[1:]
    while body and not body[0].strip():
        body.pop(0)
    text = [line for line in body if line.strip()]
    if len(text) > 1 and all(line[0].isspace() for line in text[1:]):
        return  # numpy form: a type line, then an indented description
    lines[start:end] = [":", *[f"    {line}" if line.strip() else "" for line in body]]


def setup(app):
    app.connect("builder-inited", _check_api_page)
    # After sphinx-autodoc-typehints' own Returns patch (also 499, connected earlier), before napoleon (500).
    app.connect("autodoc-process-docstring", _prose_returns_as_one_field, priority=499)
