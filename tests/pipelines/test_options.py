"""Flags generated from the configs: names, renames, defaults, round trips, old reports,
and what goes to Beam."""
import dataclasses

import pytest

from pipelines import cli, crop, fetch, flags, join, options, progress, scan, scan_rows
from pipelines.flags import UsageError

# The `config` section of a build_report.json written before the flags were generated
# from the configs (Beam's PipelineOptions subclass held them): such files are in users'
# hands, and `build --config` must read every key of them.
OLD_REPORT_CONFIG = {
    "allow_private_network": True, "aspect": "pad", "bbox_csv": ["b.csv"], "cache_dir": "",
    "class_descriptions": None, "classes": ["Hamburger", "Sandwich"], "config": "",
    "connect_timeout_s": 10.0, "crop_margin": 0.0,
    "cvdf_base_url": "https://open-images-dataset.s3.amazonaws.com", "dataset_name": "",
    "dataset_version": "1.0.0", "exclude": [], "export_folders": "", "fetch_attempts": 4,
    "fetch_backoff_s": 0.5, "fetch_concurrency": 64, "fetch_deadline_s": 60.0,
    "fetch_per_host": 64, "fetch_timeout_s": 1.0, "hierarchy": None, "image_size": 64,
    "image_source": ["original"], "images_csv": ["i.csv"], "include_subclasses": False,
    "is_depiction": "include", "is_group_of": "include", "is_inside": "include",
    "is_occluded": "include", "is_truncated": "include", "jpeg_quality": 90,
    "max_image_bytes": 52428800, "max_jpeg_megasamples": 2000, "max_jpeg_scans": 100,
    "max_per_class": 0, "metadata_base_url": "https://storage.googleapis.com/openimages",
    "metadata_cache": "", "min_box_size": 0.0, "min_crop_pixels": 16, "no_previews": False,
    "num_shards": 3, "output_dir": "o", "overwrite": False, "placeholder_sha256": [],
    "relabel_to_parent": False, "scan_range_mb": 1.0, "seed": 0, "shard_size_mb": 100.0,
    "split": "", "split_fractions": [0.8, 0.1, 0.1], "split_source": "hash", "square": False,
    "url_template": "", "version": "v7"}


def _settings(argv, command="build"):
    return options.settings(vars(cli.parse(command, argv)), command)


def test_an_old_reports_config_rebuilds_the_same_settings_and_writes_the_same_keys(tmp_path):
    import json
    path = tmp_path / "build_report.json"
    path.write_text(json.dumps({"fingerprint": "f", "config": OLD_REPORT_CONFIG}))
    s = _settings(["--config", str(path)])
    assert s.fetch.read_timeout_s == 1.0 and s.crop.image_size == 64
    assert s.fetch.image_source == ("original",) and s.dataset.num_shards == 3
    # what a new report writes: the same keys and values (the fingerprint hashes them), and
    # the flags added since, at their defaults
    assert options.flag_values(s) == {**{k: v for k, v in OLD_REPORT_CONFIG.items()
                                         if k != "config"}, "file_format": "tfrecord"}


def test_flags_are_the_config_fields_but_for_the_four_renamed_in_one_place():
    group = options.BUILD_GROUPS["fetch"]
    renamed = {s.field: s.name for s in group.specs() if s.field != s.name}
    assert renamed == {"read_timeout_s": "fetch_timeout_s", "deadline_s": "fetch_deadline_s",
                       "backoff_s": "fetch_backoff_s"}
    assert {s.field: s.name for s in options.BUILD_GROUPS["crop"].specs()
            if s.field != s.name} == {"margin": "crop_margin"}
    fields = {f.name for f in dataclasses.fields(fetch.FetchConfig)}
    assert fields - {s.field for s in group.specs()} == {"max_backoff_s", "max_redirects"}
    s = _settings(["--fetch_timeout_s", "7", "--fetch_deadline_s", "9", "--crop_margin", "0.2",
                   "--fetch_backoff_s", "0.25", "--output_dir", "o"])
    assert (s.fetch.read_timeout_s, s.fetch.deadline_s, s.fetch.backoff_s, s.crop.margin) == (
        7.0, 9.0, 0.25, 0.2)


