"""YAML for configs: PyYAML's safe loader with a cap on aliases and on what they expand to.

An alias bomb ("billion laughs") is a few hundred bytes of YAML whose aliases expand to billions
of nodes; `safe_load_bounded` counts the expansion without building it and refuses past the caps,
so that such a config fails at load, naming the file (pipeline/config.py), instead of eating memory.
"""

from __future__ import annotations

from typing import Any

import yaml

# An alias bomb ("billion laughs") is a few hundred bytes whose aliases expand to billions of nodes;
# a real config has a handful of aliases and a few thousand nodes.
MAX_YAML_ALIASES = 1_000
MAX_YAML_NODES = 1_000_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a cap on aliases and on the node count they expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (`*name`): refused")
        return super().compose_node(parent, index)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return self.construct_document(node)


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases would expand past MAX_YAML_NODES nodes (counted, not built)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise yaml.YAMLError("an alias refers to a node that contains it (a recursive document)")
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        if total > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_NODES:,} nodes through its aliases "
                "(an alias bomb?): refused"
            )
        sizes[key] = total
        return total

    size(root)


def safe_load_bounded(text: str) -> Any:
    """`yaml.safe_load` with the alias and expansion bounds above; yaml.YAMLError when exceeded."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
