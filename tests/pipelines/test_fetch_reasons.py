"""The one table of failure reasons: every stage, the fetcher's cache and the README agree on it."""
import dataclasses
import os

from pipelines import fetch, fetch_http, fetch_stage
from pipelines.demo import server
from schemas import failures
from schemas.records import STAGE_FETCH, ImageRow

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _troubleshooting_tables() -> str:
    text = open(README, encoding="utf-8").read()
    section = text.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    return section


def test_the_readme_troubleshooting_table_is_the_reason_table():
    """Regenerate with `python -m schemas.failures` when the table changes."""
    assert failures.troubleshooting_table() in _troubleshooting_tables()
    listed = {line.split("`")[1] for line in _troubleshooting_tables().splitlines()
              if line.startswith("| `")}
    assert listed == {r.key for r in failures.TABLE.values()}
    # image-table records that do not parse fail their photo's boxes as join/bad_image_row
    assert {r.stage for r in failures.TABLE.values()} == {"scan_boxes", "join", "fetch", "crop"}


def test_every_stage_declares_its_reasons_from_the_table():
    from pipelines import crop, join, scan_rows, scan_stage
    declared = {("scan_boxes", scan_rows.BAD_BOX), ("scan_boxes", scan_rows.BAD_IMAGE_ID),
                ("scan_boxes", scan_stage.BAD_ROW), ("join", join.NO_IMAGE_ROW),
                ("join", join.BAD_IMAGE_ROW), ("join", join.DUPLICATE_BOX)}
    declared |= {("crop", v) for k, v in vars(crop).items() if k.isupper() and isinstance(v, str)
                 and ("crop", v) in failures.TABLE}
    declared |= {("fetch", r) for r in fetch.REASONS}
    assert declared == set(failures.TABLE)


def test_the_fetcher_uses_exactly_the_table_s_reasons():
    assert fetch.REASONS == failures.names(STAGE_FETCH)
    constants = {v for k, v in vars(fetch_http).items() if k.isupper() and isinstance(v, str)
                 and v in fetch.REASONS}
    assert constants == set(fetch.REASONS)
    # one Beam counter per reason: fetch/failed_<reason> in build_report.json
    assert set(fetch_stage._FetchPhotos(fetch.FetchConfig())._reasons) == set(fetch.REASONS)
    assert {r for r, _ in server.FAULT_OUTCOMES.values() if r} <= set(fetch.REASONS)


def test_every_setting_a_reason_depends_on_exists():
    config_fields = {f.name for f in dataclasses.fields(fetch.FetchConfig)}
    row_fields = {f.name for f in dataclasses.fields(ImageRow)}
    for r in failures.TABLE.values():
        for name in r.settings:
            if name.startswith("row."):
                assert name[4:] in row_fields, (r.name, name)
            else:
                assert name in config_fields, (r.name, name)
        assert not (r.final and r.retryable), r.name  # a retryable answer is not settled
        assert r.meaning and r.action
