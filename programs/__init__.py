"""DSPy programs under evaluation and the registry the eval suites read."""

from __future__ import annotations

from programs.registry import PROGRAMS, ProgramSpec, get_program

__all__ = ["PROGRAMS", "ProgramSpec", "get_program"]
