import pytest

from pipeline.config import DEFAULT_CONFIG, Config, ConfigError, load_config


def test_default_file_matches_the_models():
    assert load_config() == Config()


def test_set_overrides_and_types(tmp_path):
    cfg = load_config(None, ["topics.min_cluster_size=7", "flag.threshold_hate=0.3", "run.state_dir=/tmp/s"])
    assert cfg.topics.min_cluster_size == 7 and cfg.flag.threshold_hate == 0.3
    assert str(cfg.run.state_dir) == "/tmp/s"


def test_unknown_keys_are_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("topics:\n  min_cluster_sise: 5\n")
    with pytest.raises(ConfigError, match="min_cluster_sise"):
        load_config(p)
    with pytest.raises(ConfigError, match="no config section"):
        load_config(None, ["topic.min_cluster_size=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["topics.min_cluster_size"])


def test_every_knob_has_a_meaning():
    for section in Config.model_fields.values():
        for name, field in section.annotation.model_fields.items():
            assert field.description, name


def test_section_hash_changes_only_with_its_section():
    a, b = Config(), load_config(None, ["topics.min_cluster_size=9"])
    assert a.section_hash("embed") == b.section_hash("embed")
    assert a.section_hash("topics") != b.section_hash("topics")
    assert DEFAULT_CONFIG.exists()
