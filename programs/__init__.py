"""DSPy programs under evaluation and the registry the eval suites read."""

from __future__ import annotations

from programs.registry import OPTIMIZERS, OPTIMIZERS_FILE, PROGRAMS, ProgramSpec, get_program

__all__ = ["OPTIMIZERS", "OPTIMIZERS_FILE", "PROGRAMS", "ProgramSpec", "get_program"]
