"""The one place that wires the Dagster code location: every definition in the `defs/` folder, loaded the dg way.

Importing it must stay cheap (no torch): the model loads inside runs, on first use.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
