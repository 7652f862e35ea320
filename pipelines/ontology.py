"""Open Images class names, MIDs and the box hierarchy: resolving what the user asked for.

Pure Python, no Beam: it runs while the pipeline is being built, so a wrong class name
fails at once (with the closest names as suggestions) before any worker starts.

    open-sandwiches classes --classes Sandwich --include_subclasses

Facts this module relies on:
- The boxable class lists have 601 MIDs; names differ between V4 and V7 in 26 places
  (V4 "Airplane" is V7 "Fixed-wing aircraft"). Both packaged lists are loaded, so a name
  from either version resolves; labels use the chosen version's names.
- The hierarchy root `/m/0bl9f` ("Entity") is in no class list. A class can sit under
  several parents, so the tree is a DAG and every walk deduplicates.
- `Subcategory` edges mean "is a kind of" (Hamburger is a Sandwich); `Part` edges mean
  "is a part of" (a Wheel is part of a Car) and never count as sub-classes.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import importlib.resources
import io
import json
from typing import Iterable

from pipelines.files import read_bytes
from schemas import openimages

ROOT_MID = "/m/0bl9f"
ROOT_NAME = "Entity"

_PACKAGED_LISTS = {
    "v4": "v4-class-descriptions-boxable.csv",
    # Google published no packaged V5/V6 copy we can vouch for; the MIDs are the same 601,
    # and V5+ use the newer names, so the V7 list stands in (see pipelines/data/NOTICE.md).
    "v5": "oidv7-class-descriptions-boxable.csv",
    "v6": "oidv7-class-descriptions-boxable.csv",
    "v7": "oidv7-class-descriptions-boxable.csv",
}
_PACKAGED_HIERARCHY = "bbox_labels_600_hierarchy.json"
DEFAULT_VERSION = "v7"


class UnknownClassError(ValueError):
    """A class name or MID that is not in the class list."""


class ClassSelectionError(ValueError):
    """A class selection that contradicts itself (a class both requested and excluded)."""


def packaged_path(name: str) -> str:
    """Filesystem path of a data file shipped inside the package."""
    return str(importlib.resources.files("pipelines") / "data" / name)


def packaged_class_list(version: str) -> str:
    """Path of the class list shipped for a version."""
    return packaged_path(_PACKAGED_LISTS[version])


def parse_class_descriptions(data: bytes, path: str = "<class list>") -> dict[str, str]:
    """Parse a boxable class list (any version: header or not, LF or CRLF, quoted names).

    Returns:
      MID -> display name, in file order.
    """
    text = data.decode("utf-8-sig")
    first_line = text.split("\n", 1)[0]
    variant = openimages.detect_variant(openimages.CLASS_DESCRIPTIONS, first_line, path)
    rows = csv.reader(io.StringIO(text, newline=""))
    if variant.has_header:
        next(rows, None)
    names: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=2 if variant.has_header else 1):
        if not row:
            continue
        if len(row) != 2 or not row[0].startswith(("/m/", "/g/")):
            raise openimages.TableFormatError(
                f"{path}:{lineno}: expected 'MID,DisplayName', found {','.join(row)!r}")
        names[row[0]] = row[1]
    return names


def _fold(name: str) -> str:
    """Case- and space-insensitive form of a class name, for matching user input."""
    return " ".join(name.casefold().split())


@dataclasses.dataclass(frozen=True)
class Ontology:
    """The class list and hierarchy of one Open Images version.

    Attributes:
      version: "v4".."v7", or "custom" when the user supplied the class list.
      names: MID -> display name in this version.
      children: MID -> Subcategory MIDs (deduplicated, file order).
      parts: MID -> Part MIDs.
      aliases: folded name -> MID, for names from other versions (V4 "Airplane").
    """

    version: str
    names: dict[str, str]
    children: dict[str, tuple[str, ...]]
    parts: dict[str, tuple[str, ...]]
    aliases: dict[str, str]

    @classmethod
    def load(cls, version: str = DEFAULT_VERSION, class_descriptions: str | None = None,
             hierarchy: str | None = None) -> "Ontology":
        """Load a version's class list and hierarchy: the packaged copies unless paths are given."""
        if version not in openimages.VERSIONS:
            raise ValueError(f"unknown Open Images version {version!r}; "
                             f"choose one of {', '.join(openimages.VERSIONS)}")
        list_path = class_descriptions or packaged_path(_PACKAGED_LISTS[version])
        names = parse_class_descriptions(read_bytes(list_path), list_path)
        tree_path = hierarchy or packaged_path(_PACKAGED_HIERARCHY)
        children, parts = parse_hierarchy(read_bytes(tree_path))
        aliases: dict[str, str] = {}
        for other in sorted(set(_PACKAGED_LISTS.values())):
            for mid, name in parse_class_descriptions(read_bytes(packaged_path(other))).items():
                if mid in names:
                    aliases.setdefault(_fold(name), mid)
        return cls(version if class_descriptions is None else "custom",
                   names, children, parts, aliases)

    def name(self, mid: str) -> str:
        return ROOT_NAME if mid == ROOT_MID else self.names.get(mid, mid)

    def resolve(self, query: str) -> str:
        """Map a class name (any case, V4 or V7 spelling) or a MID to a MID.

        Raises:
          UnknownClassError: with the closest names, so the user can fix a typo at once.
        """
        q = query.strip()
        if q in self.names or q == ROOT_MID:
            return q
        folded = _fold(q)
        exact = [m for m, n in self.names.items() if _fold(n) == folded]
        if exact:
            return exact[0]
        if folded in self.aliases:
            return self.aliases[folded]
        suggestions = self.suggest(q)
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        shown = query if len(query) <= 80 else query[:60] + f"... ({len(query):,} characters)"
        raise UnknownClassError(
            f"{shown!r} is not a boxable class in Open Images {self.version}.{hint} "
            f"List classes with: open-sandwiches classes --search TEXT")

    def suggest(self, query: str, n: int = 5) -> list[str]:
        """Closest display names: fuzzy matches first, then names containing the query."""
        folded = {_fold(name): name for name in self.names.values()}
        close = difflib.get_close_matches(_fold(query), list(folded), n=n, cutoff=0.6)
        out = [folded[c] for c in close]
        for name in self.search(query):
            if len(out) >= n:
                break
            if self.names[name] not in out:
                out.append(self.names[name])
        return out

    def search(self, text: str) -> list[str]:
        """MIDs whose name (or MID) contains the text, case-insensitively, sorted by name."""
        t = _fold(text)
        hits = [m for m, n in self.names.items() if t in _fold(n) or t in m.casefold()]
        return sorted(hits, key=lambda m: _fold(self.names[m]))

    def descendants(self, mid: str) -> dict[str, int]:
        """Subcategory descendants of a class (never Parts), each with its shortest distance.

        A class reachable along several paths (Knife sits under five parents) appears once.
        """
        dist: dict[str, int] = {}
        queue = collections.deque([(mid, 0)])
        seen = {mid}
        while queue:
            node, d = queue.popleft()
            for child in self.children.get(node, ()):
                if child not in seen:
                    seen.add(child)
                    dist[child] = d + 1
                    queue.append((child, d + 1))
        return dist

    def tree_lines(self, mid: str, marked: Iterable[str] = ()) -> list[str]:
        """An indented subtree for display: Subcategories nested, Parts listed as parts."""
        marked = set(marked)
        lines: list[str] = []

        def walk(node: str, depth: int, path: frozenset) -> None:
            star = " *" if node in marked else ""
            lines.append(f"{'  ' * depth}{self.name(node)} ({node}){star}")
            for part in self.parts.get(node, ()):
                lines.append(f"{'  ' * (depth + 1)}[part] {self.name(part)} ({part})")
            for child in self.children.get(node, ()):
                if child not in path:  # the file has no cycles, but a user's might
                    walk(child, depth + 1, path | {child})

        walk(mid, 0, frozenset({mid}))
        return lines

    def tree_json(self, mid: str, path: frozenset = frozenset()) -> dict:
        """The subtree as nested JSON: name, mid, parts and children."""
        path = path | {mid}
        return {
            "mid": mid, "name": self.name(mid),
            "parts": [{"mid": p, "name": self.name(p)} for p in self.parts.get(mid, ())],
            "children": [self.tree_json(c, path) for c in self.children.get(mid, ())
                         if c not in path],
        }


