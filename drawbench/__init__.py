"""Prompt suites: DrawBench, PartiPrompts and a user's own prompt file, as versioned records."""
from .suites import (DRAWBENCH_COUNTS, PARTI_COUNTS, PromptRecord, PromptSuite, SuiteFormatError,
                     load_drawbench, load_parti, load_prompt_file, load_suite, select)

__all__ = ["DRAWBENCH_COUNTS", "PARTI_COUNTS", "PromptRecord", "PromptSuite", "SuiteFormatError",
           "load_drawbench", "load_parti", "load_prompt_file", "load_suite", "select"]
