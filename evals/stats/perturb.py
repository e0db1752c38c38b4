"""Meaning-preserving perturbations of a patient's symptom description (pure functions).

Every perturbation is a deterministic function ``(text, rng) -> str`` that changes the
text only in the way its name says: letter case, whitespace between words, sentence-final
punctuation, sentence order, a few letter swaps away from medical words, or one filler
phrase. A robust program gives the same diagnosis before and after. None of them is
given a blank text or returns one, and :func:`perturb` keeps the output within
``2 * len(text) + 60`` characters whichever perturbations it chains.

:func:`perturbed_texts` wraps them in a hypothesis strategy for property tests.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from evals.errors import ConfigError
from evals.labels import DIAGNOSES

if TYPE_CHECKING:
    from hypothesis import strategies as st

Perturbation = Callable[[str, random.Random], str]

FILLER_PREFIXES: tuple[str, ...] = ("Hi doctor,", "To be honest,", "I'm not sure but", "It's been a rough week.")
FILLER_SUFFIXES: tuple[str, ...] = ("Thanks for your time.", "It's been a rough week.")
FILLERS: tuple[str, ...] = tuple(dict.fromkeys(FILLER_PREFIXES + FILLER_SUFFIXES))

SYMPTOM_WORDS: frozenset[str] = frozenset(
    """
    fever rash pain cough blood urine itch itchy vomiting nausea headache joint chest skin
    yellow breath dizzy dizziness vomit nauseous nauseated throat stomach sneeze sneezing
    swelling swollen fatigue tired weakness sweat sweating chills diarrhea diarrhoea
    constipation muscle neck back heartburn indigestion phlegm mucus breathe breathing burning
    blister pimple thirst thirsty appetite bloated bloating urinate urination urinating
    bladder belly abdomen abdominal sore ache achy eyes vision weight lump spots rashy
    migraines palpitations wheezing runny nose congestion
    """.split()
)
KEEP: frozenset[str] = frozenset(word for label in DIAGNOSES for word in label.split()) | SYMPTOM_WORDS
"""Words (lower case) that :func:`small_typos` never touches: every word of the 22 labels
and common symptom words. Inflections of the longer ones are protected too (see
:func:`is_protected`)."""

TYPO_WORDS_PER_TYPO = 12
TYPO_MIN_LENGTH = 5
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_BARE_WORD = re.compile(r"(\W*)([^\W\d_]+)(\W*)")
_NOISY_GAPS: tuple[str, ...] = ("  ", "\t", "\n", " \n", "\n\n", "\t\t")


def _require_text(text: str) -> None:
    if not text.strip():
        raise ValueError("cannot perturb an empty or whitespace-only text")


def _recase(char: str, convert: Callable[[str], str]) -> str:
    # Skip conversions that change length or identity ("ß" -> "SS", "ı" -> "I"): the
    # words must stay the same under casefold.
    new = convert(char)
    return new if len(new) == 1 and new.casefold() == char.casefold() else char


def _map_case(text: str, convert: Callable[[str], str]) -> str:
    return "".join(_recase(char, convert) for char in text)


def _sentence_case(text: str) -> str:
    lowered = _map_case(text, str.lower)
    first = len(lowered) - len(lowered.lstrip())
    starts = {first} | {match.end() for match in _SENTENCE_BREAK.finditer(lowered)}
    # The pronoun "I" stays upper case, as a person writing in sentence case would keep it.
    starts |= {match.start() for match in re.finditer(r"\bi\b", lowered)}
    return "".join(_recase(c, str.upper) if i in starts else c for i, c in enumerate(lowered))


def _random_words_capitalised(text: str, rng: random.Random) -> str:
    tokens = re.split(r"(\s+)", text)
    return "".join(
        _recase(token[0], str.upper) + token[1:] if token and not token.isspace() and rng.random() < 0.4 else token
        for token in tokens
    )


def change_case(text: str, rng: random.Random) -> str:
    """Rewrite letter case: all lower, all upper, sentence case, or random capitalised words.

    The characters stay the same under ``str.casefold`` and the length is unchanged. A
    mode that would leave the text as it is (sentence case of a sentence-cased text)
    gives way to the next one.
    """
    _require_text(text)
    modes: list[Callable[[str], str]] = [
        lambda t: _map_case(t, str.lower),
        lambda t: _map_case(t, str.upper),
        _sentence_case,
        lambda t: _random_words_capitalised(t, rng),
    ]
    first = rng.randrange(len(modes))
    for mode in modes[first:] + modes[:first]:
        changed = mode(text)
        if changed != text:
            return changed
    return text


def whitespace_noise(text: str, rng: random.Random) -> str:
    """Replace the gaps between words by spaces, tabs and newlines (at least one noisy gap).

    Words are never split or joined: ``text.split()`` is unchanged. Leading and trailing
    whitespace is dropped. A one-word text is returned unchanged.
    """
    _require_text(text)
    words = text.split()
    if len(words) < 2:
        return text
    gaps = [rng.choice(_NOISY_GAPS) if rng.random() < 0.35 else " " for _ in words[1:]]
    forced = rng.randrange(len(gaps))
    gaps[forced] = rng.choice(_NOISY_GAPS)
    return words[0] + "".join(gap + word for gap, word in zip(gaps, words[1:], strict=True))


def punctuation_noise(text: str, rng: random.Random) -> str:
    """Drop or duplicate one sentence-final ``.``/``!``/``?``, or add a trailing ``...`` or ``!``.

    Only those three marks change: removing every ``.!?`` from input and output gives the
    same text up to whitespace.
    """
    _require_text(text)
    ends = list(_SENTENCE_END.finditer(text))
    operation = rng.choice(("drop", "duplicate", "append")) if ends else "append"
    if operation != "append":
        end = rng.choice(ends).end()
        mark = text[end - 1]
        changed = text[: end - 1] + text[end:] if operation == "drop" else text[:end] + mark + text[end:]
        if changed.strip():
            return changed
    body = text.rstrip()
    return body + rng.choice(("...", "!")) + text[len(body) :]


def split_sentences(text: str) -> list[str]:
    """Split after ``.``, ``!`` or ``?`` followed by whitespace; each sentence keeps its mark.

    A decimal such as ``38.5`` is not a break (no whitespace follows the point).
    """
    stripped = text.strip()
    return _SENTENCE_BREAK.split(stripped) if stripped else []


def reorder_sentences(text: str, rng: random.Random) -> str:
    """Shuffle the sentences, each kept intact, joined by single spaces.

    A final sentence without closing punctuation stays last, so that splitting the output
    gives back the same sentences. Texts with fewer than two movable sentences are
    returned unchanged.
    """
    _require_text(text)
    sentences = split_sentences(text)
    tail = [] if sentences[-1][-1] in ".!?" else [sentences.pop()]
    if len(sentences) < 2:
        return text
    shuffled = sentences[:]
    rng.shuffle(shuffled)
    if shuffled == sentences:
        shuffled = shuffled[1:] + shuffled[:1]  # a different order whenever one exists
    return " ".join(shuffled + tail)


def is_protected(word: str) -> bool:
    """True for a word of :data:`KEEP`, or one beginning with a KEEP word of 4+ letters.

    The prefix rule covers inflections: ``coughing``, ``headaches``, ``painful``.
    """
    word = word.casefold()
    return word in KEEP or any(word.startswith(keep) for keep in KEEP if len(keep) >= 4)


def _typo_slots(token: str) -> list[int]:
    """Indices ``i`` in ``token`` where swapping ``i`` and ``i + 1`` is a valid typo."""
    match = _BARE_WORD.fullmatch(token)
    if match is None:
        return []
    core = match.group(2)
    if len(core) < TYPO_MIN_LENGTH or is_protected(core):
        return []
    start = match.start(2)
    # Inner letters only: the first and last letters of the word stay in place.
    return [start + i for i in range(1, len(core) - 2) if core[i] != core[i + 1]]


def small_typos(text: str, rng: random.Random) -> str:
    """Swap two adjacent inner letters in a few words: at most one typo per 12 words.

    Only words of 5+ letters that are not :func:`is_protected` are touched; whitespace
    and the word count are unchanged. Texts under 12 words are returned unchanged.
    """
    _require_text(text)
    tokens = re.split(r"(\s+)", text)
    budget = len(text.split()) // TYPO_WORDS_PER_TYPO
    candidates = [(index, slots) for index, token in enumerate(tokens) if (slots := _typo_slots(token))]
    if budget == 0 or not candidates:
        return text
    for index, slots in rng.sample(candidates, min(rng.randint(1, budget), len(candidates))):
        token, i = tokens[index], rng.choice(slots)
        tokens[index] = token[:i] + token[i + 1] + token[i] + token[i + 2 :]
    return "".join(tokens)


def filler_phrases(text: str, rng: random.Random) -> str:
    """Prepend or append one filler phrase (:data:`FILLERS`); the text itself is untouched."""
    _require_text(text)
    if rng.random() < 0.5:
        return f"{rng.choice(FILLER_PREFIXES)} {text}"
    return f"{text} {rng.choice(FILLER_SUFFIXES)}"


PERTURBATIONS: dict[str, Perturbation] = {
    "change_case": change_case,
    "whitespace_noise": whitespace_noise,
    "punctuation_noise": punctuation_noise,
    "reorder_sentences": reorder_sentences,
    "small_typos": small_typos,
    "filler_phrases": filler_phrases,
}


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Return ``names`` as a tuple, raising ConfigError on an unknown perturbation name."""
    for name in names:
        if name not in PERTURBATIONS:
            raise ConfigError(f"unknown perturbation {name!r}; expected one of: {', '.join(PERTURBATIONS)}")
    return tuple(names)


