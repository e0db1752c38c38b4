"""Optimizer configurations (programs/optimizers.yaml), compiling with them, and the compile cache end to end."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from evals.config.optimizers import OptimizerConfig, load_setup, split_name
from evals.errors import ConfigError
from evals.harness.compile_cache import compile_key
from evals.harness.optimize import (
    REFLECTION_MAX_TOKENS,
    compile_program,
    empty_shape,
    feedback_metric,
    make_optimizer,
)
from programs.registry import OPTIMIZERS_FILE as CONFIG_FILE
from programs.registry import PROGRAMS
from tests.conftest import DUMMY_CONFTEST

XDIST = pytest.mark.parametrize("xdist", ["", "-n 2"], ids=["no-xdist", "xdist-2"])

# ----- load_setup -----


def test_the_real_optimizers_file_loads() -> None:
    setup = load_setup(CONFIG_FILE, PROGRAMS)

    assert setup.source == str(CONFIG_FILE)
    assert len(setup.optimizers) == 7
    assert {c.cls for c in setup.optimizers.values()} == {
        "LabeledFewShot",
        "BootstrapFewShot",
        "BootstrapFewShotWithRandomSearch",
        "KNNFewShot",
        "MIPROv2",
        "GEPA",
    }
    assert setup.evaluate
    for pair in setup.evaluate:
        base, optimizer = split_name(pair)
        assert base in PROGRAMS and optimizer in setup.optimizers, pair
    knn = setup.optimizers["knn_few_shot"]
    assert knn.trainset_per_diagnosis is None and dict(knn.params) == {"k": 3}
    assert setup.optimizers["miprov2_light"].uses_valset
    assert not setup.optimizers["labeled_few_shot"].uses_valset
    medium, gepa = setup.optimizers["miprov2_medium"], setup.optimizers["gepa"]
    assert medium.cls == "MIPROv2" and medium.params["auto"] == "medium"
    assert dict(medium.compile_args) == {"requires_permission_to_run": False}
    # GEPA: a bounded budget, reflecting with the session's LM (no reflection_lm of its own).
    assert gepa.cls == "GEPA" and gepa.uses_valset and 0 < gepa.params["max_metric_calls"] <= 200
    assert "auto" not in gepa.params and "reflection_lm" not in gepa.params
    # Known, but not in the default run (it keeps its cost).
    assert not {split_name(pair)[1] for pair in setup.evaluate} & {"miprov2_medium", "gepa", "miprov2_light"}


def test_a_missing_optimizers_file_configures_nothing(tmp_path: Path) -> None:
    setup = load_setup(tmp_path / "optimizers.yaml", PROGRAMS)

    assert dict(setup.optimizers) == {} and setup.evaluate == ()


GOOD_ENTRY = "labeled: {class: LabeledFewShot, params: {k: 4}, trainset_per_diagnosis: 1}"

BAD_CONFIGS = {
    "unknown-class": (
        "optimizers:\n  labeled: {class: LabelledFewShot}\n",
        ["optimizers.labeled.class", "'LabelledFewShot'", "LabeledFewShot"],
    ),
    "unknown-constructor-param": (
        "optimizers:\n  boot: {class: BootstrapFewShot, params: {max_bootstraped_demos: 2}}\n",
        ["optimizers.boot.params", "'max_bootstraped_demos'", "max_bootstrapped_demos"],
    ),
    "unknown-entry-key": (
        "optimizers:\n  labeled: {class: LabeledFewShot, trainset_per_diagnoses: 2}\n",
        ["optimizers.labeled", "'trainset_per_diagnoses'", "trainset_per_diagnosis"],
    ),
    "trainset-zero": (
        "optimizers:\n  labeled: {class: LabeledFewShot, trainset_per_diagnosis: 0}\n",
        ["optimizers.labeled.trainset_per_diagnosis", "found 0"],
    ),
    "trainset-text": (
        "optimizers:\n  labeled: {class: LabeledFewShot, trainset_per_diagnosis: some}\n",
        ["optimizers.labeled.trainset_per_diagnosis", "'some'"],
    ),
    "trainset-bool": (
        "optimizers:\n  labeled: {class: LabeledFewShot, trainset_per_diagnosis: true}\n",
        ["optimizers.labeled.trainset_per_diagnosis", "True"],
    ),
    "valset-negative": (
        "optimizers:\n  rs: {class: BootstrapFewShotWithRandomSearch, valset_per_diagnosis: -1}\n",
        ["optimizers.rs.valset_per_diagnosis", "-1"],
    ),
    "params-not-a-mapping": (
        "optimizers:\n  labeled: {class: LabeledFewShot, params: [k, 4]}\n",
        ["optimizers.labeled.params"],
    ),
    "unknown-optimizer-in-pair": (
        f"optimizers:\n  {GOOD_ENTRY}\nevaluate: [zero_shot+labelled]\n",
        ["evaluate", "'labelled'", "'zero_shot+labelled'", "labeled"],
    ),
    "unknown-program-in-pair": (
        f"optimizers:\n  {GOOD_ENTRY}\nevaluate: [zero_shots+labeled]\n",
        ["evaluate", "'zero_shots'", "zero_shot"],
    ),
    "not-yaml": ("optimizers:\n  labeled: {class: LabeledFewShot\n", ["not valid YAML"]),
    "unknown-top-level-key": (f"optimizers:\n  {GOOD_ENTRY}\nevaluated: []\n", ["'optimizers'", "'evaluate'"]),
    "mipro-auto-misspelt": (
        "optimizers:\n  m: {class: MIPROv2, params: {auto: meduim}}\n",
        ["optimizers.m.params.auto", "'meduim'", "light, medium, heavy"],
    ),
    "gepa-no-budget": (
        "optimizers:\n  g: {class: GEPA, params: {num_threads: 1}}\n",
        ["optimizers.g.params", "exactly one budget", "max_metric_calls", "found: none"],
    ),
    "gepa-two-budgets": (
        "optimizers:\n  g: {class: GEPA, params: {auto: light, max_metric_calls: 50}}\n",
        ["optimizers.g.params", "exactly one budget", "found: auto, max_metric_calls"],
    ),
    "gepa-zero-calls": (
        "optimizers:\n  g: {class: GEPA, params: {max_metric_calls: 0}}\n",
        ["optimizers.g.params.max_metric_calls", "positive integer", "found 0"],
    ),
    "gepa-auto-misspelt": (
        "optimizers:\n  g: {class: GEPA, params: {auto: quick}}\n",
        ["optimizers.g.params.auto", "'quick'"],
    ),
    "gepa-reflection-lm-not-a-spec": (
        "optimizers:\n  g: {class: GEPA, params: {max_metric_calls: 10, reflection_lm: {model: x}}}\n",
        ["optimizers.g.params.reflection_lm", "LM spec", "{'model': 'x'}"],
    ),
    "gepa-unknown-param": (
        "optimizers:\n  g: {class: GEPA, params: {max_metric_calls: 10, reflection_model: smollm2}}\n",
        ["optimizers.g.params", "GEPA takes no argument 'reflection_model'", "reflection_lm"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_is_one_config_error_line_naming_file_and_key(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_CONFIGS[case]
    path = tmp_path / "optimizers.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as excinfo:
        load_setup(path, PROGRAMS)

    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_evaluate_that_is_not_a_list_names_the_value_found(tmp_path: Path) -> None:
    path = tmp_path / "optimizers.yaml"
    path.write_text(f"optimizers:\n  {GOOD_ENTRY}\nevaluate: zero_shot+labeled\n")

    with pytest.raises(ConfigError, match=r"evaluate: .*'zero_shot\+labeled'"):
        load_setup(path, PROGRAMS)


def test_trainset_all_means_the_whole_split(tmp_path: Path) -> None:
    path = tmp_path / "optimizers.yaml"
    path.write_text("optimizers:\n  knn: {class: KNNFewShot, params: {k: 2}, trainset_per_diagnosis: all}\n")

    config = load_setup(path, PROGRAMS).optimizers["knn"]

    assert config == OptimizerConfig(name="knn", cls="KNNFewShot", params={"k": 2})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("zero_shot", ("zero_shot", None)),
        ("zero_shot+knn_few_shot", ("zero_shot", "knn_few_shot")),
        ("zero_shot+", ("zero_shot", "")),
        ("a+b+c", ("a", "b+c")),
    ],
)
def test_split_name(name: str, expected: tuple[str, str | None]) -> None:
    assert split_name(name) == expected


def test_fingerprint_follows_everything_that_changes_the_compile() -> None:
    base = OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2}, {}, 1, None)
    variants = [
        OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 3}, {}, 1, None),
        OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2, "max_rounds": 2}, {}, 1, None),
        OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2}, {"x": 1}, 1, None),
        OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2}, {}, 2, None),
        OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2}, {}, None, None),
        OptimizerConfig("boot", "LabeledFewShot", {"max_bootstrapped_demos": 2}, {}, 1, None),
    ]

    fingerprints = {base.fingerprint(), *(v.fingerprint() for v in variants)}

    assert len(fingerprints) == 1 + len(variants)
    assert (
        base.fingerprint()
        == OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2}, {}, 1, None).fingerprint()
    )
    # The valset matters only to optimizers that take one.
    assert (
        base.fingerprint()
        == OptimizerConfig("boot", "BootstrapFewShot", {"max_bootstrapped_demos": 2}, {}, 1, 3).fingerprint()
    )
    search = OptimizerConfig("rs", "BootstrapFewShotWithRandomSearch", {}, {}, 1, 1)
    assert search.fingerprint() != OptimizerConfig("rs", "BootstrapFewShotWithRandomSearch", {}, {}, 1, 2).fingerprint()


# ----- compile_program / empty_shape / state round trip -----


def _examples(split: str, per_diagnosis: int, data_dir: Path) -> list[Any]:
    import dspy

    from evals.data import load_dataset, sample

    examples = sample(load_dataset(data_dir).split(split), per_diagnosis)
    return [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in examples]


def _demo_dicts(module: Any) -> list[list[dict[str, Any]]]:
    return [[d.toDict() if hasattr(d, "toDict") else dict(d) for d in p.demos] for p in module.predictors()]


@pytest.mark.parametrize(
    "config",
    [
        OptimizerConfig("labeled", "LabeledFewShot", {"k": 4}, {}, 1),
        OptimizerConfig("knn", "KNNFewShot", {"k": 2}),
    ],
    ids=["labeled", "knn"],
)
def test_compiled_program_state_round_trips_and_answers_from_the_dummy_lm(
    tiny_data_dir: Path, config: OptimizerConfig
) -> None:
    import dspy
    from dspy.utils.dummies import DummyLM

    from evals.scoring import diagnosis_match

    trainset = _examples("train", config.trainset_per_diagnosis or 99, tiny_data_dir)
    full_train = _examples("train", 99, tiny_data_dir)
    probe = _examples("test", 1, tiny_data_dir)[0]
    spec = PROGRAMS["zero_shot"]
    lm = DummyLM({probe.symptoms: {"diagnosis": probe.diagnosis}}, adapter=dspy.JSONAdapter())

    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        compiled = compile_program(config, spec.build(full_train), trainset, [], diagnosis_match)
        state = json.loads(json.dumps(compiled.dump_state()))
        loaded = empty_shape(config, spec.build(full_train), trainset)
        loaded.load_state(state)
        compile_calls = len(lm.history)
        answers = [program(symptoms=probe.symptoms).diagnosis for program in (compiled, loaded)]

    assert compile_calls == 0  # neither optimizer calls the LM to compile
    assert loaded.dump_state() == compiled.dump_state()
    assert answers == [probe.diagnosis, probe.diagnosis]
    if config.cls == "LabeledFewShot":
        assert len(_demo_dicts(loaded)[0]) == 4 and _demo_dicts(loaded) == _demo_dicts(compiled)
    else:
        assert loaded.k == compiled.k == 2
        # The neighbours are passed as demos: two training texts appear in the prompt.
        prompt = json.dumps(lm.history[-1]["messages"])
        assert sum(example.symptoms in prompt for example in trainset) == 2


def test_empty_shape_is_the_student_unless_knn(tiny_data_dir: Path) -> None:
    from programs.knn import KNNFewShotProgram

    trainset = _examples("train", 1, tiny_data_dir)
    student = PROGRAMS["zero_shot"].build(trainset)

    assert empty_shape(OptimizerConfig("l", "LabeledFewShot"), student, trainset) is student
    knn = empty_shape(OptimizerConfig("k", "KNNFewShot", {"k": 5}), student, trainset)
    assert isinstance(knn, KNNFewShotProgram) and knn.k == 5
    assert empty_shape(OptimizerConfig("k", "KNNFewShot"), student, trainset).k == 3


# ----- GEPA and MIPROv2 on a scripted LM that follows instructions -----

MAGIC = "Name the diagnosis these symptoms point to."
"""The instruction the scripted LM proposes, and the one under which it answers right."""


def _instruction_following_lm(gold: dict[str, str]) -> Any:
    """A DummyLM that answers every signature: the gold diagnosis only under an instruction containing MAGIC
    (a wrong one otherwise), MAGIC for any field asking for an instruction, "scripted" for other fields."""
    import dspy
    from dspy.clients.engines.dummy_engine import DummyEngine
    from dspy.lm15 import Message, Response, TextPart, Usage
    from dspy.utils.dummies import DummyLM

    from evals.labels import DIAGNOSES

    class Engine(DummyEngine):
        def _complete_messages(self, messages: list[dict[str, str]]) -> Any:
            system, last = messages[0]["content"], messages[-1]["content"]
            declared = system.split("Your output fields are:")[-1].split("All interactions")[0]
            answer: dict[str, str] = {}
            for name in re.findall(r"^\d+\. `(\w+)`", declared, flags=re.MULTILINE):
                if name == "diagnosis":
                    right = gold[re.search(r"\[\[ ## symptoms ## \]\]\n(.*?)\n\n", last, flags=re.DOTALL).group(1)]
                    wrong = DIAGNOSES[(DIAGNOSES.index(right) + 1) % len(DIAGNOSES)]
                    answer[name] = right if MAGIC in system else wrong
                else:
                    answer[name] = MAGIC if "instruction" in name else "scripted"
            text = self.owner._format_answer_fields(answer)
            return Response(
                id=None,
                model="dummy",
                message=Message.assistant([TextPart(text)]),
                finish_reason="stop",
                usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
            )

    class InstructionFollowingLM(DummyLM):
        def __init__(self) -> None:
            super().__init__({}, adapter=dspy.JSONAdapter())
            self._engine_spec = Engine(self)

        def copy(self, **kwargs: Any) -> Any:  # MIPROv2 proposes with a copy at another temperature
            copied = super().copy(**kwargs)
            copied._engine_spec = Engine(copied)
            return copied

    return InstructionFollowingLM()


def _prompts(lm: Any) -> list[str]:
    return [json.dumps(entry["messages"]) for entry in lm.history]


def _compile_on(lm: Any, config: OptimizerConfig, data_dir: Path) -> tuple[Any, Any, list[Any]]:
    """Compile zero_shot with ``config`` on ``lm``.

    Returns:
        The compiled program, its JSON state loaded into a fresh student, and the test set.
    """
    import dspy

    from evals.scoring import diagnosis_match

    trainset = _examples("train", config.trainset_per_diagnosis or 99, data_dir)
    valset = _examples("val", config.valset_per_diagnosis or 99, data_dir)
    full_train, test = _examples("train", 99, data_dir), _examples("test", 1, data_dir)
    spec = PROGRAMS["zero_shot"]
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        compiled = compile_program(config, spec.build(full_train), trainset, valset, diagnosis_match)
        loaded = empty_shape(config, spec.build(full_train), trainset)
        loaded.load_state(json.loads(json.dumps(compiled.dump_state())))
    return compiled, loaded, test


def _accuracy(program: Any, lm: Any, examples: list[Any]) -> float:
    import dspy

    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        return sum(program(symptoms=e.symptoms).diagnosis == e.diagnosis for e in examples) / len(examples)


def _gold(data_dir: Path) -> dict[str, str]:
    from evals.data import load_dataset

    data = load_dataset(data_dir)
    return {e.symptoms: e.diagnosis for split in ("train", "val", "test") for e in data.split(split)}


@pytest.mark.parametrize("name", ["gepa", "miprov2_medium"])
def test_the_real_gepa_and_miprov2_medium_configs_compile_and_round_trip(tiny_data_dir: Path, name: str) -> None:
    config = load_setup(CONFIG_FILE, PROGRAMS).optimizers[name]
    lm = _instruction_following_lm(_gold(tiny_data_dir))
    student = PROGRAMS["zero_shot"].build([])
    assert _accuracy(student, lm, _examples("test", 1, tiny_data_dir)) == 0.0

    compiled, loaded, test = _compile_on(lm, config, tiny_data_dir)

    # The optimizer found the instruction the LM needs, and the JSON state carries it.
    assert MAGIC in compiled.signature.instructions
    assert loaded.dump_state() == compiled.dump_state()
    assert _accuracy(compiled, lm, test) == _accuracy(loaded, lm, test) == 1.0
    if name == "gepa":  # it reflected with the session's LM: the proposals were asked of it
        assert any("current_instruction" in prompt for prompt in _prompts(lm))


def test_gepa_reflects_with_the_configured_reflection_lm(tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evals.lm.spec

    gold = _gold(tiny_data_dir)
    session_lm, reflection = _instruction_following_lm(gold), _instruction_following_lm(gold)
    built: list[Any] = []
    monkeypatch.setattr(evals.lm.spec, "build_lm", lambda spec, **kwargs: built.append(spec) or reflection)
    config = OptimizerConfig(
        "g", "GEPA", {"max_metric_calls": 60, "num_threads": 1, "reflection_lm": "smollm2"}, {}, 1, 1
    )

    compiled, _, test = _compile_on(session_lm, config, tiny_data_dir)

    (spec,) = built
    assert spec.spec == "smollm2" and spec.backend == "llamacpp" and spec.max_tokens == REFLECTION_MAX_TOKENS
    assert any("current_instruction" in prompt for prompt in _prompts(reflection))
    assert not any("current_instruction" in prompt for prompt in _prompts(session_lm))
    assert all("current_instruction" in prompt for prompt in _prompts(reflection))  # it only reflected
    assert _accuracy(compiled, session_lm, test) == 1.0


def test_gepa_gets_the_session_lm_or_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import dspy
    from dspy.utils.dummies import DummyLM

    from evals.scoring import diagnosis_match

    config = OptimizerConfig("g", "GEPA", {"max_metric_calls": 10})
    lm = DummyLM([])
    with dspy.context(lm=lm):
        assert make_optimizer(config, diagnosis_match).reflection_lm is lm
    with dspy.context(lm=None), pytest.raises(ConfigError, match="^GEPA: no reflection_lm configured"):
        make_optimizer(config, diagnosis_match)
    bad = OptimizerConfig("g", "GEPA", {"max_metric_calls": 10, "reflection_lm": "not a spec"})
    with pytest.raises(ConfigError) as info:
        make_optimizer(bad, diagnosis_match)
    assert "\n" not in str(info.value) and "'not a spec'" in str(info.value)


def test_feedback_metric_scores_and_explains() -> None:
    import inspect

    import dspy

    from evals.scoring import diagnosis_match

    metric = feedback_metric(diagnosis_match)
    gold = dspy.Example(symptoms="s", diagnosis="malaria")
    inspect.signature(metric).bind(None, None, None, None, None)  # GEPA's own check of the signature

    right = metric(gold, dspy.Prediction(diagnosis="Malaria "), None, "self", None)
    wrong = metric(gold, dspy.Prediction(diagnosis="dengue"), None, "self", None)
    invalid = metric(gold, dspy.Prediction(diagnosis="a bad cold"), None, None, None)

    assert (right.score, wrong.score, invalid.score) == (1.0, 0.0, 0.0)
    assert "Correct" in right.feedback and "'malaria'" in right.feedback
    assert "'dengue'" in wrong.feedback and "'malaria'" in wrong.feedback
    assert "not one of the allowed diagnoses" in invalid.feedback and "'malaria'" in invalid.feedback


# ----- what goes into the key -----


def _session(tmp_path: Path, **cli: str) -> Any:
    from evals.config.settings import resolve
    from evals.harness.resources import Harness

    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    settings = resolve({"evals_lm": f"llamacpp:{fake}", **cli}, {}, {}, tmp_path)
    return Harness(settings)


def test_compile_parts_name_the_program_source_and_key_follows_it(tmp_path: Path, tiny_data_dir: Path) -> None:
    session = _session(tmp_path)
    config = OptimizerConfig("labeled", "LabeledFewShot", {"k": 4}, {}, 1)
    trainset = _examples("train", 1, tiny_data_dir)

    parts = {name: session.compile_parts(spec, config, trainset, []) for name, spec in PROGRAMS.items()}

    for name, spec in PROGRAMS.items():
        assert parts[name]["program"] == name
        assert parts[name]["program_source"] == spec.source_hash()
        assert parts[name]["optimizer_config"] == config.fingerprint()
    # Different builders hash differently, so each base program has its own key.
    assert len({p["program_source"] for p in parts.values()}) == len(PROGRAMS)
    zero_shot = parts["zero_shot"]
    assert compile_key({**zero_shot, "program_source": "edited"}) != compile_key(zero_shot)
    assert session.compile_parts(PROGRAMS["zero_shot"], config, trainset, []) == zero_shot


def test_compile_parts_follow_data_lm_and_config(tmp_path: Path, tiny_data_dir: Path) -> None:
    config = OptimizerConfig("labeled", "LabeledFewShot", {"k": 4}, {}, 1)
    trainset = _examples("train", 1, tiny_data_dir)
    spec = PROGRAMS["zero_shot"]
    base = _session(tmp_path).compile_parts(spec, config, trainset, [])

    hotter = _session(tmp_path, evals_temperature="0.5").compile_parts(spec, config, trainset, [])
    other_k = _session(tmp_path).compile_parts(
        spec, OptimizerConfig("labeled", "LabeledFewShot", {"k": 3}, {}, 1), trainset, []
    )
    edited = trainset[:-1] + [trainset[-1].copy(symptoms=trainset[-1].symptoms + " edited")]
    other_data = _session(tmp_path).compile_parts(spec, config, edited, [])

    assert {k for k in base if base[k] != hotter[k]} == {"lm"}
    assert {k for k in base if base[k] != other_k[k]} == {"optimizer_config"}
    assert {k for k in base if base[k] != other_data[k]} == {"trainset"}
    assert len({compile_key(p) for p in (base, hotter, other_k, other_data)}) == 4


# ----- end to end: compile once per key, load after, recompile exactly when the key changes -----

OPTIMIZERS_YAML = """
optimizers:
  labeled: {class: LabeledFewShot, params: {k: 4}, trainset_per_diagnosis: 1}
  knn: {class: KNNFewShot, params: {k: 2}}
