"""The download window against real servers: its size, host pauses, backoff, deadlines."""
import dataclasses

import apache_beam as beam
import pytest
import requests
from apache_beam.transforms import window as beam_window

from pipelines import fetch, netsafety
from pipelines.demo import server
from pipelines.fetch_stage import FetchImages
from pipelines.fetch import Step
from pipelines.fetch_window import Host, Window
from schemas.records import ImageTask
from tests.conftest import collect, collected, image_rows, make_pipeline
from tests.conftest import fetch_test_config


@pytest.fixture
def two_hosts(photo_site):
    """The photo site and a second server on another port: another host."""
    files, srv = photo_site
    other = server.ImageServer(srv.photo_dir).start()
    yield files, srv, other, image_rows(files.images_csv)
    other.stop()


def _on(image, srv):
    """The image row with its original on `srv`."""
    return dataclasses.replace(image, original_url=image.original_url.replace(
        image.original_url.split("/original/")[0], srv.base_url))


def _run(window: Window, images) -> list:
    """Offer every image as a caller would; the results in the order they came."""
    out = []
    for i, image in enumerate(images):
        while not window.offer(i, image):
            window.wait()
            out += window.take()
        out += window.take()
    out += list(window.drain())
    return out


@pytest.fixture
def quiet_host(photo_site):
    """A server of its own, so that no slow answer left over from another test counts."""
    files, srv = photo_site
    own = server.ImageServer(srv.photo_dir, latency_s=0.05).start()
    yield own, [_on(image, own) for image in image_rows(files.images_csv)]
    own.stop()


def test_the_window_never_exceeds_fetch_concurrency_and_stays_full(quiet_host, tmp_path):
    srv, images = quiet_host
    tasks = [ImageTask(image, (), "train") for image in images[:30]]
    config = fetch_test_config(tmp_path, fetch_concurrency=4)
    with make_pipeline() as p:
        photos, failed = p | beam.Create(tasks) | FetchImages(config)
        collect(photos | beam.Map(lambda ph: ph.task.image_id), tmp_path / "ids.pkl", "Ids")
    assert sorted(collected(tmp_path / "ids.pkl")) == sorted(t.image_id for t in tasks)
    assert srv.max_in_flight() == 4  # counted by the server: never more, and it filled up
    assert srv.total_requests() == 30


def test_one_host_gets_at_most_fetch_per_host(quiet_host, tmp_path):
    srv, images = quiet_host
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, fetch_concurrency=6, fetch_per_host=2))
    window = Window(fetcher, 6, 2)
    results = _run(window, images[:12])
    window.close()
    assert sorted(k for k, _ in results) == list(range(12))
    assert all(isinstance(r, fetch.Fetched) for _, r in results)
    assert srv.max_in_flight() == 2


@pytest.mark.timeout(120)
def test_uncollected_results_hold_back_dispatch_but_never_stall(photo_site, tmp_path):
    """Results nobody has taken yet count against the window (they hold photo bytes);
    taking them dispatches what they held back."""
    files, srv = photo_site
    images = image_rows(files.images_csv)[:5]
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, fetch_concurrency=2))
    window = Window(fetcher, 2, 2)
    for i in range(2):
        assert window.offer(i, images[i])
    while window.in_flight():
        window.wait(0.05)
    assert window.offer(2, images[2]) and window.offer(3, images[3])
    assert window.in_flight() == 0  # two results wait to be taken: nothing more goes out
    results = window.take() + list(window.drain())
    window.close()
    assert sorted(k for k, _ in results) == [0, 1, 2, 3] and srv.total_requests() == 4


