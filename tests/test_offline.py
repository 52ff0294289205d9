"""An unreachable Hub: one quick probe, then an error naming the input and the fix.

The Hub is simulated by ``huggingface_hub.constants.ENDPOINT`` pointing at a closed local port
(connection refused); nothing here touches the network.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from r2sft import hub
from r2sft.config import parse_config
from r2sft.hub import HubUnreachableError, require_hub
from r2sft.paths import REPO_ROOT

TIME_BOUND_S = 10.0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.hub_unreachable_reason.cache_clear()
    yield endpoint
    hub.hub_unreachable_reason.cache_clear()


class CountingSession:
    """A stand-in for huggingface_hub's HTTP session whose requests all fail."""

    def __init__(self) -> None:
        self.requests = 0

    def head(self, url: str, timeout: float) -> None:
        self.requests += 1
        raise ConnectionError(f"no route to {url}")


def test_the_hub_is_asked_once_and_not_at_all_offline(monkeypatch, unreachable_hub):
    import huggingface_hub.utils

    session = CountingSession()
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: session)
    for what in ("data set 'a/b'", "model 'c/d'"):
        with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE=1"):
            require_hub(what, "Pass a local copy")
    assert session.requests == 1
    hub.hub_unreachable_reason.cache_clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    require_hub("model 'c/d'", "Pass a local copy")  # the cache serves it: nothing asked
    assert session.requests == 1


def test_hub_data_set_fails_fast_naming_data_path(unreachable_hub):
    from r2sft.tasks import get_task

    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as error:
        get_task("gsm8k").load("train", limit=2)
    assert time.monotonic() - start < TIME_BOUND_S
    message = str(error.value)
    assert "'openai/gsm8k'" in message and "--data_path" in message
    assert "HF_HUB_OFFLINE=1" in message and unreachable_hub in message


def test_offline_data_set_missing_from_the_cache_names_data_path(monkeypatch):
    import datasets

    from r2sft.tasks.files import load_hub_rows

    def not_cached(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets, "load_dataset", not_cached)
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache.*--data_path"):
        load_hub_rows("openai/gsm8k", "train", "main")


def test_hub_model_fails_fast_naming_a_local_folder(unreachable_hub):
    from r2sft.specs import load_model_config

    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"model 'org/dllm'.*local model folder"):
        load_model_config("org/dllm")
    assert time.monotonic() - start < TIME_BOUND_S


def test_evaluate_with_a_hub_model_fails_before_reading_its_preset(unreachable_hub, monkeypatch):
    import huggingface_hub

    from r2sft.evaluate import EvaluateArgs, run

    def no_download(*args, **kwargs):
        raise AssertionError("the preset was fetched before the Hub was checked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    with pytest.raises(HubUnreachableError, match="--model a local model folder"):
        run(EvaluateArgs(model="org/dllm", limit=2))


@pytest.mark.parametrize(
    ("extra", "names"),
    [([], ["'openai/gsm8k'", "--data_path"]),
     (["--data_path", "GSM8K_FILE"], ["'GSAI-ML/LLaDA-8B-Instruct'", "--model"])],
)  # fmt: skip
def test_collect_without_network_fails_fast_and_leaves_no_output(
    unreachable_hub, tmp_path, extra, names
):
    """The 8B GSM8K config with no network: the data set, then (given --data_path) the
    model, named with the fix within 10 s, and no output folder made."""
    from r2sft.collect import CollectConfig, run_collect

    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "1+1?", "answer": "2\n#### 2"}) + "\n")
    output = tmp_path / "out"
    extra = [str(gsm8k) if item == "GSM8K_FILE" else item for item in extra]
    args = ["--config", str(REPO_ROOT / "configs/llada_8b_gsm8k.yaml"), "--num_prompts", "2",
            "--output_dir", str(output), *extra]  # fmt: skip
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as error:
        run_collect(parse_config(CollectConfig, args=args))
    assert time.monotonic() - start < TIME_BOUND_S
    for name in names:
        assert name in str(error.value)
    assert not Path(output).exists()


def test_train_with_a_hub_model_fails_fast_and_leaves_no_output(unreachable_hub, tmp_path):
    from test_train import make_collected_data, make_tiny_model

    from r2sft.training import TrainConfig, train

    data = make_collected_data(tmp_path / "collect", make_tiny_model(tmp_path / "model"))
    output = tmp_path / "train"
    config = TrainConfig(model="org/dllm", data_dir=str(data), output_dir=str(output),
                         report_to="none", max_steps=2)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="--model a local model folder"):
        train(config)
    assert time.monotonic() - start < TIME_BOUND_S
    assert not output.exists()
