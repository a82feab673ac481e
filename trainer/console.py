"""What a training job prints: the project's lines and figures, not the libraries' routine notices.

megatron-core and torch announce at import and at every checkpoint what a CPU machine without Transformer
Engine or Apex lacks, and which of their own APIs they deprecate; none of it is the user's to act on.
Those notices are dropped here, and the job says once, on rank 0, what it runs without
(`missing_accelerations`). Anything else a library warns about still shows.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings

_ROUTINE_NOTICES = (  # message patterns (regular expressions, matched at the start)
    r".*(Transformer Engine|Apex) (and Apex )?(is|are) not installed",
    r"full scope is deprecated",
    r"`load_state_dict` is deprecated",
    r"Please use DTensor instead",
)


def quiet_library_notices() -> None:
    """Call before megatron-core is imported (trainer.build imports it lazily): its notices come at import."""
    for pattern in _ROUTINE_NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
    # torch's "No CUDA runtime is found, using CUDA_HOME=..." when a CPU machine imports its extension loader
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def missing_accelerations() -> list[str]:
    """The optional fused-kernel packages megatron-core would use and cannot find here."""
    return [name for module, name in (("transformer_engine", "Transformer Engine"), ("apex", "Apex"))
            if importlib.util.find_spec(module) is None]
