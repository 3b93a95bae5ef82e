from pathlib import Path

import pytest

from serve.settings import ConfigError, Settings


def test_defaults_follow_the_design() -> None:
    s = Settings()
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.resolved_model_dir == Path("data/models/SmolLM2-135M-Instruct")
    assert s.resolved_database_url.startswith("sqlite:///") and s.resolved_database_url.endswith(
        "data/loraplex.db"
    )


def test_environment_beats_yaml_which_beats_defaults(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9001\nvllm_port: 9100\nbase_model: mine\n")
    monkeypatch.setenv("LORAPLEX_PORT", "9002")
    s = Settings.load(cfg)
    assert s.port == 9002 and s.vllm_port == 9100 and s.base_model == "mine"


def test_vllm_urls_from_a_comma_list(monkeypatch) -> None:
    monkeypatch.setenv("LORAPLEX_VLLM_URLS", '["http://a:1/v1", "http://b:2/"]')
    assert Settings().vllm_urls == ["http://a:1", "http://b:2"]
    assert Settings(vllm_urls="http://x:1, http://y:2").vllm_urls == ["http://x:1", "http://y:2"]
    monkeypatch.setenv("LORAPLEX_VLLM_URLS", "http://h:8100/v1,http://g:8100")
    assert Settings().vllm_urls == ["http://h:8100", "http://g:8100"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("prot: 1\n", "unknown setting"),
        ("- a\n- b\n", "mapping"),
        ("port: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, text, match) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        Settings.load(cfg)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(Path("/nonexistent.yaml"))


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError):
        Settings(port=70000)
    with pytest.raises(ValueError, match="http"):
        Settings(vllm_urls=["localhost:8000"])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("admin_key", "change-me", "placeholder"),
        ("admin_key", "short", "at least 16"),
        ("vllm_api_key", "CHANGE-ME", "placeholder"),
        ("database_url", "postgresql://lpx:change-me@db/lpx", "placeholder password"),
    ],
)
def test_placeholder_secrets_are_refused(monkeypatch, field, value, match) -> None:
    """Manifests and examples ship `change-me`; a gateway must never run with it."""
    with pytest.raises(ValueError, match=match):
        Settings(**{field: value})
    monkeypatch.setenv(f"LORAPLEX_{field.upper()}", value)
    with pytest.raises(ConfigError, match=match):
        Settings.load()