def parse_hierarchy(data: bytes) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Parse bbox_labels_600_hierarchy.json into Subcategory and Part adjacency.

    The same MID may appear at several places in the JSON (under several parents, or with
    its own Subcategory listed in only one place): children are the union over all places.
    """
    children: dict[str, list[str]] = collections.defaultdict(list)
    parts: dict[str, list[str]] = collections.defaultdict(list)
    stack = [json.loads(data.decode("utf-8-sig"))]
    while stack:
        node = stack.pop()
        mid = node["LabelName"]
        for key, out in (("Subcategory", children), ("Part", parts)):
            for child in node.get(key, ()):
                if child["LabelName"] not in out[mid]:
                    out[mid].append(child["LabelName"])
                stack.append(child)
    return ({k: tuple(v) for k, v in children.items()}, {k: tuple(v) for k, v in parts.items()})


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """What the dataset's labels are and which MIDs feed each one.

    Attributes:
      labels: display names, in label-index order (the user's order, sub-classes after
        their requested class, sorted by name).
      label_mids: the MID whose display name each label is.
      mid_to_index: every selected MID -> its label index. Its keys are the box scan filter.
      notes: human-readable remarks on overlaps and duplicates, shown to the user.
    """

    labels: tuple[str, ...]
    label_mids: tuple[str, ...]
    mid_to_index: dict[str, int]
    notes: tuple[str, ...] = ()

    @property
    def mids(self) -> list[str]:
        return sorted(self.mid_to_index)

    def to_json(self, ontology: Ontology) -> dict:
        return {
            "labels": [{"index": i, "name": n, "mid": self.label_mids[i],
                        "mids": [{"mid": m, "name": ontology.name(m)}
                                 for m in self.mids if self.mid_to_index[m] == i]}
                       for i, n in enumerate(self.labels)],
            "notes": list(self.notes),
        }


def build_label_set(ontology: Ontology, classes: Iterable[str], include_subclasses: bool = False,
                    exclude: Iterable[str] = (), relabel_to_parent: bool = False) -> LabelSet:
    """Resolve the user's class choice into labels.

    Args:
      ontology: the version's classes and hierarchy.
      classes: names or MIDs the user asked for, in label order.
      include_subclasses: add each class's Subcategory descendants (never Parts).
      exclude: names or MIDs removed, with their descendants, from those expansions.
      relabel_to_parent: label descendants as the class the user asked for; otherwise each
        descendant is a label of its own.

    When one MID is reachable from several requested classes (Sandwich with sub-classes
    includes Hamburger, also requested), it goes to the most specific one: the requested
    class nearest to it in the hierarchy (itself, if requested), ties to the earlier one.

    Raises:
      UnknownClassError: a name that matches nothing (with suggestions).
      ClassSelectionError: no classes, or a class both requested and excluded.
    """
    requested: list[str] = []
    notes: list[str] = []
    for query in classes:
        mid = ontology.resolve(query)
        if mid in requested:
            notes.append(f"{ontology.name(mid)} was asked for twice; it counts once.")
        else:
            requested.append(mid)
    if not requested:
        raise ClassSelectionError("no classes given: pass --classes NAME [NAME ...]")
    excluded: set[str] = set()
    for query in exclude:
        mid = ontology.resolve(query)
        if mid in requested:
            raise ClassSelectionError(
                f"{ontology.name(mid)} is both requested (--classes) and excluded (--exclude)")
        excluded |= {mid} | set(ontology.descendants(mid))

    owner: dict[str, tuple[int, int]] = {}  # mid -> (distance, requested position)
    claimed_by: dict[str, list[int]] = collections.defaultdict(list)
    for pos, root in enumerate(requested):
        candidates = {root: 0}
        if include_subclasses:
            candidates.update(ontology.descendants(root))
        for mid, dist in candidates.items():
            if mid != root and (mid in excluded or mid not in ontology.names):
                continue
            claimed_by[mid].append(pos)
            if mid not in owner or (dist, pos) < owner[mid]:
                owner[mid] = (dist, pos)
    for mid, positions in sorted(claimed_by.items()):
        if len(positions) < 2:
            continue
        chosen = requested[owner[mid][1]]
        label = ontology.name(chosen if relabel_to_parent else mid)
        if mid == chosen:
            others = " and ".join(ontology.name(requested[p]) for p in positions
                                  if requested[p] != mid)
            notes.append(f"{ontology.name(mid)} is also a sub-class of {others}; its boxes "
                         f"count once, labelled {label} (the most specific requested class).")
        else:
            claimers = " and ".join(ontology.name(requested[p]) for p in positions)
            notes.append(f"{ontology.name(mid)} is a sub-class of {claimers}; its boxes count "
                         f"once, under {ontology.name(chosen)} (the nearest requested class), "
                         f"labelled {label}.")

    labels: list[str] = []
    label_mids: list[str] = []
    mid_to_index: dict[str, int] = {}
    for pos, root in enumerate(requested):
        owned = [m for m, (_, p) in owner.items() if p == pos]
        descendants = sorted((m for m in owned if m != root), key=lambda m: _fold(ontology.name(m)))
        labels.append(ontology.name(root))
        label_mids.append(root)
        mid_to_index[root] = len(labels) - 1
        for mid in descendants:
            if relabel_to_parent:
                mid_to_index[mid] = mid_to_index[root]
            else:
                labels.append(ontology.name(mid))
                label_mids.append(mid)
                mid_to_index[mid] = len(labels) - 1
    if len(set(labels)) != len(labels):
        raise ClassSelectionError(f"two labels share a display name: {labels}")
    return LabelSet(tuple(labels), tuple(label_mids), mid_to_index, tuple(notes))
