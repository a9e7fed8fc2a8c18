from pathlib import Path

from stepvit.host.cli import main
from stepvit.model.export import load_export


def test_random_export_follows_the_config(tmp_path: Path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\ndata: {dataset: cifar10}\n"
        "model: {patch: 8, dim: 8, heads: 2, depth: 1, mlp_dim: 16, t_max: 3}\n"
    )
    out = tmp_path / "export"
    assert main(["random-export", "--config", str(config), "--out", str(out)]) == 0
    export = load_export(out)
    assert export.arch["image_shape"] == [3, 32, 32]
    assert (export.arch["dim"], export.arch["mlp_dim"], export.t_max) == (8, 16, 3)
    assert export.arch["num_classes"] == 10
    assert "untrained" in capsys.readouterr().out


def test_random_export_refuses_a_bad_config(tmp_path: Path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("name: bad\nmodel: {t_max: 0}\n")
    assert main(["random-export", "--config", str(config), "--out", str(tmp_path / "x")]) == 2
    assert "t_max" in capsys.readouterr().err


def test_random_export_writes_golden_vectors_of_random_images(tmp_path: Path, capsys):
    from stepvit.model.export.vectors import load_golden_vectors
    from stepvit.model.golden import GoldenModel

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\ndata: {dataset: cifar10}\n"
        "model: {patch: 8, dim: 8, heads: 2, depth: 1, mlp_dim: 16, t_max: 3}\n"
    )
    out = tmp_path / "export"
    assert main(["random-export", "--config", str(config), "--out", str(out),
                 "--vectors", "3"]) == 0
    export = load_export(out)
    vectors = load_golden_vectors(export)
    assert vectors.images.shape == (3, 3, 32, 32)
    assert vectors.budgets == [1, 2, 3]
    expected = GoldenModel(export).run(vectors.images, budget=1)
    assert (vectors.outputs["logits"][0] == expected.logits.numpy()).all()
    assert main(["random-export", "--config", str(config), "--out", str(tmp_path / "y"),
                 "--vectors", "-1"]) == 2
    assert "--vectors" in capsys.readouterr().err
