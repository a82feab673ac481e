"""Reading HF-style model folders: `config.json` plus weights (safetensors, or a torch `.bin` loaded safely)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch


class ModelFolderError(ValueError):
    """A model folder is missing, incomplete, or holds weights that do not fit the model."""


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelFolderError(f"{folder}: no config.json (expected an HF-style model folder)")
    return json.loads(path.read_text())


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: `*.safetensors` (sharded or not), else `pytorch_model*.bin` (weights only)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ModelFolderError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
    state = {}
    for f in files:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def strip_prefix(state: dict[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """The tensors under the first prefix that any key carries, renamed without it; unprefixed if none does."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: str | Path,
               ignore: Iterable[str] = ()) -> None:
    """Load `state` into `module`, failing on any missing key or on unexpected keys not in `ignore` prefixes."""
    ignore = tuple(ignore)
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    result = module.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {sorted(result.missing_keys)[:5]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {sorted(result.unexpected_keys)[:5]}")
    if problems:
        raise ModelFolderError(f"{folder}: weights do not match the model: {'; '.join(problems)}")


def resolve_model_folder(name: str | Path) -> Path:
    """A local folder as is; anything else is a hub id fetched into the HF cache (needs the network)."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    if str(name).startswith(("/", ".", "~")):
        raise ModelFolderError(f"model folder {name} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name)))
    except Exception as e:  # offline, unknown id, no access: one message naming the model
        raise ModelFolderError(f"{name}: not a local folder and not fetchable from the hub ({e})") from e
