"""The campaign's own mutation operators: mistakes in trust and safety guards that
cosmic-ray's operators cannot make.

- A three-valued flag (`Optional[bool]`: a host's liveness, a pool's HA flag) compared with
  `is` to a boolean: `x is not False` made `x is True` lets `None` (unknown) through the other
  way; cosmic-ray only negates the comparison (`is not` -> `is`).
- `any(...)` made `all(...)` and back (one pin of several, one VM still running).
- `min(...)` made `max(...)` and back: a bound on a wait or a size that takes the larger of two
  limits instead of the smaller (cosmic-ray does not touch calls).

They are registered as cosmic-ray's operator provider `fx` (`register()`), in the campaign's
own process: its worker processes, which apply the mutants, inherit it. The work items are
added to the session by `work_items()` after `cosmic-ray init` made cosmic-ray's own."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import parso
import parso.python.tree
from cosmic_ray.operators.operator import Example, Operator

PROVIDER = "fx"


class _Swap(Operator):
    """Replace one comparison's boolean operand side or a called built-in's name."""

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return ()


# `is`/`is not` with a boolean literal: the mutant that keeps the meaning for True and False
# and changes it for None (and for anything else).
_IDENTITY_FLIPS = {("is not", "False"): ("is", "True"), ("is", "True"): ("is not", "False"),
                   ("is", "False"): ("is not", "True"), ("is not", "True"): ("is", "False")}


def _identity_points(node: Any) -> Iterator[int]:
    """Indexes of the operators in a comparison node compared by identity to True/False."""
    if getattr(node, "type", None) != "comparison":
        return
    for index, operator in enumerate(node.children[1::2]):
        right = node.children[(index + 1) * 2]
        key = (" ".join(operator.get_code().split()), right.get_code().strip())
        if key in _IDENTITY_FLIPS:
            yield index


class FlipBooleanIdentity(_Swap):
    """`x is not False` -> `x is True` (and the other three): None changes sides."""

    def mutation_positions(self, node: Any) -> Iterator[tuple[Any, Any]]:
        for index in _identity_points(node):
            yield node.children[index * 2 + 1].start_pos, node.children[index * 2 + 2].end_pos

    def mutate(self, node: Any, index: int) -> Any:
        point = list(_identity_points(node))[index]
        operator, right = node.children[point * 2 + 1], node.children[point * 2 + 2]
        key = (" ".join(operator.get_code().split()), right.get_code().strip())
        new_operator, new_right = _IDENTITY_FLIPS[key]
        node.children[point * 2 + 1] = parso.parse(" " + new_operator)
        node.children[point * 2 + 2] = parso.parse(" " + new_right)
        return node

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return (Example("x is not False", "x is True"), Example("x is True", "x is not False"))


def _called_name(node: Any, name: str) -> bool:
    """`node` is the name `name` called as a function: `name(...)`."""
    if not isinstance(node, parso.python.tree.Name) or node.value != name:
        return False
    following = node.get_next_sibling()
    return following is not None and following.type == "trailer" and \
        following.children[0].type == "operator" and following.children[0].value == "("


def _rename_call(from_name: str, to_name: str) -> type[Operator]:
    class RenameCall(_Swap):
        def mutation_positions(self, node: Any) -> Iterator[tuple[Any, Any]]:
            if _called_name(node, from_name):
                yield node.start_pos, node.end_pos

        def mutate(self, node: Any, index: int) -> Any:
            assert index == 0  # one position per name
            node.value = to_name
            return node

        @classmethod
        def examples(cls) -> tuple[Example, ...]:
            return (Example(f"{from_name}(x)", f"{to_name}(x)"),)

    RenameCall.__name__ = RenameCall.__qualname__ = (
        f"ReplaceCall_{from_name.capitalize()}_{to_name.capitalize()}")
    return RenameCall


OPERATORS: dict[str, type[Operator]] = {
    "FlipBooleanIdentity": FlipBooleanIdentity,
    **{op.__name__: op for op in (_rename_call("any", "all"), _rename_call("all", "any"),
                                  _rename_call("min", "max"), _rename_call("max", "min"))},
}


class Provider:
    """cosmic-ray's operator provider interface: names, and the class by name."""

    def __iter__(self) -> Iterator[str]:
        return iter(OPERATORS)

    def __getitem__(self, name: str) -> type[Operator]:
        return OPERATORS[name]


def register() -> None:
    import cosmic_ray.plugins

    cosmic_ray.plugins.OPERATOR_PROVIDERS[PROVIDER] = Provider()


def work_items(agent: Path, module_path: str) -> Iterator[Any]:
    """cosmic-ray work items for this module's operators on `agent` (recorded under
    `module_path`, the path the workers mutate, relative to their copy of the checkout)."""
    from cosmic_ray.ast import ast_nodes, get_ast_from_path
    from cosmic_ray.ast.ast_query import ASTQuery
    from cosmic_ray.work_item import MutationSpec, WorkItem

    tree = get_ast_from_path(agent)
    for name, operator_class in OPERATORS.items():
        operator = operator_class()
        positions = ((node, start, end) for node in ast_nodes(tree)
                     for start, end in operator.mutation_positions(node))
        for occurrence, (node, start, end) in enumerate(positions):
            yield WorkItem.single(job_id=uuid.uuid4().hex, mutation=MutationSpec(
                module_path=module_path, operator_name=f"{PROVIDER}/{name}", operator_args={},
                occurrence=occurrence, start_pos=start, end_pos=end,
                definition_name=ASTQuery(node).get_definition_name()))
