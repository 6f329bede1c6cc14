"""tfds data sets through data_source + grain, under tfds.testing.mock_data (no TensorFlow, no network)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from nnbasics.data import load_dataset  # noqa: E402
from nnbasics.data.tfds import DatasetNotPrepared, batches, data_source, pipeline, random_crop_flip  # noqa: E402
from nnbasics.registry import UnknownNameError  # noqa: E402


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3)), ("cifar100", (32, 32, 3))])
def test_load_arrays_under_mock_data(name, shape):
    with tfds.testing.mock_data(num_examples=12):
        d = load_dataset(name)
    assert d.x_train.shape == (12, *shape) and d.x_train.dtype == np.float32
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert d.y_train.dtype == np.int32 and d.num_classes in (10, 100)


def test_pipeline_shards_shuffles_and_resumes():
    with tfds.testing.mock_data(num_examples=40):
        src = data_source("mnist", "train")
        a = pipeline(src, 4, seed=1, shard_index=0, shard_count=2, num_epochs=1)
        b = pipeline(src, 4, seed=1, shard_index=1, shard_count=2, num_epochs=1)
        assert len(a) == 5 and a[0]["image"].shape == (4, 28, 28, 1)
        # deterministic given the seed; shards see different records
        again = pipeline(src, 4, seed=1, shard_index=0, shard_count=2, num_epochs=1)
        np.testing.assert_array_equal(a[3]["image"], again[3]["image"])
        assert not np.array_equal(a[0]["image"], b[0]["image"])
        it = batches("mnist", "train", 4, seed=3, shard_index=0, shard_count=1)
        first = [next(it)["label"] for _ in range(3)]
        resumed = batches("mnist", "train", 4, seed=3, start_step=2, shard_index=0, shard_count=1)
        np.testing.assert_array_equal(next(resumed)["label"], first[2])


def test_missing_dataset_is_a_clear_error_without_download(tmp_path):
    with pytest.raises(DatasetNotPrepared, match="(?s)not prepared.*tfds build cifar10"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert not any(tmp_path.rglob("*.array_record*"))
    with pytest.raises(UnknownNameError, match="did you mean 'cifar10'"):
        data_source("cifar11", "train", str(tmp_path))


def test_random_crop_flip_keeps_shape_and_content():
    img = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    out = random_crop_flip(np.random.default_rng(0), img)
    assert out.shape == img.shape
    np.testing.assert_array_equal(random_crop_flip(np.random.default_rng(5), img),
                                  random_crop_flip(np.random.default_rng(5), img))


def test_streaming_training_and_resume(tmp_path):
    import jax

    from nnbasics.data.tfds import streaming
    from nnbasics.engine import TrainConfig, fit
    from nnbasics.models import get_model

    model = get_model("mlp", num_classes=10, hidden=(16,))
    tc = TrainConfig(steps=12, batch_size=4, eval_every=6, optimizer={"name": "sgd", "learning_rate": 0.1})
    with tfds.testing.mock_data(num_examples=24):
        data = streaming("mnist", 4, seed=0)
        full = fit(model, data, tc)
        assert [r["step"] for r in full.history] == [6, 12]
        assert np.isfinite(full.history[-1]["test_loss"]).all()
        # interrupted after 6 steps, resumed from the checkpoint: the same parameters
        ck = TrainConfig(**{**tc.__dict__, "checkpoint_every": 6})
        first = fit(model, data, ck, checkpoint_dir=str(tmp_path), tag="a")
        import shutil

        shutil.rmtree(tmp_path / "a" / "12")  # as if killed between step 6 and 12
        resumed = fit(model, data, ck, checkpoint_dir=str(tmp_path), tag="a")
        assert resumed.history[0] == first.history[0]  # restored (wall-clock seconds included), not re-run
    for x, y in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6)


@pytest.mark.parametrize("damage", ['{"name": "mnist", "vers', "", '{"name": 5, "splits": "x"}', "\x00\xff"])
def test_damaged_dataset_info_is_a_clear_error_naming_the_file(tmp_path, monkeypatch, capsys, damage):
    """A prepared set whose dataset_info.json is cut or garbage: an error that names the file and how
    to repair it, rc 2 and no traceback from the CLI; the hint names only keys the experiment has."""
    from nnbasics.cli import main
    from nnbasics.data.tfds import DatasetDamaged

    version = str(tfds.builder_cls("mnist").VERSION)
    info = tmp_path / "mnist" / version / "dataset_info.json"
    info.parent.mkdir(parents=True)
    info.write_bytes(damage.encode("latin-1"))
    with pytest.raises(DatasetDamaged, match=f"(?s)damaged: {info}.*Delete {info.parent}.*tfds build mnist"):
        data_source("mnist", "train", str(tmp_path))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert main(["run", "mnist1d", "--smoke", "--quiet", "--workdir", str(tmp_path / "wd"), "--config.data=mnist"]) == 2
    err = capsys.readouterr().err
    assert str(info) in err and "Traceback" not in err
    assert "config.data_dir" not in err  # mnist1d has no such key


def test_not_prepared_hint_names_only_keys_the_experiment_has(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert main_run(["mnist1d", "--config.data=mnist"], tmp_path) == 2
    err = capsys.readouterr().err
    assert "not prepared" in err and "TFDS_DATA_DIR" in err and "config.data_dir" not in err
    assert main_run(["cifar10_resnet", f"--config.data_dir={tmp_path}"], tmp_path) == 2
    err = capsys.readouterr().err
    assert "not prepared" in err and "--config.data_dir=DIR" in err


def main_run(args, tmp_path):
    from nnbasics.cli import main

    return main(["run", args[0], "--smoke", "--quiet", "--workdir", str(tmp_path / args[0]), *args[1:]])
