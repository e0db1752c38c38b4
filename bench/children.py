"""The ``child_*`` measurements (run in fresh interpreters) and a synthetic session bundle."""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import PROMPT_REPEATS, ROOT, SEED, SYNTHETIC_PROGRAMS, UPLOAD_REPEATS
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord

# ----- the children (run in fresh interpreters) -----


def _job_examples(job: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The dataset and the examples the harness samples, in the order its tests run them."""
    from evals.data import load_dataset, sample

    dataset = load_dataset(job["data_dir"], seed=SEED)
    sampled = sample(dataset.split("test"), job["per_diagnosis"], seed=SEED)
    chosen = [e for e in sampled if e.diagnosis in job["diagnoses"]]
    return dataset, sorted(chosen, key=lambda e: (DIAGNOSES.index(e.diagnosis), e.id))


def _program_and_examples(job: dict[str, Any]) -> tuple[Any, list[Any], Any]:
    """Build the LM as the harness does for one process (cache off) and the program from the registry."""
    import dspy

    from evals.lm.spec import build_lm, parse_lm_spec, worker_threads
    from programs.registry import PROGRAMS

    dataset, examples = _job_examples(job)
    # The harness gives one process all the cores (worker_threads(1)); the plain loop gets the same.
    lm = build_lm(parse_lm_spec("smollm2"), n_threads=worker_threads(1), cache=False)
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    trainset = [
        dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in dataset.split("train")
    ]
    return PROGRAMS[job["program"]].build(trainset), examples, lm


def child_plain_loop(job: dict[str, Any]) -> dict[str, Any]:
    """Call the program on each example, recording latency, tokens and validity as the runner does."""
    import dspy

    from evals.labels import DIAGNOSIS_SET

    program, examples, lm = _program_and_examples(job)
    engine_s = [0.0]
    complete = lm.engine.complete

    def timed_complete(request: Any) -> Any:
        started = time.perf_counter()
        try:
            return complete(request)
        finally:
            engine_s[0] += time.perf_counter() - started

    lm.engine.complete = timed_complete
    latencies, correct, valid, prompt_tokens = [], 0, 0, 0
    for example in examples:
        started = time.perf_counter()
        with dspy.track_usage() as usage:
            try:
                answer = str(getattr(program(symptoms=example.symptoms), "diagnosis", "")).strip().lower()
            except Exception:  # recorded as an invalid answer, as the runner records an error
                answer = ""
        latencies.append(time.perf_counter() - started)
        prompt_tokens += sum(int(u.get("prompt_tokens") or 0) for u in usage.get_total_tokens().values())
        valid += answer in DIAGNOSIS_SET
        correct += answer == example.diagnosis
    return {
        "examples": len(examples),
        "correct": correct,
        "valid": valid,
        "lm_call_s": sum(latencies),
        "engine_s": engine_s[0],
        "prompt_tokens": prompt_tokens,
    }


def child_dspy_evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """``dspy.Evaluate(devset, metric, num_threads=2)`` on the same program and examples."""
    import dspy

    from evals.scoring import diagnosis_match

    program, examples, _ = _program_and_examples(job)
    devset = [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in examples]
    result = dspy.Evaluate(devset=devset, metric=diagnosis_match, num_threads=2, display_progress=False)(program)
    return {"examples": len(devset), "accuracy": float(result.score) / 100}


def child_http_evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """A user's plain script: ``dspy.Evaluate(num_threads=N)`` of each program against an OpenAI-compatible server.

    The LM is built as :func:`evals.lm.spec.build_lm` builds an HTTP one (temperature 0, 384 tokens,
    no retries, no cache); the examples are the harness's, in its order.
    """
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")  # no network fetch of LiteLLM's cost map
    import dspy

    from evals.scoring import diagnosis_match
    from programs.registry import PROGRAMS

    dataset, examples = _job_examples(job)
    lm = dspy.LM(
        job["model"],
        api_base=job["api_base"],
        api_key="local-server",
        temperature=0.0,
        max_tokens=384,
        timeout=120,
        num_retries=0,
        cache=False,
    )
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    trainset = [
        dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in dataset.split("train")
    ]
    devset = [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in examples]
    correct = {}
    for name in job["programs"]:
        evaluate = dspy.Evaluate(
            devset=devset, metric=diagnosis_match, num_threads=job["concurrency"], display_progress=False
        )
        result = evaluate(PROGRAMS[name].build(trainset))
        correct[name] = sum(bool(score) for _, _, score in result.results)
    return {"records": len(devset) * len(job["programs"]), "correct": sum(correct.values()), "by_program": correct}


def child_prompt_rate(job: dict[str, Any]) -> dict[str, Any]:
    """Prompt tokens/s: the engine's ``create_chat_completion`` against ``tokenize`` + ``eval`` of the same tokens."""
    import dspy

    from evals.lm.llama import N_CTX, load_llama
    from evals.lm.spec import parse_lm_spec, worker_threads
    from programs.signatures import Diagnose

    dataset, _ = _job_examples(job)
    # A long JSONAdapter prompt: the real one, with three training examples as demos.
    demos = [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis) for e in dataset.split("train")[:3]]
    messages = dspy.JSONAdapter().format(Diagnose, demos, {"symptoms": dataset.split("test")[0].symptoms})
    threads = worker_threads(1)
    llm = load_llama(
        model_path=parse_lm_spec("smollm2").model,
        n_ctx=N_CTX,
        n_threads=1,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )

    def engine_once() -> tuple[float, int]:
        llm.reset()
        started = time.perf_counter()
        usage = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)["usage"]
        return time.perf_counter() - started, int(usage["prompt_tokens"])

    _, n_tokens = engine_once()  # warm-up; what it evaluated is the prompt's tokens
    text = llm.detokenize([int(t) for t in llm.input_ids[:n_tokens]], special=True)
    tokens = [int(t) for t in llm.input_ids[:n_tokens]]

    def eval_once() -> float:
        llm.reset()
        started = time.perf_counter()
        llm.eval(llm.tokenize(text, add_bos=False, special=True))
        return time.perf_counter() - started

    same = llm.tokenize(text, add_bos=False, special=True) == tokens
    eval_once()
    engine_s, eval_s = [], []
    for _ in range(PROMPT_REPEATS):  # interleaved, so that a change of machine load hits both
        engine_s.append(engine_once()[0])
        eval_s.append(eval_once())
    return {
        "prompt_tokens": n_tokens,
        "threads": threads,
        "same_tokens": same,
        "engine_s": statistics.median(engine_s),
        "eval_s": statistics.median(eval_s),
    }


