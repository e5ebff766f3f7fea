"""The stage kit: what every stage shares, written once.

- :mod:`.settings` — ``setting()`` fields: a Config is the one place a setting is declared
  (default, help, validation); CLI flags, KFP ``Args:`` help and the settings key follow.
- :mod:`.ledger` — per-item records, the resume rule, withdraw before redo.
- :mod:`.writer` — write-behind of an item's outputs while the next one computes.
- :mod:`.report` — one ``summary.json`` / ``summary.md`` / ``failures.jsonl`` shape and one
  result type.
- :mod:`.cli` — stage subcommands generated from the Config; user errors exit 2.
- :mod:`.guard` / :mod:`.lock` — before a stage writes: the output apart from the inputs,
  ours (a marker) or new, one writer at a time; a missing input is an error.
"""

from lanepaint.kit.guard import (
    OutputBusyError,
    OutputError,
    check_apart,
    claim_output,
    guard_output,
    require_input,
)
from lanepaint.kit.ledger import Ledger
from lanepaint.kit.report import SUMMARY_KEYS, StageReport, StageResult
from lanepaint.kit.settings import (
    add_arguments,
    all_settings,
    check_finite,
    component_doc,
    from_args,
    keyed_path,
    output_settings,
    setting,
    settings_key,
    to_argv,
)
from lanepaint.kit.writer import WriteBehind

__all__ = [
    "SUMMARY_KEYS",
    "Ledger",
    "OutputBusyError",
    "OutputError",
    "StageReport",
    "StageResult",
    "WriteBehind",
    "add_arguments",
    "check_finite",
    "all_settings",
    "check_apart",
    "claim_output",
    "component_doc",
    "from_args",
    "keyed_path",
    "guard_output",
    "output_settings",
    "require_input",
    "setting",
    "settings_key",
    "to_argv",
]
