"""Measure one real compile per optimizer configuration: time, LM calls, accuracy before and after.

Run from the repository root (one compile of each named configuration, on the embedded model)::

    python -m programs.measure_compile gepa miprov2_medium
    python -m programs.measure_compile gepa --program zero_shot --lm smollm2 --per-diagnosis 2

It reads programs/optimizers.yaml, draws the train/val/test examples as a default harness run
does (seed 0; the test sample has ``--per-diagnosis`` examples of each diagnosis), evaluates the
uncompiled program, compiles it (no compile cache: always a fresh compile), evaluates the result,
and prints one line per configuration. LM responses are cached in ``--cache-dir``/lm like the
harness's, so use ``--no-cache`` for honest timings of a configuration already measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import ConfigError


@dataclass(frozen=True)
class CompileMeasurement:
    """One compile: what it cost and what it changed."""

    optimizer: str
    program: str
    seconds: float
    lm_calls: int
    accuracy_before: float
    accuracy_after: float
    examples: int

    def line(self) -> str:
        return (
            f"{self.program}+{self.optimizer}: compile {self.seconds:.1f}s, {self.lm_calls} LM calls; "
            f"accuracy {self.accuracy_before:.3f} -> {self.accuracy_after:.3f} on {self.examples} test examples"
        )


def accuracy(program: Any, name: str, examples: Sequence[Any]) -> float:
    """Share of ``examples`` (evals.data.Example) the program answers right, run as the harness runs them."""
    from evals.harness.runner import run_examples

    records = run_examples(program, name, examples)
    return sum(record.correct for record in records) / max(len(records), 1)


def measure(
    optimizer: str,
    program: str,
    lm: Any,
    data_dir: Path | None,
    per_diagnosis: int | None,
    seed: int = 0,
    optimizers_file: Path | None = None,
    progress: Any = None,
) -> CompileMeasurement:
    """Compile ``program`` with the named configuration on ``lm`` (dspy's configured LM) and measure it.

    ``progress``, when given, is called with a line as each stage ends.
    """
    import dspy

    from evals.config.optimizers import check_pair, load_setup
    from evals.data import load_dataset, sample
    from evals.harness.compile_progress import counting_lm_calls
    from evals.harness.compile_sinks import stream_sink
    from evals.harness.optimize import compile_program
    from evals.scoring import diagnosis_match
    from programs.registry import OPTIMIZERS_FILE as CONFIG_FILE
    from programs.registry import PROGRAMS

    setup = load_setup(optimizers_file or CONFIG_FILE, PROGRAMS)
    check_pair(f"{program}+{optimizer}", PROGRAMS, setup.optimizers, "measure_compile")
    config, spec = setup.optimizers[optimizer], PROGRAMS[program]
    dataset = load_dataset(data_dir, seed=seed)

    def examples(split: str, count: int | None) -> list[Any]:
        return [
            dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms")
            for e in sample(dataset.split(split), count, seed=seed)
        ]

    trainset, full_train = examples("train", config.trainset_per_diagnosis), examples("train", None)
    valset = examples("val", config.valset_per_diagnosis) if config.uses_valset else []
    test = sample(dataset.split("test"), per_diagnosis, seed=seed)
    say = progress or (lambda line: None)
    started = time.perf_counter()
    before = accuracy(spec.build(full_train), program, test)
    say(f"{program}: accuracy {before:.3f} on {len(test)} test examples ({time.perf_counter() - started:.0f}s)")
    started = time.perf_counter()
    # Every LM call, including those of LM copies (MIPROv2 proposes instructions with lm.copy()).
    with counting_lm_calls() as calls:
        compiled = compile_program(
            config,
            spec.build(full_train),
            trainset,
            valset,
            diagnosis_match,
            progress=stream_sink(sys.stderr),
            name=f"{program}+{optimizer}",
        )
        seconds, lm_calls = time.perf_counter() - started, calls()
    say(
        f"{program}+{optimizer}: compiled in {seconds:.0f}s with {lm_calls} LM calls "
        f"({len(trainset)} train, {len(valset)} val examples)"
    )
    after = accuracy(compiled, f"{program}+{optimizer}", test)
    return CompileMeasurement(optimizer, program, seconds, lm_calls, before, after, len(test))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m programs.measure_compile", description=__doc__.splitlines()[0])
    parser.add_argument("optimizers", nargs="+", help="configuration names in programs/optimizers.yaml")
    parser.add_argument("--program", default="zero_shot", help="registered program to compile (default zero_shot)")
    parser.add_argument("--lm", default="smollm2", help="LM spec, as --evals-lm (default: the embedded smollm2)")
    parser.add_argument("--data-dir", type=Path, default=None, help="offline dataset directory (default: the hub)")
    parser.add_argument("--per-diagnosis", type=int, default=2, help="test examples per diagnosis (default 2)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".evals/cache"), help="LM response cache root")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the LM response cache")
    args = parser.parse_args(argv)
    try:
        import dspy

        from evals.lm.spec import build_lm, parse_lm_spec, worker_threads

        dspy.configure_cache(disk_cache_dir=str(args.cache_dir / "lm"))
        lm = build_lm(
            parse_lm_spec(args.lm), n_threads=worker_threads(1), cache=not args.no_cache, cache_dir=args.cache_dir
        )
        # Count every call of a long compile (dspy keeps the last 10,000 by default).
        dspy.configure(lm=lm, adapter=dspy.JSONAdapter(), max_history_size=1_000_000)
        for optimizer in args.optimizers:
            result = measure(
                optimizer,
                args.program,
                lm,
                args.data_dir,
                args.per_diagnosis,
                progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
            )
            print(result.line(), flush=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