def child_mlflow_upload(job: dict[str, Any]) -> dict[str, Any]:
    """Time ``upload_bundle`` of synthetic sessions, each into a fresh sqlite store (median of repeats).

    Store creation and one small warm-up upload are not timed; the sizes are interleaved.
    """
    from mlflow.tracking import MlflowClient

    from evals.redact import Redactor
    from evals.store.upload import ensure_experiment, upload_bundle

    work = Path(job["work"])
    bundles = {size: build_synthetic_bundle(work / f"bundle-{size}", size) for size in (30, *job["sizes"])}
    times: dict[int, list[float]] = {size: [] for size in bundles}
    calls: dict[int, int] = {}
    for attempt in range(UPLOAD_REPEATS):
        for size, bundle in bundles.items():
            if size == 30 and attempt:
                continue
            uri = f"sqlite:///{work / f'store-{size}-{attempt}'}/mlflow.db"
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True)
            ensure_experiment(MlflowClient(uri), "symptom-diagnosis-evals", uri)
            with count_client_calls() as counts:
                started = time.perf_counter()
                upload_bundle(bundle, uri, redactor=Redactor.from_config({}))
                times[size].append(time.perf_counter() - started)
            calls[size] = sum(counts.values())
    return {
        str(size): {
            "upload_s": statistics.median(times[size]),
            "client_calls": calls[size],
            "artifacts_mib": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 2**20,
        }
        for size, bundle in bundles.items()
        if size != 30
    }


