"""``optik serve`` keys (every task that serves: the task's own predict controls come from its
:meth:`~optik.tasks.base.Task.predict_controls`).

``api_key`` turns on authentication: every endpoint but ``GET /health`` and the page's own files then
needs ``Authorization: Bearer <key>``. Left unset, it is read from the environment variable
``OPTIK_API_KEY`` (:data:`API_KEY_ENV`), so the key need not appear in shell history or process lists.

>>> ServeConfig(port=0).max_queue
32
"""

from __future__ import annotations

import os

from pydantic import Field, model_validator

from optik.config.base import CommonConfig

#: The environment variable ``api_key`` falls back to when the key is not given.
API_KEY_ENV = "OPTIK_API_KEY"


class ServeConfig(CommonConfig):
    """``optik serve``: a FastAPI server with a web page for any trained or exported model."""

    mode: str = "serve"
    pretrained: bool | str | None = Field(None, description="weights for model=<arch>: true (hub) or a file, e.g. from optik models convert")
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    workers: int = Field(1, ge=1, le=64, description="inference threads (each request runs off the event loop)")
    max_queue: int = Field(32, ge=1, description="requests waiting for a worker before new ones get 503")
    max_upload_mb: float = Field(10.0, gt=0, description="largest accepted upload (larger: 413)")
    timeout: float = Field(30.0, gt=0, description="seconds per request once its upload is read, before 504")
    upload_timeout: float = Field(30.0, gt=0, description="seconds to receive a request's whole body, before 408")
    api_key: str | None = Field(None, repr=False, description=f"require 'Authorization: Bearer <key>' (default: ${API_KEY_ENV})")
    conf: float | None = Field(None, ge=0, le=1, description="default score threshold (detect/segment)")
    iou: float = Field(0.7, gt=0, le=1, description="default NMS IoU (detect/segment)")
    topk: int = Field(5, ge=1, description="default top-k (classify)")
    threads: int | None = Field(None, ge=1, description="torch/ORT intra-op threads (default: torch's; 1 is best for tiny models under load)")

    @model_validator(mode="after")
    def _key_from_env(self) -> ServeConfig:
        # An api_key given (api_key=…, cfg=, Python) wins; the variable counts only when it is unset or empty.
        # The key's format is checked by the server (optik.serve.app.check_api_key), whose message never echoes it.
        if not self.api_key and os.environ.get(API_KEY_ENV):
            object.__setattr__(self, "api_key", os.environ[API_KEY_ENV])
        return self
