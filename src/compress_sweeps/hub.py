"""Fail fast and helpfully when a hub name is asked for but the hub cannot be reached (no internet)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub's host answers a TCP connect within `timeout` seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_cached(repo_id: str, repo_type: str) -> bool:
    """True when the hub cache already holds a snapshot of `repo_id` (then it loads offline)."""
    from huggingface_hub import scan_cache_dir

    try:
        return any(r.repo_id == repo_id and r.repo_type == repo_type for r in scan_cache_dir().repos)
    except Exception:  # no cache folder yet, or an unreadable one: treat as not cached
        return False


def check_hub_source(name_or_path: str, key: str, local_hint: str, repo_type: str = "model") -> None:
    """Raise at once (instead of after minutes of retries) when `name_or_path` is neither a local folder nor a hub
    id that can be fetched or is cached. `key` names the config key, `local_hint` says what to use instead."""
    if Path(name_or_path).expanduser().exists() or is_cached(name_or_path, repo_type):
        return
    if not hub_reachable():
        raise RuntimeError(
            f"{key}='{name_or_path}' is no local folder (nothing at {Path(name_or_path).expanduser().absolute()}) "
            f"and, as a hub name, cannot be fetched: the Hugging Face hub cannot be reached (offline, or "
            f"HF_HUB_OFFLINE=1). {local_hint}"
        )
