"""Pipeline stages, their step-name aliases, and the agent that runs each stage.

Pipelines log failures under their own step names (``discover-products``); the gate thinks in
stages (``research``). Folding every name through the alias map means a failure logged under a
step name counts for its stage (the old system compared the two names directly and never matched).
"""

from __future__ import annotations

from collections.abc import Mapping

from rayvault.policies import Policies


def fold_stage(name: str, policies: Policies) -> str:
    """The gate stage a component or step name belongs to (itself when it is not an alias)."""
    return fold_name(name, policies.LEARNING_STAGE_ALIASES)


def fold_name(name: str, aliases: Mapping[str, str]) -> str:
    """:func:`fold_stage` over an alias map (the stores' indexes hold the map, not policies)."""
    key = name.strip()
    return aliases.get(key) or aliases.get(key.lower()) or key


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
