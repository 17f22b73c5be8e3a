"""The JSON Schema of job files, shipped with the package for editors and `schema` to show."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_job_schema() -> dict[str, Any]:
    """The JSON Schema of job files (daemon/job/job.schema.json)."""
    text = resources.files("daemon.job").joinpath("job.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