def test_a_429d_photo_waits_its_retry_after_without_holding_a_slot(two_hosts, tmp_path):
    """One slot only. Host A answers 429 (Retry-After: 1) to the first photo: a lone 429
    does not pause the host, but that photo waits its second in the timer heap while host
    B's photos take the slot; it comes back last."""
    files, srv_a, srv_b, images = two_hosts
    first = images[0]
    srv_a.reset(faults={first.image_id: "rate_limited"})
    others = [_on(image, srv_b) for image in images[1:9]]
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, fetch_concurrency=1))
    window = Window(fetcher, 1, 1)
    results = _run(window, [first] + others)
    window.close()
    assert [k for k, _ in results] == list(range(1, 9)) + [0]
    assert all(isinstance(r, fetch.Fetched) for _, r in results)
    assert srv_a.total_requests() == 2 and srv_b.total_requests() == 8
    assert fetcher.stats["answers_429"] == 1 and "host_pauses" not in fetcher.stats


def test_a_host_that_refuses_most_is_paused_and_holds_no_slot(two_hosts, tmp_path):
    """One slot only. Host A answers 429 to each of its four photos (once each): four
    refusals of four answers is a rate limit, so A is paused for Retry-After; host B's
    photos take the slot meanwhile, and A's photos all arrive after the pause."""
    files, srv_a, srv_b, images = two_hosts
    mine = images[:4]
    srv_a.reset(faults={image.image_id: "rate_limited" for image in mine})
    others = [_on(image, srv_b) for image in images[4:12]]
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, fetch_concurrency=1))
    window = Window(fetcher, 1, 1)
    results = _run(window, mine + others)
    window.close()
    assert [k for k, _ in results] == list(range(4, 12)) + [0, 1, 2, 3]
    assert all(isinstance(r, fetch.Fetched) for _, r in results)
    assert srv_a.total_requests() == 8 and srv_b.total_requests() == 8
    assert fetcher.stats["host_pauses"] == 1 and fetcher.stats["answers_429"] == 4


def _answer(sent_at: float, throttled: bool = False, pause_s: float | None = None) -> Step:
    """What the fetcher reports for one answer: normal, or a 429 with its Retry-After."""
    if throttled:
        return Step(host="h", sent_at=sent_at, throttled=True, pause_s=pause_s or 1.0)
    return Step(host="h", sent_at=sent_at, answered=True)


def test_a_host_shedding_a_share_is_halved_once_a_round_and_never_paused():
    """The storm: every fifth answer a 429, whatever the rate. Each round's first 429
    halves the limit, the round's other answers bring it back, and the host is never
    paused (a pause a round would cap the fetch well below a plain thread pool's pace:
    benchmarks/README.md)."""
    host, counts, k = Host(64), [], 0
    for r in range(10):  # rounds of `limit` requests sent together, answered 0.1 s later
        sent = r * 0.2
        for i in range(int(host.limit)):
            counts += host.signal(_answer(sent, throttled=k % 5 == 4), sent + 0.1 + i * 0.001)
            k += 1
            assert host.paused_until == 0.0
        assert host.limit == 64
    assert counts == ["host_backoffs"] * 10  # one a round, not one a 429


def test_a_host_over_its_rate_is_paused_cut_to_what_it_let_through_and_probed():
    """Half of eight answers are 429s: the host is over its rate. It is paused for the
    Retry-After, its limit is cut to the share it let through, and then it grows by one a
    second of answers (nothing for the pause), and a lone 429 near its rate cuts nothing."""
    host = Host(64)
    for k in range(4):
        assert host.signal(_answer(0.0), 0.1) == []
    assert host.signal(_answer(0.0, throttled=True), 0.1) == ["host_backoffs"]  # halved
    assert host.limit == 32 and host.paused_until == 0.0
    for _ in range(2):  # same round: no cut; 3 of 7 refused: not yet over the rate
        assert host.signal(_answer(0.0, throttled=True), 0.1) == []
    assert host.paused_until == 0.0
    assert host.signal(_answer(0.0, throttled=True, pause_s=2.0), 0.12) == [
        "host_pauses", "host_backoffs"]
    assert host.paused_until == pytest.approx(2.12) and host.limit == 16  # 32 x (1 - 4/8)
    host.signal(_answer(2.1), 2.22)  # first answer after the pause: one second at most
    assert host.limit == pytest.approx(17)
    host.signal(_answer(2.3), 2.72)  # half a second later: half a request more
    assert host.limit == pytest.approx(17.5)
    host.signal(_answer(2.8), 5.0)   # an idle spell counts as one second at most
    assert host.limit == pytest.approx(18.5)
    assert host.signal(_answer(5.0, throttled=True), 5.1) == [] and host.limit == pytest.approx(18.5)
    assert len(host.answers) == 4  # the window restarted at the cut: stale 429s re-cut nothing
    t = 5.1
    while host.limit < 64:  # grown back to per_host: a plain host again, halved by a 429
        t += 1.0
        host.signal(_answer(t - 0.1), t)
    assert not host.rate_limited
    assert host.signal(_answer(t, throttled=True), t + 0.1) == ["host_backoffs"] and host.limit == 32


