"""The lm-evaluation-harness model ``r2sft``: lm-eval's generation benchmarks decoded by
r2sft's batched sampler, with the decoding cost (NFE, tokens per forward, R_total) reported
beside lm-eval's scores.

Launch (needs the ``eval`` extra: ``pip install -e ".[eval]"``)::

    python -m r2sft.harness --model r2sft \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,decoder=r2,batch_size=16,dtype=bfloat16 \\
        --device cuda --tasks gsm8k --apply_chat_template --output_path results/
    # offline, the embedded model on the project's arith task (r2sft/lm_eval_tasks)
    python -m r2sft.harness --model r2sft --model_args gen_length=64,block_length=16 \\
        --device cpu --include_path r2sft/lm_eval_tasks --tasks r2sft_arith --apply_chat_template

``python -m r2sft.harness`` *is* lm-eval's ``lm_eval`` command, every option the same, with the
model ``r2sft`` registered first: lm-eval 0.4 finds models only in its own table and in
modules imported before its command line runs (no plug-in entry points), so the plain
``lm_eval`` command cannot see a model that lives in another package. From Python,
``import r2sft.harness`` registers it for ``lm_eval.simple_evaluate(model="r2sft", ...)``.

``--model_args``: ``pretrained`` (model folder or Hub id; default the embedded model),
``batch_size``, ``dtype``, ``trust_remote_code``, ``seed`` and every decoder option of
:class:`r2sft.decoding.DecoderArgs` (``decoder``, ``preset``, ``gen_length``,
``block_length``, ``threshold``, ``tau_s``, ...), resolved as in ``python -m r2sft.evaluate``
(options given > the preset, by default the model's own ``r2sft_decoding.json``, else the
official values). A request maps onto the decoder this way:

* the canvas is the decoder's ``gen_length``; a request's ``max_gen_toks`` caps the answer
  at that many tokens (with a warning when it is larger than the canvas, which is all the
  model can write);
* the answer is the canvas up to its first end-of-text / end-of-turn token, detokenised,
  then cut before the first of the request's ``until`` strings;
* ``do_sample`` / ``temperature`` set the decoder's temperature unless ``--model_args``
  does; other generation kwargs (``top_p``, ...) have no meaning here and are reported once;
* prompts of any lengths are decoded together (left padding), in order of length, request
  of document d with seed ``seed + d`` (as ``r2sft.evaluate`` seeds example d);
* with ``--apply_chat_template`` lm-eval renders prompts through :meth:`R2SFTLM.apply_chat_template`
  (the tokenizer's template, :func:`r2sft.specs.render_chat`).

Per decoded request the model records NFE, tokens per forward and R_s / R_t / R_total; the
per-task means go into lm-eval's results (``config.r2sft``) and, from ``python -m
r2sft.harness``, into ``r2sft_costs_<date>.json`` next to lm-eval's results file and one line
per task after its table.

Why this is written here: lm-eval's Hugging Face model (HFLM) decodes autoregressively with
transformers' ``generate``; a masked-diffusion model needs r2sft's sampler, so this class
implements lm-eval's ``LM`` interface on top of :func:`r2sft.scoring.decode_rows`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import typing
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as error:  # the optional dependency is missing: say how to get it
    raise ImportError(
        f"r2sft.harness needs lm-evaluation-harness ({error}); install it with "
        '`pip install -e ".[eval]"` (lm-eval >= 0.4.10, < 0.5).'
    ) from error

from r2sft.config import NONE_WORD, check_config_values, explicit_none_fields
from r2sft.decoding import DecoderArgs, DecoderConfig
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.scoring import cost_summary, decode_rows, model_max_length
from r2sft.specs import decode_response, load_model, render_chat, require_model_download

logger = logging.getLogger(__name__)

MODEL_NAME = "r2sft"
# Generation kwargs of lm-eval requests that the decoder honours; any other is reported.
HONOURED_GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature")
# Temperature of a request that samples without naming one (transformers' default).
DEFAULT_SAMPLING_TEMPERATURE = 1.0


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class HarnessArgs(DecoderArgs):
    """``--model_args`` of the ``r2sft`` lm-eval model: r2sft's decoder options plus what
    to load and how to batch."""

    pretrained: str = field(
        default=str(EMBEDDED_MODEL_DIR), metadata=_help("model folder or Hub id.")
    )
    batch_size: int = field(default=16, metadata=_help("sequences per forward batch."))
    max_batch_size: int | None = field(
        default=None, metadata=_help("lm-eval's auto-batching cap (unused: fixed batches).")
    )
    device: str | None = field(default=None, metadata=_help("e.g. cuda, cpu (None: CPU)."))
    dtype: str = field(default="auto", metadata=_help("auto | bfloat16 | float32."))
    trust_remote_code: bool = field(default=False, metadata=_help("needed for Dream."))
    seed: int = field(default=0, metadata=_help("the request of document d decodes with seed + d."))

    def __post_init__(self) -> None:
        self.check_decoder_args()
        if self.batch_size < 1:
            raise ValueError(f"--model_args batch_size={self.batch_size} must be >= 1.")


def harness_args(values: dict[str, Any], source: str = "--model_args") -> HarnessArgs:
    """Check lm-eval's parsed model arguments against :class:`HarnessArgs` and build it.

    lm-eval parses ``none`` as None; for an option whose values include the word "none"
    (``token_cluster_mode=none``), or that takes it to mean None over the preset
    (``suffix_window=none``), a None is taken as that word, since setting an option to
    "unset" would be meaningless.
    """
    hints = typing.get_type_hints(HarnessArgs)
    takes_none_word = explicit_none_fields((HarnessArgs,))
    fixed = dict(values)
    for key, value in values.items():
        if value is None and (key in takes_none_word or "'none'" in str(hints.get(key, ""))):
            fixed[key] = NONE_WORD
    if fixed.get("batch_size") == "auto":
        raise ValueError(
            f"{source}: batch_size=auto is not supported by the r2sft model; give a number "
            "(decoding memory grows with batch_size x (prompt + gen_length))."
        )
    check_config_values(fixed, (HarnessArgs,), source=source)
    return HarnessArgs(**fixed)


def cut_at_stop_strings(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any non-empty stop string."""
    cut = len(text)
    for stop in stops:
        if stop:
            found = text.find(stop)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