def perturb(text: str, names: Sequence[str], seed: int) -> str:
    """Apply the named perturbations in order, each with its own rng derived from ``seed``.

    Args:
        text: A non-blank symptom description.
        names: Keys of :data:`PERTURBATIONS`, applied left to right (repeats allowed).
        seed: Same text, names and seed give the same output, in any process.

    Raises:
        ConfigError: An unknown perturbation name.
        ValueError: A blank ``text``.
    """
    _require_text(text)
    for step, name in enumerate(check_names(names)):
        text = PERTURBATIONS[name](text, random.Random(f"{seed}:{step}:{name}"))
    return text


def perturbation_names() -> st.SearchStrategy[tuple[str, ...]]:
    """Hypothesis strategy: a non-empty ordered subset of :data:`PERTURBATIONS` names."""
    from hypothesis import strategies as st

    return st.lists(st.sampled_from(tuple(PERTURBATIONS)), min_size=1, unique=True).map(tuple)


def perturbed_texts(text: str, seed: int | None = None) -> st.SearchStrategy[tuple[str, tuple[str, ...]]]:
    """Hypothesis strategy of ``(perturbed text, names applied)`` for one text.

    Args:
        text: The original symptom description.
        seed: Fixed seed for :func:`perturb`; ``None`` draws one, so hypothesis explores
            (and shrinks) the seed as well as the names.
    """
    from hypothesis import strategies as st

    seeds = st.integers(0, 2**32 - 1) if seed is None else st.just(seed)
    return st.tuples(perturbation_names(), seeds).map(lambda drawn: (perturb(text, drawn[0], drawn[1]), drawn[0]))