def test_a_first_answer_429_alone_is_not_a_rate_limit_but_a_503_with_retry_after_pauses():
    host = Host(8)
    assert host.signal(_answer(0.0, throttled=True), 0.1) == ["host_backoffs"]
    assert host.paused_until == 0.0 and host.limit == 4
    unavailable = Step(host="h", sent_at=0.2, pause_s=3.0)  # a 503 with Retry-After: 3
    assert host.signal(unavailable, 0.3) == ["host_pauses"]
    assert host.paused_until == pytest.approx(3.3) and host.limit == 4 and not host.rate_limited


def test_429s_back_the_host_off_and_answers_bring_it_back(photo_site, tmp_path):
    """Three 429s among 24 photos: lone refusals, not a rate limit (that needs four)."""
    files, srv = photo_site
    images = image_rows(files.images_csv)[:24]
    srv.reset(faults={image.image_id: "rate_limited" for image in images[:3]})
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, fetch_concurrency=8, fetch_per_host=8))
    window = Window(fetcher, 8, 8)
    results = _run(window, images)
    window.close()
    assert sorted(k for k, _ in results) == list(range(24))
    assert all(isinstance(r, fetch.Fetched) for _, r in results)
    assert fetcher.stats["host_backoffs"] >= 1  # halved at least once ...
    assert window.host_limit(netsafety.host_key(images[0].original_url)) == 8  # ... and recovered
    assert srv.total_requests() == 27


def test_a_photo_whose_share_runs_out_in_the_queue_moves_to_its_next_source(two_hosts, tmp_path):
    """Host A takes one request at a time. P2's first try gets a 500 (after A's 1 s
    latency) and its retry waits behind P1, whose body trickles. When P2's share of the
    deadline (half of 4 s, two sources) runs out in A's queue, it moves on to the mirror on
    host B. P1 is cut at the end of its own share, a second later, and moves there too."""
    files, srv_a, srv_b, images = two_hosts
    p2, p1 = images[0], images[1]
    # latency: P1 starts 1 s after P2, so P2's share ends well before P1 is cut
    srv_a.reset(faults={p2.image_id: "error_then_ok", p1.image_id: "trickle"}, trickle_s=0.1,
                latency_s=1.0)
    config = fetch_test_config(tmp_path, fetch_concurrency=2, fetch_per_host=1, deadline_s=4.0,
                     read_timeout_s=3.0,
                     image_source=("original", "cvdf"), cvdf_base_url=srv_b.base_url)
    fetcher = fetch.Fetcher(config)
    window = Window(fetcher, 2, 1)
    results = dict(_run(window, [p2, p1]))
    window.close()
    assert {k: getattr(r, "source", r) for k, r in results.items()} == {0: "cvdf", 1: "cvdf"}
    assert srv_a.requests[f"/original/{p2.image_id}.jpg"] == 1  # its retry never ran on A
    assert fetcher.stats["deadline_cuts"] == 1 and fetcher.stats["fallbacks"] == 2


