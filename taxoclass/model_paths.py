"""Model settings (`similarity.model`, `classifier.encoder`) checked when the config is built.

Features:
- 'bundled' passes; a value that looks like a path must be a folder holding a `config.json` and
  weights (`*.safetensors` or `*.bin`): an empty folder, or one with a stray file, would pass
  until transformers fails after stages 1-2;
- any other value must be a valid Hugging Face model name, and in the local cache when
  `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set;
- each failure is a one-line `ConfigError` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path

from taxoclass.errors import ConfigError

MODEL_KEYS = ("similarity.model", "classifier.encoder")
WEIGHTS = ("*.safetensors", "*.bin")  # transformers' weight files, sharded or not


def check_model_paths(models: dict[str, str]) -> None:
    """`models`: {config key: its value}. Each must be 'bundled', a folder that holds a model, or a Hugging Face
    model name that can be loaded (from the local cache when HF_HUB_OFFLINE is set)."""
    for key, name in models.items():
        if name == "bundled":
            continue
        path = Path(name).expanduser()
        looks_like_path = path.is_absolute() or name.startswith((".", "~")) or path.exists() or name.count("/") > 1
        if looks_like_path:
            if not path.is_dir():
                raise ConfigError(key, f"model folder {name!r} does not exist")
            if not (path / "config.json").is_file():
                raise ConfigError(key, f"model folder {name!r} holds no model (no config.json)")
            if not any(any(path.glob(pattern)) for pattern in WEIGHTS):
                raise ConfigError(key, f"model folder {name!r} holds no weights (no *.safetensors or *.bin file)")
            continue
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ConfigError(key, f"{name!r} is neither 'bundled', a model folder, nor a Hugging Face model name") from None
        if _hub_offline() and not _in_hub_cache(name):
            raise ConfigError(key, f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)
