"""The HTTP API and live dashboard of a JobService, as an ASGI application.

    from shardq.http import create_app

    app = create_app(jobs, token=os.environ["SHARDQ_API_TOKEN"])  # mount it anywhere

The JobService is started and stopped by its owner (``shardq serve`` does both).
"""

from .app import DEFAULT_MAX_BODY, create_app
from .live import LiveFeed

__all__ = ["DEFAULT_MAX_BODY", "LiveFeed", "create_app"]
