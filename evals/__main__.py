"""Command line: ``python -m evals <command>``.

Each command is a :class:`Command` in :data:`COMMANDS` (name -> arguments + function), so a
new one is one entry more. Errors a user can act on print ``error: <message>`` on one line:
exit 2 for :class:`~evals.errors.ConfigError`, 1 when MLflow is unavailable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evals.errors import ConfigError
from evals.store.client import TrackingUnavailable, display_uri

DEFAULT_SPOOL = Path(".evals/spool")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "symptom-diagnosis-evals"
DESCRIPTION = "symptom-diagnosis-evals: upload and compare eval sessions in MLflow"


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it declares arguments, and what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def tracking_uri(args: argparse.Namespace) -> str:
    """Return ``--tracking-uri``, else ``$EVALS_TRACKING_URI``, else the local sqlite store."""
    return str(args.tracking_uri or os.environ.get("EVALS_TRACKING_URI") or DEFAULT_TRACKING_URI)


def positive_int(text: str) -> int:
    """Argparse type for counts of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _configure_sync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spool", type=Path, default=DEFAULT_SPOOL, help="Spool directory (default: %(default)s)")
    parser.add_argument(
        "--tracking-uri",
        help="Upload everything here (default: $EVALS_TRACKING_URI, else each bundle's "
        f"recorded URI, else {DEFAULT_TRACKING_URI}); recorded URIs carry no credentials: "
        "a server that needs them gets them from this flag or from MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD",
    )


def _run_sync(args: argparse.Namespace) -> int:
    from evals.store.spool import sync_spool

    # Flag > $EVALS_TRACKING_URI > the URI each bundle recorded > the local sqlite store.
    uri = args.tracking_uri or os.environ.get("EVALS_TRACKING_URI")
    results = sync_spool(args.spool, uri, fallback_uri=DEFAULT_TRACKING_URI)
    if not results:
        print(f"nothing to sync in {args.spool}")
    for result in results:
        if result.ok:
            candidates = "".join(
                f"; registered {name} version {version} as 'candidate'" for name, version in result.registered.items()
            )
            print(f"synced {result.session_id}: run {result.run_id}{candidates}")
        else:
            print(f"pending {result.session_id}: {result.error}")
    return 0 if all(result.ok for result in results) else 1


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $EVALS_TRACKING_URI)")
    parser.add_argument("--experiment", help="Experiment name (default: $EVALS_EXPERIMENT)")
    parser.add_argument("--last", type=positive_int, default=10, help="Number of sessions (default: %(default)s)")


def _run_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evals.results.history_tables import accuracy_table, compare_table, sessions_table
    from evals.store.history import compare, recent_sessions

    uri = tracking_uri(args)
    experiment = args.experiment or os.environ.get("EVALS_EXPERIMENT") or DEFAULT_EXPERIMENT
    sessions = recent_sessions(uri, experiment, args.last)
    console = Console(highlight=False)
    if not sessions:
        console.print(f"no sessions in experiment {experiment!r} at {display_uri(uri)}")
        return 0
    console.print(sessions_table(sessions), "", accuracy_table(sessions), sep="\n")
    if len(sessions) < 2:
        console.print("only one session: nothing to compare")
        return 0
    newer, older = sessions[0], sessions[1]
    console.print("", compare_table(older, newer, compare(older, newer)), sep="\n")
    return 0


def _configure_promote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", help="Parent run id of the session to promote")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $EVALS_TRACKING_URI)")
    parser.add_argument(
        "--thresholds",
        type=Path,
        default=Path("thresholds.yaml"),
        help="File whose regression.promote_requires must match (default: %(default)s)",
    )


def _run_promote(args: argparse.Namespace) -> int:
    from evals.config.policies import split_policy
    from evals.config.validation import load_yaml_strict
    from evals.environment import git_facts
    from evals.store.client import mlflow_errors
    from evals.store.registry import promote_session

    raw = load_yaml_strict(args.thresholds) if args.thresholds.is_file() else {}
    required = split_policy((raw or {}).get("regression"))[1]
    uri = tracking_uri(args)
    with mlflow_errors(uri):
        lines = promote_session(uri, args.run_id, required, git_facts(Path.cwd())["git.commit"])
    for line in lines:
        print(line)
    return 1 if any("refused" in line for line in lines) else 0


def _configure_rollback(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("program", help="Program name, e.g. zero_shot+knn_few_shot")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $EVALS_TRACKING_URI)")


def _run_rollback(args: argparse.Namespace) -> int:
    from evals.environment import git_facts
    from evals.store.client import mlflow_errors
    from evals.store.registry import rollback

    uri = tracking_uri(args)
    with mlflow_errors(uri):
        line = rollback(uri, args.program, git_facts(Path.cwd())["git.commit"])
    print(line)
    return 0 if "rolled back" in line else 1


