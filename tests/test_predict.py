"""helpers.predict: any image file predicted with the saved label order; bad files reported, the others predicted."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from helpers import data, predict, training


@pytest.fixture(scope="module")
def saved_run(phantom_root, tmp_path_factory):
    """A quickly trained RNN run folder on the phantom dataset."""
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.2, seed=0)
    settings = training.TrainingSettings(epochs=1, batch_size=32, seed=5, verbose=0)
    return training.train_model("rnn", data.take_per_class(kept, 20), validation, None,
                                tmp_path_factory.mktemp("predict") / "run", settings)


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
    expected = saved_run.model.predict(data.decode_image(files[0], 64)[None, ..., None], verbose=0)[0]
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


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert predict.main([str(tmp_path / "a.png"), "--model", str(tmp_path / "none.keras")]) == 2
    assert "none.keras: file not found" in capsys.readouterr().err
    with pytest.raises(predict.ModelNotFoundError, match="no published models"):
        predict.default_model_path(tmp_path)


def test_published_model_file_with_its_label_file_is_accepted(saved_run, phantom_root, tmp_path):
    model_path = tmp_path / "rnn.keras"
    saved_run.model.save(model_path)
    (tmp_path / "rnn.json").write_text((saved_run.directory / "labels.json").read_text())
    (tmp_path / predict.MODEL_INDEX_FILE).write_text(json.dumps({"default": "rnn.keras"}))
    assert predict.default_model_path(tmp_path) == model_path
    loaded = predict.load_saved_model(model_path)
    assert loaded.class_names == saved_run.class_names and loaded.image_size == 64
    result = predict.predict_files([sorted((phantom_root / "Testing" / "glioma").iterdir())[0]], loaded)[0]
    assert result.error is None
