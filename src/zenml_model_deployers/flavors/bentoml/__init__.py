"""The `zmd-bentoml` flavor.

BentoML keeps its bentos and models in its home, ``~/bentoml`` unless ``BENTOML_HOME`` says
otherwise. Here the home follows the ZenML config (``<ZenML config dir>/zmd/bentoml``), as every
other file this package writes does, so a throw-away ZenML config leaves nothing behind; a
``BENTOML_HOME`` the user set wins. BentoML reads the variable on its first store access, not
at import, so setting it when this package is imported is in time.
"""

from __future__ import annotations

import os


def bentoml_home() -> str:
    """BentoML's home for this process: ``BENTOML_HOME`` if set, else inside the ZenML config.

    Sets ``BENTOML_HOME`` when it was not set, so that BentoML and the servers started from
    this process use the same store.

    Returns:
        The home's path.
    """
    if not os.environ.get("BENTOML_HOME"):
        from zenml.utils.io_utils import get_global_config_directory

        os.environ["BENTOML_HOME"] = os.path.join(get_global_config_directory(), "zmd", "bentoml")
    return os.environ["BENTOML_HOME"]


bentoml_home()
