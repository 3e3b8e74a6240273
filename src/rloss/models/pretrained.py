"""Pretrained backbone weights offline: when they are neither in the local cache nor downloadable,
fail within seconds with one line naming the backbone and the fix, instead of a long retry loop
(Hugging Face) or a hanging connection (torch hub) followed by a deep traceback."""

from __future__ import annotations

import inspect
import socket
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum

from rloss.utils.errors import UserError

PROBE_TIMEOUT_S: float = 3.0
"""Seconds to wait for a TCP connection to the weights' host before calling it unreachable."""

OFFLINE_HINT = "train from random weights with --model.weights_backbone null, or pre-download them: "


class WeightsUnavailableError(UserError):
    """Pretrained weights are not cached and cannot be downloaded."""


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the host of ``url`` cannot be reached (DNS, refused, timeout), or None when it can."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"{parsed.hostname} unreachable: {error}"
    return None


def backbone_weights(builder: Callable[..., torch.nn.Module], name: str) -> WeightsEnum:
    """The torchvision weights a builder loads for ``weights_backbone=name`` (from its type hints)."""
    hint = typing.get_type_hints(inspect.unwrap(builder))["weights_backbone"]
    enum = next(arg for arg in typing.get_args(hint) if isinstance(arg, type) and issubclass(arg, WeightsEnum))
    return enum.verify(name)


def check_torch_hub(backbone: str, weights: WeightsEnum) -> None:
    """WeightsUnavailableError unless ``weights`` are in the torch hub cache or their host answers."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file() and (problem := unreachable(weights.url)):
        raise WeightsUnavailableError(
            f"backbone {backbone!r}: its ImageNet weights are not cached and cannot be downloaded ({problem})",
            f"{OFFLINE_HINT}download {weights.url} to {cached}",
        )


def check_hugging_face(backbone: str, repo_id: str, revision: str, filenames: tuple[str, ...]) -> None:
    """WeightsUnavailableError unless the files of ``repo_id`` are in the HF cache or the hub answers."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = all(isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str) for f in filenames)
    if not cached and (problem := unreachable(constants.ENDPOINT)):
        raise WeightsUnavailableError(
            f"backbone {backbone!r}: its ImageNet weights are not cached and cannot be downloaded ({problem})",
            f"{OFFLINE_HINT}run `huggingface-cli download {repo_id} --revision {revision}` with network "
            f"and copy the cache to {constants.HF_HUB_CACHE}",
        )


@contextmanager
def download_errors(backbone: str) -> Iterator[None]:
    """Turn a failed weights download (network or file errors) into a WeightsUnavailableError."""
    try:
        yield
    except OSError as error:
        raise WeightsUnavailableError(
            f"backbone {backbone!r}: downloading its pretrained weights failed ({error})",
            f"{OFFLINE_HINT}see the torch hub cache {torch.hub.get_dir()} or the Hugging Face cache",
        ) from error
