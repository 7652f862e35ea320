"""Deadlines and Retry-After: trickling bodies are cut, slow sources hand over, headers parse."""
import email.utils
import time

import pytest

from pipelines import fetch, fetch_http
from tests.conftest import image_rows
from tests.conftest import fetch_test_config


@pytest.fixture
def site(photo_site):
    files, srv = photo_site
    srv.reset(trickle_s=0.1)
    return files, srv, image_rows(files.images_csv)


def test_a_trickling_body_is_cut_at_the_deadline(site, tmp_path):
    """A byte every 0.1 s never trips the 0.5 s read timeout; the whole photo would take
    hours. The 1 s deadline cuts it, with reason timeout, and it is not cached."""
    files, srv, images = site
    image = images[0]
    srv.reset(faults={image.image_id: "trickle"}, trickle_s=0.1)
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=1.0, fetch_attempts=3))
    start = time.monotonic()
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(image)
    assert time.monotonic() - start < 30  # generous: the trickle alone would take hours
    assert err.value.reason == fetch.TIMEOUT
    assert "cut at the deadline" in err.value.detail
    assert fetcher.stats["deadline_cuts"] == 1
    assert srv.total_requests() == 1  # no time was left for a retry
    srv.reset()
    assert fetch.Fetcher(fetch_test_config(tmp_path)).fetch(image).source == "original"  # not cached


def test_a_trickling_source_hands_over_to_the_next_within_the_deadline(site, tmp_path):
    files, srv, images = site
    image = images[1]
    srv.reset(faults={image.image_id: "trickle"}, trickle_s=0.1)
    config = fetch_test_config(tmp_path, deadline_s=4.0, image_source=("original", "cvdf"),
                     cvdf_base_url=f"{srv.base_url}/cvdf")
    fetcher = fetch.Fetcher(config)
    start = time.monotonic()
    got = fetcher.fetch(image)
    assert time.monotonic() - start < 30
    # the original may use half the deadline, so the mirror still had the other half
    assert (got.source, fetcher.stats["deadline_cuts"], fetcher.stats["fallbacks"]) == ("cvdf", 1, 1)
    assert got.url == f"{srv.base_url}/cvdf/{image.subset}/{image.image_id}.jpg"


def test_a_source_that_times_out_falls_back_to_the_next(site, tmp_path):
    files, srv, images = site
    image = images[2]
    srv.reset(faults={image.image_id: "hang"})  # 2 s stall, past the 0.5 s read timeout
    config = fetch_test_config(tmp_path, image_source=("original", "cvdf"), cvdf_base_url=srv.base_url)
    got = fetch.Fetcher(config).fetch(image)
    assert got.source == "cvdf"
    assert srv.requests[f"/original/{image.image_id}.jpg"] == 2  # both attempts timed out


def test_the_deadline_bounds_retries_too(site, tmp_path):
    """A host that answers 503 with a long Retry-After: no retry is scheduled past the
    photo's deadline, so the photo fails at once instead of sleeping."""
    files, srv, images = site
    srv.reset(outage=True)
    waits = []
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=3.0, backoff_s=30.0, fetch_attempts=4),
                            sleep=waits.append)  # the first backoff, 15-30 s, is past it
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(images[3])
    assert err.value.reason == fetch.SERVER_ERROR
    assert "no time left" in err.value.detail and waits == []
    assert srv.total_requests() == 1


NOW = 1_800_000_000.0  # a fixed "now" for the parser


@pytest.mark.parametrize("value, expected", [
    ("1", 1.0), ("0", 0.0), (" 7 ", 7.0), ("2.5", 2.5), ("120", 30.0),   # capped at 30
    ("99999999999", 30.0),
    (email.utils.formatdate(NOW + 12, usegmt=True), 12.0),               # an HTTP-date
    (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),                # in the past
    (email.utils.formatdate(NOW + 86400 * 365, usegmt=True), 30.0),      # far future: capped
    ("nan", None), ("NaN", None), ("inf", None), ("-1", None), ("-0.5", None), ("1e9", None),
    ("", None), ("soon", None), ("Wed, 99 Foo 2015 07:28:00 GMT", None), ("1, 2", None),
    ("\x00\xff", None), (None, None),
])
def test_retry_after_parses_seconds_and_dates_and_ignores_nonsense(value, expected):
    assert fetch_http.retry_after_s(value, NOW, 30.0) == expected


@pytest.mark.parametrize("value, expected", [
    ("123", 123), ("5, 5", 5), (" 7 ", 7), ("abc", None), ("5, 6", None), ("-1", None),
    ("", None), ("1e3", None), ("+5", None), ("5_000", None), ("99999999999999999999", 99999999999999999999),
])
def test_content_length_parses_leniently(value, expected):
    assert fetch_http.declared_length({"Content-Length": value}) == expected
