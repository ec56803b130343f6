"""Resource classification: how sensitive ``event.resource`` is and what data it holds.

Rules live in a YAML file, tried in order, first match wins::

    default: {sensitivity: internal}
    rules:
      - name: payment-card-data
        match:
          service: payments-db               # glob, list of globs, or {regex: ...}
          resource_type: table
          resource_id: [cards, transactions]
        sensitivity: restricted              # public | internal | confidential | restricted
        data_categories: [PCI]               # PII | PCI | PHI

``match`` keys are ``service`` (``service.name``), ``resource_type`` and
``resource_id``; every key given must match. Globs match the whole value
(``fnmatch``, case-sensitive); ``{regex: ...}`` matches anywhere unless
anchored. An event without a resource is not classified. A file that is not
valid YAML or breaks these rules is a :class:`ConfigError` naming the file, the
rule and the problem.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from pipeline.errors import ConfigError
from pipeline.settings import EnrichSettings
from pipeline.stages.enrich.base import NOTHING, Context, Enricher, WatchedFile, field

SENSITIVITIES = ("public", "internal", "confidential", "restricted")
DATA_CATEGORIES = ("PII", "PCI", "PHI")
Sensitivity = Literal["public", "internal", "confidential", "restricted"]
DataCategory = Literal["PII", "PCI", "PHI"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegexPattern(_Model):
    regex: str


Pattern = str | list[str] | RegexPattern


class Match(_Model):
    service: Pattern | None = None
    resource_type: Pattern | None = None
    resource_id: Pattern | None = None


class Label(_Model):
    sensitivity: Sensitivity = "internal"
    data_categories: list[DataCategory] = Field(default_factory=list)


class Rule(Label):
    name: str | None = None
    match: Match
    sensitivity: Sensitivity


class RulesFile(_Model):
    version: Literal[1] = 1
    default: Label = Label()
    rules: list[Rule] = Field(default_factory=list)


def _compile(pattern: Pattern, where: str) -> Callable[[str], Any]:
    if isinstance(pattern, RegexPattern):
        try:
            return re.compile(pattern.regex).search
        except re.error as exc:
            raise ValueError(f"{where}: bad regex {pattern.regex!r}: {exc}") from None
    globs = [pattern] if isinstance(pattern, str) else pattern
    if not globs:
        raise ValueError(f"{where}: an empty list matches nothing")
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match


def _context(label: Label, rule: str | None) -> Context:
    return MappingProxyType(
        {
            "classification": {
                "sensitivity": label.sensitivity,
                "data_categories": list(dict.fromkeys(label.data_categories)),
                "rule": rule,
            }
        }
    )


Matcher = tuple[Callable[[str], Any] | None, ...]  # service, resource type, resource id


class Rules:
    """Compiled rules (an immutable snapshot) with their own lookup cache."""

    def __init__(self, spec: RulesFile, cache_size: int = 10_000) -> None:
        self.spec = spec
        compiled: list[tuple[Matcher, Context]] = []
        for i, rule in enumerate(spec.rules):
            name = rule.name or f"rules[{i}]"
            matcher = tuple(
                _compile(p, f"rules[{i}].match.{key}") if p is not None else None
                for key, p in (
                    ("service", rule.match.service),
                    ("resource_type", rule.match.resource_type),
                    ("resource_id", rule.match.resource_id),
                )
            )
            compiled.append((matcher, _context(rule, name)))
        self._default = _context(spec.default, None)
        self.classify: Callable[[str, str, str], Context] = lru_cache(maxsize=cache_size)(
            partial(_first_match, tuple(compiled), self._default)
        )


def _first_match(
    compiled: tuple[tuple[Matcher, Context], ...],
    default: Context,
    service: str,
    resource_type: str,
    resource_id: str,
) -> Context:
    values = (service, resource_type, resource_id)
    for matcher, context in compiled:
        if all(m is None or m(v) for m, v in zip(matcher, values, strict=True)):
            return context
    return default


def load_rules(path: Path, cache_size: int = 10_000) -> Rules:
    """Read and compile a rules file; every problem is a ConfigError naming ``path``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the classification rules: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'rules' list, got {data!r:.80}")
    try:
        return Rules(RulesFile.model_validate(data), cache_size)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ConfigError(f"{path}: invalid classification rules: {problems}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid classification rules: {exc}") from None


class ClassificationEnricher(Enricher):
    """``classification`` for ``event.resource``."""

    name = "classification"
    fields = ("classification",)

    def __init__(
        self,
        path: Path,
        *,
        cache_size: int = 10_000,
        reload_interval_s: float = 5.0,
        watch: bool = True,
    ) -> None:
        self._file = WatchedFile(
            path,
            partial(load_rules, cache_size=cache_size),
            interval_s=reload_interval_s,
            what="classification rules",
            watch=watch,
        )

    @classmethod
    def from_settings(cls, settings: EnrichSettings) -> ClassificationEnricher | None:
        if settings.classification_path is None:
            return None
        return cls(
            settings.classification_path,
            cache_size=settings.cache_size,
            reload_interval_s=settings.reload_interval_s,
        )

    @property
    def watched(self) -> WatchedFile[Rules]:
        return self._file

    def enrich(self, event: Mapping[str, Any]) -> Context:
        resource = event.get("resource")
        if not resource:
            return NOTHING
        return self._file.current.classify(
            field(event, "service", "name") or "",
            resource.get("type") or "",
            resource.get("id") or "",
        )

    def close(self) -> None:
        self._file.close()
