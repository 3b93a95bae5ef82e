"""Settings for one loraplex process: one class, read once, `LORAPLEX_` prefix, optional YAML file.

Precedence: environment variables > YAML config file (`loraplex up --config FILE`) > defaults.
Nothing else in loraplex reads the environment; the libraries (`adapters`, `retrieval`,
`training`) take explicit parameters built from this object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"


# Values shipped in examples and manifests as "fill me in": never accepted as a secret.
PLACEHOLDERS = ("change-me", "changeme", "placeholder", "secret", "password", "admin")
MIN_SECRET_CHARS = 16


class ConfigError(ValueError):
    """A config file or setting the user must fix."""


def check_secret(name: str, value: str) -> str:
    """`value`, unless it is a placeholder or too short to be a key nobody can guess."""
    if value.strip().lower() in PLACEHOLDERS:
        raise ValueError(f"{name} is the placeholder {value!r}: set a real secret")
    if len(value) < MIN_SECRET_CHARS:
        raise ValueError(
            f"{name} is {len(value)} characters long; use at least {MIN_SECRET_CHARS} random ones "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return value


class Settings(BaseSettings):
    """Everything a loraplex process can be told. Field help doubles as documentation."""

    model_config = SettingsConfigDict(env_prefix="LORAPLEX_", extra="forbid")

    # -- where things live --------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Root for the database, models, stores, logs.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite under data_dir. PostgreSQL works too."
    )

    database_busy_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a database call waits for a lock or a connection before it is "
        "retried; after three tries the caller gets a 503 with Retry-After.",
    )

    # -- gateway ------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Gateway bind address.")
    port: int = Field(8000, ge=1, le=65535, description="Gateway port.")
    admin_key: SecretStr | None = Field(
        None, description="Admin API key; generated on first run and kept in data_dir if unset."
    )
    demo_tenant: str | None = Field(
        "demo", description="Tenant created on first `up`; '' for none."
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest JSON request body (bytes).")
    max_upload_bytes: int = Field(
        64 << 20, ge=1024, description="Largest upload (adapter archives, documents)."
    )
    max_header_bytes: int = Field(
        64 << 10,
        ge=4096,
        description="Largest request head (request line and headers); larger is a 400 and the "
        "connection is closed.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long a client may take to send a request body (408 after that): a "
        "body sent slowly must not hold a request open.",
    )
    vllm_api_key: SecretStr | None = Field(
        None,
        description="Key vLLM requires on /v1 (its --api-key); the gateway sends it. `loraplex up` "
        "makes a fresh one for the vLLM it starts when unset.",
    )
    request_timeout_s: float = Field(120.0, gt=0, description="Timeout for one call to vLLM.")
    num_retries: int = Field(1, ge=0, le=5, description="litellm retries against vLLM replicas.")

    metrics_address: str | None = Field(
        None,
        description="HOST:PORT of a separate operator listener for Prometheus (no key needed "
        "there); /metrics on the gateway itself always needs the admin key.",
    )
    log_max_bytes: int = Field(
        20 << 20, ge=1 << 16, description="Size at which the request log and vLLM's log rotate."
    )
    log_backups: int = Field(3, ge=0, le=100, description="Rotated log files kept of each log.")

    # -- base model ---------------------------------------------------------------------------
    base_model: str = Field(
        DEFAULT_BASE_MODEL, description="Name the base model is served and addressed under."
    )
    model_dir: Path | None = Field(
        None,
        description="Local Hugging Face model directory; default data_dir/models/<base_model>, "
        "prepared by `loraplex models pull`.",
    )

    # -- vLLM ---------------------------------------------------------------------------------
    # NoDecode: pydantic-settings would parse the env value as JSON before our validator sees it,
    # which rejects the plain comma-separated form.
    vllm_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Already-running vLLM servers (base URLs). Empty: loraplex starts one.",
    )
    vllm_host: str = Field("127.0.0.1", description="Bind address of the vLLM loraplex starts.")
    vllm_port: int = Field(8100, ge=1, le=65535, description="Port of the vLLM loraplex starts.")
    vllm_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when a GPU is visible, else the CPU build."
    )
    vllm_dtype: str = Field(
        "auto", description="auto: float32 on CPU (no bf16 on AVX2), else auto."
    )
    vllm_max_model_len: int = Field(2048, ge=128, description="Context window served.")
    vllm_max_lora_rank: int = Field(16, ge=1, le=512, description="Largest adapter rank accepted.")
    vllm_max_loras: int = Field(4, ge=1, description="Adapters resident in one batch.")
    vllm_cpu_kvcache_gib: int = Field(2, ge=1, description="KV cache size on CPU (GiB).")
    vllm_start_timeout_s: float = Field(600.0, gt=0, description="How long to wait for readiness.")
    vllm_extra_args: list[str] = Field(default_factory=list, description="Passed to vLLM as is.")

    # -- retrieval ----------------------------------------------------------------------------
    chroma_url: str | None = Field(None, description="Chroma server URL; unset: embedded store.")
    embedding_model: Path | None = Field(
        None, description="Local sentence-transformers dir; default the bundled all-MiniLM-L6-v2."
    )
    embedding_threads: int = Field(
        1,
        ge=0,
        description="Gateway: torch threads for embedding queries (0: torch's default, every "
        "core). One keeps a routing decision fast while vLLM or other work shares the cores.",
    )

    # -- feedback, drift and canaries ----------------------------------------------------------
    monitor_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Gateway: how often request records are written, drift gauges updated and "
        "running canaries judged.",
    )
    monitor_window_h: float = Field(
        24.0, gt=0, description="Drift window (hours); the window before it is the reference."
    )
    monitor_bucket_s: int = Field(
        3600, ge=60, le=86400, description="Drift statistics are summed per bucket of this size."
    )
    monitor_embed_missing: bool = Field(
        True,
        description="Embed queries the router did not (requests naming their model) so their "
        "drift is measured too; off, only routed requests count.",
    )
    feedback_max_chars: int = Field(
        8000, ge=100, description="Longest correction a feedback may carry (characters)."
    )

    @field_validator("admin_key", "vllm_api_key")
    @classmethod
    def _no_placeholder_secret(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if value is not None:
            check_secret(info.field_name, value.get_secret_value())
        return value

    @field_validator("metrics_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"metrics_address must be HOST:PORT, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _no_placeholder_password(cls, value: str | None) -> str | None:
        if value is not None and any(f":{p}@" in value for p in PLACEHOLDERS):
            raise ValueError("database_url holds a placeholder password: set a real one")
        return value

    @field_validator("vllm_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"vllm_urls is not a valid JSON list: {exc}") from None
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("vllm_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"vLLM URL {url!r} must start with http:// or https://")
        return [u.rstrip("/").removesuffix("/v1") for u in value]

    # -- derived paths ------------------------------------------------------------------------
    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models" / self.base_model

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'loraplex.db').resolve()}"

    @property
    def adapter_store_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Read settings from the environment, an optional YAML file and explicit overrides."""
        file_values: dict[str, Any] = {}
        if config_file is not None:
            if not config_file.is_file():
                raise ConfigError(f"config file {config_file} does not exist")
            try:
                file_values = yaml.safe_load(config_file.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {config_file} is not valid YAML: {exc}") from exc
            if not isinstance(file_values, dict):
                raise ConfigError(f"config file {config_file} must hold a mapping of settings")
            unknown = sorted(set(file_values) - set(cls.model_fields))
            if unknown:
                known = ", ".join(sorted(cls.model_fields))
                raise ConfigError(f"unknown setting(s) {unknown} in {config_file}; known: {known}")
        try:
            from_env = cls()
            env_values = {name: getattr(from_env, name) for name in from_env.model_fields_set}
            return cls(**{**file_values, **env_values, **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"setting {where}: {message}") from None
