"""Policy flags of the CLI, derived from the policies' typed parameter models (so they never
drift from what the server accepts): the flags added to a parser, and the parameters read back
from the parsed arguments."""

from __future__ import annotations

import argparse

from relay_ray.errors import RelayInputError
from relay_ray.policies import REGISTRY


def policy_fields() -> dict[str, tuple[set[str], object]]:
    """Every policy parameter: name -> (policies that accept it, pydantic field)."""
    fields: dict[str, tuple[set[str], object]] = {}
    for name, cls in REGISTRY.items():
        for field_name, info in cls.Params.model_fields.items():
            fields.setdefault(field_name, (set(), info))[0].add(name)
    return fields


def _takes_many(annotation) -> bool:
    """A sequence type (``tuple[str, ...]``, ``list[...]``, optionally ``| None``)."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(members) == 1 and _takes_many(members[0])
    return typing.get_origin(annotation) in (tuple, list, set, frozenset)


def add_policy_args(parser: argparse.ArgumentParser) -> None:
    """``--policy`` and one flag per policy parameter; sequence-typed parameters (``tuple[str,
    ...]``, ``list[...]``, optionally ``| None``) take one or more values."""
    parser.add_argument("--policy", default="", choices=sorted(REGISTRY),
                        help="relay policy (default: the server's default)")
    group = parser.add_argument_group("policy parameters (each applies to the policies listed)")
    for field_name, (policies, info) in sorted(policy_fields().items()):
        many = _takes_many(info.annotation)
        group.add_argument(
            f"--{field_name.replace('_', '-')}", dest=f"param_{field_name}", nargs="+" if many else None,
            metavar="V", help=f"{info.description or field_name} [{', '.join(sorted(policies))}]",
        )


def policy_params(args: argparse.Namespace) -> dict:
    """The policy parameters given on the command line (and ``--cues-file``'s cues);
    RelayInputError for a flag of another policy than ``--policy``."""
    params = {}
    if getattr(args, "cues_file", None):
        if args.policy != "relaygen":
            raise RelayInputError("--cues-file", f"applies to relaygen, not {args.policy or 'the default'}")
        from relay_ray.quality.runs import load_cue_file

        params["cues"] = list(load_cue_file(args.cues_file))
    for field_name, (policies, _) in policy_fields().items():
        value = getattr(args, f"param_{field_name}")
        if value is None:
            continue
        if args.policy not in policies:
            flag = "--" + field_name.replace("_", "-")
            raise RelayInputError(flag, f"applies to {', '.join(sorted(policies))}, not {args.policy or 'the default'}")
        params[field_name] = [v.encode().decode("unicode_escape") for v in value] if isinstance(value, list) else value
    return params
