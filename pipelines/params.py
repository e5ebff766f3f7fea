"""Pipeline parameters taken from the components they feed.

A component's settings parameters (and their ``Args:`` help) come from its stage's Config;
a pipeline built with :func:`with_settings` takes its parameters from those components, so
a setting is declared once and a pipeline cannot drift from the stage it runs. Defaults a
pipeline chooses on purpose are given as ``defaults`` (see tests/test_settings_drift.py);
``prefix`` keeps two stages' settings of one name apart (``train_compile``, ``compile``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import docstring_parser

_PLAIN = inspect.Parameter.POSITIONAL_OR_KEYWORD


def _help(func: Callable) -> dict[str, str]:
    return {p.arg_name: p.description for p in docstring_parser.parse(func.__doc__ or "").params}


@dataclass
class Settings:
    """The settings parameters of ``component`` that a pipeline exposes."""

    component: Any
    exclude: Iterable[str] = ()
    prefix: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def _own(self) -> list[inspect.Parameter]:
        func = self.component.python_func
        skip = set(self.exclude)
        return [
            p
            for p in inspect.signature(func).parameters.values()
            # settings have plain defaults; artifacts (Input/Output) have none or None
            if p.default is not inspect.Parameter.empty
            and p.default is not None
            and p.name not in skip
        ]

    @property
    def params(self) -> list[inspect.Parameter]:
        return [
            inspect.Parameter(
                self.prefix + p.name,
                _PLAIN,
                default=self.defaults.get(p.name, p.default),
                annotation=p.annotation,
            )
            for p in self._own()
        ]

    @property
    def help(self) -> dict[str, str]:
        text = _help(self.component.python_func)
        return {self.prefix + p.name: text.get(p.name, "") for p in self._own()}

    def pick(self, values: dict[str, Any]) -> dict[str, Any]:
        """The component's keyword arguments from the pipeline's parameters."""
        return {p.name: values[self.prefix + p.name] for p in self._own()}


def with_settings(*groups: Settings) -> Callable[[Callable], Callable]:
    """Decorator (below ``@dsl.pipeline``): the pipeline's parameters are the body's own
    (documented in its ``Args:``) followed by every group's settings; the body receives
    them all as keyword arguments (``**settings``). A name given twice is an error."""

    def decorate(body: Callable) -> Callable:
        own = [
            p.replace(kind=_PLAIN)
            for p in inspect.signature(body).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        params, docs = list(own), _help(body)
        for group in groups:
            taken = {p.name for p in params}
            clash = sorted(taken & {p.name for p in group.params})
            if clash:  # one parameter feeding two settings must be a decision, not an accident
                raise ValueError(f"{body.__name__}: {clash} named twice; exclude or prefix")
            params += group.params
            docs = {**group.help, **docs}
        signature = inspect.Signature(params)

        @functools.wraps(body)
        def pipeline(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return body(**bound.arguments)

        pipeline.__signature__ = signature
        summary = docstring_parser.parse(body.__doc__ or "")
        lines = [summary.short_description or "", "", "Args:"]
        # one line each: kfp reads a description only up to an unindented line break
        lines += [f"    {p.name}: {' '.join((docs.get(p.name) or p.name).split())}" for p in params]
        pipeline.__doc__ = "\n".join(lines) + "\n"
        return pipeline

    return decorate
