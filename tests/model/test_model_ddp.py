import json
import subprocess
import sys

import torch
import yaml

from stepvit.model.train import load_run, rank_shard


def test_rank_shards_are_disjoint_equal_and_seeded():
    shards = [rank_shard(11, seed=3, epoch=2, rank=rank, world_size=3) for rank in range(3)]
    assert [len(shard) for shard in shards] == [3, 3, 3]
    together = torch.cat(shards)
    assert len(set(together.tolist())) == 9 and int(together.max()) < 11
    again = rank_shard(11, seed=3, epoch=2, rank=1, world_size=3)
    assert torch.equal(again, shards[1])
    assert not torch.equal(rank_shard(11, seed=3, epoch=3, rank=1, world_size=3), shards[1])
    single = rank_shard(11, seed=3, epoch=2, rank=0, world_size=1)
    assert sorted(single.tolist()) == list(range(11))


def test_torchrun_trains_with_two_gloo_processes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny",
        "model": {"dim": 8, "heads": 1, "depth": 1, "mlp_dim": 16, "t_max": 2},
        "training": {"epochs": 1, "batch_size": 128},
    }))
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "stepvit.host.cli", "train", "--config", str(config), "--out", str(run),
         "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    # a child's own error (a C++ abort prints no traceback) comes before torchrun's summary
    assert result.returncode == 0, result.stderr[:2500] + "\n...\n" + result.stderr[-1500:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test_accuracy"] <= 1.0
    model, loaded_config, class_names = load_run(run)
    assert loaded_config["model"]["dim"] == 8 and len(class_names) == 10
    assert model.timestep_mask().shape == (4, 2)
    # one printed summary (rank 0 only)
    assert result.stdout.count('"run"') == 1
