"""What a conversation used, in tokens, and what that costs.

The Realtime API bills each *response*: its input (the whole conversation so far, part of it cached) and its
output, by modality, and reports the counts in ``response.done``'s ``usage``. Connections and bandwidth cost
nothing (OpenAI's "Realtime costs" guide). ``Usage`` is those counts, summable; ``PriceTable`` turns them into
dollars with per-model rates. Prices change: the shipped table says when and where it was read, and every
call takes a table of the user's own instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

__all__ = ["PRICES", "Cost", "PriceTable", "Rates", "Usage"]

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _sums(a: Any, b: Any) -> list[Any]:
    """Field by field, the sums of two records of one dataclass (both of this module's records add up so)."""
    return [getattr(a, f.name) + getattr(b, f.name) for f in fields(a)]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class Usage:
    """Token counts of one or more responses, split as ``response.done`` splits them. The cached counts are
    part of the input counts (the service reports them that way), billed at the cached rate instead."""

    text_in: int = 0
    audio_in: int = 0
    image_in: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    cached_image: int = 0
    text_out: int = 0
    audio_out: int = 0

    @classmethod
    def from_api(cls, usage: Mapping[str, Any] | None) -> Usage:
        """From a ``response.done``'s ``response.usage`` (missing or null fields count as zero)."""
        usage = usage or {}
        into = usage.get("input_token_details") or {}
        cached = into.get("cached_tokens_details") or {}
        out = usage.get("output_token_details") or {}
        return cls(
            text_in=_count(into.get("text_tokens")),
            audio_in=_count(into.get("audio_tokens")),
            image_in=_count(into.get("image_tokens")),
            cached_text=_count(cached.get("text_tokens")),
            cached_audio=_count(cached.get("audio_tokens")),
            cached_image=_count(cached.get("image_tokens")),
            text_out=_count(out.get("text_tokens")),
            audio_out=_count(out.get("audio_tokens")),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(*_sums(self, other))

    @property
    def input_tokens(self) -> int:
        return self.text_in + self.audio_in + self.image_in

    @property
    def cached_tokens(self) -> int:
        return self.cached_text + self.cached_audio + self.cached_image

    @property
    def output_tokens(self) -> int:
        return self.text_out + self.audio_out

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Rates:
    """US dollars per million tokens, for one model."""

    text_in: float
    cached_text: float
    text_out: float
    audio_in: float
    cached_audio: float
    audio_out: float
    image_in: float = 0.0
    cached_image: float = 0.0


@dataclass(frozen=True)
class Cost:
    """Dollars, line by line: uncached input, cached input and output of each modality."""

    text_in: float = 0.0
    cached_text: float = 0.0
    text_out: float = 0.0
    audio_in: float = 0.0
    cached_audio: float = 0.0
    audio_out: float = 0.0
    image_in: float = 0.0
    cached_image: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*_sums(self, other))

    @property
    def total(self) -> float:
        return float(sum(getattr(self, f.name) for f in fields(self)))

    @property
    def input(self) -> float:
        return self.total - self.text_out - self.audio_out

    @property
    def output(self) -> float:
        return self.text_out + self.audio_out


@dataclass(frozen=True)
class PriceTable:
    """Per-model rates, with the day they were read and where, so that a printed cost can say how old it is.
    A dated snapshot is priced as its model (``gpt-realtime-2025-08-28`` as ``gpt-realtime``); any other name
    must be in the table: prefixes would price ``gpt-realtime-2025-…`` as ``gpt-realtime-2``."""

    rates: Mapping[str, Rates]
    read_on: date
    source: str

    def rates_for(self, model: str) -> Rates:
        name = _SNAPSHOT.sub("", model)
        if name not in self.rates:
            known = ", ".join(sorted(self.rates))
            raise KeyError(f"No price for model {model!r} (the table knows {known}); pass a PriceTable with it.")
        return self.rates[name]

    def cost(self, usage: Usage, model: str) -> Cost:
        r = self.rates_for(model)
        per = 1_000_000
        return Cost(
            text_in=(usage.text_in - usage.cached_text) * r.text_in / per,
            cached_text=usage.cached_text * r.cached_text / per,
            text_out=usage.text_out * r.text_out / per,
            audio_in=(usage.audio_in - usage.cached_audio) * r.audio_in / per,
            cached_audio=usage.cached_audio * r.cached_audio / per,
            audio_out=usage.audio_out * r.audio_out / per,
            image_in=(usage.image_in - usage.cached_image) * r.image_in / per,
            cached_image=usage.cached_image * r.cached_image / per,
        )

    def with_rates(self, rates: Mapping[str, Rates]) -> PriceTable:
        """This table with some models added or repriced (your contract's rates, a model released since)."""
        return PriceTable({**self.rates, **rates}, self.read_on, f"{self.source}; {', '.join(rates)} by the user")


_FLAGSHIP = Rates(4.00, 0.40, 16.00, 32.00, 0.40, 64.00, 5.00, 0.50)
_MINI = Rates(0.60, 0.06, 2.40, 10.00, 0.30, 20.00, 0.80, 0.08)

#: OpenAI's published rates, read on the models' pages of developers.openai.com (gpt-realtime-1.5, -2,
#: -2.1-mini, whose page lists gpt-realtime-mini at the same rates). ``gpt-realtime`` is priced as
#: gpt-realtime-1.5, its successor at the same rates; ``gpt-realtime-2`` differs only in text output.
PRICES = PriceTable(
    {
        "gpt-realtime": _FLAGSHIP,
        "gpt-realtime-1.5": _FLAGSHIP,
        "gpt-realtime-2": Rates(4.00, 0.40, 24.00, 32.00, 0.40, 64.00, 5.00, 0.50),
        "gpt-realtime-mini": _MINI,
        "gpt-realtime-2.1-mini": _MINI,
    },
    read_on=date(2026, 11, 30),
    source="https://developers.openai.com/api/docs/models/ (gpt-realtime-1.5, gpt-realtime-2, gpt-realtime-2.1-mini)",
)
