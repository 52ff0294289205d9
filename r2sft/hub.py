"""The Hugging Face Hub: downloads that fail fast offline, uploads checked before the work.

Downloads. A model or data set named by a Hub id is fetched by transformers, datasets and
huggingface_hub, which retry every request for up to a minute when the Hub cannot be
reached, and then name neither the input nor the fix. :func:`require_hub` asks the Hub once,
with a short timeout, before the first download of a run; an unreachable Hub is then one
error naming what was to be downloaded and how to do without (a local folder,
``--data_path``, or ``HF_HUB_OFFLINE=1`` with a filled cache). With ``HF_HUB_OFFLINE`` set
nothing is asked: the libraries read their cache.

Uploads. huggingface_hub does the uploading. What it does not do is tell, before hours of
collection or training, that the upload at the end cannot happen (no token, a rejected
token, no network), nor turn a failed upload into a message saying what was kept and how to
send it later: :func:`check_hub_access` (one ``whoami`` request) and :func:`hub_upload` do
that. The token comes from ``HF_TOKEN`` or ``hf auth login`` and is never printed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

# Seconds the reachability probe waits for the Hub (a DNS failure or a refused connection
# answers at once; a network that drops packets takes this long).
PROBE_TIMEOUT_S = 4.0


class HubError(RuntimeError):
    """The Hub cannot be used for the requested upload; the message says why and the fix."""


class HubUnreachableError(HubError):
    """Something was to be downloaded from the Hub, and the Hub cannot be reached."""


@functools.cache
def hub_unreachable_reason(endpoint: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when ``endpoint`` answers an HTTP request (any status), else why not; asked once
    per process and endpoint."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout_s)
    except Exception as error:  # noqa: BLE001  (DNS, refused, timeout, proxy, TLS alike)
        return f"{type(error).__name__}: {error}"
    return None


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def offline_hint(fix: str) -> str:
    """``fix`` plus the offline alternative, for errors about a Hub download."""
    return f"{fix}, or, if an earlier run downloaded it, set HF_HUB_OFFLINE=1 to read the cache"


def require_hub(what: str, fix: str) -> None:
    """Before downloading ``what`` (e.g. "data set 'openai/gsm8k'"): the Hub must answer,
    unless ``HF_HUB_OFFLINE`` is set (the cache then serves it or the download fails at once).

    Raises:
        HubUnreachableError: naming ``what``, the endpoint, why, and ``fix`` (what to pass
            instead, e.g. "pass --data_path a local copy").
    """
    from huggingface_hub import constants

    if hub_offline():
        return
    reason = hub_unreachable_reason(constants.ENDPOINT)
    if reason is not None:
        raise HubUnreachableError(
            f"{what} is to be downloaded from the Hugging Face Hub, which cannot be reached "
            f"({constants.ENDPOINT}: {reason}). {offline_hint(fix)}."
        )


def _reason(error: BaseException) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return f"the Hugging Face token was refused (HTTP {status}); check HF_TOKEN"
    if status is not None:
        return f"the Hub answered HTTP {status} ({error})"
    return f"cannot reach the Hugging Face Hub ({type(error).__name__}: {error})"


def require_token(repo_id: str) -> None:
    """Raise :class:`HubError` when no token is configured (no network needed)."""
    from huggingface_hub import get_token

    if get_token() is None:  # HF_TOKEN, then the cached login; never echoed
        raise HubError(
            f"--push_to_hub (repo {repo_id}): no Hugging Face token found. Set the HF_TOKEN "
            "environment variable or run `hf auth login`, or drop --push_to_hub."
        )


def check_hub_access(repo_id: str) -> None:
    """Before any work: a token is configured and the Hub accepts it.

    Raises:
        HubError: no token, the token is refused, or the Hub cannot be reached (offline).
    """
    from huggingface_hub import HfApi

    require_token(repo_id)
    try:
        HfApi().whoami()
    except Exception as error:  # noqa: BLE001  (network and HTTP errors alike)
        raise HubError(
            f"--push_to_hub (repo {repo_id}): {_reason(error)}. The upload at the end would "
            "fail; fix this first or drop --push_to_hub (checked before any work)."
        ) from error


@contextmanager
def hub_upload(repo_id: str, what: str, later: str) -> Iterator[None]:
    """Turn any failure of the upload inside the block into one :class:`HubError` naming
    ``what`` was being uploaded and ``later``: where it is kept and how to upload it."""
    try:
        yield
    except HubError:
        raise
    except Exception as error:  # noqa: BLE001  (network and HTTP errors alike)
        raise HubError(
            f"uploading {what} to the Hub repo {repo_id} failed: {_reason(error)}. {later}"
        ) from error
