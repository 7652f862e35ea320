"""Fetching against a real HTTP server on 127.0.0.1 with injected faults."""
import dataclasses
import hashlib

import pytest

from pipelines import fetch, netsafety
from pipelines.demo import server
from tests.conftest import fetch_test_config, image_rows





@pytest.fixture
def site(photo_site):
    files, srv = photo_site
    return files, srv, image_rows(files.images_csv)


# fault -> (reason, requests made with 2 attempts); None: fetched after a retry
EXPECTED = server.FAULT_OUTCOMES


def test_every_server_fault_has_a_known_outcome_and_real_reasons():
    assert set(EXPECTED) == set(server.FAULTS)
    assert {r for r, _ in EXPECTED.values() if r} <= set(fetch.REASONS)
    assert not set(server.SLOW_FAULTS) & set(EXPECTED)  # mixed-fault runs stay quick


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_each_fault_gives_its_reason_within_the_retry_budget(site, tmp_path, fault):
    files, srv, images = site
    image = images[0]
    srv.reset(faults={image.image_id: fault})
    waits = []
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path), sleep=waits.append)
    reason, requests = EXPECTED[fault]
    if reason is None:
        got = fetcher.fetch(image)
        assert got.source == "original" and hashlib.md5(got.data).digest()
    else:
        with pytest.raises(fetch.FetchFailed) as err:
            fetcher.fetch(image)
        assert err.value.reason == reason, err.value.detail
    assert srv.total_requests() == requests
    url = image.original_url
    if fault == "rate_limited":
        assert waits == [1.0]  # Retry-After honoured
    if fault == "retry_after_date":  # an HTTP-date one second ahead, at 1 s resolution
        assert len(waits) == 1 and 0.0 <= waits[0] <= 1.0
    if fault in ("retry_after_nan", "error_then_ok"):  # nonsense or none: our own backoff
        assert waits == [fetcher._backoff(url, 0)]
    # the next photo is unaffected: the run goes on
    assert fetcher.fetch(images[1]).source == "original"


def test_a_failed_source_falls_back_to_the_next(site, tmp_path):
    files, srv, images = site
    with_thumb = next(i for i in images if i.thumbnail_url)
    srv.reset(faults={with_thumb.image_id: "not_found"})
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, image_source=("original", "thumbnail")))
    assert fetcher.fetch(with_thumb).source == "thumbnail"
    no_thumb = next(i for i in images if not i.thumbnail_url)
    srv.reset(faults={no_thumb.image_id: "gone"})
    cvdf = fetch_test_config(tmp_path, image_source=("original", "thumbnail", "cvdf"),
                   cvdf_base_url=srv.base_url)
    got = fetch.Fetcher(cvdf).fetch(no_thumb)
    assert (got.source, got.url) == ("cvdf", f"{srv.base_url}/{no_thumb.subset}/{no_thumb.image_id}.jpg")


def test_all_sources_failing_reports_each(site, tmp_path):
    files, srv, images = site
    image = next(i for i in images if i.thumbnail_url)
    srv.reset(faults={image.image_id: "html"}, fault_routes=("original", "thumbnail"))
    with pytest.raises(fetch.FetchFailed) as err:
        fetch.Fetcher(fetch_test_config(tmp_path, image_source=("original", "thumbnail"))).fetch(image)
    assert err.value.reason == fetch.NOT_AN_IMAGE
    assert "original: not_an_image" in err.value.detail and "thumbnail: not_an_image" in err.value.detail
    srv.reset()


def test_rerun_with_cache_makes_zero_requests(site, tmp_path):
    files, srv, images = site
    srv.reset(faults={images[0].image_id: "not_found", images[1].image_id: "placeholder"})
    config = fetch_test_config(tmp_path)
    first = {}
    for image in images[:8]:
        try:
            first[image.image_id] = fetch.Fetcher(config).fetch(image).data
        except fetch.FetchFailed as err:
            first[image.image_id] = err.reason
    assert srv.total_requests() == 8
    srv.reset()  # even with the faults gone, settled answers come from the cache
    fetcher = fetch.Fetcher(config)
    for image in images[:8]:
        try:
            assert fetcher.fetch(image).data == first[image.image_id]
        except fetch.FetchFailed as err:
            assert err.reason == first[image.image_id]
    assert srv.total_requests() == 0 and fetcher.stats["cache_hits"] == 8
    leftovers = [p for p in (tmp_path / "cache" / ".tmp").rglob("*")]
    assert leftovers == []


def test_transient_failures_are_not_cached(site, tmp_path):
    files, srv, images = site
    srv.reset(faults={images[2].image_id: "hang"})
    config = fetch_test_config(tmp_path)
    with pytest.raises(fetch.FetchFailed):
        fetch.Fetcher(config).fetch(images[2])
    srv.reset()
    assert fetch.Fetcher(config).fetch(images[2]).source == "original"


