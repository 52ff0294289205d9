"""Hub uploads of ``collect.py`` and ``train.py``: checked before the work, failures named.

huggingface_hub does the uploading. What it does not do is tell, before hours of collection
or training, that the upload at the end cannot happen (no token, a rejected token, no
network), nor turn a failed upload into a message saying what was kept and how to send it
later: :func:`check_hub_access` (one ``whoami`` request) and :func:`hub_upload` do that. The
token comes from ``HF_TOKEN`` or ``hf auth login`` and is never printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class HubError(RuntimeError):
    """The Hub cannot be used for the requested upload; the message says why and the fix."""


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
