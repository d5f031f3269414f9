"""Pipeline stages, their step-name aliases, and the agent that runs each stage.

Pipelines log failures under their own step names (``discover-products``); the gate thinks in
stages (``research``). Folding every name through the alias map means a failure logged under a
step name counts for its stage (the old system compared the two names directly and never matched).

Known names are the stages of ``LEARNING_STAGE_AGENTS`` and the step names and stages of
``LEARNING_STAGE_ALIASES``, spelled exactly as the maps spell them: matching is case-sensitive
(``Assets`` is not ``assets``), because names are stored on events and errors and compared as
stored; a map that wants ``Assets`` too lists it. The gate refuses an unknown stage
(:func:`check_stage`); events and the error log accept free components, with a warning
(:func:`note_unknown_component`), since the spec lets pipelines log under their own names.
"""

from __future__ import annotations

from rayvault.learning._aliases import fold_name
from rayvault.learning.exceptions import InvalidInputError
from rayvault.policies import Policies

__all__ = [
    "agent_for_stage",
    "check_stage",
    "components_of_agent",
    "configured_agents",
    "fold_name",
    "fold_stage",
    "is_known_stage",
    "known_stage_names",
    "note_unknown_component",
    "stage_names",
    "unknown_stage_message",
]


def fold_stage(name: str, policies: Policies) -> str:
    """The gate stage a component or step name belongs to (itself when it is not an alias)."""
    return fold_name(name, policies.LEARNING_STAGE_ALIASES)


def known_stage_names(policies: Policies) -> list[str]:
    """Every stage and step name the maps know, sorted."""
    aliases = policies.LEARNING_STAGE_ALIASES
    return sorted({*policies.LEARNING_STAGE_AGENTS, *aliases, *aliases.values()})


def is_known_stage(name: str, policies: Policies) -> bool:
    aliases = policies.LEARNING_STAGE_ALIASES
    return name in policies.LEARNING_STAGE_AGENTS or name in aliases or name in aliases.values()


def _suggestion(name: str, policies: Policies) -> str:
    import difflib  # only for a stage no map knows: not on the gate's way

    names = known_stage_names(policies)
    by_fold = {n.casefold(): n for n in names}
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    exact_case = by_fold.get(name.casefold())
    if exact_case is not None and exact_case not in close:
        close.insert(0, exact_case)
    if not close:
        close = [by_fold[n] for n in difflib.get_close_matches(name.casefold(), list(by_fold))]
    return "did you mean " + " or ".join(repr(n) for n in close[:3]) + "?" if close else ""


def unknown_stage_message(name: str, policies: Policies) -> str:
    """``unknown stage 'asset': did you mean 'assets'?`` (else the known stages)."""
    suggestion = _suggestion(name, policies)
    if suggestion:
        return f"unknown stage {name!r}: {suggestion}"
    return f"unknown stage {name!r}: known stages are " + ", ".join(
        sorted({*policies.LEARNING_STAGE_AGENTS, *policies.LEARNING_STAGE_ALIASES.values()})
    )


def check_stage(name: str, policies: Policies) -> str:
    """``name`` when a map knows it; :class:`InvalidInputError` (with a suggestion) otherwise."""
    if not is_known_stage(name, policies):
        raise InvalidInputError(
            unknown_stage_message(name, policies),
            hint="stages and step names are matched exactly (case-sensitive); add new ones "
            "to LEARNING_STAGE_AGENTS or LEARNING_STAGE_ALIASES in policies.py",
        )
    return name


def note_unknown_component(name: str, policies: Policies, where: str) -> bool:
    """Log a warning when no map knows the component ``name`` (accepted: events and errors may
    use free components, but the gate will never see them); whether it was unknown."""
    if is_known_stage(name, policies):
        return False
    suggestion = _suggestion(name, policies)
    import logging  # here: a cold ``rayvault-learn gate`` imports this module, never logging

    logging.getLogger("rayvault.learning").warning(
        "%s: component %r is not a stage or step name in LEARNING_STAGE_AGENTS or "
        "LEARNING_STAGE_ALIASES: recorded as is, but no gate stage counts it%s",
        where,
        name,
        f" ({suggestion})" if suggestion else "",
    )
    return True


def stage_names(stage: str, policies: Policies) -> tuple[str, ...]:
    """Every component name that folds into ``stage``: the stage itself and its aliases."""
    target = fold_stage(stage, policies)
    names = {target}
    names.update(alias for alias, s in policies.LEARNING_STAGE_ALIASES.items() if s == target)
    return tuple(sorted(names))


def agent_for_stage(stage: str, policies: Policies) -> str | None:
    """The agent mapped to ``stage`` (after folding), or None for an unmapped stage."""
    return policies.LEARNING_STAGE_AGENTS.get(fold_stage(stage, policies))


def components_of_agent(agent: str, policies: Policies) -> tuple[str, ...]:
    """Every component name whose stage maps to ``agent``."""
    names: set[str] = set()
    for stage, owner in policies.LEARNING_STAGE_AGENTS.items():
        if owner == agent:
            names.update(stage_names(stage, policies))
    return tuple(sorted(names))


def configured_agents(policies: Policies) -> list[str]:
    """The agents of the stage map, in first-mentioned order."""
    return list(dict.fromkeys(policies.LEARNING_STAGE_AGENTS.values()))
