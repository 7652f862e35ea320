"""The Open Images class hierarchy as a Vega radial tree, in one self-contained HTML page.

    open-sandwiches classes --classes Sandwich --include_subclasses \
        --radial_tree tree.html [--plan out/plan]

Subcategory edges form the tree; Parts hang off their whole as differently drawn leaves
that a checkbox hides. The requested classes and their selected descendants are
highlighted; hovering a node shows its name, MID and (with --plan) its box count. Vega is
inlined from the copy bundled in pipelines/data/vega, so the page works offline. The Vega
spec is also written beside the page as FILE.vg.json.
"""
from __future__ import annotations

import html
import json
import os

from pipelines.ontology import ROOT_MID, Ontology, packaged_path


def tree_nodes(ontology: Ontology, selected: set[str], requested: set[str],
               counts: dict[str, int] | None = None) -> list[dict]:
    """Flatten the hierarchy into Vega's stratify form: one node per *path*, since a class
    under several parents appears once under each."""
    counts = counts or {}
    nodes: list[dict] = []

    def add(mid: str, parent: int | None, kind: str, path: frozenset) -> None:
        node_id = len(nodes)
        nodes.append({
            "id": node_id, "parent": parent, "mid": mid, "name": ontology.name(mid),
            "kind": kind,
            "status": "requested" if mid in requested else "selected" if mid in selected else "other",
            "boxes": counts.get(mid),
        })
        if kind == "part":
            return
        for part in ontology.parts.get(mid, ()):
            add(part, node_id, "part", path)
        for child in ontology.children.get(mid, ()):
            if child not in path:
                add(child, node_id, "class", path | {child})

    add(ROOT_MID, None, "class", frozenset({ROOT_MID}))
    return nodes


def vega_spec(nodes: list[dict], title: str, size: int = 1100) -> dict:
    """A radial tree spec after Vega's own radial tree example, with parts toggled."""
    return {
        "$schema": "https://vega.github.io/schema/vega/v6.json",
        "description": title, "width": size, "height": size, "padding": 5, "autosize": "none",
        "title": {"text": title, "anchor": "start"},
        "signals": [
            {"name": "showParts", "value": True,
             "bind": {"input": "checkbox", "name": "show parts (Part edges, dashed) "}},
            {"name": "originX", "update": "width / 2"},
            {"name": "originY", "update": "height / 2"},
        ],
        "data": [
            {"name": "all", "values": nodes},
            {"name": "tree", "source": "all",
             "transform": [
                 {"type": "filter", "expr": "showParts || datum.kind !== 'part'"},
                 {"type": "stratify", "key": "id", "parentKey": "parent"},
                 {"type": "tree", "method": "cluster", "size": [1, {"signal": "width / 2 - 120"}],
                  "as": ["alpha", "radius", "depth", "children"]},
                 {"type": "formula", "expr": "(360 * datum.alpha + 270) % 360", "as": "angle"},
                 {"type": "formula", "expr": "PI * datum.angle / 180", "as": "radians"},
                 {"type": "formula", "expr": "inrange(datum.angle, [90, 270])", "as": "leftside"},
                 {"type": "formula", "expr": "originX + datum.radius * cos(datum.radians)",
                  "as": "x"},
                 {"type": "formula", "expr": "originY + datum.radius * sin(datum.radians)",
                  "as": "y"},
             ]},
            {"name": "links", "source": "tree",
             "transform": [
                 {"type": "treelinks"},
                 {"type": "linkpath", "shape": "line", "orient": "radial",
                  "sourceX": "source.radians", "sourceY": "source.radius",
                  "targetX": "target.radians", "targetY": "target.radius"},
             ]},
        ],
        "scales": [{"name": "color", "type": "ordinal",
                    "domain": ["requested", "selected", "other"],
                    "range": ["#d62728", "#ff7f0e", "#b0b0b0"]}],
        "marks": [
            {"type": "path", "from": {"data": "links"},
             "encode": {"update": {
                 "x": {"signal": "originX"}, "y": {"signal": "originY"},
                 "path": {"field": "path"},
                 "stroke": {"signal": "datum.target.kind === 'part' ? '#6baed6' : '#ccc'"},
                 "strokeDash": {"signal": "datum.target.kind === 'part' ? [3, 3] : [1, 0]"}}}},
            {"type": "symbol", "name": "nodes", "from": {"data": "tree"},
             "encode": {"enter": {"size": {"value": 40}},
                        "update": {
                            "x": {"field": "x"}, "y": {"field": "y"},
                            "shape": {"signal": "datum.kind === 'part' ? 'square' : 'circle'"},
                            "fill": {"scale": "color", "field": "status"},
                            "tooltip": {"signal": "{'name': datum.name, 'MID': datum.mid, "
                                                  "'kind': datum.kind, 'boxes': datum.boxes}"}}}},
            {"type": "text", "from": {"data": "tree"},
             "encode": {"update": {
                 "x": {"field": "x"}, "y": {"field": "y"}, "text": {"field": "name"},
                 "fontSize": {"signal": "datum.status === 'other' ? 6 : 10"},
                 "fontWeight": {"signal": "datum.status === 'other' ? 'normal' : 'bold'"},
                 "fill": {"signal": "datum.status === 'other' ? '#666' : '#000'"},
                 "angle": {"signal": "datum.leftside ? datum.angle - 180 : datum.angle"},
                 "align": {"signal": "datum.leftside ? 'right' : 'left'"},
                 "dx": {"signal": "datum.leftside ? -6 : 6"}, "baseline": {"value": "middle"}}}},
        ],
    }


def page(spec: dict, title: str) -> str:
    """A self-contained HTML page: Vega inlined, the spec embedded, rendered as SVG."""
    with open(packaged_path(os.path.join("vega", "vega.min.js")), encoding="utf-8") as f:
        vega_js = f.read()
    spec_js = json.dumps(spec).replace("</", "<\\/")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script>{vega_js}</script></head>
<body><div id="view"></div>
<script>
new vega.View(vega.parse({spec_js}), {{renderer: "svg", container: "#view", hover: true}})
  .runAsync().then(v => {{ document.body.setAttribute("data-rendered", v.data("tree").length); }})
  .catch(e => {{ console.error(e); document.body.setAttribute("data-error", String(e)); }});
</script></body></html>
"""


def write(path: str, ontology: Ontology, selected: set[str], requested: set[str],
          counts: dict[str, int] | None = None) -> tuple[str, str, int]:
    """Write FILE.html and FILE.vg.json; return their paths and the node count."""
    nodes = tree_nodes(ontology, selected, requested, counts)
    names = ", ".join(sorted(ontology.name(m) for m in requested)) or "no selection"
    title = f"Open Images {ontology.version} boxable classes ({names} highlighted)"
    spec = vega_spec(nodes, title)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page(spec, title))
    spec_path = os.path.splitext(path)[0] + ".vg.json"
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    return path, spec_path, len(nodes)