def test_outputs_keep_the_window_and_timestamp_of_their_element(photo_site, tmp_path):
    """Results leave process() and finish_bundle() for other elements than the current
    one; each must still be in its own element's window."""
    files, srv = photo_site
    images = image_rows(files.images_csv)[:6]
    srv.reset(faults={images[0].image_id: "not_found"})
    stamped = [beam_window.TimestampedValue(ImageTask(image, (), "train"), 60 * i + 5)
               for i, image in enumerate(images)]
    with make_pipeline() as p:
        tasks = p | beam.Create(stamped) | "Minutes" >> beam.WindowInto(beam_window.FixedWindows(60))
        photos, failed = tasks | FetchImages(fetch_test_config(tmp_path, fetch_concurrency=3))
        where = photos | "Where" >> beam.Map(
            lambda ph, w=beam.DoFn.WindowParam, t=beam.DoFn.TimestampParam:
            (ph.task.image_id, int(w.start), int(t)))
        collect(where | "Global" >> beam.WindowInto(beam_window.GlobalWindows()), tmp_path / "where.pkl",
                "Where")
    got = sorted(collected(tmp_path / "where.pkl"))
    assert got == sorted((image.image_id, 60 * i, 60 * i + 5)
                         for i, image in enumerate(images) if i > 0)


def test_the_demo_rate_limiter_refuses_above_its_rate_with_whole_seconds(photo_site):
    """The benchmark's rate-limited host: a bucket of 3 tokens refilled at 0.5 a second
    serves 3 quick requests, then refuses with Retry-After the whole seconds until its
    next token (2 s here), as a host throttling a bulk client does."""
    files, srv = photo_site
    image = image_rows(files.images_csv)[0]
    limited = server.ImageServer(srv.photo_dir, rate_limit=0.5, rate_burst=3).start()
    try:
        url = _on(image, limited).original_url
        answers = [requests.get(url, timeout=5) for _ in range(5)]
    finally:
        limited.stop()
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert [a.headers.get("Retry-After") for a in answers[3:]] == ["2", "2"]
    assert limited.limited_answers == 2


@pytest.mark.parametrize("settings", [{"rate_limit": 10, "rate_burst": 0.5},
                                      {"rate_limit": -1}, {"rate_limit": float("nan")}])
def test_a_bucket_that_could_never_serve_is_refused(photo_site, settings):
    files, srv = photo_site
    with pytest.raises(ValueError, match="rate_"):
        server.ImageServer(srv.photo_dir, **settings)


def test_a_reset_bucket_holds_one_second_of_its_rate(photo_site):
    files, srv = photo_site
    own = server.ImageServer(srv.photo_dir)
    try:
        own.reset(rate_limit=20)
        assert own.rate_burst == 20
        own.reset()
        assert (own.rate_limit, own.rate_burst) == (0.0, 1.0)
    finally:
        own.server_close()


@pytest.mark.timeout(120)
def test_against_a_rate_limiter_every_photo_arrives_and_the_host_pauses(photo_site, tmp_path):
    """A host that serves 20 requests a second (bucket 4) and 12 photos at concurrency 8:
    the burst is refused, the window pauses the host for Retry-After and backs it off, and
    every photo still arrives; each 429 the server sent is one the fetcher counted."""
    files, srv = photo_site
    limited = server.ImageServer(srv.photo_dir, rate_limit=20, rate_burst=4).start()
    try:
        images = [_on(image, limited) for image in image_rows(files.images_csv)[:12]]
        fetcher = fetch.Fetcher(fetch_test_config(tmp_path, fetch_concurrency=8,
                                                  fetch_per_host=8, fetch_attempts=8))
        window = Window(fetcher, 8, 8)
        results = _run(window, images)
        window.close()
    finally:
        limited.stop()
    assert sorted(k for k, _ in results) == list(range(12))
    assert all(isinstance(r, fetch.Fetched) for _, r in results)
    assert limited.limited_answers >= 4  # 8 at once against 4 tokens
    assert fetcher.stats["answers_429"] == limited.limited_answers
    assert fetcher.stats["host_pauses"] >= 1 and fetcher.stats["host_backoffs"] >= 1
    assert limited.total_requests() == 12 + limited.limited_answers
