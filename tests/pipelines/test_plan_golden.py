"""The plan gives today's answers: the outputs recorded in tests/data/golden_plan/ (by the
row-at-a-time plan of commit 36e1f11) for every case in tests/plan_cases.py, on the
catalogs as written and on shuffled CRLF copies of them."""
import collections

import pytest

from pipelines import plan
from schemas.records import PLAN_SCHEMA
from tests import plan_cases
from tests.conftest import shuffled_copy


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    made = {kind: plan_cases.make_catalog(kind, str(root / kind)) for kind in ("small", "quirky")}
    made["quirky_shuffled"] = shuffled_copy(made["quirky"], root / "quirky_shuffled", seed=4)
    return made


def _failure_key(f: dict) -> tuple:
    """What a failure must keep: all but the text of scan failures, which names the file."""
    detail = f["detail"] if f["stage"] == "join" else ""
    return (f["stage"], f["image_id"], f["box_index"], f["url"], f["reason"], f["mid"], detail)


def _check(case, files, tmp_path, range_mb="1"):
    kind, flags = plan_cases.CASES[case]
    summary = plan.run([*files.flags(), "--output_dir", str(tmp_path), "--scan_range_mb",
                        range_mb, *flags])
    records, failures, expected_summary = plan_cases.read_golden(case)
    table = plan.read_plan(str(tmp_path))
    assert table.schema.equals(PLAN_SCHEMA)
    got = plan_cases.plan_records(table.drop_columns(["subset"]).to_pylist())  # new since
    assert len(got) == len(records)
    assert [a for a, b in zip(got, records) if a != b][:3] == []
    got_failures = plan.read_failures(str(tmp_path))
    assert collections.Counter(map(_failure_key, got_failures)) == collections.Counter(
        map(_failure_key, failures))
    assert {k: summary[k] for k in expected_summary} == expected_summary
    assert all(s["complete"] for s in summary["scan"].values())


@pytest.mark.parametrize("case", sorted(plan_cases.CASES))
def test_plan_equals_the_recorded_plan(case, catalogs, tmp_path):
    kind, _ = plan_cases.CASES[case]
    _check(case, catalogs[kind], tmp_path)


@pytest.mark.parametrize("case", ["quirky_limit", "quirky_relabel_limit", "quirky_default"])
def test_shuffled_crlf_copies_give_the_recorded_plan(case, catalogs, tmp_path):
    _check(case, catalogs["quirky_shuffled"], tmp_path)
