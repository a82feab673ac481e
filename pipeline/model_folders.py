"""Where a stage's model comes from: a local folder in its library's layout, or a hub id (network)."""
from __future__ import annotations

import os
from typing import Optional


def model_folder_problem(setting: str, name: str, marker: str, kind: str) -> Optional[str]:
    """Why `name` cannot be loaded as a `kind` (None: it can, as far as a listing tells).

    A local folder must hold `marker`; anything else is a hub id, which needs the network. Hub ids contain
    a slash too, so only existence and a leading / . ~ say path.
    """
    if os.path.exists(name) or name.startswith(("/", ".", "~")):
        if not os.path.isfile(os.path.join(os.path.expanduser(name), marker)):
            return f"{setting}: no {kind} at {name} (build the offline ones with `python -m jobs.build_models`)"
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        return (f"{setting}={name!r}: no such local folder, and HF_HUB_OFFLINE=1 rules out a hub id "
                f"(build the offline folders with `python -m jobs.build_models`, or give a path)")
    return None


def runs_on_gpu(device: str) -> bool:
    return str(device).startswith("cuda")
