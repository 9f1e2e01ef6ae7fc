"""``optik serve`` keys (every task that serves: the task's own predict controls come from its
:meth:`~optik.tasks.base.Task.predict_controls`).

>>> ServeConfig(port=0).max_queue
32
"""

from __future__ import annotations

from pydantic import Field

from optik.config.base import CommonConfig


class ServeConfig(CommonConfig):
    """``optik serve``: a FastAPI server with a web page for any trained or exported model."""

    mode: str = "serve"
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    workers: int = Field(1, ge=1, le=64, description="inference threads (each request runs off the event loop)")
    max_queue: int = Field(32, ge=1, description="requests waiting for a worker before new ones get 503")
    max_upload_mb: float = Field(10.0, gt=0, description="largest accepted upload (larger: 413)")
    timeout: float = Field(30.0, gt=0, description="seconds per request before 504")
    conf: float | None = Field(None, ge=0, le=1, description="default score threshold (detect/segment)")
    iou: float = Field(0.7, gt=0, le=1, description="default NMS IoU (detect/segment)")
    topk: int = Field(5, ge=1, description="default top-k (classify)")
    threads: int | None = Field(None, ge=1, description="torch/ORT intra-op threads (default: torch's; 1 is best for tiny models under load)")
