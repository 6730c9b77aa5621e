# Configuration of the Sphinx documentation (scverse cookiecutter v0.7 layout).
#
# Build locally, without network:
#     PYTHONPATH=src python -m sphinx -W -b html docs docs/_build/html
# Intersphinx links (python, numpy, anndata, scanpy, scvi-tools, torch) need network; they are
# switched on on Read the Docs (READTHEDOCS is set there) or with SCLLM_DSC_DOCS_INTERSPHINX=1.
from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
if (ROOT / "src").is_dir():
    # document the source tree even when the package is not installed
    sys.path.insert(0, str(ROOT / "src"))

# -- Project information -----------------------------------------------------

try:
    info = metadata("scllm-dsc")
    project_name = info["Name"]
    author = info["Author"] or "scllm_dsc developers"
    version = info["Version"]
    urls = dict(pu.split(", ", 1) for pu in (info.get_all("Project-URL") or []))
except PackageNotFoundError:  # not installed: read pyproject.toml
    import tomllib

    project_meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project_name = project_meta["name"]
    author = ", ".join(a["name"] for a in project_meta.get("authors", [])) or project_name
    version = project_meta["version"]
    urls = project_meta.get("urls", {})

project = project_name
copyright = f"{datetime.now():%Y}, {author}"
release = version
repository_url = urls.get("Source") or urls.get("Repository")

bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "unsrt"
templates_path = ["_templates"]
nitpicky = False  # cross-references to packages without intersphinx must not fail the build
needs_sphinx = "7.0"

html_context = {
    "display_github": repository_url is not None,
    "github_user": "scverse",
    "github_repo": project_name,
    "github_version": "main",
    "conf_py_path": "/docs/",
}

# -- General configuration ---------------------------------------------------

extensions = [
    "myst_nb",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinxcontrib.bibtex",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
]

autosummary_generate = True
autodoc_member_order = "groupwise"
default_role = "literal"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True  # having a separate entry generally helps readability
napoleon_use_param = True
myst_heading_anchors = 6  # create anchors for h1-h6
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_url_schemes = ("http", "https", "mailto")
nb_output_stderr = "remove"
nb_execution_mode = "off"  # tutorials are committed with their outputs
nb_merge_streams = True
typehints_defaults = "braces"

source_suffix = {
    ".rst": "restructuredtext",
    ".ipynb": "myst-nb",
    ".myst": "myst-nb",
    ".md": "myst-nb",
}

_INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
}
if os.environ.get("READTHEDOCS") or os.environ.get("SCLLM_DSC_DOCS_INTERSPHINX"):
    intersphinx_mapping = _INTERSPHINX
else:  # offline build: no inventories to fetch, plain-text references
    intersphinx_mapping = {}

# List of patterns, relative to source directory, that match files and
# directories to ignore when looking for source files.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# -- Options for HTML output -------------------------------------------------

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["css/custom.css"]
html_title = project_name

html_theme_options = {
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}
if repository_url:
    html_theme_options |= {"repository_url": repository_url, "use_repository_button": True}

pygments_style = "default"