def _configure_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--program", default="zero_shot", help="Program to measure (default: %(default)s)")
    parser.add_argument(
        "--per-diagnosis", type=positive_int, default=1, help="Examples per diagnosis (default: %(default)s)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="Local dataset directory (default: $EVALS_DATA_DIR, else the Hub)"
    )
    parser.add_argument("--quick", action="store_true", help="Measure on 8 of the 22 diagnoses")
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help="Comma-separated sections to measure: llama (the embedded model), http (an OpenAI-compatible "
        "server), merge (2 shards merged), rss (the session LM server's memory); default: all",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".evals/bench.json"),
        help="JSON result; the Markdown table goes next to it as .md (default: %(default)s)",
    )


def _run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    try:
        from bench import check_program, run_bench, write_report
        from bench.processes import Plan
        from bench.results import render_table
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise
        print(
            "python -m evals bench: the benchmark is not installed; run it from a checkout of the repository",
            file=sys.stderr,
        )
        return 2

    check_program(args.program)  # an unknown name is one line now, not seven failed measurements later
    data_dir = args.data_dir or os.environ.get("EVALS_DATA_DIR")
    plan = Plan(args.program, args.per_diagnosis, str(Path(data_dir).resolve()) if data_dir else None, args.quick)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    report = run_bench(plan, progress=lambda line: console.print(line, style="dim"), only=args.only)
    console.print(render_table(report))
    markdown = write_report(report, args.out)
    console.print(f"runtime {report.runtime_s:.0f} s; wrote {args.out} and {markdown}")
    return 1 if any(row.ratio is None for row in report.rows) else 0


def _configure_merge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundles",
        nargs="+",
        type=Path,
        metavar="BUNDLE_DIR",
        help="Bundle directories of the shards (--evals-shard K/N), or directories that hold them",
    )
    parser.add_argument(
        "--tracking-uri", help="Log the merged session here (default: $EVALS_TRACKING_URI, else the shards' URI)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".evals/reports"),
        help="Directory of the merged session's bundle, one subdirectory per session (default: %(default)s)",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="Write the merged bundle only, log nothing")


def _run_merge(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evals.merge import merge
    from evals.results.report import render_terminal
    from evals.results.terminal import terminal_report

    uri = args.tracking_uri or os.environ.get("EVALS_TRACKING_URI")
    merged = merge(args.bundles, tracking_uri=uri, out=args.out, no_mlflow=args.no_mlflow)
    summary, end = merged.summary, merged.end
    report = terminal_report(summary, end, "symptom-diagnosis evals (merged)")
    render_terminal(report, Console(highlight=False, width=None if sys.stdout.isatty() else 120))
    lines = [f"incomplete: {reason}" for reason in summary.incomplete]
    lines += [f"registered {name} version {version} as 'candidate'" for name, version in end.registered.items()]
    lines += [*end.promotions, *(f"WARNING: {note}" for note in [*summary.notes, *end.notes])]
    lines += [f"ERROR: {line}" for line in summary.error_lines]
    if merged.context.settings["no-mlflow"]:
        lines.append("not logged to MLflow: --no-mlflow here, or --evals-no-mlflow in the shards")
    for line in lines:
        print(line)
    # An incomplete shard (interrupted, a crashed worker) makes an incomplete session: never a pass.
    passed = summary.passed and not summary.incomplete
    verdict = "pass" if passed else ("incomplete" if summary.passed else "fail")
    run = f"; MLflow run {end.run_id}" if end.run_id else ""
    print(f"merged session {merged.context.session_id}: {verdict}{run}; bundle {end.bundle_dir}")
    return 0 if passed else 1


COMMANDS: dict[str, Command] = {
    "sync": Command("Upload spooled session bundles to MLflow", _configure_sync, _run_sync),
    "report": Command("Show recent sessions and compare the last two", _configure_report, _run_report),
    "promote": Command(
        "Make a session's programs the champions, if every gate passed", _configure_promote, _run_promote
    ),
    "rollback": Command("Restore the previous champion of a program", _configure_rollback, _run_rollback),
    "merge": Command("Make one session of --evals-shard K/N bundles and log it", _configure_merge, _run_merge),
    "bench": Command("Measure the harness against baselines and print the ratios", _configure_bench, _run_bench),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with one subparser per entry of :data:`COMMANDS`."""
    prog = "evals" if Path(sys.argv[0]).name == "evals" else "python -m evals"  # the console script, or -m
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.configure(subparsers.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command and return the exit code (``python -m evals`` and the ``evals`` console script)."""
    from evals.quiet import quiet_libraries

    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return COMMANDS[args.command].run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
