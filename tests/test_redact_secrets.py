"""Unit tests of evals.redact and evals.secrets (pure functions, no MLflow)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.errors import ConfigError
from evals.redact import Redactor
from evals.secrets import MASK, looks_secret, scrub, scrub_text

PLANTED = "sk-test-PLANTED-abcdef123456"

PHONES = [
    "+1 (555) 123-4567",
    "+1-555-123-4567",
    "555-123-4567",
    "(555) 123 4567",
    "555.123.4567",
    "555-1234",
    "5551234567",
    "+44 20 7946 0958",
    "+49 30 1234567",
    "+33 6 12 34 56 78",
    "+31 (0)20 123 4567",
    "030 1234567",
    "06 12 34 56 78",
    "06.12.34.56.78",
]

EMAILS = ["john.doe@example.com", "a+tag@mail.example.co.uk", "dr_who-2@clinic.org"]

SYMPTOM_SENTENCES = [
    "I've had a fever of 38.5 degrees for 3 days and a headache since Monday.",
    "My blood pressure was 150/95 this morning and 145/90 yesterday.",
    "I lost 5 kg in 2 weeks, and the pain is about 7/10.",
    "I take 500 mg paracetamol 3-4 times a day but it only helps for 2 hours.",
    "Temperature 101.3 F, pulse 110, 2-3 episodes of vomiting since 12.03.2024.",
    "My sugar level was 250 mg/dl after 2 hours; I drink 3 liters of water a day.",
    "The rash started on 1/2/2024, it covers 10-15% of my back.",
    "For the last 6 months I have had joint pain in 2 knees, worse after 30 minutes of walking.",
]


@pytest.mark.parametrize("phone", PHONES)
def test_default_redactor_removes_phone_numbers_inside_text(phone: str) -> None:
    text = f"Call me on {phone}, I cough for 3 days."

    redacted = Redactor.default().text(text)

    assert redacted == "Call me on [REDACTED:phone], I cough for 3 days."


@pytest.mark.parametrize("email", EMAILS)
def test_default_redactor_removes_email_addresses(email: str) -> None:
    redacted = Redactor.default().text(f"write to {email} please")

    assert redacted == "write to [REDACTED:email] please"


@pytest.mark.parametrize("sentence", SYMPTOM_SENTENCES)
def test_default_redactor_keeps_real_looking_symptom_sentences(sentence: str) -> None:
    assert Redactor.default().text(sentence) == sentence


_WORDS = st.sampled_from(["fever", "for", "days", "degrees", "mg", "pain", "since", "weeks", "and", "cough", "kg"])
_SMALL_NUMBERS = st.one_of(
    st.integers(0, 9999).map(str),
    st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 999), st.integers(0, 9)),
    st.builds(lambda a, b: f"{a}/{b}", st.integers(0, 300), st.integers(0, 200)),
    st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 99), st.integers(0, 99)),
)


@given(st.lists(st.tuples(_SMALL_NUMBERS, _WORDS), min_size=1, max_size=8))
def test_numbers_followed_by_words_are_never_redacted(parts: list[tuple[str, str]]) -> None:
    sentence = " ".join(f"{number} {word}" for number, word in parts)

    assert Redactor.default().text(sentence) == sentence


@given(st.text(alphabet="0123456789", min_size=7, max_size=12), _WORDS, _WORDS)
def test_any_run_of_seven_or_more_digits_is_redacted(digits: str, before: str, after: str) -> None:
    redacted = Redactor.default().text(f"{before} {digits} {after}")

    assert redacted == f"{before} [REDACTED:phone] {after}"


def test_from_config_adds_custom_patterns_after_the_defaults() -> None:
    redactor = Redactor.from_config({"patient_id": r"PID-\d+"})

    assert redactor.text("PID-42 at a@b.org") == "[REDACTED:patient_id] at [REDACTED:email]"


def test_from_config_without_defaults_only_applies_custom_patterns() -> None:
    redactor = Redactor.from_config({"name": r"\bAlice\b"}, use_defaults=False)

    assert redactor.text("Alice, a@b.org, 555-123-4567") == "[REDACTED:name], a@b.org, 555-123-4567"


def test_from_config_none_gives_the_defaults() -> None:
    assert Redactor.from_config(None).patterns == Redactor.default().patterns


def test_invalid_regex_raises_config_error_naming_pattern_and_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Redactor.from_config({"broken_id": r"ID-(\d+"})

    message = str(caught.value)
    assert "broken_id" in message
    assert "missing )" in message


def test_pattern_name_is_inserted_literally() -> None:
    assert Redactor([("a\\1", "x")]).text("x") == "[REDACTED:a\\1]"


def test_redactor_mapping_redacts_values_and_keeps_keys() -> None:
    redacted = Redactor.default().mapping({"contact@x.org": "mail contact@x.org"})

    assert redacted == {"contact@x.org": "mail [REDACTED:email]"}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("HF_TOKEN", True),
        ("apiKey", True),
        ("OPENAIKEY", True),
        ("DB_PASSWORD", True),
        ("MY_PASSWD", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("OAUTH", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AUTHOR", False),
        ("max_tokens", False),
        ("HOME", False),
        ("keyboard_layout", False),
    ],
)
def test_looks_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_scrub_masks_values_containing_a_secret_env_value() -> None:
    environ = {"OPENAI_API_KEY": "abcdefgh12345", "HOME": "/home/someone"}
    values = {"lm": "openai/gpt-4o key=abcdefgh12345", "home": "/home/someone", "n": "3"}

    assert scrub(values, environ) == {"lm": MASK, "home": "/home/someone", "n": "3"}


def test_scrub_ignores_short_secret_env_values() -> None:
    environ = {"SOME_TOKEN": "1234567"}

    assert scrub({"n_examples": "1234567"}, environ) == {"n_examples": "1234567"}


@pytest.mark.parametrize(
    "value",
    [
        "sk-proj-Abcdefghijklmnop1234",
        "sk-ant-api03-abcdefghijklmnopqrstu",
        "ghp_abcdefghijklmnopqrstuvwxyz012345",
        "hf_abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLE",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
    ],
)
def test_scrub_masks_key_shaped_values_without_any_env(value: str) -> None:
    assert scrub({"header": f"x {value} y"}, environ={}) == {"header": MASK}


def test_scrub_masks_secret_looking_keys_regardless_of_value() -> None:
    scrubbed = scrub({"lm.api_key": "plain", "temperature": "0.7"}, environ={})

    assert scrubbed == {"lm.api_key": MASK, "temperature": "0.7"}


def test_scrub_keeps_ordinary_params() -> None:
    values = {"model": "openai/gpt-4o-mini", "split": "test", "skip": "sk-short"}

    assert scrub(values, environ={"PATH": "/usr/bin:/bin"}) == values


def test_scrub_text_replaces_only_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)

    text = scrub_text(f"LM openai/gpt-4o-mini (api_key={PLANTED}) failed: 401")

    assert text == f"LM openai/gpt-4o-mini (api_key={MASK}) failed: 401"


@given(st.text(max_size=30), st.text(max_size=30))
def test_scrub_text_never_lets_a_planted_env_secret_through(before: str, after: str) -> None:
    environ = {"MY_SERVICE_TOKEN": "Zq9-planted-Zq9"}

    assert "Zq9-planted-Zq9" not in scrub_text(before + "Zq9-planted-Zq9" + after, environ)


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5))
def test_scrub_keeps_the_keys_and_never_leaks_a_planted_value(values: dict[str, str]) -> None:
    environ = {"OPENAI_API_KEY": PLANTED}
    planted = {**values, "spec": f"lm={PLANTED}"}

    scrubbed = scrub(planted, environ)

    assert set(scrubbed) == set(planted)
    assert all(PLANTED not in value for value in scrubbed.values())


def test_a_text_scrubber_reads_the_environment_once_and_masks_like_scrub_text() -> None:
    from collections.abc import Iterator, Mapping

    from evals.secrets import scrub_text, text_scrubber

    class CountingEnviron(Mapping[str, str]):
        def __init__(self, values: dict[str, str]) -> None:
            self.values, self.walks = values, 0

        def __getitem__(self, key: str) -> str:
            return self.values[key]

        def __iter__(self) -> Iterator[str]:
            self.walks += 1
            return iter(self.values)

        def __len__(self) -> int:
            return len(self.values)

    environ = CountingEnviron({"OPENAI_API_KEY": "sk-live-0123456789abcdef", "HOME": "/home/me"})
    scrub = text_scrubber(environ)
    texts = [f"patient {i} said sk-live-0123456789abcdef at /home/me" for i in range(50)]
    cleaned = [scrub(text) for text in texts]
    assert environ.walks == 1
    assert cleaned == [scrub_text(text, environ) for text in texts]
    assert cleaned[0] == "patient 0 said *** at /home/me"
