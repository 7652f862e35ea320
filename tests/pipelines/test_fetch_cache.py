"""The download cache keeps only final answers, and only while the settings behind them hold."""
import dataclasses
import hashlib
import json
import os

import pytest

from pipelines import fetch, fetch_cache
from schemas.openimages import md5_base64
from tests.conftest import image_rows
from tests.conftest import fetch_test_config


@pytest.fixture
def site(photo_site):
    files, srv = photo_site
    return files, srv, image_rows(files.images_csv)


def _outcome(config, image) -> str:
    try:
        return fetch.Fetcher(config).fetch(image).source
    except fetch.FetchFailed as err:
        return err.reason


def _failure_file(tmp_path, source, image) -> dict | None:
    path = tmp_path / "cache" / source / image.image_id[:2] / f"{image.image_id}.failed.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_an_outage_is_not_cached_and_a_rerun_fetches(site, tmp_path):
    files, srv, images = site
    srv.reset(outage=True)
    config = fetch_test_config(tmp_path)
    for image in images[:4]:
        assert _outcome(config, image) == fetch.SERVER_ERROR
        assert _failure_file(tmp_path, "original", image) is None
    assert srv.total_requests() == 8  # 2 attempts each
    srv.reset()
    assert [_outcome(config, image) for image in images[:4]] == ["original"] * 4
    assert srv.total_requests() == 4


def test_blocked_url_is_asked_again_with_allow_private_network(site, tmp_path):
    files, srv, images = site
    image = images[0]
    assert _outcome(fetch_test_config(tmp_path, allow_private_network=False), image) == fetch.BLOCKED_URL
    record = _failure_file(tmp_path, "original", image)
    assert record["settings"] == {"allow_private_network": False}
    # the same settings: settled, from the cache
    assert _outcome(fetch_test_config(tmp_path, allow_private_network=False), image) == fetch.BLOCKED_URL
    assert srv.total_requests() == 0
    assert _outcome(fetch_test_config(tmp_path, allow_private_network=True), image) == "original"
    assert srv.total_requests() == 1
    assert _failure_file(tmp_path, "original", image) is None  # the photo replaced it


def test_too_large_is_asked_again_under_a_higher_cap(site, tmp_path):
    files, srv, images = site
    image = images[1]
    assert _outcome(fetch_test_config(tmp_path, max_image_bytes=1000), image) == fetch.TOO_LARGE
    assert _outcome(fetch_test_config(tmp_path, max_image_bytes=1000), image) == fetch.TOO_LARGE
    assert srv.total_requests() == 1
    assert _outcome(fetch_test_config(tmp_path, max_image_bytes=5 << 20), image) == "original"
    assert srv.total_requests() == 2
    # cached bytes over a lower cap are not served from the cache either
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, max_image_bytes=1000))
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(image)
    assert err.value.reason == fetch.TOO_LARGE and fetcher.stats["cache_stale"] == 1


def test_a_cached_checksum_failure_holds_only_for_the_row_that_produced_it(site, tmp_path):
    files, srv, images = site
    image = images[2]
    srv.reset(faults={image.image_id: "wrong_md5"})
    config = fetch_test_config(tmp_path)
    assert _outcome(config, image) == fetch.CHECKSUM
    assert _outcome(config, image) == fetch.CHECKSUM
    assert srv.total_requests() == 1
    served = srv.photo(image.image_id)[:-2] + b"\x00\x00"  # what wrong_md5 serves
    fixed = dataclasses.replace(image, original_md5=md5_base64(served))  # a corrected table
    assert _outcome(config, fixed) == "original"
    assert srv.total_requests() == 2


def test_cached_original_bytes_are_checked_against_the_current_row(site, tmp_path):
    files, srv, images = site
    image = images[3]
    config = fetch_test_config(tmp_path)
    assert _outcome(config, image) == "original"
    fetcher = fetch.Fetcher(config)
    fetcher.fetch(image)
    assert fetcher.stats["cache_hits"] == 1 and srv.total_requests() == 1
    changed = dataclasses.replace(image, original_md5=md5_base64(b"another photo"))
    fetcher = fetch.Fetcher(config)
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(changed)
    # the cached bytes no longer match: downloaded again, and the download fails the check
    assert err.value.reason == fetch.CHECKSUM and fetcher.stats["cache_stale"] == 1
    assert srv.total_requests() == 2
    resized = dataclasses.replace(image, original_size=image.original_size + 1)
    assert _outcome(config, resized) == fetch.CHECKSUM and srv.total_requests() == 3


def test_a_placeholder_by_digest_is_asked_again_when_the_digests_change(site, tmp_path):
    files, srv, images = site
    image = images[4]
    digest = hashlib.sha256(srv.photo(image.image_id)).hexdigest()
    assert _outcome(fetch_test_config(tmp_path, placeholder_sha256=(digest,)), image) == fetch.PLACEHOLDER
    assert _outcome(fetch_test_config(tmp_path, placeholder_sha256=(digest,)), image) == fetch.PLACEHOLDER
    assert srv.total_requests() == 1
    assert _outcome(fetch_test_config(tmp_path), image) == "original"
    assert srv.total_requests() == 2


