"""Project conftest.

The harness plugin (``evals.plugin``) is registered through the ``pytest11`` entry point
in pyproject.toml, so it is active wherever the package is installed; its options are
listed under "symptom-diagnosis evals" in ``pytest --help``. Project-wide defaults live
in ``[tool.pytest.ini_options]`` (the ``evals_*`` ini keys).
"""

pytest_plugins = ["pytester"]  # the harness's own tests drive pytest sessions with it
