"""helpers.modeling.predict: any image file predicted with the saved label order; bad files reported, the others
predicted."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import config, interrupts
from helpers.inputs import images
from helpers.inputs.images import CorruptImageError, decode_image, open_greyscale
from helpers.modeling import predict, saved_models


def _image_files(folder, phantom_root):
    """Write a colour image of another size and copy a greyscale phantom; return both with a corrupt and a missing."""
    source = sorted((phantom_root / "Testing" / "pituitary").iterdir())[0]
    grey = folder / "grey.png"
    grey.write_bytes(source.read_bytes())
    colour = folder / "colour.jpg"
    Image.open(source).convert("RGB").resize((300, 200)).save(colour)
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    return [grey, colour, corrupt, folder / "missing.png"]


def test_predictions_match_the_model_and_bad_files_are_reported(saved_run, phantom_root, tmp_path):
    files = _image_files(tmp_path, phantom_root)
    results = predict.predict_files(files, saved_run.directory)
    assert [result.file for result in results] == [str(file) for file in files]
    grey, colour, corrupt, missing = results
    expected = saved_run.model.predict(decode_image(files[0], 64)[None, ..., None], verbose=0)[0]
    assert grey.predicted_class == saved_run.class_names[int(expected.argmax())]
    assert grey.confidence == pytest.approx(float(expected.max()), abs=1e-5)
    assert sum(grey.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert colour.error is None and colour.predicted_class in saved_run.class_names
    assert "corrupt.jpg: cannot decode image" in corrupt.error and corrupt.predicted_class is None
    assert "missing.png: no such file" in missing.error


def test_command_prints_json_or_a_table_and_exits_nonzero_on_failures(saved_run, phantom_root, tmp_path, capsys):
    files = [str(file) for file in _image_files(tmp_path, phantom_root)]
    assert predict.main([*files[:2], "--model", str(saved_run.directory), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [item["file"] for item in printed["predictions"]] == files[:2]
    assert all(item["error"] is None for item in printed["predictions"])
    assert predict.main([*files, "--model", str(saved_run.directory)]) == 1
    captured = capsys.readouterr()
    assert "grey.png" in captured.out and "ERROR" in captured.out and "2 of 4 files" in captured.err
    corrupt_line = next(line for line in captured.out.splitlines() if "corrupt.jpg" in line)
    assert corrupt_line.count("corrupt.jpg") == 1 and "cannot decode image" in corrupt_line, "the path once"


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert predict.main([str(tmp_path / "a.png"), "--model", str(tmp_path / "none.keras")]) == 2
    assert "none.keras: file not found" in capsys.readouterr().err
    with pytest.raises(predict.ModelNotFoundError, match="no published models"):
        saved_models.default_model_path(tmp_path)


def test_published_model_file_with_its_label_file_is_accepted(saved_run, phantom_root, tmp_path):
    model_path = tmp_path / "rnn.keras"
    saved_run.model.save(model_path)
    (tmp_path / "rnn.json").write_text((saved_run.directory / "labels.json").read_text())
    (tmp_path / saved_models.MODEL_INDEX_FILE).write_text(json.dumps({"default": "rnn.keras"}))
    assert saved_models.default_model_path(tmp_path) == model_path
    loaded = predict.load_saved_model(model_path)
    assert loaded.class_names == saved_run.class_names and loaded.image_size == 64
    result = predict.predict_files([sorted((phantom_root / "Testing" / "glioma").iterdir())[0]], loaded)[0]
    assert result.error is None


def test_exif_orientation_is_applied_and_multi_frame_files_are_refused(tmp_path):
    upright = np.zeros((40, 60), np.uint8)
    upright[:10, :] = 255  # a bright band at the top
    Image.fromarray(upright).save(tmp_path / "upright.png")
    stored = Image.fromarray(np.rot90(upright))  # stored rotated; EXIF orientation 6 says "rotate 270° to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    assert np.abs(np.asarray(open_greyscale(tmp_path / "rotated.jpg"), float) - upright).mean() < 3
    frames = [Image.fromarray(upright), Image.fromarray(255 - upright)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(CorruptImageError, match=r"stack.tif: a multi-frame image \(2 frames\)") as raised:
        open_greyscale(tmp_path / "stack.tif")
    assert str(raised.value).count("stack.tif") == 1, "the path leads the message once"


def test_a_large_jpeg_decodes_at_a_reduced_scale_and_a_huge_image_is_refused_naming_it(tmp_path, monkeypatch):
    pattern = (np.indices((1000, 1000)).sum(axis=0) % 256).astype(np.uint8)
    Image.fromarray(pattern).save(tmp_path / "large.jpg")
    Image.fromarray(pattern).save(tmp_path / "large.png")
    monkeypatch.setattr(images, "DECODED_SIDE", 100)
    assert open_greyscale(tmp_path / "large.jpg").size == (125, 125)  # 1/8 scale, no side below 100
    assert decode_image(tmp_path / "large.jpg", 64).shape == (64, 64)
    monkeypatch.setattr(images, "MAXIMUM_PIXELS", 500_000)
    with pytest.raises(CorruptImageError, match=r"large.png: too large to decode \(1000 x 1000 pixels"):
        open_greyscale(tmp_path / "large.png")


def test_doubtful_inputs_are_flagged_and_strict_fails_with_its_own_status(saved_run, phantom_root, tmp_path, capsys):
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "white.png")
    Image.new("L", (1, 1), 128).save(tmp_path / "dot.png")
    good = sorted((phantom_root / "Testing" / "glioma").iterdir())[0]
    black, white, dot, fine = predict.predict_files([tmp_path / "black.png", tmp_path / "white.png",
                                                     tmp_path / "dot.png", good], saved_run.directory)
    assert any("near-constant" in flag for flag in black.flags) and any("near-constant" in f for f in white.flags)
    assert any("too small (1x1" in flag for flag in dot.flags) and black.predicted_class is not None
    assert not [flag for flag in fine.flags if "near-constant" in flag or "too small" in flag]
    files = [str(tmp_path / "black.png"), str(good)]
    assert predict.main([*files, "--model", str(saved_run.directory), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["predictions"][0]["flags"] and printed["model_name"]
    assert predict.main([*files, "--model", str(saved_run.directory), "--strict"]) == predict.EXIT_FLAGGED
    assert "1 of 2 inputs flagged" in capsys.readouterr().err


def test_a_confidence_threshold_beside_the_model_flags_unsure_predictions(saved_run, phantom_root):
    loaded = predict.load_saved_model(saved_run.directory)
    loaded.confidence_threshold = 1.01  # every prediction is less sure than this
    result = predict.predict_files([sorted((phantom_root / "Testing" / "glioma").iterdir())[0]], loaded)[0]
    assert any(flag.startswith("unlike the training images") for flag in result.flags)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["run folder", "ensemble"])
def test_the_command_answers_without_tensorflow_and_matches_the_keras_model(saved_run, phantom_root, tmp_path, kind):
    """A fresh process as a user starts it: Keras on NumPy, no TensorFlow, no log lines, the same probabilities
    (an ensemble of two copies of one model predicts as that model)."""
    files = [str(file) for file in _image_files(tmp_path, phantom_root)[:2]]
    model = saved_run.directory
    if kind == "ensemble":
        labels = json.loads((saved_run.directory / "labels.json").read_text())
        for member in ("a.keras", "b.keras"):
            (tmp_path / member).write_bytes((saved_run.directory / "model.keras").read_bytes())
        model = tmp_path / "copies-ensemble.json"
        model.write_text(json.dumps({**labels, "model": "copies-ensemble", "members": ["a.keras", "b.keras"]}))
    command = [sys.executable, "-c", "import sys, helpers.modeling.predict as p; code = p.main(sys.argv[1:]); "
               "print(sorted(name for name in ('tensorflow', 'sklearn') if name in sys.modules), file=sys.stderr); "
               "raise SystemExit(code)", *files, "--model", str(model), "--json"]
    environment = {name: value for name, value in os.environ.items() if name != "KERAS_BACKEND"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    assert finished.returncode == 0, finished.stderr
    printed = json.loads(finished.stdout)
    expected_backend = "numpy" if importlib.util.find_spec("jax") else "tensorflow"
    assert printed["backend"] == expected_backend
    if expected_backend == "numpy":
        assert finished.stderr.strip() == "[]"  # neither module imported, and nothing else on stderr
    batch = np.stack([decode_image(file, 64) for file in files])[..., None]
    expected = saved_run.model.predict(batch, verbose=0)
    for row, item in zip(expected, printed["predictions"]):
        assert [item["probabilities"][name] for name in saved_run.class_names] == pytest.approx(row.tolist(), abs=1e-5)


def test_a_folder_is_predicted_file_by_file_and_what_else_it_holds_is_named(saved_run, phantom_root, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    for number, source in enumerate(sorted((phantom_root / "Testing" / "glioma").iterdir())[:3]):
        (folder / f"scan{number}{source.suffix}").write_bytes(source.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    assert predict.main([str(folder), str(tmp_path / "empty"), "--model", str(saved_run.directory), "--json"]) == 1
    captured = capsys.readouterr()
    printed = [item["file"] for item in json.loads(captured.out)["predictions"]]
    assert [Path(file).stem for file in printed] == ["scan0", "scan1", "scan2", "empty"]
    assert "scans: 1 entry not read (subfolders or other kinds of file): notes.txt" in captured.err
    assert "empty: holds no" in captured.err


def test_a_folder_that_cannot_be_listed_is_one_failed_input_named_with_the_reason(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    listing = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    files, notes = predict.expand_folders([str(locked)])
    assert files == [str(locked)] and notes == [f"{locked}: cannot list the folder (Permission denied)"]


def test_folders_and_broken_links_are_named_as_such(saved_run, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    os.mkfifo(tmp_path / "pipe.png")
    inputs = [tmp_path / "folder", tmp_path / "link.png", tmp_path / "loop.png", tmp_path / "pipe.png", "/dev/zero",
              tmp_path / "absent.png"]
    folder, link, loop, pipe, device, absent = predict.predict_files(inputs, saved_run.directory)
    assert folder.error.endswith("folder: is a folder, not an image file")
    assert link.error.endswith("link.png: no such file (a broken link)")
    assert loop.error.endswith("loop.png: a symbolic link loop")
    assert pipe.error.endswith("pipe.png: not a regular file (a FIFO (named pipe))")
    assert device.error == "/dev/zero: not a regular file (a device)"
    assert absent.error.endswith("absent.png: no such file")


def test_a_name_with_a_newline_stays_on_its_row(saved_run, phantom_root, tmp_path):
    named = tmp_path / "two\nlines.png"
    named.write_bytes(sorted((phantom_root / "Testing" / "glioma").iterdir())[0].read_bytes())
    predictions = predict.predict_files([named, tmp_path / "gone\tfile.png"], saved_run.directory)
    table = predict.format_table(predictions).splitlines()
    assert len(table) == 3 and "two\\nlines.png" in table[1] and "gone\\tfile.png" in table[2]


@pytest.mark.parametrize("labels, message", [
    ({"class_names": ["a", "b", "c", "d"]}, "'image_size' is missing"),
    ({"class_names": ["a", "b", "c", "d"], "image_size": 32}, "image_size 32 does not match the model's 64x64"),
    ({"class_names": ["a", "b", "c", "d"], "image_size": "64"}, "'image_size' must be an integer"),
    ({"class_names": ["a", "b"], "image_size": 64}, "2 class names for a model with 4 outputs"),
    ("{not json", "not a valid label file \\(invalid JSON"),
])
def test_bad_label_files_end_in_one_line_naming_the_file(saved_run, tmp_path, capsys, labels, message):
    model_path = tmp_path / "model.keras"
    saved_run.model.save(model_path)
    (tmp_path / "model.json").write_text(labels if isinstance(labels, str) else json.dumps(labels))
    assert predict.main(["x.png", "--model", str(model_path)]) == predict.EXIT_NO_MODEL
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "model.json" in error
    assert re.search(message, error)


def test_a_corrupt_model_file_is_not_called_missing(saved_run, tmp_path, capsys):
    (tmp_path / "model.keras").write_bytes(b"not a keras archive")
    (tmp_path / "model.json").write_text((saved_run.directory / "labels.json").read_text())
    assert predict.main(["x.png", "--model", str(tmp_path / "model.keras")]) == predict.EXIT_NO_MODEL
    error = capsys.readouterr().err.strip()
    assert "model.keras: cannot load the model" in error and "not found" not in error


def test_an_unreadable_model_file_is_called_unreadable_not_damaged(saved_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "model.keras").write_bytes((saved_run.directory / "model.keras").read_bytes())
    (tmp_path / "model.json").write_text((saved_run.directory / "labels.json").read_text())

    def refused(path, *arguments, **options):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(saved_models, "open", refused, raising=False)
    assert predict.main(["x.png", "--model", str(tmp_path / "model.keras")]) == predict.EXIT_NO_MODEL
    error = capsys.readouterr().err.strip()
    assert error.endswith("model.keras: cannot read the model file (Permission denied)") and "damaged" not in error
    assert len(error.splitlines()) == 1


def test_ctrl_c_exits_130_with_one_line(saved_run, monkeypatch, capsys):
    def interrupted(*arguments, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "predict_files", interrupted)
    assert predict.main(["x.png", "--model", str(saved_run.directory)]) == 130
    assert capsys.readouterr().err.strip() == "interrupted: nothing was predicted"


@pytest.mark.skipif(not (Path(sys.executable).parent / "brain-mri-predict").is_file(), reason="not installed")
@pytest.mark.parametrize("after_seconds", [0.4, 1.0])
def test_ctrl_c_while_the_prediction_command_starts_ends_it_in_one_line_with_status_130(tmp_path, after_seconds):
    import signal
    import time

    process = subprocess.Popen([str(Path(sys.executable).parent / "brain-mri-predict"), "x.png"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(after_seconds)  # importing its libraries, or loading the model
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and not out
    assert err.strip().splitlines() in (["interrupted while starting: nothing was written"],
                                        ["interrupted: nothing was predicted"])


def test_a_ctrl_c_a_library_swallowed_still_ends_the_command_with_130(saved_run, phantom_root, monkeypatch, capsys):
    image = sorted((phantom_root / "Testing" / "glioma").iterdir())[0]
    answered = predict.predict_files
    monkeypatch.setattr(interrupts, "REQUESTED", threading.Event())  # this test's request, not the session's

    def swallowed(*arguments, **options):
        interrupts.REQUESTED.set()  # what the signal handler records before a library catches the KeyboardInterrupt
        return answered(*arguments, **options)

    monkeypatch.setattr(predict, "predict_files", swallowed)
    assert predict.main([str(image), "--model", str(saved_run.directory), "--json"]) == 130
    shown = capsys.readouterr()
    assert shown.out == "" and shown.err.strip() == "interrupted: nothing was printed"


@pytest.mark.parametrize("index, message", [
    ("{not json", "invalid JSON"), ('["rnn.keras"]', 'naming its "default" file'), ('{"models": {}}', '"default"')])
def test_a_broken_model_index_is_a_model_problem_naming_the_file(tmp_path, monkeypatch, capsys, index, message):
    (tmp_path / saved_models.MODEL_INDEX_FILE).write_text(index)
    with pytest.raises(predict.ModelFileError, match=f"models.json: not a valid model index.*{message}"):
        saved_models.default_model_path(tmp_path)
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path)
    assert predict.main([str(tmp_path / "a.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "models.json" in error and len(error.splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_a_models_folder_that_cannot_be_read_ends_in_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "models"
    locked.mkdir()
    locked.chmod(0)
    monkeypatch.setattr(config, "MODELS_DIR", locked)
    try:
        assert predict.main([str(tmp_path / "a.png")]) == 2
    finally:
        locked.chmod(0o755)
    error = capsys.readouterr().err.strip()
    assert error == f"error: {locked / saved_models.MODEL_INDEX_FILE}: cannot read the model index (Permission denied)"


def test_a_models_folder_that_fails_to_answer_is_a_model_problem(tmp_path, monkeypatch, capsys):
    def refused(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "is_file", refused)  # what a folder without the right to enter does, even for root
    with pytest.raises(predict.ModelFileError, match=r"models.json: cannot read the model index \(Permission denied"):
        saved_models.default_model_path(tmp_path)


def test_one_path_given_as_a_string_is_one_file(saved_run, phantom_root):
    image = sorted((phantom_root / "Testing" / "glioma").iterdir())[0]
    for given in (str(image), image, os.fsencode(image)):
        predictions = predict.predict_files(given, saved_run.directory)
        assert [prediction.file for prediction in predictions] == [str(image)] and predictions[0].error is None


def test_files_are_read_in_chunks_on_threads_with_the_same_answers(saved_run, phantom_root, tmp_path, monkeypatch):
    files = [*sorted((phantom_root / "Testing" / "glioma").iterdir())[:3], tmp_path / "missing.png",
             *sorted((phantom_root / "Testing" / "notumor").iterdir())[:2]]
    together = predict.predict_files(files, saved_run.directory, workers=1)
    monkeypatch.setattr(predict, "FILES_PER_CHUNK", 2)
    chunked = predict.predict_files(files, saved_run.directory, workers=3)
    assert [result.file for result in chunked] == [str(file) for file in files]
    assert [result.predicted_class for result in chunked] == [result.predicted_class for result in together]
    assert chunked[3].error and "no such file" in chunked[3].error
    for first, second in zip(together, chunked):
        if first.probabilities:
            assert first.probabilities == pytest.approx(second.probabilities, abs=1e-6)


def test_the_folder_benchmark_times_one_thread_and_several(saved_run, phantom_root):
    from helpers.experiments import throughput

    files = throughput.image_files(phantom_root / "Testing", 6)
    assert len(files) == 6 and len({file.parent.name for file in files}) > 1, "classes are taken in turn"
    rows = throughput.measure(phantom_root / "Testing", {"rnn": saved_run.directory}, counts=(6,))
    row, = rows
    assert row["files"] == 6 and row["one_thread"]["images_per_second"] > 0
    assert row["speed_up"] == pytest.approx(row["default_threads"]["images_per_second"]
                                            / row["one_thread"]["images_per_second"])


@pytest.mark.slow
@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_results_that_cannot_be_written_end_in_one_line_and_their_own_status(saved_run, phantom_root, redirect):
    image = sorted((phantom_root / "Testing" / "glioma").iterdir())[0]
    program = "import sys, helpers.modeling.predict as p; raise SystemExit(p.main(sys.argv[1:]))"
    command = (f"{sys.executable} -c '{program}' "
               f"{image} --model {saved_run.directory} {redirect}")
    finished = subprocess.run(["bash", "-c", command], capture_output=False, stderr=subprocess.PIPE, text=True,
                              check=False)
    assert finished.returncode == predict.EXIT_NO_OUTPUT, finished.stderr
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the results"), finished.stderr
