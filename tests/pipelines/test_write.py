"""The bounded shard writer: its files are exactly what the definition of a shard says
(hash of the key, examples in key order, TFRecord framing), however many runs it merged,
and it leaves no scratch behind."""
import collections
import os

import pytest
import tensorflow as tf

from pipelines import build, runs, tfrecord, write
from schemas import examples
from tests.conftest import build_argv, shard_digests


def _examples_by_split(folder):
    """split -> [(key, serialised example)] read back from every shard."""
    out = collections.defaultdict(list)
    for name in sorted(os.listdir(folder)):
        if ".tfrecord-" not in name:
            continue
        split = name.split("-")[-4].split(".")[0]
        with open(os.path.join(folder, name), "rb") as f:
            for data in tfrecord.read_records(f):
                feats = tf.train.Example.FromString(data).features.feature
                key = (feats[examples.IMAGE_ID].bytes_list.value[0].decode(),
                       int(feats[examples.BOX_INDEX].int64_list.value[0]))
                out[split].append((key, data))
    return out


@pytest.fixture(scope="module")
def sized_build(_photo_site, tmp_path_factory):
    """A build whose shard counts come from the data (about 30 KB a shard)."""
    files, srv = _photo_site
    srv.reset()
    out = tmp_path_factory.mktemp("sized")
    argv = build_argv(files, out, out / "cache", "--num_shards", "0", "--shard_size_mb", "0.03",
                      "--no_previews")
    assert build.main(argv) == 0
    return files, out, out / "hamburger_sandwich" / "1.0.0"


def test_shards_are_the_hash_partition_of_the_examples_in_key_order(sized_build):
    _, _, folder = sized_build
    by_split = _examples_by_split(folder)
    assert set(by_split) == {"train", "validation", "test"}
    for split, items in by_split.items():
        names = sorted(n for n in os.listdir(folder) if f"-{split}.tfrecord-" in n)
        n = len(names)
        assert n == max(1, -(-sum(len(d) for _, d in items) // int(0.03 * 2**20)))
        expected = collections.defaultdict(list)
        for key, data in sorted(items):
            expected[write.shard_of(key, n)].append(tfrecord.frame(data))
        for shard, name in enumerate(names):
            assert (folder / name).read_bytes() == b"".join(expected[shard]), name
    assert sum(len(v) for v in by_split.values()) > 50


def test_many_small_runs_merge_to_the_same_bytes(sized_build, _photo_site, monkeypatch):
    files, out, folder = sized_build
    monkeypatch.setattr(runs, "RUN_BYTES", 20_000)  # a run every few examples
    written = []
    real = runs.RunWriter.flush

    def recording_flush(self):
        slices = real(self)
        written.extend(slices)
        return slices

    monkeypatch.setattr(runs.RunWriter, "flush", recording_flush)
    argv = build_argv(files, out / "small_runs", out / "cache", "--num_shards", "0",
                      "--shard_size_mb", "0.03", "--no_previews")
    assert build.main(argv) == 0
    other = out / "small_runs" / "hamburger_sandwich" / "1.0.0"
    assert shard_digests(other) == shard_digests(folder)
    assert len({s.path for s in written}) > 10  # it really merged many runs


def test_no_scratch_is_left_behind(sized_build):
    _, out, folder = sized_build
    assert not (out / "hamburger_sandwich" / ".1.0.0.parts").exists()
    assert not [p for p in out.rglob("*") if p.suffix == ".run" or ".tmp-" in p.name]


def test_a_merge_reads_only_the_slices_it_is_given(tmp_path):
    """Runs of a failed or retried bundle exist on disk but never reached the shuffle:
    merging the slices that did gives exactly their entries."""
    kept, dropped = runs.RunWriter(str(tmp_path)), runs.RunWriter(str(tmp_path))
    for i in range(50):
        kept.add(("train", 0), write.example_key("0" * 15 + "a", i), b"k%d" % i)
        dropped.add(("train", 0), write.example_key("0" * 15 + "a", i), b"d%d" % i)
    slices = kept.flush()
    dropped.flush()
    assert len(os.listdir(tmp_path)) == 2
    assert [v for _, v in runs.merge(slices)] == [b"k%d" % i for i in range(50)]
