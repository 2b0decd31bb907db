"""The types and ranges task settings share: the schema every `task.*` key is checked against before loading."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Fraction = Annotated[float, Field(gt=0, lt=1)]  # of the examples, for the validation split
Seed = Annotated[int, Field(ge=0)]
MaxLength = Annotated[int, Field(ge=8)]  # tokens per example (longer ones are truncated)
Examples = Annotated[int, Field(ge=1)]  # a cap on a split's examples (null: all)