def test_known_placeholder_body_is_rejected(site, tmp_path):
    files, srv, images = site
    digest = hashlib.sha256(srv.photo(images[3].image_id)).hexdigest()
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, placeholder_sha256=(digest,)))
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(images[3])
    assert err.value.reason == fetch.PLACEHOLDER


def test_private_addresses_are_refused_without_the_flag(site, tmp_path):
    files, srv, images = site
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, allow_private_network=False))
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(images[0])
    assert err.value.reason == fetch.BLOCKED_URL and "127.0.0.1" in err.value.detail
    assert srv.total_requests() == 0


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/",
                                    "http://10.1.2.3/x.jpg", "http://[::1]/x.jpg",
                                    "file:///etc/passwd", "ftp://example.org/x.jpg",
                                    "http://127.0.0.2/x.jpg", "http://[::1"])
def test_redirects_are_checked_at_every_hop(site, tmp_path, monkeypatch, target):
    files, srv, images = site
    # Treat the test server's own address as public, so only the redirect can be refused.
    real = netsafety._is_internal
    monkeypatch.setattr(netsafety, "_is_internal", lambda a: a != "127.0.0.1" and real(a))
    srv.reset(redirects={images[0].image_id: target})
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, allow_private_network=False))
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(images[0])
    assert err.value.reason == fetch.BLOCKED_URL, err.value.detail
    assert srv.total_requests() == 1  # the first hop only; the target was never contacted


@pytest.mark.parametrize("url", ["http://localhost/x.jpg", "http://LOCALHOST:80/x.jpg",
                                 "http://0.0.0.0/", "http://[::ffff:10.0.0.1]/",
                                 "http://192.168.1.1/", "http://100.64.0.1/"])
def test_names_and_addresses_of_internal_hosts_are_refused(url):
    with pytest.raises(netsafety.BlockedURL):
        netsafety.check_url(url)
    netsafety.check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "https://[fe80::1]/",
                                 "http://[2002:a9fe:a9fe::]/", "http://[::ffff:169.254.169.254]/",
                                 "http://[fd00:ec2::254]/", "http://[64:ff9b:1::a9fe:a9fe]/"])
def test_link_local_addresses_are_refused_even_with_allow_private_network(url):
    """--allow_private_network is for a mirror on the LAN or 127.0.0.1, never for the
    cloud's metadata service."""
    with pytest.raises(netsafety.BlockedURL, match="link-local"):
        netsafety.check_url(url, allow_private=True)


def test_connection_to_an_internal_address_is_refused_even_after_the_check(site, tmp_path, monkeypatch):
    """DNS rebinding: the name looked public when checked, the connection reached 127.0.0.1."""
    files, srv, images = site
    monkeypatch.setattr(netsafety, "check_prepared", lambda url, allow_private=False: None)
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, allow_private_network=False))
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(images[0])
    assert err.value.reason == fetch.BLOCKED_URL and "connection reached" in err.value.detail
    assert srv.total_requests() == 0


def test_bad_image_ids_never_name_a_file(tmp_path):
    image = dataclasses.replace(image_rows_stub(), image_id="../../etc/passwd")
    with pytest.raises(fetch.FetchFailed) as err:
        fetch.Fetcher(fetch_test_config(tmp_path)).fetch(image)
    assert err.value.reason == fetch.BAD_IMAGE_ID
    assert not (tmp_path / "cache").exists()


def image_rows_stub():
    from schemas.records import ImageRow
    return ImageRow("0123456789abcdef", "train", "http://127.0.0.1:9/x.jpg", "", "", "", "", "",
                    None, "", "", 0)


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999/x.jpg", "http:///x.jpg",
                                 "javascript:alert(1)", ""])
def test_malformed_urls_are_refused_not_crashed_on(url, tmp_path):
    with pytest.raises(netsafety.BlockedURL):
        netsafety.check_url(url)
    image = dataclasses.replace(image_rows_stub(), original_url=url)
    with pytest.raises(fetch.FetchFailed) as err:
        fetch.Fetcher(fetch_test_config(tmp_path, allow_private_network=False)).fetch(image)
    assert err.value.reason in (fetch.BLOCKED_URL, fetch.NO_URL)


def test_url_template_with_unknown_fields_is_refused_early():
    with pytest.raises(ValueError, match="url_template"):
        fetch.FetchConfig(image_source=("template",), url_template="http://h/{image_id}/{size}.jpg")
    fetch.FetchConfig(image_source=("template",), url_template="http://h/{subset}/{image_id}.jpg")