def _stop_strings(until: Any, where: str) -> list[str]:
    if until is None:
        return []
    if isinstance(until, str):
        return [until]
    if isinstance(until, list | tuple) and all(isinstance(stop, str) for stop in until):
        return list(until)
    raise ValueError(f"{where}: 'until' must be a string or a list of strings, got {until!r}.")


@dataclass
class CostLog:
    """What one model decoded: its checkpoint, decoder and every request's cost."""

    pretrained: str
    decoder: DecoderConfig
    requests: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """Checkpoint, decoder, and per task the mean NFE, tokens per forward and
        redundancy of the requests decoded so far (:func:`r2sft.scoring.cost_summary`)."""
        by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for cost in self.requests:
            by_task[str(cost["task"])].append(cost)
        return {
            "pretrained": self.pretrained,
            "decoder": self.decoder.to_dict(),
            "tasks": {
                task: cost_summary(rows, self.decoder.gen_length)
                for task, rows in sorted(by_task.items())
            },
        }


class LikelihoodNotSupportedError(NotImplementedError):
    """lm-eval asked a masked-diffusion model for a log-likelihood."""


@register_model(MODEL_NAME)
class R2SFTLM(LM):
    """lm-eval's ``LM`` interface over an r2sft-loaded dLLM and its decoder (one process)."""

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1:
            raise RuntimeError(
                f"the r2sft lm-eval model runs in one process, but WORLD_SIZE={world_size}; "
                "launch it with `python -m r2sft.harness`, not accelerate launch / torchrun."
            )
        self.args = harness_args(model_args)
        device = self.args.device
        if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for (lm-eval's --device defaults to cuda:0) but "
                "CUDA is not available here; pass --device cpu."
            )
        require_model_download(self.args.pretrained)  # an unreachable Hub, named first
        self.decoder = self.args.resolve(model=self.args.pretrained)  # errors before the load
        self.loaded = load_model(
            self.args.pretrained, dtype=self.args.dtype, device=device,
            trust_remote_code=self.args.trust_remote_code,
        )  # fmt: skip
        self._device = torch.device(device or "cpu")
        self.tokenizer = self.loaded.tokenizer
        self.costs = CostLog(self.args.pretrained, self.decoder)
        self._reported_kwargs: set[str] = set()
        if _cost_logs is not None:
            _cost_logs.append(self.costs)

    # ---- lm-eval's factory methods ---------------------------------------------------
    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> R2SFTLM:
        """``--model_args`` win over lm-eval's own ``--batch_size`` / ``--device`` (which
        it always passes, with defaults 1 and cuda:0) so ``batch_size=16`` in model_args
        works as written."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> R2SFTLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---- chat template ----------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "r2sft")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if not chat_template:
            return None
        if isinstance(chat_template, str):
            raise ValueError(
                f"--apply_chat_template {chat_template!r}: the r2sft model renders with its "
                "tokenizer's own chat template; pass --apply_chat_template without a name."
            )
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return render_chat(self.tokenizer, chat_history, add_generation_prompt)

    # ---- requests ---------------------------------------------------------------------
    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise self._no_likelihood(requests, "loglikelihood")

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        raise self._no_likelihood(requests, "loglikelihood_rolling")

    @staticmethod
    def _no_likelihood(requests: list[Any], kind: str) -> LikelihoodNotSupportedError:
        tasks = sorted({str(getattr(r, "task_name", None) or "?") for r in requests})
        needs = {
            "loglikelihood": "multiple-choice and loglikelihood tasks (output_type "
            "multiple_choice / loglikelihood: mmlu, arc_easy, arc_challenge, hellaswag, piqa, "
            "winogrande, lambada, ...)",
            "loglikelihood_rolling": "perplexity tasks (output_type loglikelihood_rolling: "
            "wikitext, pile_*, ...)",
        }[kind]
        return LikelihoodNotSupportedError(
            f"task(s) {', '.join(tasks)} sent {len(requests)} {kind} requests, which the r2sft "
            f"model cannot answer: a masked-diffusion LM has no exact likelihood (only a Monte "
            f"Carlo bound), so {needs} are not supported. Evaluate generation tasks "
            "(output_type generate_until: gsm8k, humaneval, mbpp, mmlu_generative, ...)."
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Decode every request with r2sft's sampler; see the module docstring."""
        if not requests:
            return []
        gen_length = self.decoder.gen_length
        room = model_max_length(self.loaded.model)
        jobs: list[dict[str, Any]] = []
        occurrences: dict[int, int] = defaultdict(int)
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            where = f"task {request.task_name} document {request.doc_id}"
            ids = self._encode(context)
            if not ids:
                raise ValueError(f"{where}: the prompt is empty; the sampler needs >= 1 token.")
            if room is not None and len(ids) + gen_length > room:
                raise ValueError(
                    f"{where}: the prompt has {len(ids)} tokens, and with the gen_length "
                    f"{gen_length} canvas that exceeds the model's {room} positions; lower "
                    "gen_length in --model_args or use fewer few-shot examples (--num_fewshot)."
                )
            # lm-eval repeats one Instance `repeats` times: give each repeat its own seed.
            repeat = occurrences[id(request)]
            occurrences[id(request)] += 1
            doc = request.doc_id if request.doc_id is not None else index
            jobs.append({
                "ids": ids,
                "seed": self.args.seed + doc * (request.repeats or 1) + repeat,
                "stops": _stop_strings(gen_kwargs.get("until"), where),
                "max_gen_toks": self._max_gen_toks(gen_kwargs, where),
                "temperature": self._temperature(gen_kwargs),
                "task": request.task_name,
                "doc_id": request.doc_id,
                "key": (context, request.args[1]),
            })  # fmt: skip
        outputs: list[str] = [""] * len(jobs)
        by_temperature: dict[float | None, list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            by_temperature[job["temperature"]].append(index)
        with tqdm(total=len(jobs), desc=f"r2sft {self.decoder.name}", disable=disable_tqdm) as bar:
            for temperature, indices in by_temperature.items():
                defaults = {} if temperature is None else {"temperature": temperature}
                decoder = self.args.resolve(defaults=defaults, model=self.args.pretrained)
                rows = decode_rows(
                    self.loaded.model, self.loaded.spec, self.tokenizer,
                    [jobs[i]["ids"] for i in indices], decoder,
                    seeds=[jobs[i]["seed"] for i in indices], batch_size=self.args.batch_size,
                    on_batch=bar.update,
                )  # fmt: skip
                for index, row in zip(indices, rows, strict=True):
                    outputs[index] = self._answer(jobs[index], row, decoder)
                    self.cache_hook.add_partial("generate_until", jobs[index]["key"],
                                                outputs[index])  # fmt: skip
        return outputs

    def _encode(self, text: str) -> list[int]:
        """Token ids of a prompt. A text that already starts with the BOS token (a chat
        template wrote it) is not given another; otherwise the tokenizer adds its usual
        special tokens (lm-eval's HFLM does the same)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def _max_gen_toks(self, gen_kwargs: dict[str, Any], where: str) -> int | None:
        for key in gen_kwargs:
            if key not in HONOURED_GEN_KWARGS and key not in self._reported_kwargs:
                self._reported_kwargs.add(key)
                logger.warning(
                    "%s: generation kwarg %s=%r has no meaning for r2sft's decoder and is "
                    "ignored (decoder options go in --model_args).", where, key, gen_kwargs[key],
                )  # fmt: skip
        value = gen_kwargs.get("max_gen_toks")
        if value is None:
            return None
        value = int(value)
        if value < 1:
            raise ValueError(f"{where}: max_gen_toks={value} must be >= 1.")
        if value > self.decoder.gen_length and "max_gen_toks" not in self._reported_kwargs:
            self._reported_kwargs.add("max_gen_toks")
            logger.warning(
                "%s asks for up to %d new tokens, but the canvas has gen_length %d: answers "
                "stop there. Pass gen_length=%d in --model_args to give the model that room.",
                where, value, self.decoder.gen_length, value,
            )  # fmt: skip
        return value

    def _temperature(self, gen_kwargs: dict[str, Any]) -> float | None:
        """The request's temperature: greedy unless it samples; None when it says neither
        (the decoder's own setting applies)."""
        if "do_sample" not in gen_kwargs and "temperature" not in gen_kwargs:
            return None
        if not gen_kwargs.get("do_sample", False):
            return 0.0
        value = gen_kwargs.get("temperature")
        return float(DEFAULT_SAMPLING_TEMPERATURE if value is None else value)

    def _answer(self, job: dict[str, Any], row: dict[str, Any], decoder: DecoderConfig) -> str:
        """The request's answer text; records the decode's cost."""
        text = row["response"]
        limit = job["max_gen_toks"]
        if limit is not None and limit < len(row["response_ids"]):
            text = decode_response(self.tokenizer, self.loaded.spec, row["response_ids"][:limit])
        self.costs.requests.append({
            "task": job["task"],
            "doc_id": job["doc_id"],
            "seed": job["seed"],
            "gen_length": decoder.gen_length,
            "temperature": decoder.temperature,
            "nfe": row["nfe"],
            "tokens_per_forward": decoder.gen_length / row["nfe"],
            **{key: row[key] for key in ("r_s", "r_t", "r_total", "r_total_per_token",
                                         "response_length")},
        })  # fmt: skip
        return cut_at_stop_strings(text, job["stops"])

    # ---- cost report ------------------------------------------------------------------
    @property
    def request_costs(self) -> list[dict[str, Any]]:
        """One dict per decoded request: task, doc_id, seed, nfe, tokens_per_forward, r_s,
        r_t, r_total, ..."""
        return self.costs.requests

    def cost_report(self) -> dict[str, Any]:
        return self.costs.report()

    def get_model_info(self) -> dict[str, Any]:
        """Added by lm-eval to its results' ``config`` after the run."""
        return {"r2sft": self.cost_report()}


# The cost logs of the models built while `main` runs lm-eval's command line (None outside
# it): lm-eval drops its model when it returns, the small logs are kept for the report.
_cost_logs: list[CostLog] | None = None


def cost_lines(report: dict[str, Any]) -> list[str]:
    """One printed line per task of a :meth:`CostLog.report`."""
    decoder = report["decoder"]
    canvas = f"{decoder['policy']}{'+r2' if decoder['r2'] else ''}, gen {decoder['gen_length']}"
    return [
        f"r2sft cost | {task}: {costs['num_examples']} requests, mean NFE "
        f"{costs['mean_nfe']:.2f}, {costs['tokens_per_forward']:.2f} tokens/forward, mean "
        f"R_total {costs['mean_r_total']:.2f} ({canvas})"
        for task, costs in report["tasks"].items()
    ]


def results_file(output_path: str, since: float) -> Path | None:
    """The results JSON lm-eval wrote under ``output_path`` at or after ``since`` (its
    EvaluationTracker names it ``<path stem>_<date>.json`` for a .json path, else
    ``<path>/<model>/results_<date>.json``); None when there is none."""
    path = Path(output_path)
    if path.suffix == ".json":
        candidates = path.parent.glob(f"{path.stem}_*.json")
    else:
        candidates = path.glob("**/results_*.json")
    fresh = [file for file in candidates if file.stat().st_mtime >= since]
    return max(fresh, key=lambda file: file.stat().st_mtime) if fresh else None


def write_cost_report(costs: CostLog, results: Path) -> Path:
    """``r2sft_costs_<date>.json`` beside lm-eval's ``results``: the cost report plus every
    decoded request's cost."""
    date = results.stem.rsplit("_", 1)[-1]
    target = results.with_name(f"r2sft_costs_{date}.json")
    payload = {**costs.report(), "results_file": results.name, "requests": costs.requests}
    target.write_text(json.dumps(payload, indent=2))
    return target


COMMAND = "python -m r2sft.harness"
HELP = f"""\
Run lm-eval's benchmarks with r2sft's sampler (model `r2sft`), reporting decoding costs.

usage: {COMMAND} --model r2sft [--model_args pretrained=MODEL,...] --tasks TASK [options]

r2sft's --model_args (comma-separated key=value): pretrained (a model folder or Hub id; default
the embedded model), batch_size, dtype, trust_remote_code, seed, and every decoder option of
`python -m r2sft.evaluate` (decoder, preset, gen_length, block_length, threshold, tau_s, ...).
Every other option is lm-eval's own (`{COMMAND} run --help` lists them); its help follows.
"""


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the ``r2sft`` model registered, then the cost report."""
    global _cost_logs
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(HELP)  # lm-eval's own help (it exits) follows r2sft's part
        sys.stdout.flush()
    from lm_eval.__main__ import cli_evaluate

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output_path", "-o", default=None)
    options, _ = parser.parse_known_args(argv)
    started = time.time()
    saved_argv, sys.argv, _cost_logs = sys.argv, ["lm_eval", *argv], []
    try:
        cli_evaluate()
    finally:
        logs, sys.argv, _cost_logs = _cost_logs, saved_argv, None
    for costs in logs:
        if not costs.requests:
            continue
        for line in cost_lines(costs.report()):
            print(line)
        if options.output_path is None:
            continue
        results = results_file(options.output_path, started)
        if results is None:
            print(f"r2sft cost | no lm-eval results file under {options.output_path} from this "
                  "run; the per-request costs were not written")  # fmt: skip
        else:
            print(f"r2sft cost | wrote {write_cost_report(costs, results)}")


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