evaluate: [zero_shot+labeled, zero_shot+knn]
"""
PAIRS = ("zero_shot+labeled", "zero_shot+knn")
PROGRAMS_ARG = "--evals-programs " + ",".join(PAIRS)


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(*[a for arg in args for a in arg.split()], "-p", "no:cacheprovider")


@pytest.fixture
def cache_project(eval_project: pytest.Pytester) -> pytest.Pytester:
    """eval_project plus two optimizers, one example per diagnosis, no MLflow and an LM that cannot load.

    The LM spec names a file that is not a model, so anything that reaches the real LM instead of the
    scripted one fails at once (as invalid answers) rather than running a model for minutes.
    """
    return with_optimizers(eval_project, OPTIMIZERS_YAML, DUMMY_CONFTEST)


def with_optimizers(
    project: pytest.Pytester, optimizers_yaml: str, conftest: str, programs: str | None = None
) -> pytest.Pytester:
    """``project`` with an optimizers.yaml, a scripted-LM conftest, one example per diagnosis, no MLflow
    and an LM spec that names a file that is not a model (``programs`` replaces the selected programs)."""
    (project.path / "optimizers.yaml").write_text(textwrap.dedent(optimizers_yaml))
    fake = project.path / "fake.gguf"
    fake.write_text("not a model")
    ini = project.path / "tox.ini"
    text = ini.read_text()
    if programs is not None:
        text = text.replace("evals_programs = zero_shot", f"evals_programs = {programs}")
    ini.write_text(
        text
        + textwrap.dedent(f"""
        evals_optimizers = optimizers.yaml
        evals_lm = llamacpp:{fake}
        evals_per_diagnosis = 1
        evals_no_mlflow = true
        """)
    )
    project.makeconftest(conftest)
    return project


def latest_session(project: pytest.Pytester) -> dict[str, Any]:
    sessions = [json.loads(p.read_text()) for p in (project.path / ".evals" / "reports").glob("*/session.json")]
    assert sessions, "no session bundle written"
    return max(sessions, key=lambda s: s["started_at"])


def compile_summary(project: pytest.Pytester) -> dict[str, tuple[str, str]]:
    """``{pair: (compile.count, compile.action)}`` of the latest session."""
    programs = latest_session(project)["programs"]
    return {
        name: (programs[name]["params"]["compile.count"], programs[name]["params"]["compile.action"]) for name in PAIRS
    }


def run_ok(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = run(project, PROGRAMS_ARG, *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=44)
    return result


def session_dir(project: pytest.Pytester, session: dict[str, Any]) -> Path:
    (match,) = (project.path / ".evals" / "reports").glob(f"*-{session['session_id'][:8]}")
    return match


COMPILED = ("1", "compiled")
LOADED = ("0", "loaded from cache")


@XDIST
def test_first_session_compiles_each_pair_once_and_the_next_loads(cache_project: pytest.Pytester, xdist: str) -> None:
    run_ok(cache_project, xdist)

    assert compile_summary(cache_project) == {pair: COMPILED for pair in PAIRS}
    session = latest_session(cache_project)
    for pair in PAIRS:
        params = session["programs"][pair]["params"]
        assert session["metrics"][f"{pair.replace('+', '/')}.accuracy"] == 1.0  # scripted answers, all gold
        entries = list((cache_project.path / ".evals" / "cache" / "compiled" / pair).glob("*.json"))
        assert [str(e) for e in entries] == [params["compile.path"]]
        bundled = Path(session_dir(cache_project, session)) / "programs" / pair / "compiled_program.json"
        assert json.loads(bundled.read_text())["key"] == params["compile.key"]

    result = run_ok(cache_project, xdist)

    assert compile_summary(cache_project) == {pair: LOADED for pair in PAIRS}
    result.stdout.fnmatch_lines(["*zero_shot+labeled: loaded from cache*"])


def test_changing_one_optimizer_config_recompiles_only_its_pair(cache_project: pytest.Pytester) -> None:
    run_ok(cache_project)
    path = cache_project.path / "optimizers.yaml"
    path.write_text(path.read_text().replace("params: {k: 4}", "params: {k: 3}"))

    run_ok(cache_project)

    assert compile_summary(cache_project) == {"zero_shot+labeled": COMPILED, "zero_shot+knn": LOADED}


def test_changing_the_training_data_recompiles_both(cache_project: pytest.Pytester, tmp_path: Path) -> None:
    from evals.data import load_dataset, sample

    data = tmp_path / "data"
    run_ok(cache_project)
    # Edit the text of a training line that the labeled optimizer samples (knn uses the whole split).
    picked = sample(load_dataset(data).split("train"), 1)[0]
    line = int(picked.id.split("-")[1])
    train = data / "train.jsonl"
    lines = train.read_text().splitlines()
    assert picked.symptoms in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace("I feel", "I strongly feel")
    train.write_text("\n".join(lines) + "\n")

    run_ok(cache_project)

    assert compile_summary(cache_project) == {pair: COMPILED for pair in PAIRS}


def test_changing_the_lm_spec_recompiles_both(cache_project: pytest.Pytester) -> None:
    run_ok(cache_project)

    run_ok(cache_project, "--evals-temperature 0.5")

    assert compile_summary(cache_project) == {pair: COMPILED for pair in PAIRS}


def test_recompile_compiles_each_pair_once_across_workers_then_the_cache_is_used(
    cache_project: pytest.Pytester,
) -> None:
    run_ok(cache_project)
    first = {pair: latest_session(cache_project)["programs"][pair]["params"]["compile.key"] for pair in PAIRS}

    run_ok(cache_project, "-n 2 --evals-recompile")

    assert compile_summary(cache_project) == {pair: COMPILED for pair in PAIRS}
    recompiled = latest_session(cache_project)
    assert {pair: recompiled["programs"][pair]["params"]["compile.key"] for pair in PAIRS} == first
    for pair in PAIRS:
        entry = json.loads(Path(recompiled["programs"][pair]["params"]["compile.path"]).read_text())
        assert entry["session_id"] == recompiled["session_id"]

    run_ok(cache_project)

    assert compile_summary(cache_project) == {pair: LOADED for pair in PAIRS}


def test_corrupt_cache_entry_warns_and_recompiles(cache_project: pytest.Pytester) -> None:
    run_ok(cache_project)
    entries = list((cache_project.path / ".evals" / "cache" / "compiled" / "zero_shot+labeled").glob("*.json"))
    assert len(entries) == 1
    entries[0].write_text('{"format": 1, "key": "trunc')

    result = run_ok(cache_project, "-W default")

    assert compile_summary(cache_project) == {"zero_shot+labeled": COMPILED, "zero_shot+knn": LOADED}
    result.stdout.fnmatch_lines(["*EvalsWarning*unusable*"])
    assert (
        json.loads(entries[0].read_text())["key"]
        == latest_session(cache_project)["programs"]["zero_shot+labeled"]["params"]["compile.key"]
    )


def test_compiled_programs_use_the_evals_lm_fixture(cache_project: pytest.Pytester) -> None:
    cache_project.makeconftest(DUMMY_CONFTEST)  # the stock override, without the workaround

    result = run(cache_project, "--evals-programs zero_shot+labeled")

    assert result.ret == 0, result.stdout.str()
    assert latest_session(cache_project)["metrics"]["zero_shot/labeled.accuracy"] == 1.0