def test_a_mirror_failure_is_asked_again_at_another_mirror(site, tmp_path):
    files, srv, images = site
    image = images[5]
    srv.reset(faults={image.image_id: "not_found"}, fault_routes=("cvdf",))
    missing = fetch_test_config(tmp_path, image_source=("cvdf",), cvdf_base_url=f"{srv.base_url}/cvdf")
    assert _outcome(missing, image) == fetch.NOT_FOUND
    assert _outcome(missing, image) == fetch.NOT_FOUND
    assert srv.total_requests() == 1
    here = fetch_test_config(tmp_path, image_source=("cvdf",), cvdf_base_url=srv.base_url)
    assert _outcome(here, image) == "cvdf"
    assert srv.total_requests() == 2


def _write_failure(tmp_path, image, record: dict) -> fetch_cache.Cache:
    """Put `record` where the cache keeps the original's failure for `image`, as is."""
    cache = fetch_cache.Cache(str(tmp_path / "cache"))
    (tmp_path / "cache" / "original" / image.image_id[:2]).mkdir(parents=True)
    with open(cache.path("original", image.image_id) + ".failed.json", "w") as f:
        json.dump(record, f)
    return cache


def test_failures_cached_by_an_older_version_are_not_trusted(site, tmp_path):
    """Before the table, a 5xx that outlasted its retries was cached as final."""
    files, srv, images = site
    image = images[6]
    _write_failure(tmp_path, image, {"reason": "http_error", "detail": "HTTP 503 after 4 attempts",
                                     "url": image.original_url})
    assert _outcome(fetch_test_config(tmp_path), image) == "original"
    assert srv.total_requests() == 1


@pytest.mark.parametrize("record", [
    {"version": 2, "reason": ["x"], "settings": 5},
    {"version": 2, "reason": "not_found", "settings": None},
    {"version": 2, "reason": "not_found", "settings": {}, "detail": 7},
])
def test_a_damaged_failure_record_is_as_good_as_none(site, tmp_path, record):
    """A record of the right version but the wrong shape (edited by hand, or by another
    tool) is ignored: the photo is asked for again, and the answer replaces the record."""
    files, srv, images = site
    image = images[6]
    cache = _write_failure(tmp_path, image, record)
    assert cache.read_failure("original", image.image_id) is None
    assert _outcome(fetch_test_config(tmp_path), image) == "original"
    assert srv.total_requests() == 1 and _failure_file(tmp_path, "original", image) is None


@pytest.mark.timeout(60)
def test_a_fifo_where_a_cache_entry_belongs_is_no_entry(site, tmp_path):
    """Reading a FIFO blocks until someone writes to it: the cache must not open one."""
    files, srv, images = site
    image = images[6]
    cache = fetch_cache.Cache(str(tmp_path / "cache"))
    base = cache.path("original", image.image_id)
    (tmp_path / "cache" / "original" / image.image_id[:2]).mkdir(parents=True)
    os.mkfifo(base + ".img")
    os.mkfifo(base + ".failed.json")
    assert cache.read_image("original", image.image_id) is None
    assert cache.read_failure("original", image.image_id) is None
    assert fetch_cache.cached_photo_paths(str(tmp_path / "cache"), "original", image.image_id) == []
    assert _outcome(fetch_test_config(tmp_path), image) == "original"  # fetched, and cached
    assert cache.read_image("original", image.image_id) == srv.photo(image.image_id)


def test_a_cache_that_cannot_be_written_costs_no_photo(site, tmp_path):
    files, srv, images = site
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path))
    assert fetcher.fetch(images[7]).source == "original"
    assert fetcher.stats["cache_write_errors"] == 1


def test_a_mirrors_bytes_are_cached_per_url_template(site, tmp_path):
    """Photos fetched under one --url_template are never served for another: each
    template has a cache folder of its own, and previews find the bytes a build used."""
    from pipelines import preview
    files, srv, images = site
    image = images[7]

    def template(route):
        return fetch_test_config(tmp_path, image_source=("template",),
                                 url_template=f"{srv.base_url}/{route}/{{image_id}}.jpg")
    first = fetch.Fetcher(template("original")).fetch(image)
    assert first.data == srv.photo(image.image_id) and srv.total_requests() == 1
    # The new template's host does not have the photo: it is asked, and says so.
    srv.reset(faults={image.image_id: "not_found"}, fault_routes=("thumbnail",))
    assert _outcome(template("thumbnail"), image) == fetch.NOT_FOUND
    assert srv.total_requests() == 1
    # The first template's folder still holds its photo: no request.
    assert fetch.Fetcher(template("original")).fetch(image).data == first.data
    assert srv.total_requests() == 1
    folders = {fetch.cache_folder("template", template(r)) for r in ("original", "thumbnail")}
    assert len(folders) == 2 and all(f.startswith("template-") for f in folders)
    assert fetch.cache_folder("cvdf", fetch_test_config(tmp_path)) == "cvdf"  # the default
    assert preview._cached_photo(str(tmp_path / "cache"), image.image_id, "template",
                                 first.sha256) == first.data
