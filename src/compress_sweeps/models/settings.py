"""The types and ranges model settings share: the schema every `model.*` key is checked against before loading."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Labels = Annotated[int, Field(ge=2)]  # classes of the head (set from the task)
Dropout = Annotated[float, Field(ge=0, lt=1)]
Width = Annotated[int, Field(ge=1)]  # channels, units, layers
