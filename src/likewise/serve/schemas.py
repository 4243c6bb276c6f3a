"""Request and response bodies of the service (pydantic).

Every request model forbids unknown fields, takes numbers strictly (no ``"1.5"``
strings, no booleans), refuses NaN and infinity (Python's JSON parser reads
``NaN``/``Infinity``; pydantic's ``allow_inf_nan=False`` rejects them) and empty
lists. Sizes the schema cannot know (the model's input and embedding
dimensions) are checked by :mod:`likewise.serve.inputs`, with the same 422 answer.

An *input* is exactly one of ``{"image": base64 PNG/JPEG}``, ``{"vector": [...]}``
(the model's raw input, flattened) or ``{"embedding": [...]}`` (already embedded).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

#: most inputs, embeddings or items in one request
MAX_ROWS = 1024
#: most neighbours a search may ask for
MAX_K = 1000
#: longest base64 text of one image (about 12 MB of image bytes)
MAX_IMAGE_CHARS = 16_000_000
#: longest vector (model input or embedding)
MAX_VALUES = 1_000_000
#: longest metadata object, as JSON text
MAX_METADATA_CHARS = 16_384

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Values = Annotated[list[Number], Field(min_length=1, max_length=MAX_VALUES)]
Label = Annotated[StrictStr, Field(min_length=1, max_length=256)] | StrictInt
#: ids stay exact in every JSON parser (doubles hold integers up to 2**53)
ItemId = Annotated[StrictInt, Field(ge=0, le=2**53 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Input(_Strict):
    """One thing to embed: exactly one of ``image``, ``vector``, ``embedding``."""

    image: Annotated[StrictStr, Field(min_length=1, max_length=MAX_IMAGE_CHARS)] | None = None
    vector: Values | None = None
    embedding: Values | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Input:
        given = [k for k in ("image", "vector", "embedding") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "an input is exactly one of {'image': base64}, {'vector': [...]}, {'embedding': [...]}; "
                f"got {', '.join(given) or 'none'}"
            )
        return self


Inputs = Annotated[list[Input], Field(min_length=1, max_length=MAX_ROWS)]
Embeddings = Annotated[list[Values], Field(min_length=1, max_length=MAX_ROWS)]


class EmbedRequest(_Strict):
    inputs: Inputs


class _Queries(_Strict):
    """``inputs`` or ``embeddings`` (exactly one)."""

    inputs: Inputs | None = None
    embeddings: Embeddings | None = None

    @model_validator(mode="after")
    def _one_source(self) -> _Queries:
        if (self.inputs is None) == (self.embeddings is None):
            raise ValueError("give exactly one of 'inputs' and 'embeddings'")
        return self


class SearchRequest(_Queries):
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = 10


class MatchRequest(_Queries):
    far: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None, description="target open-set false-accept rate: re-calibrates the threshold"
    )


class VerifyRequest(_Strict):
    a: Input
    b: Input


class Item(_Strict):
    id: ItemId | None = None
    label: Label
    metadata: dict[str, Any] | None = None
    image: Annotated[StrictStr, Field(min_length=1, max_length=MAX_IMAGE_CHARS)] | None = None
    vector: Values | None = None
    embedding: Values | None = None

    @field_validator("metadata")
    @classmethod
    def _plain_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        try:
            text = json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("metadata must not contain NaN or infinite numbers") from None
        if len(text) > MAX_METADATA_CHARS:
            raise ValueError(f"metadata is {len(text)} characters of JSON; at most {MAX_METADATA_CHARS}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Item:
        Input(image=self.image, vector=self.vector, embedding=self.embedding)
        return self

    def input(self) -> Input:
        return Input(image=self.image, vector=self.vector, embedding=self.embedding)


class ItemsRequest(_Strict):
    items: Annotated[list[Item], Field(min_length=1, max_length=MAX_ROWS)]


# ----------------------------------------------------------------------------- responses


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]


class Hit(BaseModel):
    id: int
    label: str | int
    score: float
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    results: list[list[Hit]]


class MatchResult(BaseModel):
    answer: str | int
    label: str | int | None
    score: float
    id: int


class MatchResponse(BaseModel):
    matches: list[MatchResult]
    threshold: float


class VerifyResponse(BaseModel):
    score: float
    same: bool | None
    threshold: float | None


class ItemsResponse(BaseModel):
    ids: list[int]