@contextmanager
def count_client_calls() -> Iterator[dict[str, int]]:
    """Count the outermost calls of public ``MlflowClient`` methods (per example calls would show here)."""
    import inspect

    from mlflow.tracking import MlflowClient

    counts: dict[str, int] = {}
    depth = threading.local()
    originals = {
        name: f for name, f in vars(MlflowClient).items() if inspect.isfunction(f) and not name.startswith("_")
    }

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "level", 0)
            counts[name] = counts.get(name, 0) + (level == 0)
            depth.level = level + 1
            try:
                return method(*args, **kwargs)
            finally:
                depth.level = level

        return wrapper

    for name, method in originals.items():
        setattr(MlflowClient, name, counting(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(MlflowClient, name, method)


# ----- a synthetic session bundle, written by the plugin's own code path -----

_WORDS = ("itchy", "burning", "sore", "swollen", "aching", "dizzy", "tired", "feverish", "nauseous", "short of breath")
_PARTS = ("chest", "head", "skin", "stomach", "joints", "back", "throat", "legs", "eyes", "neck")


def synthetic_records(
    examples: int, programs: Sequence[str] = SYNTHETIC_PROGRAMS, seed: int = SEED
) -> list[ExampleRecord]:
    """``examples`` seeded patient texts, each answered by every program (about 60 % right, 3 % invalid)."""
    rng = random.Random(seed)
    records = []
    for i in range(examples):
        gold = DIAGNOSES[i % len(DIAGNOSES)]
        text = (
            f"For {rng.randint(2, 14)} days I have felt {rng.choice(_WORDS)} and {rng.choice(_WORDS)}; my "
            f"{rng.choice(_PARTS)} is {rng.choice(_WORDS)} and my {rng.choice(_PARTS)} hurts at night."
        )
        for program in programs:
            roll = rng.random()
            predicted = gold if roll < 0.6 else None if roll > 0.97 else rng.choice(DIAGNOSES)
            records.append(
                ExampleRecord(
                    program,
                    f"test-{i:05d}",
                    text,
                    gold,
                    predicted,
                    rng.lognormvariate(7, 0.4),
                    500 + rng.randrange(60),
                    10,
                    None if predicted else "answer outside the 22 labels: 'unsure'",
                )
            )
    return records


def build_synthetic_bundle(directory: Path, examples: int, programs: Sequence[str] = SYNTHETIC_PROGRAMS) -> Path:
    """Write a session bundle of ``examples`` × ``programs`` records with :func:`evals.results.bundle.write_bundle`."""
    from evals.config.policies import parse_policies
    from evals.config.settings import resolve
    from evals.config.thresholds import parse_thresholds
    from evals.context import SessionContext
    from evals.data import Example, SymptomDataset
    from evals.redact import Redactor
    from evals.results.bundle import write_bundle
    from evals.results.summary import SessionSummary
    from evals.stats.metrics import aggregate

    records = synthetic_records(examples, programs)
    split = tuple(Example(r.example_id, r.symptoms, r.gold) for r in records if r.program == programs[0])
    session_id = uuid.UUID(int=random.Random(f"bundle:{examples}").getrandbits(128)).hex
    params = {
        "lm.spec": "smollm2",
        "sample.examples": str(examples),
        "sample.seed": str(SEED),
        "dataset.source": "synthetic",
    }
    names = sorted(set(programs))
    context = SessionContext(
        session_id=session_id,
        started_at=time.time(),
        settings=resolve({}, {}, {}, ROOT),
        policies=parse_policies(parse_thresholds({"version": 1}, "<bench>", names)),
        records=tuple(sorted(records, key=lambda r: (r.program, r.example_id))),
        manifest=SymptomDataset(source="synthetic", revision=None, splits={"test": split}).manifest(),
        params=params,
        program_params={name: {"program.name": name, "program.base": name} for name in names},
        program_states={name: {"program": name, "state": {"synthetic": name}} for name in names},
    )
    metrics = aggregate(records)
    summary = SessionSummary(
        records=list(context.records),
        metrics=metrics,
        checks={name: [] for name in metrics},
        error_lines=[],
        incomplete=[],
        params=params,
        program_params={name: {"program.name": name, "program.base": name} for name in metrics},
    )
    write_bundle(directory, context, summary, Redactor.from_config({}).text)
    return directory
