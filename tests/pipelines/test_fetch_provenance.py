"""Provenance of source photos: the manifest's source_sha256, and `verify --against`."""
import hashlib
import io
import shutil

import pandas as pd
from PIL import Image

from pipelines import build, verify
from pipelines.demo import server
from tests.conftest import build_argv, image_rows


def _build(files_, out, cache, base_url) -> str:
    assert build.main(build_argv(files_, out, cache, "--image_source", "cvdf", "--cvdf_base_url",
                                 base_url, "--no_previews", "--quiet")) == 0
    return str(out / "hamburger_sandwich" / "1.0.0")


def test_verify_against_lists_photos_whose_source_bytes_differ(photo_site, tmp_path, capsys):
    files_, srv = photo_site
    first = _build(files_, tmp_path / "a", tmp_path / "cache_a", srv.base_url)
    manifest = pd.read_parquet(f"{first}/manifest.parquet")
    for row in manifest.drop_duplicates("image_id").itertuples():
        assert row.source == "cvdf"
        assert row.source_sha256 == hashlib.sha256(srv.photo(row.image_id)).hexdigest()
    assert verify.main([first, "--against", first]) == 0
    assert "SAME PHOTOS" in capsys.readouterr().out

    # A mirror that re-encoded one photo: still a photo, other bytes.
    photos = tmp_path / "mirror"
    shutil.copytree(srv.photo_dir, photos)
    changed = next(i.image_id for i in image_rows(files_.images_csv)
                   if (photos / f"{i.image_id}.jpg").exists() and i.image_id in set(manifest.image_id))
    img = Image.open(photos / f"{changed}.jpg")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    (photos / f"{changed}.jpg").write_bytes(buf.getvalue())
    with server.ImageServer(str(photos)) as mirror:
        other = _build(files_, tmp_path / "c", tmp_path / "cache_c", mirror.base_url)
    result = verify.compare_sources(other, first)
    assert [d[0] for d in result["differ"]] == [changed] and not result["same"]
    assert result["only_here"] == result["only_there"] == []
    assert verify.main([other, "--against", first]) == 1
    out = capsys.readouterr().out
    assert f"differs: {changed}" in out and "PHOTOS DIFFER" in out


def test_verify_against_a_dataset_without_source_digests_says_so(photo_site, tmp_path, capsys):
    files_, srv = photo_site
    first = _build(files_, tmp_path / "a", tmp_path / "cache", srv.base_url)
    old = tmp_path / "old"
    shutil.copytree(first, old)
    pd.read_parquet(old / "manifest.parquet").drop(columns=["source_sha256"]).to_parquet(
        old / "manifest.parquet")
    assert verify.main([first, "--against", str(old)]) == 2
    assert "no source_sha256 column" in capsys.readouterr().err
