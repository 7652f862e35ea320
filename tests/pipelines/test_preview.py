"""Pictures: previews of plans and datasets, and the radial tree rendered by Chromium."""
import json
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from pipelines import preview, radial_tree
from pipelines.demo import photos
from pipelines.ontology import Ontology

UPRIGHT = (0.25, 0.75, 0.3, 0.8)


def _cache_photo(cache, image_id, data):
    folder = cache / "original" / image_id[:2]
    os.makedirs(folder, exist_ok=True)
    (folder / f"{image_id}.img").write_bytes(data)


@pytest.mark.parametrize("rotation", [0, 90])
def test_boxes_are_drawn_where_the_plan_says(tmp_path, rotation):
    image_id = "00000000000000aa"
    data = photos.render_photo(image_id, [("/m/0cdn1", 0, UPRIGHT)], (400, 200), rotation)
    _cache_photo(tmp_path / "cache", image_id, data)
    xmin, xmax, ymin, ymax = photos.stored_box(UPRIGHT, rotation)
    rows = [{"image_id": image_id, "label": "Hamburger", "label_index": 0, "xmin": xmin,
             "xmax": xmax, "ymin": ymin, "ymax": ymax, "rotation": rotation}]
    out = tmp_path / "grid.png"
    assert preview.photo_grid(rows, str(tmp_path / "cache"), 2, str(out)) == 1
    grid = Image.open(out).convert("RGB")
    assert grid.size == (2 * preview.CELL, preview.CELL)
    # the upright photo is 400x200, fitted into 256x256: 256x128, centred vertically
    w, h, oy = 256, 128, 64
    x0, x1 = UPRIGHT[0] * w, UPRIGHT[1] * w
    y0, y1 = oy + UPRIGHT[2] * h, oy + UPRIGHT[3] * h
    for x, y in (((x0 + x1) / 2, y0 + 1), ((x0 + x1) / 2, y1 - 1), (x0 + 1, (y0 + y1) / 2),
                 (x1 - 1, (y0 + y1) / 2)):
        assert grid.getpixel((int(x), int(y))) == preview.COLORS[0], (x, y)
    assert grid.getpixel((int((x0 + x1) / 2), int((y0 + y1) / 2))) != preview.COLORS[0]
    assert grid.getpixel((preview.CELL + 10, 10)) == (255, 255, 255)  # nothing in cell 2


def test_preview_command_from_a_plan(photo_site, tmp_path):
    from pipelines import plan
    from pipelines.fetch import Fetcher
    from tests.conftest import fetch_test_config
    from tests.conftest import image_rows
    files, srv = photo_site
    fetcher = Fetcher(fetch_test_config(tmp_path))
    for image in image_rows(files.images_csv)[:12]:
        fetcher.fetch(image)
    plan.run(["--classes", "Hamburger", "Sandwich", *files.flags(), "--output_dir",
              str(tmp_path / "plan")])
    assert preview.main(["--plan", str(tmp_path / "plan"), "--cache_dir",
                         str(tmp_path / "cache"), "--per_class", "3"]) == 0
    grid = Image.open(tmp_path / "plan" / "photos.png")
    assert grid.size == (3 * preview.CELL, 2 * preview.CELL)


def test_build_writes_previews(photo_site, tmp_path):
    from pipelines import build
    files, srv = photo_site
    assert build.main(["--classes", "Hamburger", "Sandwich", *files.flags(), "--output_dir",
                       str(tmp_path), "--allow_private_network", "--cache_dir",
                       str(tmp_path / "cache"), "--image_source", "original", "--image_size",
                       "64", "--quiet"]) == 0
    folder = tmp_path / "hamburger_sandwich" / "1.0.0" / "previews"
    report = json.loads((folder.parent / "build_report.json").read_text())
    rows = sum(1 for counts in report["examples"].values() for s in ("train", "validation", "test")
               if counts[s])
    assert Image.open(folder / "crops.png").size == (140 + 8 * 96, rows * 96)
    assert Image.open(folder / "photos.png").size == (4 * preview.CELL, 2 * preview.CELL)
    for name in ("counts.png", "failures.png"):
        assert Image.open(folder / name).size[0] >= 500
    assert (folder.parent / "COMPLETED").exists()


def test_radial_tree_nodes_and_spec(tmp_path):
    ont = Ontology.load()
    sandwich = ont.resolve("Sandwich")
    selected = {sandwich, *ont.descendants(sandwich)}
    html_path, spec_path, n = radial_tree.write(str(tmp_path / "tree.html"), ont, selected,
                                                {sandwich}, {"/m/0cdn1": 12})
    spec = json.load(open(spec_path))
    nodes = spec["data"][0]["values"]
    assert len(nodes) == n > 601  # classes under several parents appear once per path
    statuses = {(x["name"], x["status"]) for x in nodes if x["status"] != "other"}
    assert statuses == {("Sandwich", "requested"), ("Hamburger", "selected"),
                        ("Submarine sandwich", "selected")}
    assert any(x["kind"] == "part" for x in nodes)
    assert next(x for x in nodes if x["name"] == "Hamburger")["boxes"] == 12
    page = open(html_path).read()
    assert "vega" in page and "https://" not in page.replace("https://vega.github.io/schema", "")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium is not installed (Debian package `chromium`; .ci/run installs it)")


def test_radial_tree_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    ont = Ontology.load()
    sandwich = ont.resolve("Sandwich")
    html_path, _, n = radial_tree.write(str(tmp_path / "tree.html"), ont,
                                        {sandwich, *ont.descendants(sandwich)}, {sandwich})
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", f"file://{html_path}"],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert not re.search(r'<body[^>]*data-error', dom), re.findall(r'data-error="[^"]*"', dom)
    rendered = re.search(r'data-rendered="(\d+)"', dom)
    assert rendered and int(rendered.group(1)) == n, dom[-500:]
    symbols = re.search(r'<g class="mark-symbol role-mark nodes"[^>]*>(.*?)</g>', dom, re.S)
    assert symbols and symbols.group(1).count("<path") == n
    console_errors = [l for l in proc.stderr.splitlines() if "CONSOLE" in l and "ERROR" in l.upper()]
    assert not console_errors, console_errors
