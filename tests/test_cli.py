"""The command line as a user meets it: --version, each command's --help, misspelt flags,
bad inputs as one error line, --json, a quiet TensorFlow, the README kept in step."""
import json
import os
import re
import subprocess
import sys

import pytest

import pipelines
from pipelines import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "keras", "tensorflow_datasets", "apache_beam")
# absl's C++ start-up logging, as TensorFlow prints it before TF_CPP_MIN_LOG_LEVEL applies.
TF_NOISE = re.compile(r"absl::InitializeLog|^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|oneDNN|cuda|"
                      r"cuInit|cpu_feature_guard", re.M)


def _python(code_or_args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the tool's own default, as a user gets it
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_version():
    out = _python(["-m", "pipelines.cli", "--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"open-sandwiches {pipelines.__version__}"
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert "version=VERSION" in setup and "__version__" in setup  # one version, read by setup


def test_every_help_names_its_command_shows_its_flags_and_imports_nothing_heavy():
    """--help of every command, each in turn in one fresh interpreter, recording which
    heavy packages were imported after each."""
    code = ("import contextlib, io, json, sys\n"
            "from pipelines import cli\n"
            "out = {}\n"
            "for name in cli.COMMANDS:\n"
            "    buf = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        try:\n"
            "            cli.main([name, '--help'])\n"
            "        except SystemExit as e:\n"
            "            assert e.code == 0, (name, e.code)\n"
            f"    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
            "    out[name] = {'help': buf.getvalue(), 'heavy': heavy}\n"
            "print(json.dumps(out))\n")
    proc = _python(["-c", code])
    assert proc.returncode == 0, proc.stderr
    helps = json.loads(proc.stdout)
    assert set(helps) == set(cli.COMMANDS)
    for name, got in helps.items():
        assert got["heavy"] == [], (name, got["heavy"])
        text = got["help"]
        assert text.startswith(f"usage: open-sandwiches {name} "), name
        assert "\nexample:\n  open-sandwiches " + name in text, name
        assert cli.COMMANDS[name].description.split()[0] in text, name
    plan, build = helps["plan"]["help"], helps["build"]["help"]
    for flag in ("--jpeg_quality", "--fetch_timeout_s", "--image_size", "--dataset_name",
                 "--image_source", "--overwrite"):
        assert flag not in plan and flag in build, flag
    for text in (plan, build):
        for heading in ("classes:", "tables:", "filters:", "splits and sampling:", "Beam:"):
            assert f"\n{heading}\n" in text, heading
        assert "--runner RUNNER" in text and "https://beam.apache.org/documentation/runners/" in text
        assert "(default: 0.8 0.1 0.1)" in text and "(default: v7)" in text
    for heading in ("download:", "crop:", "dataset:"):
        assert f"\n{heading}\n" in build and f"\n{heading}\n" not in plan
    assert "(default: 30.0)" in build  # --fetch_timeout_s, FetchConfig.read_timeout_s's
    assert "--classes" not in helps["verify"]["help"]
    assert "--epochs EPOCHS" in helps["train"]["help"] and "(default: 50)" in helps["train"]["help"]


def test_top_level_usage_and_unknown_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in cli.COMMANDS) and "--version" in out
    assert cli.main(["bulid"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown command 'bulid'; did you mean "
                                               "build? (open-sandwiches --help lists the "
                                               "commands)")


@pytest.mark.parametrize("argv, expected", [
    (["plan", "--max_per_clas", "5"], "unknown flag --max_per_clas; did you mean --max_per_class?"),
    (["build", "--fetch_timout_s", "3"], "unknown flag --fetch_timout_s; did you mean --fetch_timeout_s?"),
    (["build", "--no-such-thing"], "unknown flag --no-such-thing"),
    (["build", "--direct_running_mode", "fast"], "invalid choice: 'fast'"),
    (["plan", "leftover"], "unexpected argument 'leftover'"),
    (["train", "--epochz", "3"], "unknown flag --epochz; did you mean --epochs?"),
    (["verify", "somewhere", "--jsn"], "unknown flag --jsn; did you mean --json?"),
    (["classes", "--serch", "burger"], "unknown flag --serch; did you mean --search?"),
    (["metadata", "list", "--version", "v9"], "invalid choice: 'v9'"),
    (["export", "--model_dir", "m"], "the following arguments are required: --output"),
])
def test_a_misspelt_or_unknown_flag_is_one_error_line_naming_it(argv, expected, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert captured.out == ""


def test_kebab_case_spellings_of_our_flags_are_our_flags_and_beams_flags_pass_through():
    args = cli.parse("build", ["--bbox-csv", "b.csv", "--max-per-class=3", "--output_dir", "o",
                               "--project", "p", "--experiments", "x",
                               "--job-server-timeout", "9", "--runner", "DirectRunner"])
    assert (args.bbox_csv, args.max_per_class) == (["b.csv"], 3)
    assert args.beam_args == ["--runner=DirectRunner", "--project=p", "--experiments", "x",
                              "--job-server-timeout", "9"]
    with pytest.raises(cli.UsageError, match="unknown flag --temp-locaton; did you mean "
                                             "--temp_location"):
        cli.parse("build", ["--temp-locaton", "gs://b/t"])


def test_a_config_list_for_a_one_value_flag_is_named_in_the_error(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("image_size: [1, 2]\n")
    with pytest.raises(cli.UsageError, match=r"train.yaml: image_size takes one value, not a "
                                             r"list \(\[1, 2\]\)"):
        cli.parse("train", ["--config", str(bad), "--dataset_dir", "d"])
    bad.write_text("classes: [Hamburger, Sandwich]\nseed: [1]\n")  # a list flag is fine
    with pytest.raises(cli.UsageError, match=r"seed takes one value"):
        cli.parse("build", ["--config", str(bad), "--output_dir", "o"])
    bad.write_text("classes: [Hamburger, Sandwich]\n")
    assert cli.parse("build", ["--config", str(bad), "--output_dir", "o"]).classes == [
        "Hamburger", "Sandwich"]


def test_config_files_refuse_unknown_keys_in_build_and_train(tmp_path):
    bad = tmp_path / "build.yaml"
    bad.write_text("classes: [Hamburger]\nmax_per_clas: 5\n")
    with pytest.raises(cli.UsageError, match=r"build.yaml: unknown keys \['max_per_clas'\]; "
                                             r"did you mean max_per_class\?"):
        cli.parse("build", ["--config", str(bad)])
    bad.write_text("epochz: 3\n")
    with pytest.raises(cli.UsageError, match=r"unknown keys \['epochz'\]; did you mean epochs"):
        cli.parse("train", ["--config", str(bad), "--dataset_dir", "d"])
    good = tmp_path / "beam.json"  # Beam's flags may ride in a config, kebab keys are ours
    good.write_text(json.dumps({"max-per-class": 4, "direct_num_workers": 2, "square": True,
                                "experiments": ["a", "b"]}))
    args = cli.parse("build", ["--config", str(good), "--output_dir", "o"])
    assert (args.max_per_class, args.square) == (4, True)
    assert args.beam_args == ["--direct_num_workers=2", "--experiments=a", "--experiments=b"]
    good.write_text(json.dumps({"image_size": 64, "config": ""}))  # a build's keys plan ignores
    assert cli.parse("plan", ["--config", str(good)]).config == str(good)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and not TF_NOISE.search(err), err
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["plan", "--classes", "Hamburger", "--bbox_csv", "{missing}", "--images_csv", "{missing}",
      "--output_dir", "{tmp}/o"], "input file not found"),
    (["build", "--classes", "Hamburgers", "--output_dir", "{tmp}/o", "--bbox_csv", "x",
      "--images_csv", "y"], "Did you mean: Hamburger"),
    (["verify", "{empty}"], "is not a dataset written by build"),
    (["preview", "--dataset", "{empty}"], "is not a dataset written by build"),
    (["preview", "--plan", "{empty}"], "holds no plan"),
    (["metadata", "download", "--split", "nope"], "--split must be one of"),
    (["classes", "--tree", "Sandwiches"], "Did you mean"),
    (["train", "--dataset_dir", "{missing}"], "is not a dataset written by build"),
    (["train", "--dataset_dir", "{empty}", "--arch", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--dataset_dir", "{missing}", "--learning_rate", "nan"],
     "--learning_rate must be a finite number > 0, not nan"),
    (["train", "--dataset_dir", "{missing}", "--learning_rate", "-1"],
     "--learning_rate must be a finite number > 0"),
    (["train", "--dataset_dir", "{missing}", "--dropout", "1.5"],
     "--dropout must be at least 0 and below 1"),
    (["train", "--dataset_dir", "{missing}", "--image_size", "2"],
     "--image_size is 2: outside 8..4096 for --arch simple_cnn"),
    (["train", "--dataset_dir", "{missing}", "--image_size", "100000"], "outside 8..4096"),
    (["train", "--dataset_dir", "{missing}", "--arch", "mobilenet_v2", "--image_size", "16"],
     "outside 32..4096 for --arch mobilenet_v2"),
    (["evaluate", "--model_dir", "{missing}"], "holds no trained model"),
    (["predict", "{missing}", "x.jpg"], "no such image file: x.jpg"),
    (["predict", "{empty}", "{tmp}/pixel.png"], "holds no trained model"),
    (["export", "--model_dir", "{empty}", "--output", "{tmp}/out"], "model.keras not found"),
    (["demo-catalog", "--output_dir", "{tmp}/c", "--classes", "Hamburgers"], "Did you mean"),
    (["serve-images", "{missing}"], "has no photos/ folder"),
])
def test_each_command_turns_a_bad_input_into_one_error_line_and_exit_2(
        argv, expected, tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    (tmp_path / "pixel.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    argv = [a.format(tmp=tmp_path, empty=tmp_path / "empty", missing=tmp_path / "nope")
            for a in argv]
    assert cli.main(argv) == 2
    captured = capfd.readouterr()
    assert expected in _one_error_line(captured.err)
    assert captured.out == ""


def test_verbose_shows_the_traceback_too(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path), "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("error: ")


def test_the_console_command_prints_one_line_for_a_missing_model_and_no_tensorflow_lines():
    proc = _python(["-m", "pipelines.cli", "predict", "/nope", "/nope.jpg"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such image file" in _one_error_line(proc.stderr)


def test_tensorflow_keras_and_tfds_start_quietly_in_any_process_that_imports_us():
    code = ("import pipelines, keras, tensorflow as tf, tensorflow_datasets\n"
            "import sys; print('ours', file=sys.stderr)\n"
            "print(int(tf.constant(2) + 1))\n")
    proc = _python(["-c", code])
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr
    assert proc.stderr == "ours\n"  # TensorFlow's lines gone, our own kept


def test_tensorflow_starts_quietly_after_something_only_looked_it_up():
    """etils (under tfds, when a build writes its metadata) calls find_spec('tensorflow')
    without importing it; the import that comes later is still filtered."""
    code = ("import importlib.util, pipelines\n"
            "assert importlib.util.find_spec('tensorflow') is not None\n"
            "import tensorflow as tf, sys; print('ours', file=sys.stderr)\n"
            "print(int(tf.constant(2) + 1))\n")
    proc = _python(["-c", code])
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr
    assert proc.stderr == "ours\n"


def test_demo_catalog_with_photos_is_what_serve_images_serves(tmp_path, capsys):
    """`demo-catalog --photos` writes the photos/ folder that `serve-images` needs, and
    every URL of its image table is one the server answers with that photo."""
    import requests
    from pipelines.demo import server
    from pipelines.scan_rows import load_image_rows
    srv = server.ImageServer(str(tmp_path)).start()  # a free port first, for --base_url
    try:
        out = tmp_path / "catalog"
        assert cli.main(["demo-catalog", "--output_dir", str(out), "--images", "3", "--photos",
                         "--base_url", srv.base_url]) == 0
        assert f"serve-images {out} --port {srv.server_address[1]}" in capsys.readouterr().out
        srv.reset(photo_dir=str(out / "photos"))
        rows = load_image_rows(str(out / "images-with-rotation.csv"))
        assert len(rows) == 3
        for row in rows:
            answer = requests.get(row.original_url, timeout=10)
            assert answer.status_code == 200 and answer.content == srv.photo(row.image_id)
    finally:
        srv.stop()


def test_json_of_classes_and_metadata_list_is_one_document(capsys):
    assert cli.main(["classes", "--classes", "Sandwich", "--include_subclasses", "--json"]) == 0
    labels = json.loads(capsys.readouterr().out)
    assert "Hamburger" in json.dumps(labels)
    assert cli.main(["metadata", "list", "--version", "v7", "--split", "all", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["version"] == "v7" and len(listing["files"]) == 8
    assert all(f["url"].startswith(listing["base_url"]) for f in listing["files"])


def test_plan_json_is_one_document_on_stdout(small_catalog, tmp_path, capsys):
    assert cli.main(["plan", "--classes", "Hamburger", "Sandwich", *small_catalog.flags(),
                     "--output_dir", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["output_dir"] == str(tmp_path) and summary["labels"] == ["Hamburger", "Sandwich"]
    assert summary == {"output_dir": str(tmp_path),
                       **json.loads((tmp_path / "summary.json").read_text())}


# ---- the README ---------------------------------------------------------------------

README = os.path.join(ROOT, "README.md")
USAGE_START, USAGE_END = "<!-- usage: begin -->", "<!-- usage: end -->"


def test_the_readme_shows_every_commands_usage_as_it_prints():
    """Regenerate with: python -c "from pipelines import cli; cli.write_readme_usage()"."""
    text = open(README).read()
    block = text.split(USAGE_START, 1)[1].split(USAGE_END, 1)[0]
    assert block.strip() == cli.readme_usage().strip()


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    text = open(README).read()
    code = text.split("<!-- api example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    report, result = namespace["report"], namespace["result"]
    assert report["invariant"]["lost"] == 0 and report["invariant"]["examples"] > 50
    assert os.path.isfile(os.path.join(report["dataset_dir"], "COMPLETED"))
    assert result["epochs_run"] >= 1 and os.path.isfile(tmp_path / "lunch" / "model" / "model.keras")
    assert namespace["summary"]["totals"]["boxes"] == report["invariant"]["planned_boxes"]
