"""One typed settings object for every knob.

Values come from, in order of precedence: keyword arguments, environment variables with the
prefix ``TOUCHLINE_`` (``TOUCHLINE_DATABASE_URL``), a ``touchline.toml`` in the working
directory (or the file named by ``TOUCHLINE_CONFIG``), then the defaults below. Build it once
and pass it down; tests construct their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "duckdb:///touchline.duckdb"
SESSION_GAP_MINUTES_DEFAULT = 30
INGEST_CHUNK_ROWS_DEFAULT = 250_000
MAX_LINE_BYTES_DEFAULT = 16 * 1024 * 1024


def _config_file() -> Path:
    return Path(os.environ.get("TOUCHLINE_CONFIG", "touchline.toml"))


class Settings(BaseSettings):
    """Every setting touchline reads, with its unit.

    Fields marked *rebuild* change prepared tables: re-run ``touchline prepare`` after changing
    them.
    """

    model_config = SettingsConfigDict(
        env_prefix="TOUCHLINE_", extra="forbid", validate_default=True, frozen=True
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="Warehouse: duckdb:///path.duckdb (one file), duckdb:// (memory) or "
        "spark://local[2] (pyspark).",
    )
    memory_limit: str | None = Field(
        None, description="DuckDB memory_limit, e.g. '8GB'; the peak runs ~5-8 % above it."
    )
    temp_directory: Path | None = Field(
        None,
        description="Where DuckDB spills larger-than-memory work; default: beside the "
        "warehouse file (DuckDB would otherwise use ./.tmp of the working directory).",
    )
    threads: int | None = Field(None, ge=1, description="Engine threads; default all cores.")
    spark_warehouse_dir: Path | None = Field(
        None, description="spark.sql.warehouse.dir; default a temporary folder."
    )
    spark_shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    ingest_chunk_rows: int = Field(
        INGEST_CHUNK_ROWS_DEFAULT, ge=1, description="Rows per ingest chunk (bounds memory)."
    )
    max_line_bytes: int = Field(
        MAX_LINE_BYTES_DEFAULT,
        ge=1024,
        description="Longest accepted input line/record in bytes; longer ones are rejected.",
    )
    session_gap_minutes: int = Field(
        SESSION_GAP_MINUTES_DEFAULT, ge=1, description="rebuild: inactivity that ends a session."
    )
    reporting_currency: str = Field("USD", description="rebuild: currency revenue is shown in.")
    ip_truncate: bool = Field(True, description="Zero the last IPv4 octet / IPv6 80 bits.")

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("duckdb://", "spark://")):
            raise ValueError(
                f"database_url {value!r} must start with duckdb:// or spark:// "
                "(e.g. duckdb:///touchline.duckdb or spark://local[2])"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning validation failures into :class:`ConfigError`."""
    from pydantic import ValidationError

    from touchline.errors import ConfigError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = f"environment (TOUCHLINE_*) or {_config_file()}"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid touchline settings from {where}: {problems}") from None