def test_flag_defaults_are_the_configs_defaults():
    s = _settings([])
    assert s.fetch == fetch.FetchConfig() and s.crop == crop.CropSpec()
    assert s.filters == scan_rows.BoxFilters()
    assert s.splits.split_fractions == join.DEFAULT_FRACTIONS
    assert options.PLAN_GROUPS["splits"].choices["split_source"] == join.SPLIT_SOURCES
    assert s.tables.scan_range_mb * 2**20 == scan.DEFAULT_RANGE_BYTES
    assert options.BUILD_GROUPS["fetch"].choices["image_source"] == fetch.SOURCES


def test_settings_survive_the_round_trip_through_flags():
    s = _settings(["--classes", "Hamburger", "Submarine sandwich", "--include_subclasses",
                   "--split_fractions", "0.7", "0.2", "0.1", "--is_depiction", "exclude",
                   "--image_source", "thumbnail", "cvdf", "--square", "--aspect", "center",
                   "--placeholder_sha256", "ab" * 32, "--no_previews", "--min_box_size", "0.05",
                   "--output_dir", "o", "--shard_size_mb", "0.5"])
    again = _settings(flags.to_argv(options.flag_values(s)))
    assert again == s
    assert _settings(["--square", "false", "--no_previews", "true"]).crop.square is False


def test_config_values_are_checked_by_the_configs_themselves():
    with pytest.raises(ValueError, match="--image_size must be between"):
        _settings(["--image_size", "4"])
    with pytest.raises(ValueError, match="url_template"):
        _settings(["--image_source", "template"])
    with pytest.raises(UsageError, match="invalid choice: 'sometimes'"):
        _settings(["--is_occluded", "sometimes"])
    with pytest.raises(UsageError, match="not a boolean"):
        _settings(["--square", "maybe"])


def test_beam_flags_are_checked_against_beams_own_option_classes():
    assert options.beam_knows("--flink_master") and options.beam_knows("--temp_location=x")
    assert not options.beam_knows("--max_per_clas")
    options.check_beam_args(["--environment_type", "LOOPBACK", "--save_main_session"], [])
    with pytest.raises(UsageError, match="unknown flag --max_per_clas; did you mean --max_per_class"):
        options.check_beam_args(["--max_per_clas", "5"], options.flag_names("plan"))
    with pytest.raises(UsageError, match="c.yaml: unknown flag --runer; did you mean --runner"):
        options.check_beam_args(["--runer", "X"], options.flag_names("plan"), source="c.yaml")
    from apache_beam.options.pipeline_options import StandardOptions
    for given, runner in (([], "FnApiRunner"), (["--runner=DirectRunner"], "FnApiRunner"),
                          (["--runner=PortableRunner"], "PortableRunner")):
        assert options.pipeline_options(given).view_as(StandardOptions).runner == runner


def test_progress_bars_only_for_an_in_process_runner_on_a_terminal():
    class Tty:
        def isatty(self):
            return True

    for argv, in_process in (([], True), (["--direct_running_mode=multi_threading"], True),
                             (["--direct_running_mode=multi_processing"], False),
                             (["--runner=PortableRunner"], False),
                             (["--runner=DataflowRunner"], False)):
        assert options.runs_in_process(options.pipeline_options(argv)) is in_process, argv
        assert progress.wanted(in_process, Tty()) is in_process
    assert not progress.wanted(True, open(__file__))  # a file or a pipe: log lines


def test_help_texts_come_from_the_docstrings_attributes():
    docs = flags.attribute_docs(crop.CropSpec)
    assert docs["image_size"].startswith("side of the square output")
    assert "1,000-scan kind" in docs["max_jpeg_megasamples"]  # continuation lines joined
    from model.config import TrainConfig
    assert flags.attribute_docs(TrainConfig)["epochs"] == flags.attribute_docs(TrainConfig)["patience"]
