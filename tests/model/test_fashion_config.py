from stepvit.model.config import DEFAULT_CONFIG, load_config
from stepvit.model.data import FASHION_MNIST_DIR, image_shape


def test_packaged_fashion_config_reads_debian_data_and_targets_half_the_steps():
    config = load_config(DEFAULT_CONFIG.with_name("fashion.yaml"))
    assert config["data"]["dataset"] == "fashion-mnist"
    assert config["data"]["data_dir"] == str(FASHION_MNIST_DIR)
    _, height, width = image_shape("fashion-mnist")
    assert height % config["model"]["patch"] == 0 and width % config["model"]["patch"] == 0
    assert config["training"]["target_timesteps"] == config["model"]["t_max"] / 2
