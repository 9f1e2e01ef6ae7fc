"""Serve a trained or exported model over HTTP: REST API + a web page (``optik serve model=…``).

>>> from optik.serve import create_app, serve   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve", "ServerThread"]


def __getattr__(name: str) -> Any:
    # FastAPI/uvicorn are imported only when serving is actually used.
    if name in __all__:
        from optik.serve import app

        return getattr(app, name)
    raise AttributeError(name)
