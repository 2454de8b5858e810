"""The HTTP API and live dashboard of a JobService, as an ASGI application.

    from shardq.http import create_app

    app = create_app(jobs, os.environ["SHARDQ_API_TOKEN"], allowed_hosts=["jobs.example.com"])

Mount it anywhere. The JobService is started and stopped by its owner (``shardq serve`` does
both). Every API request needs the token; only the allowed host names are served.
"""

from .app import DEFAULT_MAX_BODY, create_app
from .live import LiveFeed

__all__ = ["DEFAULT_MAX_BODY", "LiveFeed", "create_app"]
