"""The class taxonomy: a DAG of named classes under a virtual root.

Features:
- reads `labels.txt` (`id<TAB>name`) and `label_hierarchy.txt` (`parent<TAB>child`);
- rejects a single class, duplicate ids or names, unknown ids in edges and cycles, naming file and line;
- parents, children, siblings, ancestors, descendants, level, root-to-node paths;
- `edge_index` for torch_geometric and readable names (`grocery_gourmet_food` -> `grocery gourmet food`).

Classes are addressed by a dense index 0..C-1 (file order); `ids[i]` is the id
as written in labels.txt. The virtual root has index `ROOT` (-1) and is never a class.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from taxoclass.data.textfile import read_lines, split_tab
from taxoclass.errors import DataError

ROOT = -1


def readable_name(name: str) -> str:
    """`grocery_gourmet_food` -> `grocery gourmet food` (lower-case, single spaces)."""
    return " ".join(name.replace("_", " ").split()).lower()


@dataclass
class Taxonomy:
    ids: list[str]
    names: list[str]
    edges: list[tuple[int, int]]  # (parent, child), dense indices, no root edges
    _parents: list[list[int]] = field(init=False, repr=False)
    _children: dict[int, list[int]] = field(init=False, repr=False)

    def __post_init__(self):
        n = len(self.ids)
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self._parents = [[] for _ in range(n)]
        self._children = {ROOT: [], **{i: [] for i in range(n)}}
        for p, c in self.edges:
            self._parents[c].append(p)
            self._children[p].append(c)
        for c in range(n):
            if not self._parents[c]:
                self._parents[c].append(ROOT)
                self._children[ROOT].append(c)

    # ---- construction -------------------------------------------------
    def to_dict(self) -> dict:
        """Plain lists, for a checkpoint or a Ray worker; `from_dict` inverts it."""
        return {"ids": self.ids, "names": self.names, "edges": self.edges}

    @classmethod
    def from_dict(cls, d: dict) -> Taxonomy:
        return cls(ids=d["ids"], names=d["names"], edges=[tuple(e) for e in d["edges"]])

    @classmethod
    def load(cls, folder: str | Path) -> Taxonomy:
        folder = Path(folder)
        return cls.from_files(folder / "labels.txt", folder / "label_hierarchy.txt")

    @classmethod
    def from_files(cls, labels_path: Path, hierarchy_path: Path) -> Taxonomy:
        ids, names, seen_ids, seen_names, seen_readable = [], [], {}, {}, {}
        for number, line in read_lines(labels_path):
            cid, name = split_tab(labels_path, number, line, 2, "'id<TAB>name'")
            if not cid or not name:
                raise DataError(labels_path, "empty class id or name", number)
            if cid in seen_ids:
                raise DataError(labels_path, f"duplicate class id '{cid}' (first on line {seen_ids[cid]})", number)
            if name in seen_names:
                raise DataError(labels_path, f"duplicate class name '{name}' (first on line {seen_names[name]})", number)
            # the model sees readable names: two that read the same give two identical hypotheses
            first = seen_readable.get(readable_name(name))
            if first is not None:
                raise DataError(labels_path, f"class name '{name}' reads the same as '{first[1]}' (line {first[0]}) "
                                f"once '_' is a space and case is ignored: '{readable_name(name)}'", number)
            seen_ids[cid], seen_names[name], seen_readable[readable_name(name)] = number, number, (number, name)
            ids.append(cid)
            names.append(name)
        if not ids:
            raise DataError(labels_path, "no classes")
        if len(ids) == 1:  # every document would get it: there is nothing to learn, rank or evaluate
            raise DataError(labels_path, f"one class ('{names[0]}'): nothing to choose between; a taxonomy needs at least 2 classes")
        index = {cid: i for i, cid in enumerate(ids)}
        edges, edge_lines = [], {}
        for number, line in read_lines(hierarchy_path):
            parent, child = split_tab(hierarchy_path, number, line, 2, "'parent<TAB>child'")
            for cid in (parent, child):
                if cid not in index:
                    raise DataError(hierarchy_path, f"edge names unknown class id '{cid}' (not in {labels_path.name})", number)
            edge = (index[parent], index[child])
            if edge in edge_lines:
                continue  # a repeated edge changes nothing
            edge_lines[edge] = number
            edges.append(edge)
        _check_acyclic(len(ids), edges, edge_lines, names, hierarchy_path)
        return cls(ids=ids, names=names, edges=edges)

    # ---- structure ----------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def parents(self, c: int) -> list[int]:
        """Parents of c; [ROOT] for a top-level class."""
        return self._parents[c]

    def children(self, c: int) -> list[int]:
        """Children of c (c may be ROOT)."""
        return self._children[c]

    def siblings(self, c: int) -> list[int]:
        """Other children of c's parents (top-level classes are siblings of each other)."""
        out = {s for p in self._parents[c] for s in self._children[p]}
        out.discard(c)
        return sorted(out)

    def ancestors(self, c: int) -> set[int]:
        """All classes above c, without ROOT."""
        return self._ancestor_sets[c]

    def descendants(self, c: int) -> set[int]:
        out, stack = set(), list(self._children[c])
        while stack:
            d = stack.pop()
            if d not in out:
                out.add(d)
                stack.extend(self._children[d])
        return out

    def level(self, c: int) -> int:
        """Shortest distance from ROOT minus one: top-level classes have level 0."""
        return self.levels[c]

    @cached_property
    def levels(self) -> list[int]:
        depth = {ROOT: 0}
        queue = deque([ROOT])
        while queue:
            u = queue.popleft()
            for v in self._children[u]:
                if v not in depth:
                    depth[v] = depth[u] + 1
                    queue.append(v)
        return [depth[c] - 1 for c in range(len(self))]

    @property
    def num_levels(self) -> int:
        return max(self.levels) + 1

    @cached_property
    def _ancestor_sets(self) -> list[set[int]]:
        memo: dict[int, set[int]] = {}
        for c in self.topological_order:
            s: set[int] = set()
            for p in self._parents[c]:
                if p != ROOT:
                    s.add(p)
                    s |= memo[p]
            memo[c] = s
        return [memo[c] for c in range(len(self))]

    @cached_property
    def topological_order(self) -> list[int]:
        """Classes with every parent before its children."""
        indegree = [len([p for p in ps if p != ROOT]) for ps in self._parents]
        queue = deque(self._children[ROOT])
        order = []
        while queue:
            u = queue.popleft()
            order.append(u)
            for v in self._children[u]:
                indegree[v] -= 1
                if indegree[v] == 0:
                    queue.append(v)
        return order

    def paths(self, c: int) -> list[list[int]]:
        """Every root-to-node path to c (ROOT excluded), top-level class first."""
        out = []
        for p in self._parents[c]:
            if p == ROOT:
                out.append([c])
            else:
                out.extend(path + [c] for path in self.paths(p))
        return out

    def with_ancestors(self, classes) -> set[int]:
        out = set(classes)
        for c in classes:
            out |= self._ancestor_sets[c]
        return out

    @property
    def leaves(self) -> list[int]:
        return [c for c in range(len(self)) if not self._children[c]]

    @property
    def multi_parent(self) -> list[int]:
        return [c for c in range(len(self)) if len(self._parents[c]) > 1]

    def readable(self, c: int) -> str:
        return readable_name(self.names[c])

    @property
    def readable_names(self) -> list[str]:
        return [readable_name(n) for n in self.names]

    def edge_index(self, undirected: bool = False):
        """torch_geometric `edge_index` (2 x E, parent -> child), root edges left out."""
        import torch

        pairs = list(self.edges)
        if undirected:
            pairs += [(c, p) for p, c in self.edges]
        if not pairs:
            return torch.zeros((2, 0), dtype=torch.long)
        return torch.tensor(pairs, dtype=torch.long).t().contiguous()

    def output_id(self, c: int):
        """The id written to predictions: an int where labels.txt uses integers."""
        return int(self.ids[c]) if self._numeric_ids else self.ids[c]

    @cached_property
    def _numeric_ids(self) -> bool:
        return all(i.lstrip("-").isdigit() for i in self.ids)

    def level_counts(self) -> list[int]:
        counts = [0] * self.num_levels
        for lv in self.levels:
            counts[lv] += 1
        return counts


def _check_acyclic(n, edges, edge_lines, names, path) -> None:
    """Raise a DataError naming the classes on a cycle, if there is one."""
    children = [[] for _ in range(n)]
    for p, c in edges:
        children[p].append(c)
    WHITE, GREY, BLACK = 0, 1, 2
    color = [WHITE] * n
    for start in range(n):
        if color[start] != WHITE:
            continue
        stack = [(start, iter(children[start]))]
        trail = [start]
        color[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
                trail.pop()
            elif color[nxt] == GREY:
                cycle = trail[trail.index(nxt):] + [nxt]
                line = edge_lines[(node, nxt)]
                raise DataError(path, "cycle in the class hierarchy: " + " -> ".join(names[c] for c in cycle), line)
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                trail.append(nxt)
                stack.append((nxt, iter(children[nxt])))
